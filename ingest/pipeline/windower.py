"""Cut one camera's sampled frames into windows of T frames with stride S, never across a discontinuity."""

from __future__ import annotations

from collections import deque

import numpy as np
import numpy.typing as npt

from ingest.contract import DEFAULT_JPEG_QUALITY, FrameCodec, Window


class Windower:
    """Accumulates sampled frames and emits a :class:`Window` every ``stride`` frames once ``length`` are held.

    ``break_segment`` (a reconnect, a timestamp jump, a source restart) drops the partial window and starts a new
    segment, so no window ever spans the gap. Sequence numbers keep increasing across segments.
    """

    def __init__(
        self,
        camera_id: str,
        *,
        length: int,
        stride: int,
        fps: float,
        run_id: str,
        first_sequence: int = 0,
        codec: FrameCodec = FrameCodec.JPEG,
        quality: int = DEFAULT_JPEG_QUALITY,
    ) -> None:
        if length < 1 or stride < 1:
            raise ValueError(f"window length and stride must be at least 1, got {length} and {stride}")
        self.camera_id = camera_id
        self.length = length
        self.stride = stride
        self.fps = fps
        self.run_id = run_id
        self.codec = codec
        self.quality = quality
        self.next_sequence = first_sequence
        self.segment = 0
        self._frames: deque[tuple[float, float, npt.NDArray[np.uint8]]] = deque(maxlen=length)
        self._added_in_segment = 0
        self._unemitted = 0  # frames added since the last emitted window: in no window yet

    @property
    def pending_frames(self) -> int:
        return len(self._frames)

    def break_segment(self) -> int:
        """Start a new segment; return how many sampled frames are lost because no window will hold them."""
        dropped = self._unemitted
        if self._added_in_segment:
            self.segment += 1
        self._frames.clear()
        self._added_in_segment = 0
        self._unemitted = 0
        return dropped

    def add(self, time_s: float, capture_s: float, image: npt.NDArray[np.uint8]) -> Window | None:
        self._frames.append((time_s, capture_s, image))
        self._added_in_segment += 1
        self._unemitted += 1
        beyond = self._added_in_segment - self.length
        if beyond < 0 or beyond % self.stride:
            return None
        sequence = self.next_sequence
        self.next_sequence += 1
        self._unemitted = 0
        return Window(
            camera_id=self.camera_id,
            sequence=sequence,
            window_id=f"{self.camera_id}:{self.run_id}:{sequence}",
            frames=np.stack([frame for _, _, frame in self._frames]),
            pts_s=np.array([t for t, _, _ in self._frames]),
            capture_time_s=np.array([c for _, c, _ in self._frames]),
            fps=self.fps,
            segment=self.segment,
            codec=self.codec,
            quality=self.quality,
        )
