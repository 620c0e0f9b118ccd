"""Camera sources: open a URL (file, RTSP, HTTP/HLS, V4L2 webcam) and yield decoded frames with their timing."""

from ingest.sources.errors import SourceEndedError, SourceError, SourceOpenError, SourceReadError, SourceStalledError
from ingest.sources.frames import DecodedFrame
from ingest.sources.open import open_source
from ingest.sources.spec import SourceKind, SourceSpec

__all__ = [
    "DecodedFrame",
    "SourceEndedError",
    "SourceError",
    "SourceKind",
    "SourceOpenError",
    "SourceReadError",
    "SourceSpec",
    "SourceStalledError",
    "open_source",
]
