"""``streamssl windows tail``: print one JSON line per window on a topic, like kcat for windows."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, TextIO

from ingest.bus import Bus, Record, open_bus
from ingest.bus.base import StartPosition
from ingest.contract.errors import WindowDecodeError
from ingest.contract.messages import header_from_record
from ingest.runtime.commands import run_command, start_logging
from ingest.runtime.flags import add_common_flags, common_flags, given_settings
from ingest.runtime.settings import CommonSettings, load_settings


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "tail",
        help="print one JSON line per window on a topic",
        description="Print one JSON line per window (camera, sequence, window id, frames, size, codec, PTS range, "
        'bytes). Malformed messages are printed as lines with an "error" field; tail never stops on them.',
    )
    add_common_flags(parser, CommonSettings)
    parser.add_argument("--max", type=int, metavar="N", help="stop after N messages (default: run until Ctrl-C)")
    parser.add_argument(
        "--from-beginning",
        action="store_true",
        help="start at the oldest retained window instead of new ones",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        metavar="S",
        help="stop when no message arrived for S seconds (default: never)",
    )
    parser.set_defaults(handler=_run)


def describe_record(record: Record) -> dict[str, Any]:
    """The JSON-able summary of one message: its window's header, or the reason it is not a window."""
    position = {"partition": record.partition, "offset": record.offset}
    try:
        header = header_from_record(record)
    except WindowDecodeError as error:
        return {**position, "error": str(error), "bytes": len(record.value)}
    return {
        "camera_id": header.camera_id,
        "sequence": header.sequence,
        "window_id": header.window_id,
        "segment": header.segment,
        "frames": header.frame_count,
        "height": header.height,
        "width": header.width,
        "channels": header.channels,
        "codec": header.codec.value,
        "first_pts": header.pts_s[0],
        "last_pts": header.pts_s[-1],
        "bytes": header.size_bytes,
        **position,
    }


def tail(
    bus: Bus,
    topic: str,
    out: TextIO,
    *,
    limit: int | None,
    from_beginning: bool,
    idle_timeout_s: float | None,
) -> int:
    """Print windows of ``topic`` to ``out``; return how many messages were printed."""
    start: StartPosition = "earliest" if from_beginning else "latest"
    # No group: tail reads every partition itself and never commits, so it disturbs no consumer group.
    with bus.consumer([topic], group_id=None, start=start) as consumer:
        printed = 0
        last_message = time.monotonic()
        while limit is None or printed < limit:
            records = consumer.poll(0.5, max_records=None if limit is None else limit - printed)
            for record in records:
                out.write(json.dumps(describe_record(record)) + "\n")
            out.flush()
            printed += len(records)
            if records:
                last_message = time.monotonic()
            elif idle_timeout_s is not None and time.monotonic() - last_message > idle_timeout_s:
                break
        return printed


def _run(args: argparse.Namespace) -> int:
    def action() -> int:
        settings = load_settings(CommonSettings, args.config, given_settings(args, common_flags()))
        start_logging(settings)
        with open_bus(settings.bus, settings.kafka) as bus:
            tail(
                bus,
                settings.topic,
                sys.stdout,
                limit=args.max,
                from_beginning=args.from_beginning,
                idle_timeout_s=args.idle_timeout,
            )
        return 0

    return run_command("streamssl windows tail", action)
