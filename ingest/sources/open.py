"""Choose the decoder for a source: PyAV, or OpenCV where PyAV cannot open it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from ingest.sources.errors import SourceOpenError
from ingest.sources.frames import DecodedFrame
from ingest.sources.opencv_source import opencv_frames
from ingest.sources.pyav_source import pyav_frames
from ingest.sources.read_ahead import read_ahead
from ingest.sources.spec import SourceSpec

log = logging.getLogger(__name__)

# When PyAV fails for one of these, OpenCV (FFmpeg underneath, too) would fail the same way: do not retry with it.
_NOT_A_DECODER_PROBLEM = (ConnectionError, TimeoutError, FileNotFoundError, PermissionError)


def open_source(
    spec: SourceSpec, stall_timeout_s: float, on_decode_error: Callable[[str], None]
) -> Iterator[DecodedFrame]:
    """Frames of ``spec``; with ``backend="auto"`` a source PyAV cannot open is retried with OpenCV."""
    if spec.backend == "opencv":
        yield from opencv_frames(spec, stall_timeout_s)
        return
    frames = pyav_frames(spec, stall_timeout_s, on_decode_error)
    if spec.read_ahead_frames:  # decoding runs ahead on its own thread while the caller converts
        frames = read_ahead(frames, spec.read_ahead_frames, name="decode")
    try:
        first = next(frames)
    except StopIteration:
        return
    except SourceOpenError as error:
        if spec.backend == "pyav" or isinstance(error.__cause__, _NOT_A_DECODER_PROBLEM):
            raise
        log.warning("PyAV cannot open %s (%s); trying OpenCV", spec.url, error)
        try:
            yield from opencv_frames(spec, stall_timeout_s)
        except SourceOpenError as fallback_error:
            raise SourceOpenError(f"{error}; OpenCV fallback: {fallback_error}") from fallback_error
        return
    yield first
    yield from frames
