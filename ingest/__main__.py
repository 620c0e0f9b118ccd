"""``streamssl-ingest`` / ``python -m ingest``: camera streams to windows on the bus.

One camera from the command line (``--source URL --camera-id ID``) or many from ``--config cameras.yaml``
(a ``cameras:`` list of :class:`ingest.service.config.CameraConfig` entries). A file without ``--loop`` ends at its
end: the service flushes and exits 0. SIGTERM/SIGINT do the same for live cameras.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from ingest.bus import open_bus
from ingest.runtime.commands import OnStop, run_command, start_logging, stop_on_signals
from ingest.runtime.flags import Flag, add_common_flags, add_flags, common_flags, given_settings
from ingest.runtime.settings import ConfigError, load_settings
from ingest.runtime.telemetry_server import serve_telemetry
from ingest.service.config import CameraConfig, IngestSettings

log = logging.getLogger("ingest")


CAMERA_FLAGS = (
    Flag("url", name="--source", metavar="URL", help="file, rtsp://, http(s)://, or /dev/videoN"),
    Flag("camera_id", metavar="ID", help="stable camera name (the Kafka key)"),
    Flag("fps"),
    Flag("size", metavar="WxH"),
    Flag("resize"),
    Flag("color"),
    Flag("window", metavar="T"),
    Flag("stride", metavar="S"),
    Flag("codec"),
    Flag("quality"),
    Flag("loop"),
    Flag("realtime"),
    Flag("rtsp_transport"),
    Flag("stall_timeout_s", name="--stall-timeout", metavar="S"),
    Flag("motion_threshold"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamssl-ingest",
        description="Decode camera streams (RTSP, HTTP/HLS, files, V4L2 webcams) into frame-sequence windows on the "
        "bus. One camera from flags, or many from --config (a 'cameras:' list).",
    )
    add_common_flags(parser, IngestSettings)
    add_flags(parser.add_argument_group("single camera (joins the cameras of --config)"), CameraConfig, CAMERA_FLAGS)
    return parser


def _camera(args: argparse.Namespace) -> dict[str, Any] | None:
    """The camera the flags describe, or None if no camera flag was given."""
    camera = given_settings(args, CAMERA_FLAGS)
    if not camera:
        return None
    if "url" not in camera or "camera_id" not in camera:
        raise ConfigError("a single camera needs both --source and --camera-id")
    if camera.get("codec") and camera["codec"] != "jpeg" and "quality" not in camera:
        camera["quality"] = 1
    return camera


def run_ingest(args: argparse.Namespace, on_stop: OnStop) -> int:
    """The service the parsed flags describe, until it stops (``on_stop`` is given its stop request); exit status."""
    from ingest.service.service import IngestService

    camera = _camera(args)
    settings = load_settings(
        IngestSettings,
        args.config,
        given_settings(args, common_flags()),
        extend={"cameras": [camera]} if camera else None,
    )
    if not settings.cameras:
        raise ConfigError("no camera configured: give --source and --camera-id, or a 'cameras:' list in --config")
    start_logging(settings)
    with open_bus(settings.bus, settings.kafka) as bus:
        service = IngestService(settings, bus)
        on_stop(service.request_stop)
        with serve_telemetry(settings.metrics_port, service.metrics.registry, service.ready):
            try:
                service.start()
                service.wait()
            finally:
                abandoned = service.shutdown()
    return 0 if not abandoned else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    on_stop = stop_on_signals("finishing queued windows and flushing")
    return run_command("streamssl-ingest", lambda: run_ingest(args, on_stop))


if __name__ == "__main__":
    sys.exit(main())
