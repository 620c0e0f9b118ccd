"""The error family of the window contract.

Every failure to read a message as a window is a :class:`WindowDecodeError`; every refusal to write one is a
:class:`WindowEncodeError`. Both derive from :class:`ContractError`, so a consumer can catch one type and send the
message to its dead-letter topic with ``str(error)`` as the reason.
"""

from __future__ import annotations


class ContractError(Exception):
    """Root of the window contract's errors."""


class WindowDecodeError(ContractError, ValueError):
    """The bytes are not a valid window: truncated, corrupt, foreign, or of a newer schema version."""


class WindowEncodeError(ContractError, ValueError):
    """The window cannot be written: inconsistent fields or frames."""


class WindowTooLargeError(WindowEncodeError):
    """The encoded window exceeds the maximum message size. Never truncated: the caller must adapt or drop it."""

    def __init__(self, size_bytes: int, max_bytes: int, camera_id: str, sequence: int) -> None:
        self.size_bytes = size_bytes
        self.max_bytes = max_bytes
        super().__init__(
            f"window {camera_id}#{sequence} encodes to {size_bytes} bytes, over the maximum message size of "
            f"{max_bytes} bytes; lower the JPEG quality, the frame size or the window length"
        )
