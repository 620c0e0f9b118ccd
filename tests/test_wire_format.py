"""The window wire format: lossless round trips, JPEG within tolerance, and one clear error for every bad input."""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ingest.bus import Record
from ingest.contract import (
    SCHEMA_VERSION,
    FrameCodec,
    Window,
    WindowDecodeError,
    WindowEncodeError,
    WindowHeader,
    WindowTooLargeError,
    decode_header,
    decode_window,
    encode_window,
)
from ingest.contract.messages import (
    HEADER_SCHEMA_VERSION,
    WindowMessage,
    header_from_record,
    window_from_record,
    window_message,
)
from tests.conftest import make_window

ids = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40).filter(
    lambda text: 1 <= len(text.encode()) <= 255
)


@st.composite
def windows(draw: st.DrawFn, codecs: tuple[FrameCodec, ...]) -> Window:
    frames = draw(st.integers(1, 6))
    height = draw(st.integers(1, 24))
    width = draw(st.integers(1, 24))
    channels = draw(st.sampled_from([1, 3]))
    codec = draw(st.sampled_from(codecs))
    pixels = draw(arrays(np.uint8, (frames, height, width, channels)))
    times = st.floats(-1e9, 1e10, allow_nan=False, allow_infinity=False)
    return Window(
        camera_id=draw(ids),
        sequence=draw(st.integers(0, 2**63 - 1)),
        window_id=draw(ids),
        frames=pixels,
        pts_s=np.array(draw(st.lists(times, min_size=frames, max_size=frames))),
        capture_time_s=np.array(draw(st.lists(times, min_size=frames, max_size=frames))),
        fps=draw(st.floats(0.01, 1000.0)),
        segment=draw(st.integers(0, 2**32 - 1)),
        codec=codec,
        quality=draw(st.integers(0, 9)) if codec is not FrameCodec.JPEG else draw(st.integers(1, 100)),
    )


def assert_same_metadata(decoded: Window, original: Window) -> None:
    assert decoded.camera_id == original.camera_id
    assert decoded.sequence == original.sequence
    assert decoded.window_id == original.window_id
    assert decoded.segment == original.segment
    assert decoded.fps == original.fps
    assert decoded.codec is original.codec
    assert decoded.quality == original.quality
    np.testing.assert_array_equal(decoded.pts_s, original.pts_s)
    np.testing.assert_array_equal(decoded.capture_time_s, original.capture_time_s)
    assert decoded.frames.shape == original.frames.shape
    assert decoded.frames.dtype == np.uint8


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(windows((FrameCodec.RAW_ZLIB, FrameCodec.PNG)))
def test_lossless_codecs_round_trip_exactly(window: Window) -> None:
    decoded = decode_window(encode_window(window, max_bytes=None))
    assert_same_metadata(decoded, window)
    np.testing.assert_array_equal(decoded.frames, window.frames)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    frames=st.integers(1, 4),
    height=st.integers(8, 48),
    width=st.integers(8, 48),
    channels=st.sampled_from([1, 3]),
    seed=st.integers(0, 2**32 - 1),
)
def test_jpeg_round_trip_within_tolerance(frames: int, height: int, width: int, channels: int, seed: int) -> None:
    # Camera-like content (smooth gradients plus mild noise); JPEG at quality 90 must stay close to it.
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = (x * rng.uniform(1, 4) + y * rng.uniform(1, 4) + rng.uniform(0, 100))[None, :, :, None]
    noise = rng.normal(0, 3, size=(frames, height, width, channels))
    pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
    window = Window("cam", 7, "cam:7", pixels, np.arange(frames) / 10, np.arange(frames) + 1.7e9, 10.0)
    decoded = decode_window(encode_window(window))
    assert_same_metadata(decoded, window)
    error = np.abs(decoded.frames.astype(np.int16) - pixels.astype(np.int16))
    assert error.mean() < 4.0, f"mean abs error {error.mean():.2f} too high for JPEG q90"


def test_jpeg_keeps_colours_in_rgb_order() -> None:
    red = np.zeros((1, 16, 16, 3), np.uint8)
    red[..., 0] = 200
    decoded = decode_window(encode_window(Window("c", 0, "c:0", red, [0.0], [0.0], 10.0)))
    r, g, b = decoded.frames[0, 8, 8].astype(int)
    assert r > 180
    assert max(g, b) < 30


valid_message = encode_window(make_window(frames=3, codec=FrameCodec.JPEG))


@settings(max_examples=300, deadline=None)
@given(cut=st.integers(0, len(valid_message) - 1))
def test_truncated_messages_raise_decode_error(cut: int) -> None:
    with pytest.raises(WindowDecodeError):
        decode_window(valid_message[:cut])


@settings(max_examples=300, deadline=None)
@given(position=st.integers(0, len(valid_message) - 1), bit=st.integers(0, 7))
def test_bit_flips_raise_decode_error(position: int, bit: int) -> None:
    corrupt = bytearray(valid_message)
    corrupt[position] ^= 1 << bit
    with pytest.raises(WindowDecodeError):
        decode_window(bytes(corrupt))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes_raise_decode_error(data: bytes) -> None:
    with pytest.raises(WindowDecodeError):
        decode_window(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=512))
def test_random_bodies_behind_a_valid_header_and_crc_raise_decode_error(body: bytes) -> None:
    # A forged message with a correct CRC must still be rejected by the field and frame checks.
    header = bytearray(valid_message[:48])
    struct.pack_into("<I", header, 40, len(body))
    message = bytes(header) + body
    forged = message + struct.pack("<I", zlib.crc32(message))
    with pytest.raises(WindowDecodeError):
        decode_window(forged)


def test_error_messages_say_what_is_wrong() -> None:
    with pytest.raises(WindowDecodeError, match="not a StreamSSL window"):
        decode_window(b'{"json": "from another producer"}')
    with pytest.raises(WindowDecodeError, match="truncated"):
        decode_window(valid_message[:-10])
    flipped = bytearray(valid_message)
    flipped[-20] ^= 0xFF
    with pytest.raises(WindowDecodeError, match="CRC"):
        decode_window(bytes(flipped))


def test_newer_schema_version_is_refused_by_name() -> None:
    newer = bytearray(valid_message)
    struct.pack_into("<H", newer, 4, SCHEMA_VERSION + 1)
    with pytest.raises(WindowDecodeError, match=f"schema version {SCHEMA_VERSION + 1} is newer"):
        decode_window(bytes(newer))


def test_header_is_readable_without_decoding_frames() -> None:
    window = make_window("cam-9", 41, frames=5, codec=FrameCodec.PNG)
    header = decode_header(encode_window(window))
    assert (header.camera_id, header.sequence, header.frame_count, header.codec) == ("cam-9", 41, 5, FrameCodec.PNG)
    assert header.pts_s == tuple(window.pts_s.tolist())


def test_oversize_window_is_refused_naming_both_sizes() -> None:
    noisy = np.random.default_rng(0).integers(0, 256, (16, 128, 128, 3), dtype=np.uint8)
    window = Window("cam-big", 3, "cam-big:3", noisy, np.arange(16) / 10, np.arange(16) + 1.7e9, 10.0)
    size = len(encode_window(window, max_bytes=None))
    with pytest.raises(WindowTooLargeError) as caught:
        encode_window(window, max_bytes=size - 1)
    assert caught.value.size_bytes == size
    assert caught.value.max_bytes == size - 1
    assert f"{size} bytes" in str(caught.value)
    assert f"{size - 1} bytes" in str(caught.value)
    assert len(encode_window(window, max_bytes=size)) == size


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"frames": np.zeros((2, 4, 4, 3), np.float32)}, "uint8"),
        ({"frames": np.zeros((2, 4, 4, 2), np.uint8)}, "channels"),
        ({"frames": np.zeros((0, 4, 4, 3), np.uint8)}, "non-empty"),
        ({"pts_s": [0.0]}, "pts_s"),
        ({"capture_time_s": [0.0, float("nan")]}, "finite"),
        ({"camera_id": ""}, "camera_id"),
        ({"fps": 0.0}, "fps"),
        ({"sequence": -1}, "sequence"),
        ({"quality": 0}, "quality"),
    ],
)
def test_invalid_windows_are_refused(change: dict[str, object], reason: str) -> None:
    fields: dict[str, object] = {
        "camera_id": "c",
        "sequence": 0,
        "window_id": "c:0",
        "frames": np.zeros((2, 4, 4, 3), np.uint8),
        "pts_s": [0.0, 0.1],
        "capture_time_s": [0.0, 0.1],
        "fps": 10.0,
    }
    fields.update(change)
    with pytest.raises(WindowEncodeError, match=reason):
        Window(**fields)  # type: ignore[arg-type]


def _record(message: WindowMessage, **changes: object) -> Record:
    fields: dict[str, object] = {
        "topic": "cams",
        "partition": 3,
        "offset": 41,
        "key": message.key,
        "value": message.value,
        "headers": message.headers,
        "timestamp_ms": 0,
    }
    return Record(**{**fields, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize("read", [window_from_record, header_from_record])
def test_records_are_checked_the_same_with_or_without_decoding_frames(
    read: Callable[[Record], Window | WindowHeader],
) -> None:
    message = window_message(make_window("cam-9", 4))
    good = read(_record(message))
    assert (good.camera_id, good.sequence) == ("cam-9", 4)
    corrupt = bytearray(message.value)
    corrupt[-1] ^= 0xFF
    bad = [
        (_record(message, headers=((HEADER_SCHEMA_VERSION, b"99"),)), "schema version"),
        (_record(message, headers=((HEADER_SCHEMA_VERSION, b"v1"),)), "schema version"),
        (_record(message, key=b"cam-1"), "does not match the window's camera"),
        (_record(message, value=bytes(corrupt)), "CRC"),
        (_record(message, value=b"hello"), ""),
    ]
    for record, phrase in bad:
        with pytest.raises(WindowDecodeError, match=re.escape("cams[3]@41: ") + ".*" + phrase):
            read(record)
