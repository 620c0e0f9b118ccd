"""What can go wrong with a camera. Every error is recoverable by reconnecting, except a file that ended."""

from __future__ import annotations


class SourceError(Exception):
    """Root of the source errors; the message names the camera URL and the cause."""


class SourceOpenError(SourceError):
    """The source could not be opened (refused, not found, no video stream, open timeout)."""


class SourceReadError(SourceError):
    """The connection broke while reading."""


class SourceStalledError(SourceError):
    """The connection is open but no frame arrived within the stall timeout."""


class SourceEndedError(SourceError):
    """A live source closed its stream (a file that ends is not an error: its iterator simply finishes)."""
