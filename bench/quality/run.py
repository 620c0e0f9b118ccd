"""Quality benchmark: does the encoder learn, and do the serving node's anomaly scores find the events?

    python bench/quality/run.py [--minutes 5] [--seed 0] [--out results.json]

The world: two synthetic cameras with every service's defaults. ``cam-a`` (trained on) runs 360 s: the trainer
sees only its first 180 s, which hold no event; its last 180 s (day turning to night, a wrong-way vehicle, a
stalled vehicle, a jam) are held out. ``cam-b`` is a camera the trainer never saw (another seed, another traffic
density): 60 s of warm-up, then 180 s with the same three kinds of event. Training runs for ``--minutes`` on the
embedded bus, then exports and gates as in production. Scoring goes through the production code path: the serving
node in stream mode on the exported ONNX files, each camera's last normal windows first (its per-camera warm-up),
then its held-out windows. Reported on the held-out windows (counts given): AUROC and AUPRC of every score the node
returns, per event kind and overall, on both cameras; the trainer's held-out order accuracy (24-way) and future
top-1. Deterministic given ``--seed`` and the budget (up to thread timing in the data path).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.trainer_fixtures import publish  # noqa: E402
from ingest.bus import Bus, KafkaSettings, open_bus  # noqa: E402
from ingest.contract import Window, encode_window  # noqa: E402
from ingest.contract.messages import window_message  # noqa: E402
from ingest.tools.demo import pipeline  # noqa: E402
from ingest.tools.demo.samples import read_windows  # noqa: E402
from ingest.tools.demo.scoring import EVENT_KINDS, SCORE_KINDS, auprc, auroc_table, window_events  # noqa: E402
from ingest.tools.synth.events import EventSpec  # noqa: E402

TRAIN_UNTIL_S = 180.0  # cam-a: training windows before, held-out after
WARMUP_WINDOWS = 40  # normal windows each camera is scored on before its held-out ones (per-camera statistics)


@dataclass(frozen=True)
class Camera:
    camera_id: str
    seed: int
    seconds: float
    traffic_density: float
    events: tuple[EventSpec, ...]
    held_out_from_s: float  # windows from here on are scored and counted


def world(seed: int) -> tuple[Camera, Camera]:
    trained = Camera("cam-a", seed, 360.0, 1.0, (
        EventSpec("wrong_way", 200.0, 8.0), EventSpec("stalled", 245.0, 14.0), EventSpec("jam", 300.0, 16.0),
    ), TRAIN_UNTIL_S)  # fmt: skip
    unseen = Camera("cam-b", seed + 101, 240.0, 1.4, (
        EventSpec("wrong_way", 90.0, 8.0), EventSpec("stalled", 130.0, 14.0), EventSpec("jam", 180.0, 16.0),
    ), 60.0)  # fmt: skip
    return trained, unseen


def render(camera: Camera, scratch: Path) -> tuple[list[Window], list[dict[str, Any]]]:
    """The camera's clip cut into windows by the ingest service with its defaults, and its labelled events."""
    from ingest.tools.synth import SynthConfig, generate_clip

    clip = scratch / f"{camera.camera_id}.mp4"
    config = SynthConfig(seconds=camera.seconds, seed=camera.seed, traffic_density=camera.traffic_density,
                         events=camera.events)  # fmt: skip
    labels = json.loads(generate_clip(config, clip).labels_path.read_text())
    name = f"quality-{uuid.uuid4().hex[:8]}"
    # (the budget only bounds how long ingest may take: a file ends long before)
    options = _options(scratch, f"embedded://{name}", f"render.{camera.camera_id}", minutes=10.0)
    with open_bus(options.bus) as bus:
        pipeline.ingest(options, bus, str(clip), _say)
        windows = sorted(read_windows(bus, options.topic).values(), key=lambda w: w.sequence)
    renamed = [_as_camera(window, camera.camera_id) for window in windows]
    return renamed, labels["events"]


def train(trained: list[Window], heldout: list[Window], options: pipeline.DemoOptions, bus: Bus) -> dict[str, Any]:
    """The trainer with its defaults on cam-a's first 180 s, evaluated on its held-out windows."""
    from trainer.config import TrainerSettings
    from trainer.data.window_file import write_windows_file
    from trainer.loop import Trainer

    _publish(bus, options.topic, trained)
    heldout_file = options.run_dir / "heldout.windows"
    write_windows_file(heldout_file, [encode_window(w) for w in heldout])
    settings = TrainerSettings(
        bus=options.bus, topic=options.topic, registry=options.run_dir / "registry",
        checkpoint_dir=options.run_dir / "trainer", max_minutes=options.minutes, eval_every=100,
        eval={"file": heldout_file, "max_windows": len(heldout)},
        data={"holdout_every": 0, "group_id": f"quality-{uuid.uuid4().hex[:8]}"},
    )  # fmt: skip
    result = Trainer(settings, bus).run()
    gate = result.gate
    return {
        "steps": result.step,
        "version": result.exported_version,
        "promoted": bool(gate and gate.promoted),
        "heldout_torch": result.last_eval,
        "heldout_onnx": dict(gate.candidate_metrics) if gate else {},
        "registry": settings.registry,
    }


def score(cameras: dict[str, list[Window]], registry: Path, options: pipeline.DemoOptions, bus: Bus) -> list[Any]:
    """Every camera's windows through the serving node's stream mode, in order; one result per window."""
    topic = f"{options.topic}.score"
    _publish(bus, topic, [w for windows in cameras.values() for w in windows])
    scoring = dataclasses.replace(options, topic=topic)
    node, results = pipeline.serve(scoring, bus, registry, sum(map(len, cameras.values())), _say)
    node.stop()
    return results


def evaluate(results: list[dict[str, Any]], camera: Camera, events: list[dict[str, Any]]) -> dict[str, Any]:
    """AUROC and AUPRC per score and event kind on the camera's held-out windows."""
    mine = [r for r in results if r["camera_id"] == camera.camera_id and r["pts_start_s"] >= camera.held_out_from_s]
    positives = sum(1 for r in mine if window_events(r, events))
    return {
        "windows": len(mine),
        "event_windows": positives,
        "per_kind_windows": {kind: sum(1 for r in mine if kind in window_events(r, events)) for kind in EVENT_KINDS},
        "auroc": auroc_table(mine, events),
        "auprc": auroc_table(mine, events, auprc),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="training budget, wall clock (default 5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="quality-") as scratch_dir:
        scratch = Path(scratch_dir)
        trained_cam, unseen_cam = world(args.seed)
        _say("rendering and ingesting the two cameras")
        windows_a, events_a = render(trained_cam, scratch)
        windows_b, events_b = render(unseen_cam, scratch)
        train_a = [w for w in windows_a if w.pts_s[-1] < TRAIN_UNTIL_S]
        heldout_a = [w for w in windows_a if w.pts_s[0] >= TRAIN_UNTIL_S]
        options = _options(scratch, f"embedded://quality-{uuid.uuid4().hex[:8]}", "quality.train", args.minutes)
        with open_bus(options.bus) as bus:
            _say(f"training {args.minutes:g} min on {len(train_a)} windows of cam-a")
            trained = train(train_a, heldout_a, options, bus)
            if not trained["promoted"]:
                raise SystemExit(f"the gate promoted nothing: {trained}")
            cameras = {"cam-a": train_a[-WARMUP_WINDOWS:] + heldout_a, "cam-b": windows_b}
            results = score(cameras, trained["registry"], options, bus)
    report = {
        "seed": args.seed,
        "training_minutes": args.minutes,
        "steps": trained["steps"],
        "heldout_torch": trained["heldout_torch"],
        "heldout_onnx": trained["heldout_onnx"],
        "trained_camera": evaluate(results, trained_cam, events_a),
        "unseen_camera": evaluate(results, unseen_cam, events_b),
        "wall_s": round(time.monotonic() - started),
    }
    if args.out:
        args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(json.dumps(report, indent=2, default=str))
    print(markdown(report))
    return 0


def markdown(report: dict[str, Any]) -> str:
    """The README table: AUROC per score and event kind on both cameras."""
    lines = [
        "| camera | score | all | wrong way | stalled | jam | windows (event windows) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name in ("trained_camera", "unseen_camera"):
        part = report[name]
        for kind in SCORE_KINDS:
            row = part["auroc"][kind]
            cells = " | ".join("n/a" if row[k] is None else f"{row[k]:.2f}" for k in ("all", *EVENT_KINDS))
            lines.append(f"| {name.split('_')[0]} | `{kind}` | {cells} | {part['windows']} ({part['event_windows']}) |")
    return "\n".join(lines)


def _options(scratch: Path, bus: str, topic: str, minutes: float) -> pipeline.DemoOptions:
    run_dir = scratch / topic
    run_dir.mkdir(parents=True, exist_ok=True)
    return pipeline.DemoOptions(run_dir=run_dir, source=None, seconds=0, seed=0, minutes=minutes, port=0, bus=bus,
                                topic=topic, kafka=KafkaSettings())  # fmt: skip


def _publish(bus: Bus, topic: str, windows: list[Window]) -> None:
    publish(bus, topic, [window_message(w) for w in windows], partitions=pipeline.PARTITIONS)


def _as_camera(window: Window, camera_id: str) -> Window:
    return dataclasses.replace(window, camera_id=camera_id, window_id=window.window_id.replace("demo-cam", camera_id))


def _say(text: str) -> None:
    print(f"quality | {text}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
