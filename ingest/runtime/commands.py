"""What every StreamSSL command shares at run time: logging set-up, stop signals, exit codes and error handling."""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Callable
from types import FrameType

from ingest.bus import BusError
from ingest.contract.errors import ContractError
from ingest.runtime.logs import configure_logging
from ingest.runtime.settings import CommonSettings, ConfigError

log = logging.getLogger(__name__)

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

# How a command's run function is told who may stop it: it passes its service's stop request, and the caller
# calls that request when it is time (a CLI on SIGTERM/SIGINT, :func:`stop_on_signals`; a harness that runs the
# service on a thread, when it chooses).
OnStop = Callable[[Callable[[], None]], None]


def start_logging(settings: CommonSettings) -> None:
    configure_logging(settings.log_format, settings.log_level)


def on_stop_signals(request_stop: Callable[[], None], finishing: str) -> None:
    """Route SIGTERM (Kubernetes stopping a pod) and SIGINT (Ctrl-C) to ``request_stop``, logging what happens next."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: %s", signal.Signals(signum).name, finishing)
        request_stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def stop_on_signals(finishing: str) -> OnStop:
    """The :data:`OnStop` of a CLI: the stop signals, logging ``finishing`` (what the service does next)."""
    return lambda request_stop: on_stop_signals(request_stop, finishing)


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
