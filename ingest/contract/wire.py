"""The window wire format, schema version 1.

All integers are little-endian. A message is a fixed 48-byte header, a variable body, and a CRC-32 trailer::

    offset size  field
    0      4     magic b"SSLW"            (stable in every version: identifies a StreamSSL window)
    4      2     schema_version u16       (stable position in every version; this reader knows 1)
    6      1     codec u8                 1 = jpeg, 2 = png, 3 = raw-zlib
    7      1     channels u8              1 (grayscale) or 3 (RGB)
    8      2     frame_count T u16
    10     2     height u16
    12     2     width u16
    14     1     quality u8               JPEG quality 1–100, or PNG/zlib level 0–9
    15     1     camera_id length u8      1–255
    16     1     window_id length u8      1–255
    17     3     reserved, zero
    20     4     segment u32
    24     8     sequence u64
    32     8     fps f64
    40     4     body length u32          bytes between the header and the trailer
    44     4     reserved, zero
    48     ...   body: camera_id (UTF-8), window_id (UTF-8), T×f64 PTS seconds, T×f64 capture Unix seconds,
                 T×u32 frame sizes, then the T compressed frames back to back
    end-4  4     CRC-32 (zlib) of every byte before it

:func:`decode_window` checks, in order: length, magic, version, declared length, CRC, field ranges, then decodes
every frame to exactly ``H×W×C``. Any failure raises :class:`WindowDecodeError`; it never returns a partial window.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from ingest.contract.errors import WindowDecodeError, WindowEncodeError, WindowTooLargeError
from ingest.contract.frame_codecs import decode_frame_into, encode_frame
from ingest.contract.window import FrameCodec, Window

MAGIC = b"SSLW"
SCHEMA_VERSION = 1
CONTENT_TYPE = "application/x-streamssl-window"

# Broker default message.max.bytes is 1,048,588; a record also carries its key, headers and batch framing, so a
# window may use 1 MiB less 4 KiB and still fit a broker left at its defaults.
DEFAULT_MAX_MESSAGE_BYTES = 1_048_576 - 4_096

_HEADER = struct.Struct("<4sHBBHHHBBB3xIQdI4x")
_TRAILER = struct.Struct("<I")
_CODEC_IDS = {FrameCodec.JPEG: 1, FrameCodec.PNG: 2, FrameCodec.RAW_ZLIB: 3}
_CODECS_BY_ID = {value: key for key, value in _CODEC_IDS.items()}
assert _HEADER.size == 48


@dataclass(frozen=True)
class WindowHeader:
    """Everything about a window except its pixels; cheap to read (no frame is decompressed)."""

    schema_version: int
    camera_id: str
    sequence: int
    window_id: str
    segment: int
    fps: float
    codec: FrameCodec
    quality: int
    frame_count: int
    height: int
    width: int
    channels: int
    pts_s: tuple[float, ...]
    capture_time_s: tuple[float, ...]
    size_bytes: int


def encode_window(window: Window, max_bytes: int | None = DEFAULT_MAX_MESSAGE_BYTES) -> bytes:
    """Serialise ``window``; raise :class:`WindowTooLargeError` if the result exceeds ``max_bytes`` (None: no limit)."""
    camera = window.camera_id.encode("utf-8")
    window_id = window.window_id.encode("utf-8")
    frames = [encode_frame(frame, window.codec, window.quality) for frame in window.frames]
    sizes = np.array([len(frame) for frame in frames], dtype="<u4")
    body = b"".join(
        [
            camera,
            window_id,
            window.pts_s.astype("<f8").tobytes(),
            window.capture_time_s.astype("<f8").tobytes(),
            sizes.tobytes(),
            *frames,
        ]
    )
    total = _HEADER.size + len(body) + _TRAILER.size
    if max_bytes is not None and total > max_bytes:
        raise WindowTooLargeError(total, max_bytes, window.camera_id, window.sequence)
    if len(body) >= 2**32:
        raise WindowEncodeError(f"window {window.camera_id}#{window.sequence} body exceeds 4 GiB")
    header = _HEADER.pack(
        MAGIC,
        SCHEMA_VERSION,
        _CODEC_IDS[window.codec],
        window.channels,
        window.frame_count,
        window.height,
        window.width,
        window.quality,
        len(camera),
        len(window_id),
        window.segment,
        window.sequence,
        window.fps,
        len(body),
    )
    message = header + body
    return message + _TRAILER.pack(zlib.crc32(message))


def decode_header(data: bytes | bytearray | memoryview) -> WindowHeader:
    """Validate a message (length, magic, version, CRC, fields) and read its header without touching the frames."""
    header, _ = _parse(memoryview(data))
    return header


def decode_window(data: bytes | bytearray | memoryview) -> Window:
    """Deserialise a message into a :class:`Window`; raise :class:`WindowDecodeError` if it is not a valid one."""
    view = memoryview(data)
    header, frames_offset = _parse(view)
    frames = np.empty((header.frame_count, header.height, header.width, header.channels), dtype=np.uint8)
    sizes_offset = frames_offset - 4 * header.frame_count
    sizes = np.frombuffer(view, dtype="<u4", count=header.frame_count, offset=sizes_offset)
    position = frames_offset
    for index, size in enumerate(sizes.tolist()):
        try:
            decode_frame_into(view[position : position + size], header.codec, frames[index])
        except WindowDecodeError as error:
            raise WindowDecodeError(f"{_describe(header)}: frame {index}: {error}") from error
        position += size
    return Window(
        camera_id=header.camera_id,
        sequence=header.sequence,
        window_id=header.window_id,
        frames=frames,
        pts_s=np.array(header.pts_s, dtype=np.float64),
        capture_time_s=np.array(header.capture_time_s, dtype=np.float64),
        fps=header.fps,
        segment=header.segment,
        codec=header.codec,
        quality=header.quality,
    )


def _describe(header: WindowHeader) -> str:
    return f"window {header.camera_id}#{header.sequence}"


def _parse(view: memoryview) -> tuple[WindowHeader, int]:
    """Return the header and the offset of the first compressed frame."""
    size = len(view)
    if size >= 4 and bytes(view[:4]) != MAGIC:
        raise WindowDecodeError(f"not a StreamSSL window: magic is {bytes(view[:4])!r}, expected {MAGIC!r}")
    if size < _HEADER.size + _TRAILER.size:
        raise WindowDecodeError(
            f"truncated window: {size} bytes is shorter than the {_HEADER.size + _TRAILER.size}-byte minimum"
        )
    (
        _magic,
        version,
        codec_id,
        channels,
        frame_count,
        height,
        width,
        quality,
        camera_len,
        window_id_len,
        segment,
        sequence,
        fps,
        body_len,
    ) = _HEADER.unpack_from(view)
    if version > SCHEMA_VERSION:
        raise WindowDecodeError(
            f"window schema version {version} is newer than this reader (knows up to {SCHEMA_VERSION}); "
            "upgrade streamssl to read it"
        )
    if version < 1:
        raise WindowDecodeError(f"not a StreamSSL window: schema version {version} does not exist")
    expected = _HEADER.size + body_len + _TRAILER.size
    if size != expected:
        state = "truncated" if size < expected else "has trailing bytes"
        raise WindowDecodeError(f"window {state}: {size} bytes, header declares {expected}")
    (stored_crc,) = _TRAILER.unpack_from(view, size - _TRAILER.size)
    actual_crc = zlib.crc32(view[: size - _TRAILER.size])
    if stored_crc != actual_crc:
        raise WindowDecodeError(f"corrupt window: CRC-32 is {actual_crc:08x}, trailer says {stored_crc:08x}")

    codec = _CODECS_BY_ID.get(codec_id)
    if codec is None:
        raise WindowDecodeError(f"window uses unknown frame codec id {codec_id}")
    if channels not in (1, 3) or frame_count < 1 or height < 1 or width < 1 or camera_len < 1 or window_id_len < 1:
        raise WindowDecodeError(
            f"window header out of range: {frame_count} frames of {width}×{height}×{channels}, "
            f"id lengths {camera_len}/{window_id_len}"
        )
    position = _HEADER.size
    fixed = camera_len + window_id_len + frame_count * (8 + 8 + 4)
    if fixed > body_len:
        raise WindowDecodeError(f"window body of {body_len} bytes cannot hold its {fixed}-byte index")
    try:
        camera_id = bytes(view[position : position + camera_len]).decode("utf-8")
        position += camera_len
        window_id = bytes(view[position : position + window_id_len]).decode("utf-8")
        position += window_id_len
    except UnicodeDecodeError as error:
        raise WindowDecodeError(f"window ids are not UTF-8: {error}") from error
    pts = np.frombuffer(view, dtype="<f8", count=frame_count, offset=position)
    position += 8 * frame_count
    capture = np.frombuffer(view, dtype="<f8", count=frame_count, offset=position)
    position += 8 * frame_count
    sizes = np.frombuffer(view, dtype="<u4", count=frame_count, offset=position)
    position += 4 * frame_count
    if int(sizes.sum(dtype=np.uint64)) != body_len - fixed:
        raise WindowDecodeError(
            f"window frame sizes add up to {int(sizes.sum(dtype=np.uint64))} bytes, body holds {body_len - fixed}"
        )
    header = WindowHeader(
        schema_version=version,
        camera_id=camera_id,
        sequence=sequence,
        window_id=window_id,
        segment=segment,
        fps=fps,
        codec=codec,
        quality=quality,
        frame_count=frame_count,
        height=height,
        width=width,
        channels=channels,
        pts_s=tuple(pts.tolist()),
        capture_time_s=tuple(capture.tolist()),
        size_bytes=size,
    )
    return header, position
