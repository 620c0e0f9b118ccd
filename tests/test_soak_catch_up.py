"""The soak's start-up gives up early on a camera count serving cannot keep up with, and only then."""

from __future__ import annotations

from bench.soak.run import BEHIND_SPAN_S, CatchUpWatch


def watch_over(seconds: int, produced_per_s: float, scored_per_s: float, first_score_s: int = 0) -> str | None:
    """Feed the watch one sample a second; what it says at the end."""
    watch, verdict = CatchUpWatch(), None
    for second in range(seconds + 1):
        scored = max(0.0, (second - first_score_s) * scored_per_s) if second > first_score_s else 0.0
        verdict = watch.falling_behind(float(second), int(second * produced_per_s), int(scored))
    return verdict


def test_serving_that_scores_half_of_what_is_produced_is_falling_behind() -> None:
    verdict = watch_over(int(BEHIND_SPAN_S) + 30, produced_per_s=20.0, scored_per_s=10.0, first_score_s=20)
    assert verdict is not None
    assert "scored 10.0 windows/s" in verdict
    assert "produced 20.0/s" in verdict


def test_serving_that_catches_up_or_keeps_pace_is_not() -> None:
    assert watch_over(400, produced_per_s=10.0, scored_per_s=25.0, first_score_s=100) is None  # catching up
    assert watch_over(400, produced_per_s=10.0, scored_per_s=10.0) is None  # keeping pace


def test_nothing_is_judged_before_serving_has_scored_for_a_whole_span() -> None:
    # No model yet for 300 s (a slow first training round), then barely started: too early to tell.
    assert watch_over(300, produced_per_s=20.0, scored_per_s=0.0, first_score_s=300) is None
    assert watch_over(300 + int(BEHIND_SPAN_S) - 10, produced_per_s=20.0, scored_per_s=5.0, first_score_s=300) is None
