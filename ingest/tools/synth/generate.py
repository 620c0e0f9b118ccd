"""``generate_clip``: simulate, render, encode and label one clip."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ingest.tools.synth.camera import Camera
from ingest.tools.synth.config import SynthConfig
from ingest.tools.synth.labels import (
    build_document,
    event_records,
    frame_record,
    frame_span,
    labels_path_for,
    write_labels,
)
from ingest.tools.synth.lighting import illumination_at
from ingest.tools.synth.noise import NoiseBank
from ingest.tools.synth.render import Renderer
from ingest.tools.synth.scene import Background
from ingest.tools.synth.scene_layout import RoadLayout
from ingest.tools.synth.traffic import TrafficSim
from ingest.tools.synth.traffic_light import LightCycle
from ingest.tools.synth.video_writer import H264Writer

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class SynthResult:
    video_path: Path
    labels_path: Path
    frames: int
    seconds_elapsed: float  # wall-clock time the generation took


def generate_clip(config: SynthConfig, out: Path, progress: ProgressFn | None = None) -> SynthResult:
    """Write the clip to ``out`` (H.264 MP4) and its labels to ``clip.labels.json`` beside it.

    ``progress(done_frames, total_frames)`` is called after every second of video and at the end.
    Raises ``ValueError`` for an invalid config. On failure, partial outputs are removed.
    """
    started = time.perf_counter()
    config.validate()
    out = Path(out)
    labels_path = labels_path_for(out)
    events = config.resolved_events()
    total = config.total_frames
    fps = config.fps

    scene_seed, _, noise_seed = _seeds(config)
    sim = simulate_traffic(config)
    layout, light = sim.layout, sim.light
    camera = Camera.for_layout(config.width, config.height, layout)
    background = Background(camera, layout, np.random.default_rng(scene_seed))
    noise = NoiseBank(config.width, config.height, np.random.default_rng(noise_seed)) if config.noise else None
    renderer = Renderer(camera, layout, background, noise)

    spans = [(event.kind, *frame_span(event, fps)) for event in events]
    frames: list[dict[str, Any]] = []
    dt = 1.0 / fps
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with H264Writer(
            out,
            config.width,
            config.height,
            fps,
            crf=config.crf,
            preset=config.preset,
            threads=config.encoder_threads,
            keyframe_interval=max(1, round(config.keyframe_interval_s * fps)),
        ) as writer:
            for i in range(total):
                t = i / fps
                level = illumination_at(t, config.seconds, config.day_to_night)
                state = light.state_at(t)
                image, visible = renderer.render(sim.vehicles, t, i, level, state)
                writer.write(image)
                frames.append(
                    frame_record(
                        i,
                        t,
                        [v.speed_mps for v in visible],
                        [v.direction_deg for v in visible if v.direction_deg is not None],
                        state,
                        level,
                        [kind for kind, first, end in spans if first <= i < end],
                    )
                )
                sim.step(t, dt)
                if progress is not None and ((i + 1) % fps == 0 or i + 1 == total):
                    progress(i + 1, total)
        document = build_document(
            seed=config.seed,
            fps=fps,
            width=config.width,
            height=config.height,
            seconds=config.seconds,
            light_cycle=light.as_label(),
            lane_directions=[layout.lane_direction(lane) for lane in range(layout.lanes)],
            day_to_night=config.day_to_night,
            events=event_records(events, sim.event_lanes, fps),
            frames=frames,
        )
        write_labels(labels_path, document)
    except BaseException:
        out.unlink(missing_ok=True)
        labels_path.unlink(missing_ok=True)
        raise
    return SynthResult(out, labels_path, total, time.perf_counter() - started)


def _seeds(config: SynthConfig) -> list[np.random.SeedSequence]:
    """(scene, traffic, noise): independent streams, so e.g. adding an event leaves the scenery and the noise
    unchanged."""
    return np.random.SeedSequence(config.seed).spawn(3)


def simulate_traffic(config: SynthConfig) -> TrafficSim:
    """The clip's traffic, warmed up and at t = 0: stepping it by ``1 / config.fps`` replays exactly what
    :func:`generate_clip` renders, without rendering it."""
    light = LightCycle(config.light_green_s, config.light_yellow_s, config.light_red_s)
    rng = np.random.default_rng(_seeds(config)[1])
    sim = TrafficSim(RoadLayout(lanes=config.lanes), light, config.resolved_events(), rng, config.traffic_density)
    sim.warm_up()
    return sim
