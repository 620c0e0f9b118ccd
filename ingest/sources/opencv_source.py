"""The fallback decoder: OpenCV's VideoCapture, for sources PyAV cannot open (e.g. some capture devices)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import cv2

from ingest.sources.errors import SourceOpenError, SourceStalledError
from ingest.sources.frames import DecodedFrame
from ingest.sources.spec import SourceKind, SourceSpec


def opencv_frames(spec: SourceSpec, stall_timeout_s: float) -> Iterator[DecodedFrame]:
    """Yield BGR frames with the capture's position as PTS (None when it reports none)."""
    target: str | int = spec.url
    if spec.kind is SourceKind.V4L2 and spec.url.removeprefix("/dev/video").isdigit():
        target = int(spec.url.removeprefix("/dev/video"))
    params = [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
        int(spec.open_timeout_s * 1000),
        cv2.CAP_PROP_READ_TIMEOUT_MSEC,
        int(spec.read_timeout_s * 1000),
    ]
    capture = cv2.VideoCapture(target, cv2.CAP_ANY, params)
    if not capture.isOpened():
        raise SourceOpenError(f"OpenCV cannot open {spec.url}")
    try:
        last_frame_at = time.monotonic()
        while True:
            ok, image = capture.read()
            if not ok:
                if not spec.is_live:
                    return  # end of file
                if time.monotonic() - last_frame_at > stall_timeout_s:
                    raise SourceStalledError(f"{spec.url}: no frame for {stall_timeout_s:g} s (OpenCV)")
                continue
            last_frame_at = time.monotonic()
            position_ms = capture.get(cv2.CAP_PROP_POS_MSEC)
            pts_s = position_ms / 1000.0 if position_ms > 0 or not spec.is_live else None
            yield DecodedFrame(pts_s, time.time(), image)
    finally:
        capture.release()
