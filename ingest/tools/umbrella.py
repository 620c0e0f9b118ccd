"""``streamssl``: the umbrella command over the tools (``synth``, ``windows tail``, ``demo``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ingest.tools import synth_command, windows_tail
from ingest.tools.demo import command as demo_command
from ingest.tools.report import command as report_command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamssl",
        description="StreamSSL: self-supervised learning on live traffic-camera streams. "
        "Services: streamssl-ingest, streamssl-train, streamssl-serve.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    synth_command.add_parser(subparsers)
    demo_command.add_parser(subparsers)
    report_command.add_parser(subparsers)
    windows = subparsers.add_parser("windows", help="inspect windows on the bus")
    windows_commands = windows.add_subparsers(dest="windows_command", metavar="COMMAND", required=True)
    windows_tail.add_parser(windows_commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    status: int = args.handler(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
