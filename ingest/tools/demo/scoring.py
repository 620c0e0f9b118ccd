"""Scores against the synthetic world's labels: which windows overlap an event, and the AUROC of each score."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

SCORE_KINDS = ("score", "raw_score", "pixel_error", "knn_score", "scene_score", "slowdown_score")
EVENT_KINDS = ("wrong_way", "stalled", "jam")


def window_events(result: dict[str, Any], events: Sequence[dict[str, Any]]) -> set[str]:
    """The kinds of the labelled events whose interval overlaps the window's PTS range."""
    start, end = float(result["pts_start_s"]), float(result["pts_end_s"])
    return {e["kind"] for e in events if e["start_s"] <= end and start < e["end_s"]}


def auroc(scores: Sequence[float], positives: Sequence[bool]) -> float | None:
    """Area under the ROC curve (scikit-learn's; 0.5 = chance); None unless both classes are present."""
    from sklearn.metrics import roc_auc_score

    if len(set(positives)) < 2:
        return None
    return float(roc_auc_score(list(positives), list(scores)))


def auprc(scores: Sequence[float], positives: Sequence[bool]) -> float | None:
    """Average precision, the area under the precision-recall curve (chance = the share of positives)."""
    from sklearn.metrics import average_precision_score

    if len(set(positives)) < 2:
        return None
    return float(average_precision_score(list(positives), list(scores)))


def auroc_table(
    results: Sequence[dict[str, Any]], events: Sequence[dict[str, Any]], metric: Callable[..., float | None] = auroc
) -> dict[str, dict[str, Any]]:
    """``metric`` (AUROC by default) of every score the node returns, over all events and per kind (normal windows
    as negatives).

    Windows without a value for a score (the z-score during a camera's warm-up, a model without a pixel head) are
    left out of that score's numbers.
    """
    labelled = [(result, window_events(result, events)) for result in results]
    table: dict[str, dict[str, Any]] = {}
    for kind in SCORE_KINDS:
        usable = [(float(r[kind]), hit) for r, hit in labelled if _finite(r.get(kind))]
        row: dict[str, Any] = {"all": metric([s for s, _ in usable], [bool(hit) for _, hit in usable])}
        for event in EVENT_KINDS:
            subset = [(s, event in hit) for s, hit in usable if not hit or event in hit]
            row[event] = metric([s for s, _ in subset], [p for _, p in subset])
        table[kind] = row
    return table


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
