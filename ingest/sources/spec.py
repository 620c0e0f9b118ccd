"""Where a camera's video comes from and how to read it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal
from urllib.parse import urlsplit


class SourceKind(StrEnum):
    FILE = "file"
    RTSP = "rtsp"
    HTTP = "http"
    V4L2 = "v4l2"


def source_kind(url: str) -> SourceKind:
    """Infer the kind of source from its URL: rtsp(s)://, http(s)://, /dev/videoN, anything else a file."""
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("rtsp", "rtsps"):
        return SourceKind.RTSP
    if scheme in ("http", "https"):
        return SourceKind.HTTP
    if url.startswith("/dev/video") or scheme == "v4l2":
        return SourceKind.V4L2
    return SourceKind.FILE


@dataclass(frozen=True)
class SourceSpec:
    """How to open one camera.

    Attributes:
        url: File path, ``rtsp://``, ``http(s)://`` (incl. HLS ``.m3u8``) or ``/dev/videoN``.
        rtsp_transport: RTSP over TCP (default: survives NAT and packet loss better) or UDP.
        open_timeout_s: Give up opening after this long.
        read_timeout_s: Give up a blocking read after this long (the connection is then treated as stalled).
        realtime: Pace a file at its own frame rate, as a live camera would deliver it.
        decode_threads: Decoder threads; 0 lets FFmpeg choose.
        read_ahead_frames: PyAV decodes up to this many frames ahead on a thread of its own; 0: on the caller's.
        skip_loop_filter: Decode without the in-loop deblocking filter (H.264, HEVC): ~10–35 % less decoder CPU;
            after the scale to window size the frames differ from a full decode by less than JPEG at quality 90
            changes them.
        backend: ``pyav`` first; ``opencv`` as the fallback for sources PyAV cannot open; ``auto`` tries both.
    """

    url: str
    rtsp_transport: Literal["tcp", "udp"] = "tcp"
    open_timeout_s: float = 10.0
    read_timeout_s: float = 10.0
    realtime: bool = False
    decode_threads: int = 0
    read_ahead_frames: int = 4
    skip_loop_filter: bool = True
    backend: Literal["auto", "pyav", "opencv"] = "auto"

    @property
    def kind(self) -> SourceKind:
        return source_kind(self.url)

    @property
    def is_live(self) -> bool:
        return self.kind is not SourceKind.FILE
