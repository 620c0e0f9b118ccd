"""``streamssl-train`` / ``python -m trainer``: continual self-supervised training from windows on the bus."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ingest.cli.pending_service import pending_service_main


def main(argv: Sequence[str] | None = None) -> int:
    return pending_service_main(
        "streamssl-train",
        "Learn a frame/clip encoder from windows on the bus without labels; export it to an ONNX registry.",
        "the continual trainer issue",
        argv,
    )


if __name__ == "__main__":
    sys.exit(main())
