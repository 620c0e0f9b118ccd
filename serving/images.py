"""Image bodies → model-sized frames: sniff the format and size first, decode, centre-crop and resize.

Only JPEG and PNG are accepted, and their size is read from the header before anything is decoded: a few kilobytes
of PNG can declare a gigapixel image, and OpenCV would allocate it.
"""

from __future__ import annotations

import struct

import cv2
import numpy as np
import numpy.typing as npt

from ingest.contract.model_input import model_input
from serving.errors import InvalidInputError

MAX_PIXELS = 64 * 1024 * 1024
_PNG = b"\x89PNG\r\n\x1a\n"
# Start-of-frame markers carry the image size; the others in C0–CF are DHT (C4), JPG (C8) and DAC (CC).
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def image_size(data: bytes) -> tuple[str, int, int]:
    """``(format, width, height)`` from a JPEG or PNG header; 400 if the bytes are neither."""
    if data.startswith(_PNG) and len(data) >= 24 and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return "png", width, height
    if data.startswith(b"\xff\xd8"):
        position = 2
        while position + 4 <= len(data):
            if data[position] != 0xFF:
                break
            marker = data[position + 1]
            if marker == 0xFF:  # fill byte
                position += 1
                continue
            if marker in (0x01, *range(0xD0, 0xD9)):  # markers without a length
                position += 2
                continue
            (length,) = struct.unpack(">H", data[position + 2 : position + 4])
            if marker in _JPEG_SOF and position + 9 <= len(data):
                height, width = struct.unpack(">HH", data[position + 5 : position + 9])
                return "jpeg", width, height
            position += 2 + length
        raise InvalidInputError("the body starts like a JPEG but has no readable frame header")
    raise InvalidInputError("the body is not a JPEG or PNG image")


def decode_image(data: bytes, height: int, width: int, channels: int) -> tuple[npt.NDArray[np.uint8], tuple[int, int]]:
    """Decode to ``[height, width, channels]`` RGB (or gray) uint8; also return the original ``(height, width)``.

    A differently sized image is centre-cropped to the model's aspect ratio and area-resized, as ingest's default
    ``crop`` mode does with camera frames.
    """
    if not data:
        raise InvalidInputError("the body is empty: send a JPEG or PNG image")
    kind, src_w, src_h = image_size(data)
    if src_w < 1 or src_h < 1 or src_w * src_h > MAX_PIXELS:
        raise InvalidInputError(
            f"{kind} image of {src_w}×{src_h} pixels: sides must be ≥ 1, at most {MAX_PIXELS} pixels"
        )
    flag = cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR
    decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flag)
    if decoded is None:
        raise InvalidInputError(f"the {kind} image does not decode (truncated or corrupt)")
    image = np.asarray(cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB) if channels == 3 else decoded, dtype=np.uint8)
    original = (int(image.shape[0]), int(image.shape[1]))
    if original != (height, width):
        image = model_input(image.reshape(1, *original, channels), height, width, channels, 1)[0]
    return np.ascontiguousarray(image.reshape(height, width, channels)), original
