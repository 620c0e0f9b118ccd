"""The primary decoder: PyAV (FFmpeg) with threaded decoding, per-read timeouts and corrupt-packet skipping."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import av
import av.error

from ingest.sources.errors import SourceOpenError, SourceReadError, SourceStalledError
from ingest.sources.frames import DecodedFrame
from ingest.sources.spec import SourceKind, SourceSpec

log = logging.getLogger(__name__)


def _open_options(spec: SourceSpec) -> tuple[dict[str, str], str | None]:
    if spec.kind is SourceKind.RTSP:
        return {"rtsp_transport": spec.rtsp_transport}, None
    if spec.kind is SourceKind.V4L2:
        return {}, "v4l2"
    if spec.kind is SourceKind.HTTP:
        # Live HTTP streams drop; let FFmpeg's own reconnect handle short blips before we tear down.
        return {"reconnect": "1", "reconnect_streamed": "1", "reconnect_delay_max": "2"}, None
    return {}, None


def pyav_frames(
    spec: SourceSpec, stall_timeout_s: float, on_decode_error: Callable[[str], None]
) -> Iterator[DecodedFrame]:
    """Yield decoded, unconverted frames until the source ends.

    Raises :class:`SourceOpenError` if it cannot be opened, :class:`SourceStalledError` if no frame arrives within
    ``stall_timeout_s`` (or a read blocks past ``spec.read_timeout_s``), :class:`SourceReadError` if the connection
    breaks. A packet that does not decode is reported through ``on_decode_error`` and skipped.
    """
    options, container_format = _open_options(spec)
    try:
        container: Any = av.open(
            spec.url,
            format=container_format,
            options=options,
            timeout=(spec.open_timeout_s, spec.read_timeout_s),
        )
    except av.error.FFmpegError as error:
        raise SourceOpenError(f"cannot open {spec.url}: {error}") from error
    except OSError as error:
        raise SourceOpenError(f"cannot open {spec.url}: {error}") from error
    try:
        if not container.streams.video:
            raise SourceOpenError(f"{spec.url} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.thread_count = spec.decode_threads
        if spec.skip_loop_filter:
            # The deblocking filter smooths block edges that the scale to window size averages away anyway; it is
            # a large share of an H.264 decoder's work at substream sizes. Codecs without one ignore the option.
            stream.codec_context.options = {"skip_loop_filter": "all"}
        last_frame_at = time.monotonic()
        pace = _Pacer() if spec.realtime else None
        packets = container.demux(stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.error.ExitError as error:  # the interrupt callback fired: a read blocked past its timeout
                raise SourceStalledError(f"{spec.url}: no data for {spec.read_timeout_s:g} s ({error})") from error
            except av.error.EOFError:
                return
            except av.error.InvalidDataError as error:
                on_decode_error(f"demux: {error}")
                continue
            except (av.error.FFmpegError, OSError) as error:
                raise SourceReadError(f"{spec.url}: read failed: {error}") from error
            try:
                frames = packet.decode()
            except av.error.FFmpegError as error:
                on_decode_error(f"decode: {error}")
                frames = []
            now = time.monotonic()
            if not frames and now - last_frame_at > stall_timeout_s:
                raise SourceStalledError(f"{spec.url}: connection open but no frame for {now - last_frame_at:.1f} s")
            for frame in frames:
                pts_s = frame.time
                if pace is not None and pts_s is not None:
                    pace.wait_for(pts_s)
                yield DecodedFrame(pts_s, time.time(), frame)
                # Timed after the caller is done with the frame: a caller that held us up (a file waiting for its
                # publisher) is not the source stalling.
                last_frame_at = time.monotonic()
    finally:
        container.close()


class _Pacer:
    """Sleeps so frames come out at the pace of their PTS (a file played like a live camera)."""

    def __init__(self) -> None:
        self._origin: tuple[float, float] | None = None

    def wait_for(self, pts_s: float) -> None:
        now = time.monotonic()
        if self._origin is None or pts_s < self._origin[1]:
            self._origin = (now, pts_s)
            return
        delay = self._origin[0] + (pts_s - self._origin[1]) - now
        if delay > 0:
            time.sleep(delay)
