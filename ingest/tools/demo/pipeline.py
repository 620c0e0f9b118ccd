"""The demo's stages, one function each, in the order a window travels: camera → ingest → trainer → registry →
serving → scores. Everything runs in this process, on the bus the options name (embedded by default)."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from ingest.bus import Bus, KafkaSettings
from ingest.registry import DEFAULT_MODEL_NAME, production_version
from ingest.service.config import CameraConfig, IngestSettings
from ingest.service.service import IngestService
from ingest.tools.demo.scoring import auroc_table

CAMERA_ID = "demo-cam"
PUBLISHED = "streamssl_ingest_windows_published_total"
PARTITIONS = 4
# What training leaves for the export (4 ONNX graphs, parity), the gate, scoring and the report on 2 CPU cores.
RESERVE_S = 25.0
MIN_TRAIN_MINUTES = 0.25
SCORING_TIMEOUT_S = 180.0

Say = Callable[[str], None]


@dataclass(frozen=True)
class DemoOptions:
    run_dir: Path
    source: str | None  # None: render a synthetic clip with labelled events
    seconds: float
    seed: int
    minutes: float
    port: int
    bus: str
    topic: str
    kafka: KafkaSettings
    started: float = field(default_factory=time.monotonic)

    @property
    def deadline(self) -> float:
        return self.started + 60 * self.minutes


def make_clip(options: DemoOptions, say: Say) -> tuple[str, list[dict[str, Any]]]:
    """The camera: ``--source`` as given, or a rendered synthetic clip; returns its URL and labelled events."""
    if options.source is not None:
        say(f"camera: {options.source} (no labels: anomaly AUROC will not be measured)")
        return options.source, []
    from ingest.tools.synth import SynthConfig, generate_clip

    clip = options.run_dir / "clip.mp4"
    say(f"rendering a {options.seconds:g} s synthetic traffic clip with labelled events → {clip}")
    synth = generate_clip(SynthConfig(seconds=options.seconds, seed=options.seed), clip)
    labels = options.run_dir / "labels.json"
    shutil.copyfile(synth.labels_path, labels)
    events: list[dict[str, Any]] = json.loads(labels.read_text())["events"]
    say("events: " + ", ".join(f"{e['kind']} {e['start_s']:g}–{e['end_s']:g} s" for e in events))
    return str(clip), events


def ingest(options: DemoOptions, bus: Bus, url: str, say: Say) -> int:
    """Run the ingest service with its defaults on the camera until the file ends (a live camera: a quarter of
    the budget); return how many windows it published."""
    settings = IngestSettings(
        bus=options.bus,
        topic=options.topic,
        partitions=PARTITIONS,
        kafka=options.kafka,
        cameras=[CameraConfig(camera_id=CAMERA_ID, url=url)],
    )
    camera = settings.cameras[0]
    say(f"ingest: {camera.window}-frame {camera.size} windows at {camera.fps:g} fps → {options.topic} on {options.bus}")
    service = IngestService(settings, bus, CollectorRegistry())
    service.start()
    service.wait(poll_s=0.1, timeout_s=60 * options.minutes / 4)
    service.shutdown()
    published = int(service.metrics.registry.get_sample_value(PUBLISHED, {"camera": CAMERA_ID}) or 0)
    say(f"ingest: {published} windows published")
    if published == 0:
        raise RuntimeError(f"the camera {url} gave no window: nothing to train on")
    return published


def holdout_every(windows: int) -> int:
    """Hold 1 in N of the demo's ``windows`` out for the evaluation and the gate: 1 in 5 of a long clip, up to 1 in 2
    of a short one. The trainer picks them by a hash of the window id, so 1 in 5 of a 20 s clip (25 windows) left
    fewer than the 2 the gate needs in ~3 % of runs, and the demo then had nothing to serve."""
    return max(2, min(5, windows // 8))


def train(options: DemoOptions, bus: Bus, say: Say, windows: int) -> dict[str, Any]:
    """The continual trainer with its defaults, bounded by what the budget leaves; exports and gates at the end.
    ``windows``: how many ingest published (they decide the share held out)."""
    from trainer.config import TrainerSettings
    from trainer.loop import Trainer, resolve_device

    minutes = max(MIN_TRAIN_MINUTES, (options.deadline - time.monotonic() - RESERVE_S) / 60)
    settings = TrainerSettings(
        bus=options.bus,
        topic=options.topic,
        kafka=options.kafka,
        registry=options.run_dir / "registry",
        checkpoint_dir=options.run_dir / "trainer",
        max_minutes=minutes,
        eval_every=25,
        progress_every=10,
        # A demo clip is short: hold out more than the stream default of 1 in 25, so the gate has windows to judge.
        data={"holdout_every": holdout_every(windows), "group_id": f"streamssl-demo-{uuid.uuid4().hex[:8]}"},
    )
    device = resolve_device(settings.device, 0).type
    say(f"trainer: {minutes:.1f} min on {device}, then export to ONNX and the promotion gate")
    result = Trainer(settings, bus).run()
    gate = result.gate
    say(
        f"trainer: {result.step} steps; exported version {result.exported_version or 'none'}"
        + (f", gate {'promoted' if gate.promoted else 'refused'} it" if gate else "")
    )
    version = production_version(settings.registry, DEFAULT_MODEL_NAME)
    return {
        "steps": result.step,
        "production_version": version,
        "eval": dict(gate.candidate_metrics) if gate and gate.promoted else dict(result.last_eval),
        "registry": settings.registry,
    }


def serve(options: DemoOptions, bus: Bus, registry: Path, expected: int, say: Say) -> tuple[Any, list[dict[str, Any]]]:
    """Start the serving node (HTTP and stream mode over the windows topic); collect one result per window."""
    from serving.config import ServingSettings
    from serving.node import ServingNode

    output = f"{options.topic}.scores"
    settings = ServingSettings(
        bus=options.bus,
        kafka=options.kafka,
        registry=registry,
        host="127.0.0.1",
        port=options.port,
        stream_topic=options.topic,
        output_topic=output,
        group_id=f"streamssl-demo-serve-{uuid.uuid4().hex[:8]}",
    )
    node = ServingNode(settings, bus=bus).start()
    say(f"serving: {node.slot.current.describe() if node.slot.current else '?'} on {serving_url(node)}, "
        f"scoring {expected} windows from {options.topic} → {output}")  # fmt: skip
    results = collect_results(bus, output, expected)
    say(f"serving: {len(results)} windows scored")
    return node, results


def serving_url(node: Any) -> str | None:
    return f"http://127.0.0.1:{node.http.port}" if node.http is not None else None


def collect_results(bus: Bus, topic: str, expected: int) -> list[dict[str, Any]]:
    """Read stream-mode results until every window has one (or the timeout); one per window id."""
    results: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + SCORING_TIMEOUT_S
    bus.create_topic(topic, PARTITIONS)
    with bus.consumer([topic], group_id=None) as consumer:
        while len(results) < expected and time.monotonic() < deadline:
            for record in consumer.poll(0.5):
                result = json.loads(record.value)
                results.setdefault(result["window_id"], result)
    return sorted(results.values(), key=lambda r: (r["camera_id"], r["sequence"]))


def write_scores(run_dir: Path, results: list[dict[str, Any]], events: list[dict[str, Any]]) -> dict[str, Any]:
    """``scores.jsonl`` and the AUROC table of every score against the labels (empty without labels)."""
    with (run_dir / "scores.jsonl").open("w", encoding="utf-8") as stream:
        for result in results:
            stream.write(json.dumps(result) + "\n")
    return auroc_table(results, events) if events else {}
