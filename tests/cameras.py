"""Test cameras: a real RTSP camera (GStreamer's RTSP server) and an HTTP camera that stalls.

Not a test module. Its fixtures are available where this module is a plugin (``pytest_plugins`` in
tests/conftest.py), or in a test module that binds them to module names (as tests/test_cameras.py does):

* ``rtsp_camera_factory(clip, port=None)`` starts an :class:`RtspCamera` streaming ``clip`` (an ``.h264`` Annex-B
  file, or any video file, converted with :func:`h264_annexb`) in a loop, in real time; every camera it made is
  stopped at teardown. ``.kill()`` is a camera losing power (clients see end of stream, new connections are refused),
  ``.restart()`` brings it back on the same port.
* ``stalled_http_camera_factory(clip, stall_after_s=2.0)`` starts a :class:`StalledHttpCamera`: every connection
  gets the first ``stall_after_s`` seconds of ``clip`` as MPEG-TS and then nothing, with the connection left open
  (the stall that hangs an ingest without read timeouts). It counts connections, so a test can see a reconnect.

What PyAV (the ingest's client) sees, measured here: the RTSP server is ready ~0.06 s after it is spawned (start
and restart alike); ``av.open`` takes ~0.95 s (FFmpeg probing), then frames arrive at the clip's rate. After
``kill()`` a reader's decode loop simply ends (no exception, TCP and UDP alike) within ms, and ``av.open`` raises
``av.error.ConnectionRefusedError`` at once. On the stalled HTTP camera the read timeout of ``av.open(url,
timeout=(open_s, read_s))`` fires after ``read_s`` as ``av.error.ExitError`` ("Immediate exit requested"); without a
read timeout the read never returns. When the HTTP camera closes a connection, FFmpeg reports ``av.error.OSError``
EIO (an HTTP body of unknown length that ends is "Stream ends prematurely" to it), not the end of the stream.

The RTSP server is scripts/rtsp_camera.py, run with the system /usr/bin/python3, which must have GStreamer's RTSP
server (``bash scripts/install-rtsp.sh`` installs it; this module never installs anything).
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import io
import json
import os
import select
import selectors
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Protocol

import pytest

REPO = Path(__file__).resolve().parents[1]
RTSP_CAMERA_PY = REPO / "scripts" / "rtsp_camera.py"
INSTALL_RTSP = "scripts/install-rtsp.sh"
SYSTEM_PYTHON = "/usr/bin/python3"
HOST = "127.0.0.1"
# The server prints its ready line ~0.1 s after it is started (most of it is Python and GStreamer start-up).
READY_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0
FFMPEG_TIMEOUT_S = 120.0


def tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def run_ffmpeg(*args: str) -> None:
    """Run ffmpeg quietly; a failure raises RuntimeError with ffmpeg's own explanation."""
    command = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=FFMPEG_TIMEOUT_S, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed (exit {done.returncode}):\n{tail(done.stderr)}")


def video_stream_info(video: Path) -> dict[str, object]:
    """ffprobe's description of the first video stream of ``video`` (codec_name, has_b_frames, ...)."""
    done = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_streams", "-of", "json", str(video)],
        capture_output=True,
        text=True,
        timeout=FFMPEG_TIMEOUT_S,
        check=False,
    )
    streams = json.loads(done.stdout or "{}").get("streams", []) if done.returncode == 0 else []
    if not streams:
        raise RuntimeError(f"ffprobe found no video stream in {video}:\n{tail(done.stderr)}")
    stream: dict[str, object] = streams[0]
    return stream


def synthetic_clip(out: Path, seconds: float = 6.0, size: str = "320x240", fps: int = 30, gop: int = 30) -> Path:
    """An H.264 MP4 of ffmpeg's moving test pattern: ``seconds`` long, a key frame every ``gop`` frames."""
    run_ffmpeg(
        "-f", "lavfi", "-i", f"testsrc=size={size}:rate={fps}", "-t", str(seconds),
        "-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", str(gop), str(out),
    )  # fmt: skip
    return out


def h264_annexb(mp4: Path, out: Path) -> Path:
    """The H.264 video of ``mp4`` as an Annex-B elementary stream ``out``, as scripts/rtsp_camera.py serves it.

    A copy (``h264_mp4toannexb``) when the video is H.264 without B-frames. Otherwise it is re-encoded with libx264
    without B-frames, key frames where the source has them: a raw H.264 stream carries no presentation times, and the
    RTSP server can only derive them (from the decode order) for streams without B-frames, like IP cameras send.
    libx264's defaults (as in ``ffmpeg -c:v libx264``) do use B-frames.
    """
    info = video_stream_info(mp4)
    if info.get("codec_name") == "h264" and info.get("has_b_frames") in (0, "0"):
        run_ffmpeg("-i", str(mp4), "-map", "0:v:0", "-c", "copy", "-bsf:v", "h264_mp4toannexb", "-f", "h264", str(out))
    else:
        run_ffmpeg(
            "-i", str(mp4), "-map", "0:v:0", "-c:v", "libx264", "-bf", "0", "-force_key_frames", "source",
            "-pix_fmt", "yuv420p", "-f", "h264", str(out),
        )  # fmt: skip
    return out


@functools.cache
def gst_rtsp_problem(python: str) -> str | None:
    """Why ``python`` cannot run scripts/rtsp_camera.py, or None when it can."""
    check = 'import gi; gi.require_version("Gst", "1.0"); gi.require_version("GstRtspServer", "1.0")'
    check += "; from gi.repository import GstRtspServer"
    try:
        done = subprocess.run([python, "-c", check], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"{python} cannot run: {error}"
    if done.returncode != 0:
        return f"{python} cannot load GStreamer's RTSP server:\n{tail(done.stderr, 5)}"
    return None


class RtspCamera:
    """A looping H.264 RTSP camera at ``rtsp://127.0.0.1:PORT/cam`` (scripts/rtsp_camera.py in a subprocess).

    ``port=None`` lets the server pick a free port at the first start; :meth:`restart` reuses it. All clients see one
    shared live stream, paced in real time. The server's stderr goes to ``log_dir`` (a private temporary directory
    by default), and its tail is in the error when it cannot start.
    """

    def __init__(
        self,
        h264_file: Path,
        port: int | None = None,
        *,
        path: str = "/cam",
        fps: int = 30,
        python: str = SYSTEM_PYTHON,
        ready_timeout_s: float = READY_TIMEOUT_S,
        log_dir: Path | None = None,
    ) -> None:
        self.h264_file = Path(h264_file)
        self.port = port
        self.path = path if path.startswith("/") else "/" + path
        self.fps = fps
        self.python = python
        self.ready_timeout_s = ready_timeout_s
        self._own_log_dir = log_dir is None
        self.log_dir = None if log_dir is None else Path(log_dir)  # a private one is made by start()
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.last_start_s: float | None = None  # seconds from spawning the server to its ready line

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the RTSP camera has no port until it has started once")
        return f"rtsp://{HOST}:{self.port}{self.path}"

    @property
    def stderr_path(self) -> Path | None:
        """The server's stderr (all its starts), while the log directory exists."""
        return None if self.log_dir is None else self.log_dir / "rtsp_camera.stderr"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> RtspCamera:
        """Start the server and return once it accepts connections; RuntimeError says why it could not."""
        if self.running:
            return self
        problem = gst_rtsp_problem(self.python)
        if problem is not None:
            raise RuntimeError(f"{problem}\nInstall it with: bash {INSTALL_RTSP} (as root)")
        command = [
            self.python, str(RTSP_CAMERA_PY), "--port", str(self.port or 0), "--path", self.path,
            "--h264", str(self.h264_file), "--fps", str(self.fps), "--host", HOST, "--exit-with-stdin",
        ]  # fmt: skip
        if self.log_dir is None:
            self.log_dir = Path(tempfile.mkdtemp(prefix="rtsp-camera-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        stderr_path = self.log_dir / "rtsp_camera.stderr"
        started = time.monotonic()
        with stderr_path.open("ab") as stderr:
            stderr.write(f"--- start {self.starts + 1}: {' '.join(command)}\n".encode())
            stderr.flush()
            # stdin stays open in this process: the server exits when it closes, even if the test process dies.
            self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr)
        self.starts += 1
        try:
            line = self._ready_line(started)
        except RuntimeError:
            self._terminate(signal.SIGKILL)
            self._remove_own_log_dir()
            raise
        self.last_start_s = time.monotonic() - started
        self.port = int(line.split()[1].rsplit(":", 1)[1].split("/", 1)[0])
        return self

    def _ready_line(self, started: float) -> str:
        assert self.process is not None
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        output = b""
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while b"\n" not in output:
                left = started + self.ready_timeout_s - time.monotonic()
                if left <= 0:
                    raise RuntimeError(self._failure(f"did not print its ready line within {self.ready_timeout_s} s"))
                if selector.select(min(left, 0.5)):
                    chunk = os.read(fd, 4096)
                    if not chunk:
                        self.process.wait(STOP_TIMEOUT_S)
                        raise RuntimeError(self._failure(f"exited with status {self.process.returncode}"))
                    output += chunk
        line = output.decode(errors="replace").splitlines()[0].strip()
        if not line.startswith("ready rtsp://"):
            raise RuntimeError(self._failure(f"printed {line!r} instead of its ready line"))
        return line

    def _failure(self, what: str) -> str:
        path = self.stderr_path
        stderr = path.read_text(errors="replace") if path is not None and path.exists() else ""
        return f"the RTSP camera (scripts/rtsp_camera.py, {self.h264_file}) {what}; its stderr:\n{tail(stderr)}"

    def _terminate(self, sig: signal.Signals) -> None:
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_TIMEOUT_S)
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                pipe.close()
        self.process = None

    def kill(self) -> None:
        """SIGKILL, like a camera losing power: open connections end, new ones are refused. The port is kept."""
        self._terminate(signal.SIGKILL)

    def restart(self) -> RtspCamera:
        """Start again on the same port (after :meth:`kill`, or stop it first if it is running)."""
        self._terminate(signal.SIGTERM)
        return self.start()

    def stop(self) -> None:
        """SIGTERM (SIGKILL after STOP_TIMEOUT_S); idempotent. Removes the log directory if it was a private one."""
        self._terminate(signal.SIGTERM)
        self._remove_own_log_dir()

    def _remove_own_log_dir(self) -> None:
        if self._own_log_dir and self.log_dir is not None:
            shutil.rmtree(self.log_dir, ignore_errors=True)
            self.log_dir = None

    def __enter__(self) -> RtspCamera:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()


class _StallingServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    camera: StalledHttpCamera


class _StallingHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # no Content-Length: the client reads until the connection closes, which it never
    server: _StallingServer

    def do_GET(self) -> None:
        camera = self.server.camera
        camera._connected(self.connection)
        try:
            self.send_response(200)
            self.send_header("Content-Type", "video/mp2t")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            camera._send(self.wfile)
            camera._stall(self.connection)
        except OSError:  # the client went away
            pass
        finally:
            camera._disconnected(self.connection)

    def log_message(self, format: str, *args: object) -> None:
        pass


class StalledHttpCamera:
    """An HTTP camera that serves the first ``stall_after_s`` seconds of a clip as MPEG-TS, then stalls.

    Every GET gets the same response: the clip's first ``stall_after_s`` seconds of H.264 (copied, or re-encoded
    with libx264 if the clip is not H.264) in MPEG-TS, at once or, with ``paced=True``, spread over
    ``stall_after_s`` seconds; then the connection stays open and silent until the client closes it or
    :meth:`close` is called. ``connections`` counts GETs received, ``open_connections`` those still held.
    """

    def __init__(
        self, clip: Path, stall_after_s: float = 2.0, *, paced: bool = False, workdir: Path | None = None
    ) -> None:
        if stall_after_s <= 0:
            raise ValueError("stall_after_s must be positive")
        self.stall_after_s = stall_after_s
        self.paced = paced
        own_dir = workdir is None
        directory = Path(tempfile.mkdtemp(prefix="stalled-http-camera-")) if workdir is None else Path(workdir)
        directory.mkdir(parents=True, exist_ok=True)
        ts = directory / f"{Path(clip).stem}-{stall_after_s:g}s.ts"
        codec = ["-c:v", "copy"] if video_stream_info(clip).get("codec_name") == "h264" else ["-c:v", "libx264"]
        try:
            run_ffmpeg("-i", str(clip), "-map", "0:v:0", "-t", f"{stall_after_s:g}", *codec, "-f", "mpegts", str(ts))
            self.payload = ts.read_bytes()
        finally:
            if own_dir:
                shutil.rmtree(directory, ignore_errors=True)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._closed = threading.Event()
        self._open: set[socket.socket] = set()
        self.connections = 0
        self._server = _StallingServer((HOST, 0), _StallingHandler)
        self._server.camera = self
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="stalled-http-camera", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/cam.ts"

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._open)

    def wait_for_connections(self, count: int, timeout_s: float) -> bool:
        """Wait until at least ``count`` connections have been received in all; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: self.connections >= count, timeout_s)

    def _connected(self, connection: socket.socket) -> None:
        with self._changed:
            self.connections += 1
            self._open.add(connection)
            self._changed.notify_all()

    def _disconnected(self, connection: socket.socket) -> None:
        with self._changed:
            self._open.discard(connection)
            self._changed.notify_all()

    def _send(self, out: io.BufferedIOBase) -> None:
        write = out.write
        if not self.paced:
            write(self.payload)
            return
        chunk = 188 * 64
        pieces = range(0, len(self.payload), chunk)
        started = time.monotonic()
        for index, offset in enumerate(pieces):
            if self._closed.is_set():
                return
            write(self.payload[offset : offset + chunk])
            pause = started + self.stall_after_s * (index + 1) / len(pieces) - time.monotonic()
            if pause > 0:
                self._closed.wait(pause)

    def _stall(self, connection: socket.socket) -> None:
        """Hold the connection open, sending nothing, until the client closes it or the camera is closed."""
        while not self._closed.is_set():
            readable, _, _ = select.select([connection], [], [], 0.1)
            if readable:
                try:
                    if not connection.recv(4096):
                        return  # the client closed its end
                except OSError:
                    return

    def close(self) -> None:
        """Stop serving and close every connection; idempotent."""
        if self._closed.is_set():
            return
        self._closed.set()
        with self._lock:
            held = list(self._open)
        for connection in held:  # unblock a handler stuck writing to a client that does not read
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(STOP_TIMEOUT_S)

    def __enter__(self) -> StalledHttpCamera:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


class RtspCameraFactory(Protocol):
    def __call__(self, clip: Path, port: int | None = None, *, fps: int = 30) -> RtspCamera: ...


class StalledHttpCameraFactory(Protocol):
    def __call__(self, clip: Path, stall_after_s: float = 2.0, *, paced: bool = False) -> StalledHttpCamera: ...


@pytest.fixture
def rtsp_camera_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RtspCameraFactory]:
    """Start RTSP cameras: ``make(clip, port=None, fps=30)`` returns a started :class:`RtspCamera`.

    ``clip`` is an Annex-B ``.h264``/``.264`` file, or any video file (converted with :func:`h264_annexb`). Every
    camera made is stopped at teardown; its stderr log stays in the test's temporary directory.
    """
    cameras: list[RtspCamera] = []
    workdir = tmp_path_factory.mktemp("rtsp-camera")

    def make(clip: Path, port: int | None = None, *, fps: int = 30) -> RtspCamera:
        clip = Path(clip)
        index = len(cameras)
        if clip.suffix.lower() not in (".h264", ".264"):
            clip = h264_annexb(clip, workdir / f"{index}-{clip.stem}.h264")
        camera = RtspCamera(clip, port, fps=fps, log_dir=workdir / f"camera-{index}")
        cameras.append(camera)
        return camera.start()

    try:
        yield make
    finally:
        for camera in cameras:
            camera.stop()


@pytest.fixture
def stalled_http_camera_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StalledHttpCameraFactory]:
    """Start stalling HTTP cameras: ``make(clip, stall_after_s=2.0, paced=False)`` returns a serving
    :class:`StalledHttpCamera`; all are closed at teardown."""
    cameras: list[StalledHttpCamera] = []
    workdir = tmp_path_factory.mktemp("stalled-http-camera")

    def make(clip: Path, stall_after_s: float = 2.0, *, paced: bool = False) -> StalledHttpCamera:
        camera = StalledHttpCamera(clip, stall_after_s, paced=paced, workdir=workdir / f"camera-{len(cameras)}")
        cameras.append(camera)
        return camera

    try:
        yield make
    finally:
        for camera in cameras:
            camera.close()
