"""Decoder options that trade work for nothing a window can show: skipping H.264's loop filter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from ingest.contract import DEFAULT_JPEG_QUALITY, FrameCodec
from ingest.contract.frame_codecs import decode_frame_into, encode_frame
from ingest.pipeline.preprocess import FramePreprocessor
from ingest.service.config import CameraConfig
from ingest.sources.pyav_source import pyav_frames
from tests.video_files import ffmpeg


def blocky_clip(path: Path) -> Path:
    """Low-bitrate H.264 with a long GOP: where deblocking does the most, and drift would build up."""
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=10", "-t", "12",
        "-c:v", "libx264", "-crf", "34", "-g", "120", "-pix_fmt", "yuv420p", str(path),
    )  # fmt: skip
    return path


def window_frames(clip: Path, *, skip_loop_filter: bool) -> npt.NDArray[np.float64]:
    spec = CameraConfig(camera_id="cam", url=str(clip), skip_loop_filter=skip_loop_filter).source_spec()
    preprocess = FramePreprocessor(128, 128)
    frames = [preprocess.from_av(frame.image) for frame in pyav_frames(spec, 10.0, on_decode_error=print)]
    return np.stack(frames).astype(np.float64)


def jpeg_round_trip_of(frame: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    out = np.empty(frame.shape, dtype=np.uint8)
    encoded = encode_frame(frame.astype(np.uint8), FrameCodec.JPEG, DEFAULT_JPEG_QUALITY)
    decode_frame_into(memoryview(encoded), FrameCodec.JPEG, out)
    return out.astype(np.float64)


def psnr(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> float:
    return float(10 * np.log10(255.0**2 / max(float(np.mean((a - b) ** 2)), 1e-12)))


def test_skipping_the_loop_filter_reaches_the_decoder_and_changes_less_than_jpeg(tmp_path: Path) -> None:
    clip = blocky_clip(tmp_path / "blocky.mp4")
    full = window_frames(clip, skip_loop_filter=False)
    skipped = window_frames(clip, skip_loop_filter=True)
    assert full.shape == skipped.shape == (120, 128, 128, 3)
    assert not np.array_equal(full, skipped), "skip_loop_filter did not reach the decoder: frames are identical"
    jpeg_round_trip = np.stack([jpeg_round_trip_of(frame) for frame in full])
    per_frame = [psnr(a, b) for a, b in zip(full, skipped, strict=True)]
    # Every window frame already goes through JPEG at quality 90: skipping must change frames less than that does,
    # at the end of the 12 s GOP too (no drift that grows past it).
    assert min(per_frame) > psnr(full, jpeg_round_trip), (min(per_frame), psnr(full, jpeg_round_trip))
    assert min(per_frame) > 35.0, min(per_frame)  # invisible at window size on its own, too
