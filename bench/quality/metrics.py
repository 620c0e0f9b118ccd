"""The benchmark's own metric functions, tested on hand-made inputs with known answers (tests/test_quality_metrics.py):
a linear probe on frozen embeddings, and forgetting across a day → night → day stream. A score's ranking quality
(AUROC, AUPRC) is the product's own, :mod:`ingest.tools.demo.scoring`, which the demo reports too."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt


def linear_probe(
    train_x: npt.NDArray[np.floating], train_y: Sequence[str], test_x: npt.NDArray[np.floating], test_y: Sequence[str]
) -> float:
    """Accuracy on the test set of a logistic-regression probe fitted on standardised frozen features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    probe.fit(train_x, list(train_y))
    return float(probe.score(test_x, list(test_y)))


def forgetting(before: float, after: float) -> float:
    """How much a metric on the first experience dropped after training on the next ones (points, ≥ 0 = lost)."""
    if not (math.isfinite(before) and math.isfinite(after)):
        raise ValueError(f"forgetting needs finite numbers, got {before} and {after}")
    return before - after
