"""The quality benchmark moves each wrong-way event to where the camera sees its driver."""

from __future__ import annotations

import dataclasses

from bench.quality.placement import IN_VIEW_SHARE, LATEST_S, in_view_share, place_wrong_way
from ingest.tools.synth import EventSpec, SynthConfig


def test_a_wrong_way_event_whose_driver_is_out_of_view_moves_to_where_it_is_seen() -> None:
    # Seed 0 at 12 s: the driver that turns is far up the road for the whole event (replayed by the clip's own
    # simulation, as the renderer would draw it).
    wrong_way, stalled = EventSpec("wrong_way", 12.0, 8.0), EventSpec("stalled", 60.0, 10.0)
    config = SynthConfig(seconds=80.0, seed=0, events=(wrong_way, stalled))
    assert in_view_share(config, 0) < IN_VIEW_SHARE

    placed = place_wrong_way(config)

    assert placed[1] == stalled  # only wrong-way events move
    moved = placed[0]
    assert moved.kind == "wrong_way"
    assert moved.duration_s == wrong_way.duration_s
    assert wrong_way.start_s < moved.start_s <= wrong_way.start_s + LATEST_S
    assert in_view_share(dataclasses.replace(config, events=placed), 0) >= IN_VIEW_SHARE


def test_a_wrong_way_event_already_in_view_stays_where_it_is() -> None:
    config = SynthConfig(seconds=40.0, seed=0, events=(EventSpec("wrong_way", 24.0, 8.0),))
    assert in_view_share(config, 0) >= IN_VIEW_SHARE
    assert place_wrong_way(config) == config.events
