"""Wrong-way events where the camera can see them.

Who drives the wrong way is up to the traffic at the event's start (:mod:`ingest.tools.synth.traffic`): with the
near part of the lane queued at a red light, the driver that turns is 220–280 m away, where at 128×128 a car is
under a pixel wide, and it stays there, braking for the oncoming traffic, for the whole event; no score could see
it, and in the first world of this benchmark three of the four wrong-way events on the trained cameras were such.
So each wrong-way event is moved, by whole steps of ``STEP_S`` (at most ``LATEST_S`` later), to the first start at
which the driver, replayed by the clip's own simulation, is within ``VIEW_M`` and moving for at least
``IN_VIEW_SHARE`` of the event (else to the start where it is so for longest). The traffic before an event does
not depend on when it starts, so the search replays only up to each candidate's end. The cache of rendered
cameras is keyed by their nominal schedule: a change here must bump :data:`bench.quality.world.CACHE_FORMAT`.
"""

from __future__ import annotations

import dataclasses

from ingest.tools.synth import EventSpec, SynthConfig
from ingest.tools.synth.generate import simulate_traffic

# Nearer than this, a car is at least 3 px tall in a 128×128 window of the default 640×360 clip (at 250 m: one).
# The synth aims a driver at 118 m for an 8-s event so that it arrives near the camera at the end; within 60 m,
# where at 10 m/s it moves half a pixel per frame sampled at 10 fps, it spends at most about half of the event.
VIEW_M = 100.0
MOVING_MPS = 3.0
IN_VIEW_SHARE = 0.5
STEP_S = 2.0
LATEST_S = 30.0  # events are 50 s apart: a wrong-way event moved this far still ends before the next starts


def in_view_share(config: SynthConfig, index: int) -> float:
    """The share of event ``index``'s frames on which its wrong-way driver is within ``VIEW_M`` and moving."""
    event = config.resolved_events()[index]
    sim = simulate_traffic(config)
    dt, seen, frames = 1.0 / config.fps, 0, 0
    for frame in range(round(event.end_s * config.fps)):
        t = frame * dt
        if t >= event.start_s:
            frames += 1
            seen += any(v.wrong_way and v.event_index == index and v.z_front < VIEW_M and v.v > MOVING_MPS
                        for v in sim.vehicles)  # fmt: skip
        sim.step(t, dt)
    return seen / max(frames, 1)


def place_wrong_way(config: SynthConfig) -> tuple[EventSpec, ...]:
    """``config``'s events with every wrong-way event moved to where the camera sees its driver (see above)."""
    events = list(config.resolved_events())
    for index, event in enumerate(events):
        if event.kind != "wrong_way":
            continue
        best = (-1.0, event)
        for step in range(int(LATEST_S / STEP_S) + 1):
            moved = dataclasses.replace(event, start_s=event.start_s + step * STEP_S)
            candidate = [*events[:index], moved, *events[index + 1 :]]
            share = in_view_share(dataclasses.replace(config, events=tuple(candidate)), index)
            if share > best[0]:
                best = (share, moved)
            if share >= IN_VIEW_SHARE:
                break
        events[index] = best[1]
    return tuple(events)
