"""``streamssl demo``: flags, the run directory, the final summary, and serving until Ctrl-C."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ingest.bus import Bus, open_bus
from ingest.registry import DEFAULT_MODEL_NAME
from ingest.runtime.commands import on_stop_signals, run_command, start_logging
from ingest.runtime.flags import add_common_flags, common_flags, given_settings
from ingest.runtime.settings import CommonSettings, load_settings
from ingest.tools.demo import pipeline, samples

STAGES = 6


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the whole pipeline (ingest → trainer → serving) on a synthetic clip, then write a report",
        description="Render a synthetic traffic clip with labelled events (or take --source), run ingest → bus → "
        "trainer → export + promotion gate → registry → serving (stream mode and HTTP) in this process for a "
        "bounded time, score every window, measure the anomaly AUROC against the clip's labels and write an HTML "
        "report. Then serving stays up until Ctrl-C (--exit: stop at once).",
    )
    add_common_flags(parser, CommonSettings)
    demo = parser.add_argument_group("demo")
    demo.add_argument("--source", metavar="FILE|URL", help="a camera instead of the synthetic clip (no labels)")
    demo.add_argument("--seconds", type=float, default=60.0, help="length of the synthetic clip (default 60)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the synthetic clip (default 0)")
    demo.add_argument("--minutes", type=float, default=4.0, help="time budget of the whole run (default 4)")
    demo.add_argument("--run-dir", type=Path, help="where the run is written (default: a new temporary directory)")
    demo.add_argument("--port", type=int, default=0, help="serving HTTP port (default 0: any free port)")
    demo.add_argument("--exit", action="store_true", help="stop when done instead of serving until Ctrl-C")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    def action() -> int:
        overrides = given_settings(args, common_flags())
        overrides["bus"] = overrides.get("bus") or "embedded://demo"
        settings = load_settings(CommonSettings, args.config, overrides)
        start_logging(settings)
        if args.minutes <= 0 or args.seconds <= 0:
            raise ValueError("--minutes and --seconds must be positive")
        run_dir = args.run_dir or Path(tempfile.mkdtemp(prefix="streamssl-demo-"))
        run_dir.mkdir(parents=True, exist_ok=True)
        options = pipeline.DemoOptions(
            run_dir=run_dir, source=args.source, seconds=args.seconds, seed=args.seed, minutes=args.minutes,
            port=args.port, bus=settings.bus, topic=settings.topic, kafka=settings.kafka,
        )  # fmt: skip
        with open_bus(settings.bus, settings.kafka) as bus:
            summary, node = run_pipeline(options, bus)
            try:
                finish(options, summary, node, args.exit)
            finally:
                if node is not None:
                    node.stop()
        return 0

    return run_command("streamssl demo", action)


def run_pipeline(options: pipeline.DemoOptions, bus: Bus) -> tuple[dict[str, Any], Any]:
    """Every stage in order; the summary and the serving node (still running) or None."""
    stage = _Stages()
    stage.next("camera")
    url, events = pipeline.make_clip(options, stage.say)
    stage.next("ingest")
    published = pipeline.ingest(options, bus, url, stage.say)
    stage.next("training")
    trained = pipeline.train(options, bus, stage.say, published)
    summary: dict[str, Any] = {
        "source": url, "bus": options.bus, "minutes": options.minutes, "windows_published": published,
        "steps": trained["steps"], "production_version": trained["production_version"], "eval": trained["eval"],
        "model_input": None, "auroc": {}, "windows_scored": 0, "serving_url": None,
    }  # fmt: skip
    node = None
    if trained["production_version"] is not None:
        stage.next("serving")
        node, results = pipeline.serve(options, bus, trained["registry"], published, stage.say)
        spec = node.slot.current.metadata.input
        summary.update(
            model_input=f"{spec.width}x{spec.height}x{spec.channels}",
            windows_scored=len(results),
            serving_url=pipeline.serving_url(node),
            auroc=pipeline.write_scores(options.run_dir, results, events),
        )
        stage.next("samples")
        version_dir = trained["registry"] / DEFAULT_MODEL_NAME / trained["production_version"]
        samples.write_samples(options.run_dir, version_dir, samples.read_windows(bus, options.topic), results)
    else:
        stage.say("no version was promoted: nothing to serve (see trainer/eval.jsonl for the gate's reasons)")
    (options.run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    stage.next("report")
    summary["report"] = str(write_report(options.run_dir))
    return summary, node


def write_report(run_dir: Path) -> Path:
    from ingest.tools.report.command import write_report as render

    return render(run_dir)


def finish(options: pipeline.DemoOptions, summary: dict[str, Any], node: Any, exit_when_done: bool) -> None:
    """Print what the run gave; keep serving until Ctrl-C unless ``--exit``."""
    print(json.dumps(summary, indent=2, default=str))
    auroc = summary["auroc"].get("score", {}).get("all")
    print(
        f"demo done in {time.monotonic() - options.started:.0f} s: production version "
        f"{summary['production_version'] or 'none'}, {summary['windows_scored']} windows scored, anomaly AUROC "
        f"{'n/a' if auroc is None else f'{auroc:.2f}'} against the clip's labels\nreport: {summary['report']}",
        file=sys.stderr,
    )
    if node is None or exit_when_done:
        return
    stop = threading.Event()
    on_stop_signals(stop.set, "stopping the serving node")
    print(f"serving on {summary['serving_url']} (Open Inference Protocol); Ctrl-C stops it", file=sys.stderr)
    while not stop.wait(0.5):
        pass
    signal.signal(signal.SIGINT, signal.default_int_handler)


class _Stages:
    """Numbered stage lines on stderr, with the time since the demo started."""

    def __init__(self) -> None:
        self.number = 0
        self.started = time.monotonic()

    def next(self, name: str) -> None:
        self.number += 1
        self.say(f"[{self.number}/{STAGES}] {name}")

    def say(self, text: str) -> None:
        print(f"demo {time.monotonic() - self.started:5.0f} s | {text}", file=sys.stderr, flush=True)
