"""A decoded frame as it leaves a source, before sampling decides whether it is worth converting."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class DecodedFrame:
    """One decoded frame. ``image`` is a PyAV ``VideoFrame`` (not yet converted) or an OpenCV BGR array.

    Attributes:
        pts_s: Presentation time on the source's clock, None when the source gave none.
        arrival_s: Wall-clock (Unix) time the frame left the decoder.
    """

    pts_s: float | None
    arrival_s: float
    image: object

    @property
    def is_array(self) -> bool:
        return isinstance(self.image, np.ndarray)

    def as_array(self) -> npt.NDArray[np.uint8]:
        assert isinstance(self.image, np.ndarray)
        return self.image
