"""The stream contract: what a window is, how it travels on the bus, and which topics carry it.

See :mod:`ingest.contract.wire` for the byte layout and :mod:`ingest.contract.messages` for keys and headers.
"""

from ingest.contract.errors import ContractError, WindowDecodeError, WindowEncodeError, WindowTooLargeError
from ingest.contract.window import DEFAULT_JPEG_QUALITY, FrameCodec, Window
from ingest.contract.wire import (
    DEFAULT_MAX_MESSAGE_BYTES,
    SCHEMA_VERSION,
    WindowHeader,
    decode_header,
    decode_window,
    encode_window,
)

__all__ = [
    "DEFAULT_JPEG_QUALITY",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "SCHEMA_VERSION",
    "ContractError",
    "FrameCodec",
    "Window",
    "WindowDecodeError",
    "WindowEncodeError",
    "WindowHeader",
    "WindowTooLargeError",
    "decode_header",
    "decode_window",
    "encode_window",
]
