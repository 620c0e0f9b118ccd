"""Per-frame compression for the wire: JPEG (default), PNG (lossless) or raw pixels + zlib (lossless, fastest)."""

from __future__ import annotations

import zlib

import cv2
import numpy as np
import numpy.typing as npt

from ingest.contract.errors import WindowDecodeError
from ingest.contract.window import FrameCodec


def encode_frame(frame: npt.NDArray[np.uint8], codec: FrameCodec, quality: int) -> bytes:
    """Compress one ``H×W×C`` RGB or grayscale frame."""
    if codec is FrameCodec.RAW_ZLIB:
        return zlib.compress(np.ascontiguousarray(frame).tobytes(), quality)
    # OpenCV codecs take BGR; convert so the JPEG/PNG bytes show true colours in any other tool.
    image = frame[:, :, 0] if frame.shape[2] == 1 else cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
    if codec is FrameCodec.JPEG:
        ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    else:
        ok, buffer = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, quality])
    if not ok:
        raise ValueError(f"OpenCV could not encode a {frame.shape} frame as {codec.value}")
    return bytes(buffer)


def decode_frame_into(data: memoryview, codec: FrameCodec, out: npt.NDArray[np.uint8]) -> None:
    """Decompress one frame into ``out`` (``H×W×C``), raising :class:`WindowDecodeError` on any mismatch."""
    height, width, channels = out.shape
    if codec is FrameCodec.RAW_ZLIB:
        try:
            raw = zlib.decompress(data)
        except zlib.error as error:
            raise WindowDecodeError(f"raw-zlib frame does not decompress: {error}") from error
        if len(raw) != out.nbytes:
            raise WindowDecodeError(f"raw-zlib frame holds {len(raw)} bytes, expected {out.nbytes}")
        out[...] = np.frombuffer(raw, dtype=np.uint8).reshape(out.shape)
        return
    flag = cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flag)
    if image is None:
        raise WindowDecodeError(f"{codec.value} frame does not decode")
    if image.shape[:2] != (height, width):
        raise WindowDecodeError(
            f"{codec.value} frame is {image.shape[1]}×{image.shape[0]}, header says {width}×{height}"
        )
    if channels == 1:
        out[:, :, 0] = image
    else:
        cv2.cvtColor(image, cv2.COLOR_BGR2RGB, dst=out)
