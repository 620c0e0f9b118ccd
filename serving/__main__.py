"""``streamssl-serve`` / ``python -m serving``: embeddings and anomaly scores from the exported ONNX encoder.

Serves the Open Inference Protocol over HTTP (``--port``), and/or scores windows from a bus topic (``--bus URL
--stream-topic IN --output-topic OUT``), from the model registry (``--registry DIR --model NAME``), following its
production pointer or a pinned ``--version``. SIGTERM/SIGINT: finish in-flight work, commit, exit 0.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ingest.runtime.commands import add_common_arguments, common_overrides, on_stop_signals, run_command, start_logging
from ingest.runtime.settings import load_settings

log = logging.getLogger("serving")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamssl-serve",
        description="Serve embeddings and anomaly scores from the ONNX encoder (Open Inference Protocol) and "
        "Prometheus metrics; optionally score windows from a bus topic.",
    )
    add_common_arguments(parser)
    model = parser.add_argument_group("model")
    model.add_argument("--registry", type=Path, metavar="DIR", help="model registry directory")
    model.add_argument("--model", metavar="NAME", help="registry model name (default streamssl-encoder)")
    model.add_argument("--version", metavar="V", help="pin this version (default: follow the production pointer)")
    model.add_argument("--precision", choices=["fp32", "int8"], help="model files to load (default fp32)")
    model.add_argument("--providers", metavar="LIST", help="execution providers in order: tensorrt,cuda,openvino,cpu")
    model.add_argument("--threads", type=int, metavar="N", help="onnxruntime intra-op threads (0 = all cores)")
    model.add_argument("--inter-op-threads", type=int, metavar="N", help="onnxruntime inter-op threads")
    model.add_argument("--reload-interval", type=float, metavar="S", help="registry poll interval (default 10 s)")
    http = parser.add_argument_group("HTTP API")
    http.add_argument("--host", help="listen address (default 0.0.0.0)")
    http.add_argument("--port", type=int, metavar="N", help="listen port (default 8080; 0 = any free port)")
    http.add_argument("--no-http", dest="http", action="store_false", default=None, help="stream mode only")
    http.add_argument("--token-file", type=Path, metavar="F", help="require this bearer token (health stays open)")
    http.add_argument("--max-body-bytes", type=int, metavar="N", help="larger bodies get 413 (default 16 MiB)")
    batching = parser.add_argument_group("batching")
    batching.add_argument("--max-batch-size", type=int, metavar="N", help="images per batch (default 32)")
    batching.add_argument("--max-queue-delay-ms", type=float, metavar="MS", help="wait to fill a batch (default 2)")
    batching.add_argument("--max-queue", type=int, metavar="N", help="queued requests before 503 (default 256)")
    batching.add_argument(
        "--instances",
        type=int,
        metavar="N",
        help="batches run at once (default 1); on a small CPU box, N = cores with --threads 1 serves the most",
    )
    stream = parser.add_argument_group("stream mode")
    stream.add_argument("--stream-topic", metavar="IN", help="consume windows from this topic")
    stream.add_argument("--output-topic", metavar="OUT", help="publish results here (default streamssl.scores)")
    stream.add_argument("--group-id", metavar="ID", help="consumer group (default streamssl-serve.<model>)")
    return parser


_FLAGS = {
    "registry": "registry",
    "model": "model",
    "version": "version",
    "precision": "precision",
    "providers": "providers",
    "threads": "threads",
    "inter_op_threads": "inter_op_threads",
    "reload_interval": "reload_interval_s",
    "host": "host",
    "port": "port",
    "http": "http",
    "token_file": "token_file",
    "max_body_bytes": "max_body_bytes",
    "max_batch_size": "max_batch_size",
    "max_queue_delay_ms": "max_queue_delay_ms",
    "max_queue": "max_queue",
    "instances": "instances",
    "stream_topic": "stream_topic",
    "output_topic": "output_topic",
    "group_id": "group_id",
}


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {**common_overrides(args), **{field: getattr(args, flag) for flag, field in _FLAGS.items()}}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def action() -> int:
        from serving.config import ServingSettings
        from serving.errors import ModelLoadError
        from serving.node import ServingNode

        settings = load_settings(ServingSettings, args.config, _overrides(args))
        start_logging(settings)
        stop = threading.Event()

        on_stop_signals(stop.set, "finishing in-flight work")
        node = ServingNode(settings)
        try:
            node.start()
        except ModelLoadError as error:
            print(f"streamssl-serve: cannot serve {settings.model} from {settings.registry}: {error}", file=sys.stderr)
            return 1
        try:
            while not stop.wait(0.5):
                pass
        finally:
            node.stop()
        return 0

    return run_command("streamssl-serve", action)


if __name__ == "__main__":
    sys.exit(main())
