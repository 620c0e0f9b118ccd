"""The README's main job: ``streamssl demo --exit`` runs camera → ingest → trainer → registry → serving → scores in
one process on the embedded bus, with every service's defaults, and leaves a report that renders in a browser."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import pytest

from ingest.tools.demo import pipeline
from tests.browser import assert_renders_in_browser
from trainer.data.heldout import held_out_by_hash

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def test_the_demo_runs_the_whole_pipeline_and_writes_a_report(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "ingest.tools.umbrella", "demo", "--minutes", "1.5", "--seconds", "30", "--exit",
         "--run-dir", str(run_dir)],
        cwd=ROOT, capture_output=True, text=True, timeout=480, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    for stage in ("[1/6] camera", "[2/6] ingest", "[3/6] training", "[4/6] serving", "[6/6] report"):
        assert stage in result.stderr, f"no progress line {stage!r}:\n{result.stderr[-3000:]}"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["production_version"] == "1", summary
    assert summary["windows_scored"] == summary["windows_published"] > 0, summary
    assert summary["model_input"] == "64x64x3", "the default 128×128 windows reached the default 64×64 model"
    assert 0.0 <= summary["eval"]["future_top1"] <= 1.0, summary
    assert summary["auroc"]["raw_score"]["all"] is not None, "the clip's labelled events were scored"
    printed = json.loads(result.stdout)
    assert printed["report"] == str(run_dir / "report.html")
    assert "anomaly AUROC" in result.stderr
    scores = [json.loads(line) for line in (run_dir / "scores.jsonl").read_text().splitlines()]
    assert len({s["window_id"] for s in scores}) == len(scores) == summary["windows_scored"]
    assert (run_dir / "trainer" / "train.jsonl").stat().st_size > 0
    # losses, accuracy, pixel strip, score timeline, top windows, embedding map: all drawn from this run
    assert_renders_in_browser(run_dir / "report.html", tmp_path, images=6)


@pytest.mark.kafka
def test_over_kafka_the_demo_serves_until_ctrl_c_then_shuts_down_cleanly(kafka_bootstrap: str, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    demo = subprocess.Popen(
        [sys.executable, "-m", "ingest.tools.umbrella", "demo", "--minutes", "1", "--seconds", "20",
         "--bus", f"kafka://{kafka_bootstrap}", "--topic", f"demo.{uuid.uuid4().hex[:8]}", "--run-dir", str(run_dir)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        url = _serving_url(demo)
        with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=10) as response:
            assert response.status == 200, "serving stays up after the demo"
        demo.send_signal(signal.SIGINT)
        _, rest = demo.communicate(timeout=120)
    finally:
        if demo.poll() is None:
            demo.kill()
    assert demo.returncode == 0, rest[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["bus"] == f"kafka://{kafka_bootstrap}"
    assert summary["windows_scored"] == summary["windows_published"] > 0, summary


def _serving_url(demo: subprocess.Popen[str]) -> str:
    """Read the demo's stderr until it says it is serving; the URL it names."""
    assert demo.stderr is not None
    seen: list[str] = []
    for line in demo.stderr:
        seen.append(line)
        match = re.search(r"serving on (http://\S+) .*Ctrl-C stops it", line)
        if match:
            return match[1]
    raise AssertionError("the demo ended without serving:\n" + "".join(seen[-40:]))


@pytest.mark.parametrize("seconds", [20, 60])
def test_a_short_demo_clip_holds_out_enough_windows_for_the_gate_in_almost_every_run(seconds: int) -> None:
    # The trainer holds windows out by a hash of their id, which holds a fresh run id: count over many run ids.
    windows = int(seconds * 10 / 8)  # the demo's 8-frame windows at 10 fps
    every = pipeline.holdout_every(windows)
    runs = [uuid.uuid4().hex[:11] for _ in range(4000)]
    short = sum(
        sum(held_out_by_hash(f"{pipeline.CAMERA_ID}:{run}:{sequence}", every) for sequence in range(windows)) < 2
        for run in runs
    )
    assert short / len(runs) < 0.005, f"{short} of {len(runs)} runs held out fewer than 2 of {windows} windows"
