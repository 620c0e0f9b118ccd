"""The flags every StreamSSL service takes, and the error handling every command shares."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from ingest.bus import BusError
from ingest.contract.errors import ContractError
from ingest.runtime.logs import configure_logging
from ingest.runtime.settings import CommonSettings, ConfigError

log = logging.getLogger(__name__)

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """``--bus --topic --config --metrics-port --log-format --log-level``; unset flags leave the config's value."""
    group = parser.add_argument_group("common options (also from --config YAML and STREAMSSL_* variables)")
    group.add_argument("--bus", metavar="URL", help="embedded://[NAME] (default) or kafka://HOST:PORT[,HOST:PORT]")
    group.add_argument("--topic", metavar="NAME", help="topic of windows (default: streamssl.windows)")
    group.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="YAML settings; flags override it, STREAMSSL_* variables override both",
    )
    group.add_argument("--metrics-port", type=int, metavar="N", help="serve Prometheus metrics on port N (0 = off)")
    group.add_argument("--log-format", choices=["text", "json"], help="log lines as text (default) or JSON")
    group.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="default INFO")


def common_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The common flags the user actually gave, as settings overrides."""
    return {
        "bus": args.bus,
        "topic": args.topic,
        "metrics_port": args.metrics_port,
        "log_format": args.log_format,
        "log_level": args.log_level,
    }


def start_logging(settings: CommonSettings) -> None:
    configure_logging(settings.log_format, settings.log_level)


def on_stop_signals(request_stop: Callable[[], None], finishing: str) -> None:
    """Route SIGTERM (Kubernetes stopping a pod) and SIGINT (Ctrl-C) to ``request_stop``, logging what happens next."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: %s", signal.Signals(signum).name, finishing)
        request_stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def run_command(program: str, action: Callable[[], int]) -> int:
    """Run ``action`` and turn expected failures into one clear line on stderr and a non-zero exit status."""
    try:
        return action()
    except ConfigError as error:
        print(f"{program}: configuration error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except (BusError, ContractError, ValueError, OSError) as error:
        print(f"{program}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{program}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
