"""H.264 MP4 writing through PyAV (libx264, yuv420p) with fixed settings, so the bitstream is reproducible."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np
import numpy.typing as npt


class H264Writer:
    """Write RGB uint8 frames of one size to an MP4 at a constant frame rate.

    Everything that could change the bitstream is pinned: encoder preset, CRF, thread count and type,
    a closed fixed GOP without scene-cut keyframes and without B-frames (like a surveillance camera).
    """

    def __init__(
        self,
        path: Path,
        width: int,
        height: int,
        fps: int,
        crf: int = 23,
        preset: str = "veryfast",
        threads: int = 2,
        keyframe_interval: int = 60,
    ) -> None:
        self.path = path
        self.width = width
        self.height = height
        self.frames = 0
        self._open = True
        self._container = av.open(str(path), mode="w", format="mp4")
        try:
            gop = max(1, keyframe_interval)
            stream = self._container.add_stream(
                "libx264",
                rate=fps,
                options={
                    "preset": preset,
                    "crf": str(crf),
                    "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0:open-gop=0",
                },
            )
            stream.width = width
            stream.height = height
            stream.pix_fmt = "yuv420p"
            stream.time_base = Fraction(1, fps)
            stream.codec_context.thread_count = threads
            stream.codec_context.thread_type = "FRAME"
        except Exception:
            self._container.close()
            raise
        self._stream = stream

    def write(self, rgb: npt.NDArray[np.uint8]) -> None:
        if rgb.shape != (self.height, self.width, 3) or rgb.dtype != np.uint8:
            raise ValueError(f"expected a {self.height}x{self.width}x3 uint8 frame, got {rgb.shape} {rgb.dtype}")
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts = self.frames
        self._container.mux(self._stream.encode(frame))
        self.frames += 1

    def close(self) -> None:
        if not self._open:
            return
        self._open = False
        try:
            self._container.mux(self._stream.encode(None))
        finally:
            self._container.close()

    def __enter__(self) -> H264Writer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
