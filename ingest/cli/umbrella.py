"""``streamssl``: the umbrella command. Subcommands of other services plug in through the entry-point group
``streamssl.commands`` (a function taking the subparsers object), so this package never imports them."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from typing import Any

from ingest.cli import demo_command, synth_command, windows_tail

PLUGIN_GROUP = "streamssl.commands"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamssl",
        description="StreamSSL: self-supervised learning on live traffic-camera streams. "
        "Services: streamssl-ingest, streamssl-train, streamssl-serve.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    synth_command.add_parser(subparsers)
    demo_command.add_parser(subparsers)
    windows = subparsers.add_parser("windows", help="inspect windows on the bus")
    windows_commands = windows.add_subparsers(dest="windows_command", metavar="COMMAND", required=True)
    windows_tail.add_parser(windows_commands)
    for plugin in entry_points(group=PLUGIN_GROUP):
        register: Any = plugin.load()
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    status: int = args.handler(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
