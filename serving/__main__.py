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
from typing import Any

from ingest.runtime.commands import OnStop, run_command, start_logging, stop_on_signals
from ingest.runtime.flags import Flag, add_common_flags, add_flags, common_flags, given_settings
from ingest.runtime.settings import load_settings
from serving.config import ServingSettings

log = logging.getLogger("serving")


MODEL_FLAGS = (
    Flag("registry", metavar="DIR"),
    Flag("model", metavar="NAME"),
    Flag("version", metavar="V"),
    Flag("precision", help="model files to load"),
    Flag("providers", metavar="LIST", help="execution providers in order: tensorrt,cuda,openvino,cpu"),
    Flag("threads", metavar="N"),
    Flag("inter_op_threads", metavar="N"),
    Flag("reload_interval_s", name="--reload-interval", metavar="S"),
)
HTTP_FLAGS = (
    Flag("host", help="listen address"),
    Flag("port", metavar="N"),
    Flag("http", name="--no-http", help="stream mode only: no HTTP API"),
    Flag("token_file", metavar="F", help="require this bearer token (health endpoints stay open)"),
    Flag("max_body_bytes", metavar="N"),
)
BATCHING_FLAGS = (
    Flag("max_batch_size", metavar="N"),
    Flag("max_queue_delay_ms", metavar="MS"),
    Flag("max_queue", metavar="N"),
    Flag(
        "instances",
        metavar="N",
        help="batches run at once (with adaptive threads: at least one per core)",
    ),
    Flag("adaptive_threads", name="--no-adaptive-threads", help="always run every batch on all its threads"),
)
STREAM_FLAGS = (
    Flag("stream_topic", metavar="IN"),
    Flag("output_topic", metavar="OUT"),
    Flag("group_id", metavar="ID"),
)
SCORING_FLAGS = (
    Flag("scene_memory_dir", metavar="DIR"),
    Flag("scene_save_interval_s", name="--scene-save-interval", metavar="S"),
    Flag("scene_cameras", metavar="N"),
)
FLAGS = (*MODEL_FLAGS, *HTTP_FLAGS, *BATCHING_FLAGS, *STREAM_FLAGS, *SCORING_FLAGS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamssl-serve",
        description="Serve embeddings and anomaly scores from the ONNX encoder (Open Inference Protocol) and "
        "Prometheus metrics; optionally score windows from a bus topic (--stream-topic).",
    )
    # No --topic: the node reads windows only in stream mode, from --stream-topic.
    add_common_flags(parser, ServingSettings, topic=False)
    for title, flags in (
        ("model", MODEL_FLAGS),
        ("HTTP API", HTTP_FLAGS),
        ("batching", BATCHING_FLAGS),
        ("stream mode", STREAM_FLAGS),
        ("anomaly scoring", SCORING_FLAGS),
    ):
        add_flags(parser.add_argument_group(title), ServingSettings, flags)
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return given_settings(args, (*common_flags(topic=False), *FLAGS))


def run_serving(args: argparse.Namespace, on_stop: OnStop) -> int:
    """The node the parsed flags describe, until it is stopped (``on_stop`` is given its stop request); exit status."""
    from serving.errors import ModelLoadError
    from serving.node import ServingNode

    settings = load_settings(ServingSettings, args.config, _overrides(args))
    start_logging(settings)
    stop = threading.Event()
    on_stop(stop.set)
    node = ServingNode(settings)
    try:
        node.start()
    except ModelLoadError as error:
        print(f"streamssl-serve: cannot serve {settings.model} from {settings.registry}: {error}", file=sys.stderr)
        return 1
    try:
        while not stop.wait(0.5):  # a short wait: the main thread must run Python's signal handlers
            pass
    finally:
        node.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    on_stop = stop_on_signals("finishing in-flight work")
    return run_command("streamssl-serve", lambda: run_serving(args, on_stop))


if __name__ == "__main__":
    sys.exit(main())
