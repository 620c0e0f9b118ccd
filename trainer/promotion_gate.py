"""The promotion gate: move ``production`` to a candidate only if it is not worse than the current production.

Both versions are evaluated from their published ONNX files with onnxruntime (what serving runs), on the same
held-out windows, each prepared for its own input format. The candidate passes when, for every metric both have,
it is at most a tolerance below production:

* ``future_top1`` (absolute tolerance ``gate_tolerance``), and
* ``pixel_psnr_gain_db`` over the copy-last baseline (tolerance ``gate_psnr_tolerance_db``).

The first version is promoted when there is no production yet. Every decision is logged with its numbers, counted
(``streamssl_trainer_gate_decisions_total``) and appended to the evaluation log.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ingest.registry import RegistryError, production_version, set_production
from trainer.evaluate import EvalLog, OnnxModel

log = logging.getLogger(__name__)

# (metric, higher is better) compared by the gate
GATED_METRICS = ("future_top1", "pixel_psnr_gain_db")


@dataclass(frozen=True)
class GateDecision:
    promoted: bool
    candidate: str
    production: str | None  # before the decision
    reasons: list[str]
    candidate_metrics: dict[str, float] = field(default_factory=dict)
    production_metrics: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare(
    candidate: dict[str, float], production: dict[str, float], tolerances: dict[str, float]
) -> tuple[bool, list[str]]:
    """(passes, one reason per gated metric)."""
    passes = True
    reasons: list[str] = []
    for metric in GATED_METRICS:
        if metric not in candidate or metric not in production:
            reasons.append(f"{metric}: not measured on both, not compared")
            continue
        floor = production[metric] - tolerances[metric]
        ok = candidate[metric] >= floor
        passes = passes and ok
        reasons.append(
            f"{metric}: candidate {candidate[metric]:.4f} {'>=' if ok else '<'} production {production[metric]:.4f}"
            f" - tolerance {tolerances[metric]:g}"
        )
    if not any(metric in candidate and metric in production for metric in GATED_METRICS):
        passes = False
        reasons.append("no gated metric could be compared")
    return passes, reasons


def run_gate(
    registry: Path,
    model_name: str,
    candidate: str,
    windows: Sequence[bytes],
    *,
    batch_size: int,
    tolerances: dict[str, float],
    eval_log: EvalLog | None = None,
    step: int = 0,
) -> GateDecision:
    """Evaluate ``candidate`` and the production version on ``windows``; promote the candidate if it passes."""
    current = production_version(registry, model_name)
    if current == candidate:
        decision = GateDecision(False, candidate, current, ["candidate is already production"])
    elif current is None:
        set_production(registry, model_name, candidate)
        decision = GateDecision(True, candidate, None, ["no production version yet"])
    elif len(windows) < 2:
        decision = GateDecision(False, candidate, current, ["fewer than 2 held-out windows: nothing to compare on"])
    else:
        candidate_metrics = OnnxModel(registry / model_name / candidate).evaluate(windows, batch_size)
        try:
            production_metrics = OnnxModel(registry / model_name / current).evaluate(windows, batch_size)
        except RegistryError as error:  # a broken production must not block a verified candidate
            production_metrics = {}
            passes, reasons = True, [f"production version {current} does not verify: {error}"]
        else:
            passes, reasons = compare(candidate_metrics, production_metrics, tolerances)
        if passes:
            set_production(registry, model_name, candidate)
        decision = GateDecision(passes, candidate, current, reasons, candidate_metrics, production_metrics)
    verdict = "promoted" if decision.promoted else "refused"
    log.info(
        "promotion gate: %s version %s (production was %s): %s",
        verdict,
        candidate,
        decision.production or "none",
        "; ".join(decision.reasons),
    )
    if eval_log is not None:
        eval_log.write("gate", step, {"decision": verdict, **decision.as_dict()})
    return decision
