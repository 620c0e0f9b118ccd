"""``streamssl-train`` / ``python -m trainer``: continual self-supervised training from windows on the bus.

    streamssl-train --bus kafka://HOST:PORT --topic T --registry DIR --checkpoint-dir DIR \\
        [--max-steps N] [--eval-every N] [--export-every N] [--device auto|cpu|cuda] [--metrics-port N]

Runs until SIGTERM/SIGINT (then checkpoints, commits and exits 0), or, with ``--max-steps``, until that step: then
it checkpoints, exports, runs the promotion gate and exits 0. Multi-process: ``torchrun --nproc-per-node N -m
trainer ...`` (every rank joins the same consumer group; rank 0 checkpoints, evaluates and exports).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from ingest.bus import open_bus
from ingest.runtime.commands import OnStop, run_command, start_logging, stop_on_signals
from ingest.runtime.flags import Flag, add_common_flags, add_flags, common_flags, given_settings
from ingest.runtime.settings import load_settings
from trainer.config import TrainerSettings

log = logging.getLogger("trainer")


FLAGS = (
    Flag("registry", metavar="DIR"),
    Flag("checkpoint_dir", metavar="DIR"),
    Flag("max_steps", metavar="N"),
    Flag("max_minutes", metavar="M"),
    Flag("eval_every", metavar="N", help="evaluate on held-out windows every N steps"),
    Flag("export_every", metavar="N", help="export and run the promotion gate every N steps"),
    Flag("device", help="auto: CUDA when present"),
    Flag("threads", metavar="N"),
    Flag("compile"),
    Flag("data.group_id", metavar="ID"),
    Flag("data.batch_size", metavar="N"),
    Flag("data.journal", metavar="FILE"),
    Flag("checkpoint.every_steps", name="--checkpoint-every", metavar="N", help="checkpoint every N steps"),
    Flag("eval.topic", name="--eval-topic", metavar="NAME"),
    Flag("eval.file", name="--eval-file", metavar="FILE"),
    Flag("export.model_name", metavar="NAME", help="registry model name"),
    Flag("export.int8"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamssl-train",
        description="Learn a frame/clip encoder from windows on the bus without labels (future prediction, temporal "
        "order, next-frame pixels); checkpoint with exact resume; export to an ONNX model registry behind a "
        "promotion gate.",
    )
    add_common_flags(parser, TrainerSettings)
    group = parser.add_argument_group("trainer (every setting also in --config: see trainer/config.py)")
    add_flags(group, TrainerSettings, FLAGS)
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return given_settings(args, (*common_flags(), *FLAGS))


def run_trainer(args: argparse.Namespace, on_stop: OnStop) -> int:
    """The trainer the parsed flags describe, until it stops (``on_stop`` is given its stop request); exit status."""
    from ingest.registry import RegistryError
    from ingest.runtime.telemetry_server import serve_telemetry
    from trainer.checkpoint import CheckpointError
    from trainer.distributed import local_rank
    from trainer.loop import Trainer

    settings = load_settings(TrainerSettings, args.config, _overrides(args))
    start_logging(settings)
    with open_bus(settings.bus, settings.kafka) as bus:
        trainer = Trainer(settings, bus)
        on_stop(trainer.request_stop)
        # One port per process under torchrun: the base port plus the local rank.
        port = settings.metrics_port + local_rank() if settings.metrics_port else None
        with serve_telemetry(port, trainer.metrics.registry, trainer.ready):
            try:
                result = trainer.run()
            except (CheckpointError, RegistryError) as error:
                print(f"streamssl-train: error: {error}", file=sys.stderr)
                return 1
    gate = result.gate
    log.info(
        "stopped at step %d (%d this run); exported version %s%s",
        result.step,
        result.steps_this_run,
        result.exported_version or "none",
        f"; gate {'promoted' if gate.promoted else 'refused'} it" if gate else "",
    )
    if result.export_error is not None:
        print(
            f"streamssl-train: error: the export at the end of the run failed ({result.export_error}); "
            f"training up to step {result.step} is checkpointed and resumes from there",
            file=sys.stderr,
        )
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    on_stop = stop_on_signals("finishing the step, checkpointing and committing")
    return run_command("streamssl-train", lambda: run_trainer(args, on_stop))


if __name__ == "__main__":
    sys.exit(main())
