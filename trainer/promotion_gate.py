"""The promotion gate: move ``production`` to a candidate only if it is not worse than the current production.

Both versions are evaluated from their published ONNX files with onnxruntime (what serving runs), on the same
held-out windows, each prepared for its own input format. The candidate passes when, for every metric both have,
it is at most a tolerance below production:

* ``future_top1`` (absolute tolerance ``gate_tolerance``), and
* ``pixel_psnr_gain_db`` over the copy-last baseline (tolerance ``gate_psnr_tolerance_db``).

The first version is evaluated too and promoted when there is no production yet; a candidate whose numbers are
missing or not finite is always refused. Every decision is logged with its numbers, counted
(``streamssl_trainer_gate_decisions_total``) and appended to the evaluation log.
"""

from __future__ import annotations

import logging
import math
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


def unusable_metrics(metrics: dict[str, float]) -> list[str]:
    """Why ``metrics`` cannot back a promotion: the gated numbers missing or not finite (empty when usable)."""
    problems = [f"{name}: not finite ({value})" for name, value in metrics.items() if not math.isfinite(value)]
    if "future_top1" not in metrics:
        problems.append("future_top1: not measured")
    return problems


def _decide(
    registry: Path,
    model_name: str,
    candidate: str,
    current: str | None,
    windows: Sequence[bytes],
    batch_size: int,
    tolerances: dict[str, float],
) -> GateDecision:
    """Evaluate the candidate (always, the first one too) and, if there is one, production; compare."""
    candidate_metrics = OnnxModel(registry / model_name / candidate).evaluate(windows, batch_size)
    problems = unusable_metrics(candidate_metrics)
    if problems:
        return GateDecision(False, candidate, current, [f"candidate {p}" for p in problems], candidate_metrics)
    if current is None:
        return GateDecision(True, candidate, None, ["no production version yet"], candidate_metrics)
    try:
        production_metrics = OnnxModel(registry / model_name / current).evaluate(windows, batch_size)
    except RegistryError as error:  # a broken production must not block a verified candidate
        production_metrics = {}
        passes, reasons = True, [f"production version {current} does not verify: {error}"]
    else:
        passes, reasons = compare(candidate_metrics, production_metrics, tolerances)
    return GateDecision(passes, candidate, current, reasons, candidate_metrics, production_metrics)


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
    elif len(windows) < 2:
        decision = GateDecision(False, candidate, current, ["fewer than 2 held-out windows: nothing to evaluate on"])
    else:
        decision = _decide(registry, model_name, candidate, current, windows, batch_size, tolerances)
        if decision.promoted:
            set_production(registry, model_name, candidate)
    verdict = "promoted" if decision.promoted else "refused"
    log.info(
        "promotion gate: %s version %s (production was %s): %s; candidate metrics %s",
        verdict,
        candidate,
        decision.production or "none",
        "; ".join(decision.reasons),
        {name: round(value, 4) for name, value in decision.candidate_metrics.items()},
    )
    if eval_log is not None:
        eval_log.write("gate", step, {"decision": verdict, **decision.as_dict()})
    return decision
