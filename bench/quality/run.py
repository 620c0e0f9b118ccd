"""Quality benchmark: does the encoder learn, and do the serving node's anomaly scores find the events?

    python bench/quality/run.py [--minutes 5] [--seed 0] [--device auto|cpu|cuda] [--out results.json]
    python bench/quality/run.py --short --minutes 1        # the CI version: one camera, each event kind once
    python bench/quality/run.py --video FILE [--minutes 5]  # real footage: the label-free numbers only

The world (:mod:`bench.quality.world`): two trained cameras whose first 240 s hold no event (the trainer sees only
those), and a camera the trainer never sees; after their warm-up each has every kind of event twice (a wrong-way
vehicle, a stalled vehicle, a jam) while day turns to night. Training runs for ``--minutes`` on the embedded bus,
then exports and gates as in production. Scoring goes through the production code path: the serving node in stream
mode on the exported ONNX files, each camera's normal windows first (its warm-up), then its held-out ones.

Reported on held-out windows (counts given): AUROC and AUPRC of every score the node returns, per event kind and
overall, on the trained cameras and on the unseen one; the trainer's held-out order accuracy (24-way) and future
top-1 on the ONNX files; linear probes of the clip embedding against a random-init encoder and raw pixels
(:mod:`bench.quality.probes`); forgetting day → night → day with replay and without
(:mod:`bench.quality.forgetting`, ``--forgetting-minutes`` per phase, 0 skips it). Deterministic given ``--seed``
and the budget, up to thread timing in the data path (it decides the step count).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.quality.harness import demo_options, publish_windows, say, trainer_settings, write_heldout  # noqa: E402
from bench.quality.world import Camera, render, world  # noqa: E402
from ingest.bus import Bus, open_bus  # noqa: E402
from ingest.contract import Window  # noqa: E402
from ingest.registry import production_version  # noqa: E402
from ingest.tools.demo import pipeline  # noqa: E402
from ingest.tools.demo.scoring import EVENT_KINDS, SCORE_KINDS, auprc, auroc_table, window_events  # noqa: E402

WARMUP_WINDOWS = 150  # normal windows each camera is scored on before its held-out ones (its memory's warm-up)
EVAL_WINDOWS = 400  # held-out windows the trainer evaluates (a spread of the trained cameras')
PROBE_BLOCK = 10  # probes: windows go to fit/test in blocks of this many, 3 blocks of 5 to fit, so the two
# sets share the hour of day and the traffic but no window (a time split would test day probes on night)


def split(camera: Camera, windows: list[Window]) -> tuple[list[Window], list[Window]]:
    """(before the held-out part, the held-out part)."""
    before = [w for w in windows if w.pts_s[-1] < camera.held_out_from_s]
    return before, [w for w in windows if w.pts_s[0] >= camera.held_out_from_s]


def train(
    trained: list[Window], heldout: list[Window], options: pipeline.DemoOptions, bus: Bus, device: str
) -> dict[str, Any]:
    """The trainer with its defaults on the trained cameras' normal part, evaluated on their held-out windows."""
    from trainer.loop import Trainer

    publish_windows(bus, options.topic, trained)
    spread = heldout[:: max(1, len(heldout) // EVAL_WINDOWS)][:EVAL_WINDOWS]
    heldout_file = write_heldout(options.run_dir / "heldout.windows", spread)
    settings = trainer_settings(
        options.bus, options.topic, options.run_dir, heldout_file, len(spread), options.minutes, device
    )
    result = Trainer(settings, bus).run()
    gate = result.gate
    # Serving scores the production version, as it would in a deployment: the last export when the gate promoted
    # it, else the production version the gate kept (measured on the same held-out windows).
    production = production_version(settings.registry, settings.export.model_name)
    if gate is None or production is None:
        raise SystemExit(f"no production version after training: {result}")
    onnx = gate.candidate_metrics if gate.promoted else gate.production_metrics
    return {
        "steps": result.step,
        "exported_version": result.exported_version,
        "production_version": production,
        "last_gate": {"promoted": gate.promoted, "reasons": gate.reasons},
        "heldout_torch": result.last_eval,
        "heldout_onnx": dict(onnx),
        "registry": settings.registry,
        "version_dir": settings.registry / settings.export.model_name / production,
    }


def score(cameras: dict[str, list[Window]], registry: Path, options: pipeline.DemoOptions, bus: Bus) -> list[Any]:
    """Every camera's windows through the serving node's stream mode, in order; one result per window."""
    topic = f"{options.topic}.score"
    publish_windows(bus, topic, [w for windows in cameras.values() for w in windows])
    scoring = dataclasses.replace(options, topic=topic)
    node, results = pipeline.serve(scoring, bus, registry, sum(map(len, cameras.values())), say)
    node.stop()
    return results


def evaluate(results: list[dict[str, Any]], cameras: list[Camera], labels: dict[str, Any]) -> dict[str, Any]:
    """AUROC and AUPRC per score and event kind on these cameras' held-out windows, pooled (scores are per-camera
    calibrated, so pooling asks one threshold to serve every camera, as an operator's alert rule does)."""
    mine: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for index, camera in enumerate(cameras):
        # Events are matched per camera: each camera's results and events move to a time range of their own.
        offset = 100_000.0 * index
        own = [r for r in results if r["camera_id"] == camera.camera_id and r["pts_start_s"] >= camera.held_out_from_s]
        mine += [{**r, "pts_start_s": r["pts_start_s"] + offset, "pts_end_s": r["pts_end_s"] + offset} for r in own]
        events += [{**e, "start_s": e["start_s"] + offset, "end_s": e["end_s"] + offset}
                   for e in labels[camera.camera_id]["events"]]  # fmt: skip
    return {
        "cameras": [c.camera_id for c in cameras],
        "windows": len(mine),
        "event_windows": sum(1 for r in mine if window_events(r, events)),
        "per_kind_windows": {kind: sum(1 for r in mine if kind in window_events(r, events)) for kind in EVENT_KINDS},
        "auroc": auroc_table(mine, events),
        "auprc": auroc_table(mine, events, auprc),
    }


def probes(heldout: dict[str, list[Window]], labels: dict[str, Any], version_dir: Path) -> dict[str, Any]:
    """Linear probes on every camera's held-out windows, fitted and tested on interleaved blocks."""
    from bench.quality.probes import probe_report

    fit: list[Window] = []
    test: list[Window] = []
    for windows in heldout.values():
        for index, window in enumerate(windows):
            (fit if (index // PROBE_BLOCK) % 5 < 3 else test).append(window)
    return probe_report(fit, test, labels, version_dir)  # each window reads its own camera's labels


def run(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    cameras = world(args.seed, short=args.short)
    rendered = {c.camera_id: render(c, scratch, say, cache=not args.no_cache) for c in cameras}
    windows = {camera: w for camera, (w, _) in rendered.items()}
    labels = {camera: doc for camera, (_, doc) in rendered.items()}
    parts = {c.camera_id: split(c, windows[c.camera_id]) for c in cameras}
    trained_cams = [c for c in cameras if c.trained]
    train_windows = sorted((w for c in trained_cams for w in parts[c.camera_id][0]), key=lambda w: w.pts_s[0])
    heldout_trained = [w for c in trained_cams for w in parts[c.camera_id][1]]
    options = demo_options(scratch, f"embedded://quality-{uuid.uuid4().hex[:8]}", "quality.train", args.minutes)
    with open_bus(options.bus) as bus:
        say(f"training {args.minutes:g} min on {len(train_windows)} windows of {len(trained_cams)} camera(s)")
        trained = train(train_windows, heldout_trained, options, bus, args.device)
        order = {c.camera_id: parts[c.camera_id][0][-WARMUP_WINDOWS:] + parts[c.camera_id][1] for c in cameras}
        results = score(order, trained["registry"], options, bus)
    report: dict[str, Any] = {
        "seed": args.seed, "short": args.short, "training_minutes": args.minutes, "device": args.device,
        "steps": trained["steps"], "production_version": trained["production_version"],
        "last_gate": trained["last_gate"], "heldout_torch": trained["heldout_torch"],
        "heldout_onnx": trained["heldout_onnx"],
        "trained_cameras": evaluate(results, trained_cams, labels),
        "unseen_cameras": evaluate(results, [c for c in cameras if not c.trained], labels),
    }  # fmt: skip
    if not args.short:
        say("linear probes")
        report["probes"] = probes({c: parts[c][1] for c in parts}, labels, trained["version_dir"])
    if args.forgetting_minutes > 0 and not args.short:
        from bench.quality.forgetting import day_night_windows, forgetting_report

        say(f"forgetting: day → night → day, {args.forgetting_steps} steps (at most {args.forgetting_minutes:g} min) "
             "per phase, with and without replay")  # fmt: skip
        day, night, heldout_day = day_night_windows(args.seed, scratch)
        report["forgetting"] = forgetting_report(
            day, night, heldout_day, args.forgetting_minutes, scratch, args.device, args.forgetting_steps
        )
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="training budget, wall clock (default 5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="the trainer's device")
    parser.add_argument("--short", action="store_true", help="the CI version: one camera, each event kind once")
    parser.add_argument("--video", type=Path, metavar="FILE", help="real footage: only the label-free numbers")
    parser.add_argument("--forgetting-minutes", type=float, default=3.0, metavar="M",
                        help="longest training per phase of the forgetting run (default 3; 0 skips it)")  # fmt: skip
    parser.add_argument("--forgetting-steps", type=int, default=150, metavar="N",
                        help="steps per phase, the same for both runs (default 150; the minutes cap them)")  # fmt: skip
    parser.add_argument("--no-cache", action="store_true", help="render the cameras afresh")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="quality-") as scratch_dir:
        if args.video is not None:
            from bench.quality.video import video_markdown, video_report

            report = video_report(args.video, args.minutes, Path(scratch_dir), args.device)
            text = video_markdown(report)
        else:
            report = run(args, Path(scratch_dir))
            text = markdown(report)
    report["wall_s"] = round(time.monotonic() - started)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(json.dumps(report, indent=2, default=str))
    print(text)
    return 0


def markdown(report: dict[str, Any]) -> str:
    """The README tables: AUROC (and AUPRC, all events) per score and event kind; held-out pretext numbers; probes
    and forgetting where they ran."""
    lines = [
        "| cameras | score | all | wrong way | stalled | jam | AUPRC, all | windows (event windows) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in ("trained_cameras", "unseen_cameras"):
        part = report[name]
        if not part["windows"]:
            continue
        for kind in SCORE_KINDS:
            row = part["auroc"][kind]
            cells = " | ".join(_number(row[k]) for k in ("all", *EVENT_KINDS))
            lines.append(f"| {name.split('_')[0]} | `{kind}` | {cells} | {_number(part['auprc'][kind]['all'])} | "
                         f"{part['windows']} ({part['event_windows']}) |")  # fmt: skip
    onnx = report["heldout_onnx"]
    order = _number(report["heldout_torch"].get("order_accuracy"))
    future, gain = _number(onnx.get("future_top1")), _number(onnx.get("pixel_psnr_gain_db"))
    lines += ["", f"Production version {report['production_version']} after {report['steps']} steps, on "
              f"{_number(onnx.get('windows'), 0)} held-out windows: future top-1 {future} and pixel head {gain} dB "
              f"over copy-last (ONNX); order accuracy {order} (PyTorch, last step; chance 0.042)"]  # fmt: skip
    if "probes" in report:
        from bench.quality.probes import probe_markdown

        lines += ["", probe_markdown(report["probes"])]
    if "forgetting" in report:
        from bench.quality.forgetting import forgetting_markdown

        lines += ["", forgetting_markdown(report["forgetting"])]
    return "\n".join(lines)


def _number(value: Any, digits: int = 2) -> str:
    return "n/a" if value is None else f"{float(value):.{digits}f}"


if __name__ == "__main__":
    sys.exit(main())
