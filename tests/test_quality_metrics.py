"""The quality benchmark's metric functions on hand-made inputs whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from bench.quality.metrics import forgetting, linear_probe
from ingest.tools.demo.scoring import auprc, auroc, auroc_table


def test_auroc_of_perfect_inverted_tied_and_one_class_scores() -> None:
    positives = [False, False, True, True]
    assert auroc([0.1, 0.2, 0.8, 0.9], positives) == 1.0
    assert auroc([0.9, 0.8, 0.2, 0.1], positives) == 0.0
    assert auroc([0.5, 0.5, 0.5, 0.5], positives) == 0.5
    # positive/negative pairs ranked right: 0.3 > 0.2, 0.3 < 0.4, 0.9 > both: 3 of 4
    assert auroc([0.2, 0.4, 0.3, 0.9], positives) == pytest.approx(0.75)
    assert auroc([0.1, 0.2], [True, True]) is None


def test_auprc_is_one_when_positives_come_first_and_their_share_by_chance() -> None:
    assert auprc([0.9, 0.8, 0.1, 0.2], [True, True, False, False]) == 1.0
    # positive ranked second of two: precision 1/2 at recall 1
    assert auprc([0.9, 0.1], [False, True]) == pytest.approx(0.5)
    assert auprc([0.3], [True]) is None


def test_a_linear_probe_reads_a_linearly_separable_label_and_not_noise() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 8))
    separable = ["day" if v > 0 else "night" for v in x[:, 3]]
    assert linear_probe(x[:300], separable[:300], x[300:], separable[300:]) > 0.95
    noise = [str(v) for v in rng.integers(0, 2, 400)]
    assert 0.35 < linear_probe(x[:300], noise[:300], x[300:], noise[300:]) < 0.65


def test_forgetting_is_the_drop_and_refuses_non_finite_numbers() -> None:
    assert forgetting(0.80, 0.75) == pytest.approx(0.05)
    assert forgetting(0.80, 0.85) == pytest.approx(-0.05)
    with pytest.raises(ValueError, match="finite"):
        forgetting(float("nan"), 0.5)


def test_the_auroc_table_takes_normal_windows_as_negatives_for_each_kind() -> None:
    events = [{"kind": "jam", "start_s": 10.0, "end_s": 20.0}, {"kind": "stalled", "start_s": 30.0, "end_s": 40.0}]

    def window(start: float, raw: float) -> dict[str, object]:
        return {"pts_start_s": start, "pts_end_s": start + 0.7, "raw_score": raw, "score": None, "pixel_error": None}

    # jam windows score high, stalled windows low, normal windows in between
    results = [window(12, 0.9), window(15, 0.8), window(32, 0.1), window(35, 0.2), window(0, 0.5), window(50, 0.4)]
    table = auroc_table(results, events)
    assert table["raw_score"]["jam"] == 1.0
    assert table["raw_score"]["stalled"] == 0.0
    assert table["raw_score"]["wrong_way"] is None, "no window of that kind"
    assert table["score"]["all"] is None, "no z-score during warm-up: left out"
    assert auroc_table(results, events, auprc)["raw_score"]["jam"] == 1.0
