"""Entry point of a service whose issue has not landed yet: it takes the common flags and says so plainly."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ingest.cli.common import EXIT_USAGE, add_common_arguments, common_overrides, run_command
from ingest.cli.settings import CommonSettings, load_settings


def pending_service_main(program: str, description: str, issue: str, argv: Sequence[str] | None) -> int:
    """Parse and validate the common flags, then exit 2 naming the issue that builds the service."""
    parser = argparse.ArgumentParser(prog=program, description=description)
    add_common_arguments(parser)
    args = parser.parse_args(argv)

    def action() -> int:
        load_settings(CommonSettings, args.config, common_overrides(args))
        print(f"{program}: this service is not built yet in this version ({issue}).", file=sys.stderr)
        return EXIT_USAGE

    return run_command(program, action)
