"""The test cameras of tests/cameras.py, checked with the client the ingest uses (PyAV).

Needs ffmpeg and GStreamer's RTSP server for /usr/bin/python3 (scripts/install-rtsp.sh); fails, never skips, without.
"""

from __future__ import annotations

import errno
import itertools
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import av
import av.error
import pytest

from tests.cameras import (
    RtspCamera,
    RtspCameraFactory,
    StalledHttpCameraFactory,
    h264_annexb,
    synthetic_clip,
    video_stream_info,
)

WIDTH, HEIGHT, FPS = 320, 240, 30
OPEN_TIMEOUT_S, READ_TIMEOUT_S = 5.0, 5.0


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 s of test pattern, as `ffmpeg -c:v libx264` makes it by default (with B-frames)."""
    return synthetic_clip(tmp_path_factory.mktemp("clips") / "clip.mp4", seconds=6, fps=FPS)


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1 s of test pattern: a camera streaming it loops every 30 frames."""
    return synthetic_clip(tmp_path_factory.mktemp("clips") / "short.mp4", seconds=1, fps=FPS, gop=15)


def open_rtsp(url: str, transport: str = "tcp", read_timeout_s: float = READ_TIMEOUT_S) -> av.container.InputContainer:
    return av.open(url, options={"rtsp_transport": transport}, timeout=(OPEN_TIMEOUT_S, read_timeout_s))


def decode(container: av.container.InputContainer, count: int) -> list[av.VideoFrame]:
    frames = []
    for frame in container.decode(video=0):
        frames.append(frame)
        if len(frames) == count:
            break
    return frames


def drain(container: av.container.InputContainer, frames: list[av.VideoFrame]) -> None:
    """Decode until the stream ends (or a read fails: then the frames decoded so far are in ``frames``)."""
    frames.extend(container.decode(video=0))


def assert_live_frames(frames: list[av.VideoFrame], count: int) -> None:
    assert len(frames) == count
    assert all((frame.width, frame.height) == (WIDTH, HEIGHT) for frame in frames)
    # The first frame of an RTSP session may lack a pts; after it, one frame every 1/FPS s (in 90 kHz units).
    pts = [frame.pts for frame in frames[1:] if frame.pts is not None]
    assert len(pts) == len(frames) - 1
    assert all(later > earlier for earlier, later in itertools.pairwise(pts)), pts
    assert pts[-1] - pts[0] == pytest.approx((len(pts) - 1) * 90_000 / FPS, abs=len(pts))
    assert frames[-1].to_ndarray(format="rgb24").std() > 10  # a picture, not a blank


def test_h264_annexb_drops_b_frames(clip: Path, tmp_path: Path) -> None:
    assert int(str(video_stream_info(clip)["has_b_frames"])) > 0  # libx264's default: must be re-encoded
    stream = h264_annexb(clip, tmp_path / "clip.h264")
    assert stream.read_bytes()[:4] == b"\x00\x00\x00\x01"
    assert int(str(video_stream_info(stream)["has_b_frames"])) == 0


def test_rtsp_camera_streams_in_real_time_over_tcp(rtsp_camera_factory: RtspCameraFactory, clip: Path) -> None:
    camera = rtsp_camera_factory(clip)
    assert camera.url == f"rtsp://127.0.0.1:{camera.port}/cam"
    assert camera.last_start_s is not None
    assert camera.last_start_s < 5
    with open_rtsp(camera.url) as container:
        started = time.monotonic()
        frames = decode(container, 2 * FPS)
        elapsed = time.monotonic() - started
    assert_live_frames(frames, 2 * FPS)
    # Paced like a camera, not dumped as fast as the file can be read (opening buffered up to ~1 s of it).
    assert elapsed > 0.5


def test_rtsp_camera_streams_over_udp(rtsp_camera_factory: RtspCameraFactory, clip: Path) -> None:
    camera = rtsp_camera_factory(clip)
    with open_rtsp(camera.url, "udp") as container:
        frames = decode(container, FPS)
    assert_live_frames(frames, FPS)


def test_rtsp_camera_loops_and_serves_several_clients(rtsp_camera_factory: RtspCameraFactory, short_clip: Path) -> None:
    camera = rtsp_camera_factory(short_clip)
    with open_rtsp(camera.url) as first, open_rtsp(camera.url) as second:
        frames = decode(first, FPS + FPS // 2)  # past the end of the 1 s clip
        assert_live_frames(frames, FPS + FPS // 2)
        assert_live_frames(decode(second, 5), 5)


def test_rtsp_camera_killed_refuses_then_restarts_on_the_same_port(
    rtsp_camera_factory: RtspCameraFactory, clip: Path
) -> None:
    camera = rtsp_camera_factory(clip)
    url = camera.url
    with open_rtsp(url) as watching:
        frames = watching.decode(video=0)
        next(frames)

        camera.kill()
        assert not camera.running
        # A client that was reading sees the stream end (its TCP connection closes), long before its read timeout.
        killed = time.monotonic()
        for _ in frames:  # what was buffered, then the end
            pass
        assert time.monotonic() - killed < READ_TIMEOUT_S / 2

    for transport in ("tcp", "udp"):
        started = time.monotonic()
        with pytest.raises(av.error.ConnectionRefusedError):
            open_rtsp(url, transport)
        assert time.monotonic() - started < 1

    camera.restart()
    assert camera.url == url
    assert camera.starts == 2
    with open_rtsp(url) as container:
        assert_live_frames(decode(container, 10), 10)


def test_rtsp_camera_explains_why_it_cannot_start(tmp_path: Path, clip: Path) -> None:
    with pytest.raises(RuntimeError, match=r"no H\.264 input"):
        RtspCamera(tmp_path / "missing.h264", log_dir=tmp_path / "missing").start()

    stream = h264_annexb(clip, tmp_path / "clip.h264")
    with pytest.raises(RuntimeError, match=r"scripts/install-rtsp\.sh"):
        RtspCamera(stream, python=sys.executable).start()  # the project's venv has no `gi`

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match="cannot listen"):
            RtspCamera(stream, port, log_dir=tmp_path / "taken").start()


def test_rtsp_camera_exits_when_its_parent_goes(tmp_path: Path, clip: Path) -> None:
    """The server stops when its stdin closes, so a test process that dies leaves no camera behind."""
    camera = RtspCamera(h264_annexb(clip, tmp_path / "clip.h264")).start()
    try:
        assert camera.process is not None
        assert camera.process.stdin is not None
        camera.process.stdin.close()
        assert camera.process.wait(5) == 0
    finally:
        camera.stop()


@pytest.fixture
def stall_client() -> Iterator[list[av.container.InputContainer]]:
    containers: list[av.container.InputContainer] = []
    yield containers
    for container in containers:
        container.close()


def test_stalled_http_camera_stalls_a_reader_until_its_timeout(
    stalled_http_camera_factory: StalledHttpCameraFactory,
    clip: Path,
    stall_client: list[av.container.InputContainer],
) -> None:
    camera = stalled_http_camera_factory(clip, stall_after_s=2.0)
    read_timeout_s = 2.0
    started = time.monotonic()
    container = av.open(camera.url, timeout=(OPEN_TIMEOUT_S, read_timeout_s))
    stall_client.append(container)
    frames: list[av.VideoFrame] = []
    # The connection stays open with nothing on it: only the read timeout ends the read (FFmpeg's interrupt
    # callback, hence ExitError "Immediate exit requested"), not the end of the stream.
    with pytest.raises(av.error.ExitError):
        drain(container, frames)
    elapsed = time.monotonic() - started
    assert 0 < len(frames) <= 2 * FPS + 1  # the first 2 s, nothing after them
    assert all((frame.width, frame.height) == (WIDTH, HEIGHT) for frame in frames)
    assert read_timeout_s - 0.5 < elapsed < read_timeout_s + 4
    assert camera.connections == 1
    assert camera.open_connections == 1  # the camera holds the connection: it never closed it

    # The reader reconnects: counted, and served the same way.
    stall_client.append(av.open(camera.url, timeout=(OPEN_TIMEOUT_S, read_timeout_s)))
    assert camera.wait_for_connections(2, timeout_s=5)
    assert camera.connections == 2
    assert decode(stall_client[-1], 5)

    # Closing the camera ends the held connections at once, not after the reader's timeout. FFmpeg reports an HTTP
    # body of unknown length that ends as an error ("Stream ends prematurely"): EIO, not the end of the stream.
    camera.close()
    closed = time.monotonic()
    with pytest.raises(av.error.OSError) as ended:
        drain(stall_client[-1], [])
    assert ended.value.errno == errno.EIO
    assert time.monotonic() - closed < read_timeout_s
    assert camera.open_connections == 0


def test_stalled_http_camera_can_pace_the_stream(
    stalled_http_camera_factory: StalledHttpCameraFactory,
    short_clip: Path,
    stall_client: list[av.container.InputContainer],
) -> None:
    camera = stalled_http_camera_factory(short_clip, stall_after_s=1.0, paced=True)
    started = time.monotonic()
    container = av.open(camera.url, timeout=(OPEN_TIMEOUT_S, 1.0))
    stall_client.append(container)
    frames: list[av.VideoFrame] = []
    with pytest.raises(av.error.ExitError):
        drain(container, frames)
    # 1 s of data spread over 1 s, then the 1 s read timeout.
    assert 1.5 < time.monotonic() - started < 5
    assert 0 < len(frames) <= FPS + 1
