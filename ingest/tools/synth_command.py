"""``streamssl synth``: write a synthetic traffic-camera clip and its labels."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ingest.runtime.commands import run_command
from ingest.runtime.logs import configure_logging


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "synth",
        help="generate a synthetic traffic-camera clip (H.264 MP4) with labels",
        description="Render a deterministic traffic scene seen from a pole camera: lanes, vehicles, a traffic light, "
        "day-to-night drift, sensor noise and labelled events. Writes FILE.mp4 and FILE.labels.json.",
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="clip length (default 60)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same clip (default 0)")
    parser.add_argument("--out", type=Path, required=True, metavar="FILE.mp4", help="output video path")
    parser.add_argument("--width", type=int, default=640, help="frame width, even (default 640)")
    parser.add_argument("--height", type=int, default=360, help="frame height, even (default 360)")
    parser.add_argument("--fps", type=int, default=30, help="frame rate (default 30)")
    parser.add_argument(
        "--event",
        action="append",
        metavar="KIND@START[:DURATION]",
        help="inject an event (wrong_way, stalled, jam) at START seconds; repeatable. Default: each kind once. "
        "Use --no-events for none.",
    )
    parser.add_argument("--no-events", action="store_true", help="inject no events")
    parser.add_argument("--log-format", choices=["text", "json"], default="text")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    def action() -> int:
        from ingest.tools.synth import SynthConfig, generate_clip, parse_event

        configure_logging(args.log_format)
        if args.no_events and args.event:
            raise ValueError("--no-events and --event exclude each other")
        events = () if args.no_events else None if not args.event else tuple(parse_event(e) for e in args.event)
        config = SynthConfig(
            seconds=args.seconds,
            seed=args.seed,
            width=args.width,
            height=args.height,
            fps=args.fps,
            events=events,
        )

        def progress(done: int, total: int) -> None:
            print(f"\rsynth: {done}/{total} frames", end="", file=sys.stderr, flush=True)

        result = generate_clip(config, args.out, progress=progress)
        print(file=sys.stderr)
        print(
            f"wrote {result.video_path} ({result.frames} frames) and {result.labels_path} "
            f"in {result.seconds_elapsed:.1f} s"
        )
        return 0

    return run_command("streamssl synth", action)
