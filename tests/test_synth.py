"""Tests for the synthetic traffic-camera generator (ingest.tools.synth).

Clips are short and small (320x180, a few seconds) so the whole file runs in well under a minute.
"""

from __future__ import annotations

import itertools
import json
import math
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt
import pytest

from ingest.tools.synth import (
    EVENT_KINDS,
    SCHEMA,
    EventSpec,
    SynthConfig,
    SynthResult,
    default_events,
    generate_clip,
    labels_path_for,
    parse_event,
)
from ingest.tools.synth.camera import Camera
from ingest.tools.synth.labels import dumps
from ingest.tools.synth.render import Renderer
from ingest.tools.synth.scene import Background
from ingest.tools.synth.scene_layout import RoadLayout
from ingest.tools.synth.traffic import TrafficSim, Vehicle
from ingest.tools.synth.traffic_light import LightCycle

W, H, FPS, SECONDS = 320, 180, 30, 8.0
EVENTS = (EventSpec("wrong_way", 1.0, 3.0), EventSpec("stalled", 2.0, 4.0), EventSpec("jam", 4.0, 4.0))
BASE = SynthConfig(seconds=SECONDS, seed=7, width=W, height=H, fps=FPS, events=EVENTS)

Frames = npt.NDArray[np.uint8]


def _decode(path: Path) -> Frames:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def _labels(result: SynthResult) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(result.labels_path.read_text(encoding="utf-8"))
    return doc


def _luma(frames: Frames) -> npt.NDArray[np.float64]:
    f = frames.astype(np.float64)
    out: npt.NDArray[np.float64] = (0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]).mean(axis=(1, 2))
    return out


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("synth")
    calls: list[tuple[int, int]] = []
    a = generate_clip(BASE, root / "a.mp4", progress=lambda done, total: calls.append((done, total)))
    again = generate_clip(BASE, root / "again" / "a.mp4")
    other = generate_clip(replace(BASE, seed=8), root / "other.mp4")
    return {
        "a": a,
        "again": again,
        "other": other,
        "progress": calls,
        "frames_a": _decode(a.video_path),
        "frames_again": _decode(again.video_path),
        "frames_other": _decode(other.video_path),
    }


# ------------------------------------------------------------------------------------------ determinism
def test_same_config_gives_identical_labels_and_frames(clips: dict[str, Any]) -> None:
    a, again = clips["a"], clips["again"]
    assert a.labels_path.read_bytes() == again.labels_path.read_bytes()
    fa, fb = clips["frames_a"], clips["frames_again"]
    assert fa.shape == fb.shape == (round(SECONDS * FPS), H, W, 3)
    assert np.array_equal(fa, fb)
    assert a.video_path.read_bytes() == again.video_path.read_bytes()


def test_different_seed_gives_different_clip(clips: dict[str, Any]) -> None:
    assert clips["a"].labels_path.read_bytes() != clips["other"].labels_path.read_bytes()
    fa, fo = clips["frames_a"], clips["frames_other"]
    assert fa.shape == fo.shape
    differing = [i for i in range(len(fa)) if not np.array_equal(fa[i], fo[i])]
    assert len(differing) == len(fa)


# ------------------------------------------------------------------------------------------ outputs
def test_result_paths_and_progress(clips: dict[str, Any]) -> None:
    a: SynthResult = clips["a"]
    assert a.video_path.name == "a.mp4"
    assert a.labels_path == a.video_path.with_name("a.labels.json")
    assert labels_path_for(Path("/x/clip.mp4")) == Path("/x/clip.labels.json")
    assert a.frames == round(SECONDS * FPS)
    assert a.seconds_elapsed > 0
    calls = clips["progress"]
    assert calls[-1] == (a.frames, a.frames)
    assert [done for done, _ in calls] == sorted({done for done, _ in calls})
    assert len(calls) == math.ceil(SECONDS)  # once per second of video


def test_mp4_probes_as_h264(clips: dict[str, Any]) -> None:
    ffprobe = shutil.which("ffprobe")
    assert ffprobe is not None, "ffprobe is not installed: apt-get install ffmpeg (scripts/bootstrap.sh does)"
    entries = "stream=codec_name,width,height,pix_fmt,nb_read_frames,avg_frame_rate"
    command = [ffprobe, "-v", "error", "-select_streams", "v:0", "-count_frames", "-show_entries", entries]
    command += ["-of", "json", str(clips["a"].video_path)]
    out = subprocess.run(command, check=True, capture_output=True, text=True, timeout=60)
    stream = json.loads(out.stdout)["streams"][0]
    assert stream["codec_name"] == "h264"
    assert (stream["width"], stream["height"]) == (W, H)
    assert stream["pix_fmt"] == "yuv420p"
    assert stream["avg_frame_rate"] == f"{FPS}/1"
    assert abs(int(stream["nb_read_frames"]) - SECONDS * FPS) <= 1


def test_labels_document(clips: dict[str, Any]) -> None:
    text = clips["a"].labels_path.read_text(encoding="utf-8")
    doc = json.loads(text)
    assert text == dumps(doc)  # canonical: sorted keys, stable floats
    assert doc["schema"] == SCHEMA
    assert (doc["seed"], doc["fps"], doc["width"], doc["height"], doc["seconds"]) == (7, FPS, W, H, SECONDS)
    assert doc["frame_count"] == len(doc["frames"]) == round(SECONDS * FPS)
    assert doc["light_cycle_s"] == {"green": 20.0, "yellow": 3.0, "red": 15.0, "offset_s": 0.0}
    assert [lane["direction"] for lane in doc["lanes"]] == ["towards", "towards", "away", "away"]
    for i, frame in enumerate(doc["frames"]):
        assert frame["frame"] == i
        assert frame["t"] == round(i / FPS, 4)
        assert frame["light_state"] in ("green", "yellow", "red")
        assert 0.0 <= frame["illumination"] <= 1.0
        assert frame["vehicle_count"] >= 0
        if frame["vehicle_count"] == 0:
            assert frame["mean_speed_mps"] is None
        direction = frame["mean_flow_direction_deg"]
        assert direction is None or 0.0 <= direction < 360.0


# ------------------------------------------------------------------------------------------ content
def test_requested_events_are_labelled(clips: dict[str, Any]) -> None:
    doc = _labels(clips["a"])
    events = {e["kind"]: e for e in doc["events"]}
    assert sorted(events) == sorted(EVENT_KINDS)
    assert [e["start_s"] for e in doc["events"]] == sorted(e.start_s for e in EVENTS)
    for spec in EVENTS:
        got = events[spec.kind]
        assert got["start_s"] == spec.start_s
        assert got["end_s"] == spec.end_s
        assert got["start_frame"] == math.ceil(spec.start_s * FPS)
        assert got["end_frame"] == math.ceil(spec.end_s * FPS)
    assert events["wrong_way"]["lane"] == 2  # first lane of the away direction
    assert events["stalled"]["lane"] in range(4)
    assert events["jam"]["lane"] is None
    for frame in doc["frames"]:
        i = frame["frame"]
        expected = sorted(e["kind"] for e in doc["events"] if e["start_frame"] <= i < e["end_frame"])
        assert frame["active_events"] == expected
    assert doc["frames"][30]["active_events"] == ["wrong_way"]
    assert doc["frames"][29]["active_events"] == []


def test_jam_collapses_speeds(clips: dict[str, Any]) -> None:
    frames = _labels(clips["a"])["frames"]

    def mean_of(key: str, t0: float, t1: float) -> float:
        return float(np.mean([f[key] for f in frames if t0 <= f["t"] < t1 and f[key] is not None]))

    jam = next(e for e in EVENTS if e.kind == "jam")
    speed_before = mean_of("mean_speed_mps", jam.start_s - 1.5, jam.start_s)
    speed_during = mean_of("mean_speed_mps", jam.end_s - 1.5, jam.end_s)
    assert speed_during < 0.7 * speed_before, (speed_before, speed_during)
    count_before = mean_of("vehicle_count", jam.start_s - 1.5, jam.start_s)
    count_during = mean_of("vehicle_count", jam.end_s - 1.0, jam.end_s)
    assert count_during > count_before, (count_before, count_during)


def test_night_is_darker_than_day(clips: dict[str, Any]) -> None:
    luma = _luma(clips["frames_a"])
    day, night = luma[:15].mean(), luma[-15:].mean()
    assert night < 0.5 * day, (day, night)
    illumination = [f["illumination"] for f in _labels(clips["a"])["frames"]]
    assert illumination[0] == 1.0
    assert illumination[-1] < 0.1
    assert all(b <= a for a, b in itertools.pairwise(illumination))


def test_day_only_clip_stays_bright(tmp_path: Path) -> None:
    cfg = SynthConfig(seconds=2, seed=1, width=160, height=90, fps=10, events=(), day_to_night=False)
    result = generate_clip(cfg, tmp_path / "day.mp4")
    assert {f["illumination"] for f in _labels(result)["frames"]} == {1.0}
    luma = _luma(_decode(result.video_path))
    assert luma.min() > 0.85 * luma.max()


def test_vehicles_are_visible_and_move(tmp_path: Path) -> None:
    cfg = SynthConfig(seconds=3, seed=2, width=W, height=H, events=(), day_to_night=False, noise=False)
    result = generate_clip(cfg, tmp_path / "moving.mp4")
    frames = _labels(result)["frames"]
    assert max(f["vehicle_count"] for f in frames) > 3
    assert any(f["mean_speed_mps"] is not None and f["mean_speed_mps"] > 2.0 for f in frames)
    assert any(f["mean_flow_direction_deg"] is not None for f in frames)
    video = _decode(result.video_path).astype(np.int16)
    diffs = np.abs(video[1:] - video[:-1]).max(axis=(1, 2, 3))
    # Without sensor noise only the vehicles change the picture, and they do all the time.
    assert (diffs > 30).mean() > 0.9, diffs


def test_light_cycles_through_all_states(tmp_path: Path) -> None:
    cfg = SynthConfig(
        seconds=7, seed=3, width=160, height=90, fps=10, events=(), light_green_s=2, light_yellow_s=1, light_red_s=2
    )
    doc = _labels(generate_clip(cfg, tmp_path / "light.mp4"))
    states = [f["light_state"] for f in doc["frames"]]
    runs = [s for k, s in enumerate(states) if k == 0 or states[k - 1] != s]
    assert runs[:4] == ["green", "yellow", "red", "green"]
    assert states.count("green") == 20 + 20
    assert states.count("yellow") == 10
    assert states.count("red") == 20
    assert doc["light_cycle_s"] == {"green": 2.0, "yellow": 1.0, "red": 2.0, "offset_s": 0.0}


def test_signal_lamp_shows_the_state() -> None:
    layout = RoadLayout()
    camera = Camera.for_layout(W, H, layout)
    background = Background(camera, layout, np.random.default_rng(0))
    renderer = Renderer(camera, layout, background, noise=None)
    head = background.signal_lamps[0]
    for state in ("red", "yellow", "green"):
        img, visible = renderer.render([], 0.0, 0, 1.0, state)
        assert visible == []
        for lamp in ("red", "yellow", "green"):
            u, v = getattr(head, lamp)
            r, g, b = (int(c) for c in img[round(v), round(u)])
            if lamp == state:
                assert max(r, g) > 200, (state, lamp, (r, g, b))
            else:
                assert max(r, g, b) < 120, (state, lamp, (r, g, b))


# ------------------------------------------------------------------------------------------ simulation
def _run(sim: TrafficSim, t0: float, t1: float, dt: float, each: Any = None) -> float:
    t = t0
    while t < t1 - 1e-9:
        sim.step(t, dt)
        t += dt
        if each is not None:
            each(t)
    return t


def _overlapping(a: Vehicle, b: Vehicle) -> bool:
    lateral = abs(a.x - b.x) < (a.shape.width + b.shape.width) / 2.0
    return lateral and a.z_lo < b.z_hi and b.z_lo < a.z_hi


def test_simulation_never_overlaps_vehicles() -> None:
    sim = TrafficSim(RoadLayout(), LightCycle(), default_events(60.0), np.random.default_rng(11), density=1.6)
    sim.warm_up()
    seen = {"max": 0}

    def check(t: float) -> None:
        vs = sim.vehicles
        seen["max"] = max(seen["max"], len(vs))
        for i, a in enumerate(vs):
            for b in vs[i + 1 :]:
                assert not _overlapping(a, b), (t, a, b)
            assert a.v >= 0.0

    _run(sim, 0.0, 60.0, 1 / 15, check)
    assert seen["max"] > 20


def test_simulation_wrong_way_driver() -> None:
    spec = EventSpec("wrong_way", 2.0, 6.0)
    sim = TrafficSim(RoadLayout(), LightCycle(), (spec,), np.random.default_rng(5))
    sim.warm_up()
    ww_lane = 2
    samples: list[tuple[float, list[tuple[int, float]]]] = []  # (t, [(vehicle id, z) of wrong-way drivers])

    def record(t: float) -> None:
        against = [v for v in sim.vehicles if v.wrong_way and v.heading < 0 and ww_lane in (v.lane, v.from_lane)]
        samples.append((t, [(v.vid, v.z_front) for v in against]))

    _run(sim, 0.0, 20.0, 1 / 30, record)
    assert not any(ww for t, ww in samples if t < spec.start_s - 1e-6)
    during = [ww for t, ww in samples if spec.start_s + 1.5 <= t < spec.end_s]
    assert sum(1 for ww in during if ww) >= 0.9 * len(during)
    assert sim.event_lanes == [ww_lane]
    # The wrong-way driver moves towards the camera (decreasing z) in the lane for traffic going away.
    first = during[0][0][0]
    z_positions = [z for ww in during for vid, z in ww if vid == first]
    assert z_positions[-1] < z_positions[0] - 10.0
    # Afterwards it gets back to its own side (here it has to wait for a gap in a queue first).
    assert not any(ww for t, ww in samples if t > spec.end_s + 10.0)


def test_simulation_stalled_vehicle_stops_and_resumes() -> None:
    spec = EventSpec("stalled", 2.0, 8.0)
    always_green = LightCycle(green_s=1000.0, yellow_s=1.0, red_s=1.0)
    sim = TrafficSim(RoadLayout(), always_green, (spec,), np.random.default_rng(9))
    sim.warm_up()
    t = _run(sim, 0.0, 2.0, 1 / 30)
    stalled = [v for v in sim.vehicles if v.stalled]
    assert len(stalled) == 1
    veh = stalled[0]
    assert sim.event_lanes == [veh.lane]
    t = _run(sim, t, 8.0, 1 / 30)
    assert veh.stalled
    assert veh.v == 0.0
    z_stopped = veh.z_front
    t = _run(sim, t, 9.9, 1 / 30)
    assert veh.z_front == z_stopped
    _run(sim, t, 14.0, 1 / 30)
    assert not veh.stalled
    assert veh.v > 1.0
    assert veh.z_front != z_stopped


def test_simulation_jam_raises_density() -> None:
    def stats(events: tuple[EventSpec, ...]) -> tuple[float, float]:
        """(mean over time of the median vehicle speed, mean vehicle count) over 12 s .. 20 s."""
        sim = TrafficSim(RoadLayout(), LightCycle(green_s=1000.0), events, np.random.default_rng(4))
        sim.warm_up()
        speeds: list[float] = []
        numbers: list[int] = []

        def record(t: float) -> None:
            if t >= 12.0:
                speeds.append(float(np.median([v.v for v in sim.vehicles])))
                numbers.append(len(sim.vehicles))

        _run(sim, 0.0, 20.0, 1 / 15, record)
        return float(np.mean(speeds)), float(np.mean(numbers))

    free_speed, free_count = stats(())
    jam_speed, jam_count = stats((EventSpec("jam", 5.0, 15.0),))
    assert jam_speed < 0.4 * free_speed, (free_speed, jam_speed)
    assert jam_count > 1.2 * free_count, (free_count, jam_count)


# ------------------------------------------------------------------------------------------ parsing
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("wrong_way@12.5:6", EventSpec("wrong_way", 12.5, 6.0)),
        ("stalled@3", EventSpec("stalled", 3.0, 10.0)),
        (" jam@0:2.5 ", EventSpec("jam", 0.0, 2.5)),
        ("Wrong-Way@1:1", EventSpec("wrong_way", 1.0, 1.0)),
    ],
)
def test_parse_event(text: str, expected: EventSpec) -> None:
    assert parse_event(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("meteor@3:2", "unknown kind"),
        ("jam", "expected KIND@START"),
        ("jam@", "expected KIND@START"),
        ("@3", "expected KIND@START"),
        ("jam@-1:2", "start must be >= 0"),
        ("jam@abc", "not a number"),
        ("jam@3:0", "duration must be > 0"),
        ("jam@3:-2", "duration must be > 0"),
        ("jam@3:x", "not a number"),
        ("jam@inf:2", "finite"),
        ("jam@nan", "finite"),
    ],
)
def test_parse_event_rejects_bad_input(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_event(text)


def test_default_events() -> None:
    events = default_events(60.0)
    assert sorted(e.kind for e in events) == sorted(EVENT_KINDS)
    assert all(e.start_s > 0 and e.end_s <= 60.0 for e in events)
    assert [e.start_s for e in events] == sorted(e.start_s for e in events)
    assert all(a.end_s <= b.start_s for a, b in itertools.pairwise(events))
    assert default_events(3.0) == ()
    assert all(e.end_s <= 10.0 for e in default_events(10.0))
    SynthConfig(seconds=10.0).validate()  # the default schedule always fits


# ------------------------------------------------------------------------------------------ validation
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"seconds": 0}, "seconds"),
        ({"seconds": -3.0}, "seconds"),
        ({"seconds": float("nan")}, "seconds"),
        ({"width": 321}, "width"),
        ({"height": 181}, "height"),
        ({"width": 0}, "width"),
        ({"fps": 0}, "fps"),
        ({"seed": -1}, "seed"),
        ({"lanes": 3}, "lanes"),
        ({"events": (EventSpec("jam", 7.0, 2.0),)}, "does not fit"),
        ({"events": (EventSpec("stalled", 9.0, 1.0),)}, "does not fit"),
        ({"crf": 60}, "crf"),
        ({"preset": "warp"}, "preset"),
        ({"light_red_s": 0}, "light_red_s"),
    ],
)
def test_config_validation(tmp_path: Path, changes: dict[str, Any], message: str) -> None:
    cfg = replace(BASE, **changes)
    out = tmp_path / "bad.mp4"
    with pytest.raises(ValueError, match=message):
        generate_clip(cfg, out)
    assert not out.exists()
    assert not labels_path_for(out).exists()


def test_event_spec_validates_itself() -> None:
    with pytest.raises(ValueError, match="start_s"):
        EventSpec("jam", -1.0, 2.0)
    with pytest.raises(ValueError, match="duration_s"):
        EventSpec("jam", 1.0, 0.0)
    with pytest.raises(ValueError, match="unknown event kind"):
        EventSpec("flood", 1.0, 1.0)  # type: ignore[arg-type]
