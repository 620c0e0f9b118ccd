"""Deterministic synthetic traffic-camera video with ground-truth labels.

A fixed pole camera (pinhole, ~8 m up, beside the road) looks down a straight road with ``lanes`` lanes
(default 4: the left half carries traffic towards the camera, the right half away from it). Cars, vans,
trucks and buses arrive at seeded Poisson times, follow each other with the intelligent driver model,
queue at a fixed-time signal (green/yellow/red) at a pedestrian crossing, and leave. Over the clip the
light drifts from day through dusk to night: the scene darkens and changes colour, street lamps come on
and vehicles show headlights (towards the camera) and red tail lights (away). Sensor noise comes from a
seeded bank of precomputed noise images. Events can be injected at known times:

- ``wrong_way``: a driver crosses into the nearest opposite lane (lane ``lanes // 2``) and drives against
  the traffic for the interval (oncoming vehicles move aside), then returns to its side;
- ``stalled``: a vehicle stops in its lane with hazard lights for the interval; those behind queue or pass;
- ``jam``: sudden congestion from a bottleneck beyond the view: speeds collapse to ~0.5-2.5 m/s in all lanes
  at once, arrivals triple and pile into the queue, so the density in view rises until the event ends.

A wrong-way driver that cannot get back to its side at the end of its event (e.g. beside a queue) may stay
in the wrong lane a few seconds after ``end_s``; labels give the requested interval.

Same ``SynthConfig`` (seed included) -> byte-identical labels JSON and identical decoded frames.

Usage::

    from ingest.tools.synth import SynthConfig, generate_clip, parse_event
    result = generate_clip(SynthConfig(seconds=60, seed=1, events=(parse_event("jam@20:8"),)), Path("clip.mp4"))

Outputs: ``clip.mp4`` (H.264 High profile, yuv420p, constant ``fps``, keyframe every
``keyframe_interval_s``, no B-frames) and ``clip.labels.json`` beside it.

Labels schema ``streamssl.synth.labels/1`` (JSON, keys sorted, floats rounded to 4 decimals)::

    {
      "schema": "streamssl.synth.labels/1",
      "seed": int, "fps": int, "width": int, "height": int,
      "seconds": float,                 # requested clip length
      "frame_count": int,               # == len(frames) == round(seconds * fps)
      "day_to_night": bool,
      "light_cycle_s": {"green": float, "yellow": float, "red": float, "offset_s": float},
                                        # state at t: phase = (t + offset_s) mod (green + yellow + red),
                                        # green first, then yellow, then red
      "lanes": [{"index": int, "direction": "towards" | "away"}],   # index 0 = leftmost in the image
      "events": [                       # sorted by start_s
        {"kind": "wrong_way" | "stalled" | "jam",
         "start_s": float, "end_s": float,
         "start_frame": int, "end_frame": int,  # active on frames start_frame <= i < end_frame
                                                # (exactly the frames with start_s <= i / fps < end_s)
         "lane": int | null}            # lane of the wrong-way / stalled vehicle; null for jam (all lanes)
      ],
      "frames": [
        {"frame": int, "t": float,      # t = frame / fps
         "vehicle_count": int,          # vehicles at least partly inside the image
         "mean_speed_mps": float | null,            # mean speed of those vehicles; null if none
         "mean_flow_direction_deg": float | null,   # circular mean of the image-plane motion direction of
                                        # the visible vehicles moving faster than 0.3 m/s; degrees in
                                        # [0, 360), 0 = image right, 90 = image up (away from the camera),
                                        # 270 = image down; null if none move (or they cancel exactly)
         "flow_coherence": float,       # length of that mean resultant, 0..1 (0 when none move)
         "light_state": "green" | "yellow" | "red",
         "illumination": float,         # 1.0 = full daylight .. 0.06 = night
         "active_events": [str]}        # kinds active on this frame, sorted
      ]
    }
"""

from ingest.tools.synth.config import SynthConfig
from ingest.tools.synth.events import DEFAULT_DURATION_S, EVENT_KINDS, EventKind, EventSpec, default_events, parse_event
from ingest.tools.synth.generate import SynthResult, generate_clip
from ingest.tools.synth.labels import SCHEMA, labels_path_for

__all__ = [
    "DEFAULT_DURATION_S",
    "EVENT_KINDS",
    "SCHEMA",
    "EventKind",
    "EventSpec",
    "SynthConfig",
    "SynthResult",
    "default_events",
    "generate_clip",
    "labels_path_for",
    "parse_event",
]
