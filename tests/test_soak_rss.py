"""The soak's RSS summary: a periodic swing is neither growth nor shrinkage; a steady climb is growth."""

from __future__ import annotations

import math

import pytest

from bench.soak.run import RssSeries


def series(values: list[tuple[float, float]]) -> dict[str, float | None]:
    rss = RssSeries()
    for t, mib in values:
        rss.add(t, mib)
    return rss.summary()


def test_a_sawtooth_around_a_flat_level_is_flat() -> None:
    # 10 minutes at 5 s, a 40 MiB swing every 50 s (an export cycle) around 1,000 MiB. The point samples at the
    # start (a trough) and the end (a crest) would read +4 %.
    swing = [(5.0 * i, 980.0 + 40.0 * ((i % 10) / 9)) for i in range(120)]
    assert swing[-1][1] / swing[0][1] - 1 > 0.04
    summary = series(swing)
    assert summary["growth"] == pytest.approx(0.0, abs=0.005)
    assert summary["trend_mib_per_10min"] == pytest.approx(0.0, abs=5.0)  # 0.5 % of the level
    assert (summary["min_mib"], summary["max_mib"]) == (980.0, 1020.0)


def test_a_steady_climb_is_growth_and_trend() -> None:
    climb = [(5.0 * i, 1000.0 + 0.1 * 5.0 * i) for i in range(121)]  # 0.1 MiB/s: +60 MiB in 10 min
    summary = series(climb)
    assert summary["trend_mib_per_10min"] == pytest.approx(60.0, rel=1e-6)
    assert summary["start_mib"] == pytest.approx(1000.0)
    assert summary["end_mib"] == pytest.approx(1060.0)
    assert summary["growth"] == pytest.approx(0.06)


def test_samples_of_a_gone_process_are_left_out_and_none_is_no_summary() -> None:
    assert series([(0.0, math.nan), (5.0, 100.0), (10.0, 110.0)])["min_mib"] == 100.0
    assert series([])["growth"] is None
