"""``streamssl-serve`` / ``python -m serving``: embeddings and anomaly scores from the exported ONNX encoder."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ingest.cli.pending_service import pending_service_main


def main(argv: Sequence[str] | None = None) -> int:
    return pending_service_main(
        "streamssl-serve",
        "Serve embeddings and anomaly scores from the ONNX encoder (Open Inference Protocol) and Prometheus metrics.",
        "the serving node issue",
        argv,
    )


if __name__ == "__main__":
    sys.exit(main())
