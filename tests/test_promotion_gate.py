"""The promotion gate evaluates every candidate, the first one too, and refuses numbers it cannot trust."""

from __future__ import annotations

import json
from pathlib import Path

from bench.onnx_models import make_registry_version
from ingest.contract import encode_window
from ingest.registry import DEFAULT_MODEL_NAME, production_version
from tests.conftest import make_window
from trainer.evaluate import EvalLog
from trainer.promotion_gate import run_gate, unusable_metrics

TOLERANCES = {"future_top1": 0.02, "pixel_psnr_gain_db": 0.25}


def test_unusable_metrics_names_missing_and_non_finite_numbers() -> None:
    assert unusable_metrics({"future_top1": 0.4, "order_accuracy": 0.3}) == []
    assert unusable_metrics({"order_accuracy": 0.3}) == ["future_top1: not measured"]
    assert unusable_metrics({"future_top1": float("nan")}) == ["future_top1: not finite (nan)"]
    assert unusable_metrics({"future_top1": 0.5, "pixel_psnr_gain_db": float("inf")}) == [
        "pixel_psnr_gain_db: not finite (inf)"
    ]


def test_the_first_candidate_is_evaluated_and_its_metrics_logged(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    candidate = make_registry_version(registry, seed=1, promote=False)
    windows = [encode_window(make_window(sequence=i, frames=4, height=16, width=16)) for i in range(8)]
    log = EvalLog(tmp_path / "eval.jsonl")

    decision = run_gate(
        registry, DEFAULT_MODEL_NAME, candidate, windows, batch_size=4, tolerances=TOLERANCES, eval_log=log
    )

    assert decision.promoted, decision.reasons
    assert production_version(registry, DEFAULT_MODEL_NAME) == candidate
    assert 0.0 <= decision.candidate_metrics["future_top1"] <= 1.0
    assert decision.candidate_metrics["windows"] == 8
    logged = json.loads(log.path.read_text().splitlines()[-1])
    assert logged["kind"] == "gate"
    assert logged["candidate_metrics"]["future_top1"] == decision.candidate_metrics["future_top1"]


def test_a_first_candidate_with_nothing_to_evaluate_on_is_refused(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    candidate = make_registry_version(registry, seed=1, promote=False)
    decision = run_gate(registry, DEFAULT_MODEL_NAME, candidate, [], batch_size=4, tolerances=TOLERANCES)
    assert not decision.promoted
    assert production_version(registry, DEFAULT_MODEL_NAME) is None
