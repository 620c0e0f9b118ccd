"""The ingest service on real video files made with ffmpeg: constant and variable frame rate, corrupted bytes,
timestamps that jump forward or restart. Windows must have the right length, evenly spaced PTS, unique rising
sequence numbers, and never span a discontinuity."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from ingest.bus.embedded import EmbeddedBus
from ingest.contract import Window
from ingest.contract.messages import window_from_record
from ingest.service.config import CameraConfig, IngestSettings
from ingest.service.service import IngestService
from tests import video_files


def ingest_file(bus: EmbeddedBus, url: str, **camera: object) -> tuple[list[Window], IngestService]:
    topic = f"files.{uuid.uuid4().hex[:8]}"
    settings = IngestSettings(
        bus=f"embedded://{bus.name}",
        topic=topic,
        partitions=1,
        cameras=[CameraConfig(camera_id="cam", url=url, **camera)],  # type: ignore[arg-type]
    )
    service = IngestService(settings, bus, CollectorRegistry())
    service.start()
    service.wait()
    assert service.shutdown() == 0
    with bus.consumer([topic], group_id=None) as consumer:
        windows = [window_from_record(record) for record in consumer.poll(2.0)]
    return windows, service


def metric(service: IngestService, name: str, **labels: str) -> float:
    value = service.metrics.registry.get_sample_value(name, {"camera": "cam", **labels})
    return 0.0 if value is None else value


def assert_well_formed(windows: list[Window], fps: float = 10.0, tolerance_s: float = 1 / 30 + 1e-6) -> None:
    assert windows, "no window was published"
    assert all(w.frame_count == 8 for w in windows)
    assert all(w.frames.shape[1:] == (128, 128, 3) for w in windows)
    sequences = [w.sequence for w in windows]
    assert sequences == sorted(set(sequences)), f"sequences not unique and rising: {sequences}"
    assert len({w.window_id for w in windows}) == len(windows)
    for window in windows:
        gaps = np.diff(window.pts_s)
        assert np.all(np.abs(gaps - 1 / fps) <= tolerance_s), f"uneven PTS in {window.window_id}: {window.pts_s}"


def test_constant_30fps_file(embedded_bus: EmbeddedBus, tmp_path: Path) -> None:
    clip = video_files.constant_rate(tmp_path / "cfr.mp4", seconds=6.0)
    windows, service = ingest_file(embedded_bus, str(clip))
    assert_well_formed(windows)
    assert len(windows) == 7  # 60 samples at 10 fps → 7 full windows of 8; the last 4 samples make no window
    assert [w.segment for w in windows] == [0] * 7
    np.testing.assert_allclose([w.pts_s[0] for w in windows], np.arange(7) * 0.8, atol=1e-6)
    assert metric(service, "streamssl_ingest_frames_decoded_total") == 180
    assert metric(service, "streamssl_ingest_frames_dropped_total", reason="sampling") == 119
    # 4 samples in the unfinished last window, and the frame held back as the candidate for the next grid point.
    assert metric(service, "streamssl_ingest_frames_dropped_total", reason="partial_window") == 5
    assert metric(service, "streamssl_ingest_windows_published_total") == 7


def test_variable_frame_rate_file_gives_evenly_spaced_windows(embedded_bus: EmbeddedBus, tmp_path: Path) -> None:
    clip = video_files.variable_rate(tmp_path / "vfr.mp4", seconds=8.0)
    windows, _ = ingest_file(embedded_bus, str(clip))
    # Each sample is the frame nearest its grid point: within half a source interval (1/30 s at 15 fps), so the
    # spacing of two samples is off by at most one 15 fps interval and averages exactly 0.1 s.
    assert_well_formed(windows, tolerance_s=1 / 15 + 1e-6)
    spacing = np.concatenate([np.diff(w.pts_s) for w in windows])
    assert abs(float(spacing.mean()) - 0.1) < 0.01
    assert len(windows) >= 7


def test_corrupted_bytes_are_skipped_and_decoding_continues(embedded_bus: EmbeddedBus, tmp_path: Path) -> None:
    source = video_files.transport_stream(
        video_files.constant_rate(tmp_path / "clean.mp4", seconds=8.0), tmp_path / "clean.ts"
    )
    clip = video_files.corrupted(source, tmp_path / "corrupt.ts", at_fraction=0.5)
    windows, service = ingest_file(embedded_bus, str(clip))
    assert_well_formed(windows)
    first_pts = windows[0].pts_s[0]
    assert windows[-1].pts_s[-1] - first_pts > 6.5, "decoding stopped at the corruption"
    assert metric(service, "streamssl_ingest_frames_decoded_total") >= 200
    assert metric(service, "streamssl_ingest_reconnects_total") == 0


def test_forward_timestamp_jump_starts_a_new_segment(embedded_bus: EmbeddedBus, tmp_path: Path) -> None:
    clip = video_files.forward_jump(tmp_path / "jump.mp4", jump_at_s=3.0, jump_s=10.0, seconds=6.0)
    windows, service = ingest_file(embedded_bus, str(clip))
    assert_well_formed(windows)
    for window in windows:
        assert window.pts_s[-1] < 3.0 or window.pts_s[0] >= 13.0, f"{window.window_id} spans the jump"
    assert {w.segment for w in windows if w.pts_s[0] < 3} == {0}
    assert {w.segment for w in windows if w.pts_s[0] >= 13} == {1}
    assert metric(service, "streamssl_ingest_discontinuities_total", cause="jump_forward") == 1


def test_restarted_source_clock_starts_a_new_segment(embedded_bus: EmbeddedBus, tmp_path: Path) -> None:
    part = video_files.transport_stream(video_files.constant_rate(tmp_path / "p.mp4", seconds=4.0), tmp_path / "p.ts")
    clip = video_files.restarted_clock(part, part, tmp_path / "restarted.ts")
    windows, service = ingest_file(embedded_bus, str(clip))
    assert_well_formed(windows)
    segments = [w.segment for w in windows]
    assert segments == sorted(segments)
    assert set(segments) == {0, 1}
    assert metric(service, "streamssl_ingest_discontinuities_total", cause="jump_backward") == 1
    for window in windows:
        assert np.all(np.diff(window.pts_s) > 0)


def test_loop_replays_a_file_as_new_segments(embedded_bus: EmbeddedBus, tmp_path: Path) -> None:
    clip = video_files.constant_rate(tmp_path / "short.mp4", seconds=2.0)
    topic = f"loop.{uuid.uuid4().hex[:8]}"
    settings = IngestSettings(
        bus=f"embedded://{embedded_bus.name}",
        topic=topic,
        partitions=1,
        cameras=[CameraConfig(camera_id="cam", url=str(clip), loop=True)],
    )
    service = IngestService(settings, embedded_bus, CollectorRegistry())
    service.start()
    with embedded_bus.consumer([topic], group_id=None) as consumer:
        windows: list[Window] = []
        for _ in range(100):
            windows += [window_from_record(r) for r in consumer.poll(0.2)]
            if len({w.segment for w in windows}) >= 3:
                break
    service.request_stop()
    service.shutdown()
    assert len({w.segment for w in windows}) >= 3, "looping did not replay the file"
    assert_well_formed(windows)


def test_a_file_that_does_not_exist_is_retried_not_fatal(embedded_bus: EmbeddedBus, tmp_path: Path) -> None:
    settings = IngestSettings(
        bus=f"embedded://{embedded_bus.name}",
        topic="missing.files",
        partitions=1,
        cameras=[
            CameraConfig(
                camera_id="cam", url=str(tmp_path / "nope.mp4"), reconnect_initial_s=0.05, reconnect_max_s=0.1
            ),
        ],
    )
    service = IngestService(settings, embedded_bus, CollectorRegistry())
    service.start()
    deadline = time.monotonic() + 10
    while metric(service, "streamssl_ingest_reconnects_total") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert service.ready() == (False, "no camera up (cam)")
    service.request_stop()
    service.shutdown()
    assert metric(service, "streamssl_ingest_reconnects_total") >= 2
    assert metric(service, "streamssl_ingest_camera_up") == 0


@pytest.mark.parametrize(("resize", "color", "channels"), [("letterbox", "gray", 1), ("crop", "rgb", 3)])
def test_size_and_colour_options(
    embedded_bus: EmbeddedBus, tmp_path: Path, resize: str, color: str, channels: int
) -> None:
    clip = video_files.constant_rate(tmp_path / "c.mp4", seconds=2.0)
    windows, _ = ingest_file(embedded_bus, str(clip), size="96x64", resize=resize, color=color, window=4, stride=2)
    assert windows
    assert all(w.frames.shape == (4, 64, 96, channels) for w in windows)
    starts = [w.pts_s[0] for w in windows]
    np.testing.assert_allclose(np.diff(starts), 0.2, atol=1e-6)
