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
from pathlib import Path
from typing import Any

from ingest.bus import open_bus
from ingest.runtime.commands import add_common_arguments, common_overrides, on_stop_signals, run_command, start_logging
from ingest.runtime.settings import load_settings

log = logging.getLogger("trainer")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamssl-train",
        description="Learn a frame/clip encoder from windows on the bus without labels (future prediction, temporal "
        "order, next-frame pixels); checkpoint with exact resume; export to an ONNX model registry behind a "
        "promotion gate.",
    )
    add_common_arguments(parser)
    group = parser.add_argument_group("trainer (also in --config: see trainer/config.py)")
    group.add_argument("--registry", type=Path, metavar="DIR", help="model registry directory")
    group.add_argument("--checkpoint-dir", type=Path, metavar="DIR", help="checkpoints, config and eval log")
    group.add_argument("--max-steps", type=int, metavar="N", help="stop after N steps: export, gate, exit 0")
    group.add_argument("--eval-every", type=int, metavar="N", help="evaluate on held-out windows every N steps")
    group.add_argument("--export-every", type=int, metavar="N", help="export and gate every N steps")
    group.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default auto (CUDA when present)")
    group.add_argument("--threads", type=int, metavar="N", help="torch CPU threads per process (default 2)")
    group.add_argument("--group-id", metavar="ID", help="consumer group (default streamssl-trainer)")
    group.add_argument("--batch-size", type=int, metavar="N", help="windows per step and process (default 16)")
    group.add_argument("--checkpoint-every", type=int, metavar="N", help="checkpoint every N steps (default 100)")
    group.add_argument("--eval-topic", metavar="NAME", help="held-out windows from this topic")
    group.add_argument("--eval-file", type=Path, metavar="FILE", help="held-out windows from a windows file")
    group.add_argument("--model-name", metavar="NAME", help="registry model name (default streamssl-encoder)")
    group.add_argument("--int8", action="store_true", default=None, help="also publish an INT8 frame encoder")
    group.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    group.add_argument("--journal", type=Path, metavar="FILE", help="log every record taken (JSON lines)")
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides = common_overrides(args)
    overrides.update(
        registry=args.registry,
        checkpoint_dir=args.checkpoint_dir,
        max_steps=args.max_steps,
        eval_every=args.eval_every,
        export_every=args.export_every,
        device=args.device,
        threads=args.threads,
        compile=args.compile,
    )
    sections = {
        "data": {"group_id": args.group_id, "batch_size": args.batch_size, "journal": args.journal},
        "checkpoint": {"every_steps": args.checkpoint_every},
        "eval": {"topic": args.eval_topic, "file": args.eval_file},
        "export": {"model_name": args.model_name, "int8": args.int8},
    }
    for name, values in sections.items():
        given = {key: value for key, value in values.items() if value is not None}
        if given:
            overrides[name] = given
    return overrides


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def action() -> int:
        from ingest.registry import RegistryError
        from ingest.runtime.telemetry_server import TelemetryServer
        from trainer.checkpoint import CheckpointError
        from trainer.config import TrainerSettings
        from trainer.distributed import local_rank
        from trainer.export_onnx import ParityError
        from trainer.loop import Trainer

        settings = load_settings(TrainerSettings, args.config, _overrides(args))
        start_logging(settings)
        with open_bus(settings.bus, settings.kafka) as bus:
            trainer = Trainer(settings, bus)

            on_stop_signals(trainer.request_stop, "finishing the step, checkpointing and committing")
            telemetry = None
            if settings.metrics_port:
                # One port per process under torchrun: the base port plus the local rank.
                port = settings.metrics_port + local_rank()
                telemetry = TelemetryServer(port, trainer.metrics.registry, trainer.ready).start()
                log.info("metrics on :%d/metrics, probes on /healthz and /readyz", telemetry.port)
            try:
                result = trainer.run()
            except (CheckpointError, RegistryError, ParityError) as error:
                print(f"streamssl-train: error: {error}", file=sys.stderr)
                return 1
            finally:
                if telemetry is not None:
                    telemetry.stop()
        gate = result.gate
        log.info(
            "stopped at step %d (%d this run); exported version %s%s",
            result.step,
            result.steps_this_run,
            result.exported_version or "none",
            f"; gate {'promoted' if gate.promoted else 'refused'} it" if gate else "",
        )
        return 0

    return run_command("streamssl-train", action)


if __name__ == "__main__":
    sys.exit(main())
