"""``streamssl-ingest`` / ``python -m ingest``: camera streams to windows on the bus."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ingest.cli.pending_service import pending_service_main


def main(argv: Sequence[str] | None = None) -> int:
    return pending_service_main(
        "streamssl-ingest",
        "Decode camera streams (RTSP, HTTP, files, webcams) into frame-sequence windows on the bus.",
        "the ingest service issue",
        argv,
    )


if __name__ == "__main__":
    sys.exit(main())
