"""The scene memory through the serving node: stream-mode results carry ``scene_score``, the cell that gave it and
``slowdown_score``,
the memory is saved to ``--scene-memory-dir`` at stop and restored at start (a restarted node scores a camera at
once instead of warming up again), and a node with no directory keeps nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.onnx_models import make_registry_version
from ingest.bus.embedded import EmbeddedBus
from ingest.runtime.settings import load_settings
from serving.__main__ import _overrides, build_parser
from serving.config import ServingSettings
from tests.conftest import make_window
from tests.serving_fixtures import SIZE, running_node
from tests.test_serving_stream import TopicReader, publish
from tests.waiting import wait_until

WARMUP = 130  # gap 40 + 20 remembered + 20 calibrated novelties (+ margin): the first scene_score comes before


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("registry")
    make_registry_version(path, seed=43)
    return path


def score_windows(bus: EmbeddedBus, registry: Path, topic: str, sequences: range, **overrides: object) -> list[dict]:
    windows = [make_window("cam-s", s, frames=4, height=SIZE, width=SIZE) for s in sequences]
    bus.create_topic(topic, 1)
    publish(bus, topic, windows)
    out = f"{topic}.scores"
    with running_node(registry, bus=bus, stream_topic=topic, output_topic=out, group_id=topic, **overrides):
        reader = TopicReader(bus, out)
        wait_until(lambda: len(reader.read()) >= len(windows), "every window was scored", timeout_s=60)
        results = [json.loads(record.value) for record in reader.read()]
        reader.close()
    return sorted(results, key=lambda r: r["sequence"])


def test_results_name_the_cell_and_the_memory_survives_a_restart(
    registry: Path, embedded_bus: EmbeddedBus, tmp_path: Path
) -> None:
    memory_dir = tmp_path / "scene"
    first = score_windows(embedded_bus, registry, "scene.a", range(WARMUP), scene_memory_dir=memory_dir)
    assert first[0]["scene_score"] is None, "a new camera warms up first"
    assert first[0]["scene_region"] is None
    assert first[0]["slowdown_score"] is None
    assert any(r["slowdown_score"] is not None for r in first), f"no slowdown_score within {WARMUP} windows"
    scored = [r for r in first if r["scene_score"] is not None]
    assert scored, f"no scene_score within {WARMUP} windows"
    region = scored[-1]["scene_region"]
    assert region["grid"] == 8
    assert 0 <= region["row"] < 8
    assert 0 <= region["col"] < 8
    x0, y0, x1, y1 = region["box"]
    assert 0 <= x0 < x1 <= SIZE, "the box is in the window's own pixels"
    assert 0 <= y0 < y1 <= SIZE
    assert len(list(memory_dir.glob("*.npz"))) == 1, "saved at stop, one file per camera"

    again = score_windows(embedded_bus, registry, "scene.b", range(WARMUP, WARMUP + 3), scene_memory_dir=memory_dir)
    assert all(r["scene_score"] is not None for r in again), "the restored memory scores at once"
    assert all(r["slowdown_score"] is not None for r in again), "the traffic's normal speed is restored too"

    forgetful = score_windows(embedded_bus, registry, "scene.c", range(WARMUP, WARMUP + 3))
    assert all(r["scene_score"] is None for r in forgetful), "without a directory a new node starts afresh"


def test_the_command_line_takes_the_scene_memory_flags() -> None:
    args = build_parser().parse_args(["--registry", "r", "--scene-memory-dir", "d", "--scene-save-interval", "5"])
    settings = load_settings(ServingSettings, None, _overrides(args))
    assert (settings.scene_memory_dir, settings.scene_save_interval_s) == (Path("d"), 5.0)
