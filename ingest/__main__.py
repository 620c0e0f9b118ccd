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
from ingest.contract import FrameCodec
from ingest.runtime.commands import add_common_arguments, common_overrides, on_stop_signals, run_command, start_logging
from ingest.runtime.settings import ConfigError, load_settings, read_config_file
from ingest.runtime.telemetry_server import TelemetryServer

log = logging.getLogger("ingest")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamssl-ingest",
        description="Decode camera streams (RTSP, HTTP/HLS, files, V4L2 webcams) into frame-sequence windows on the "
        "bus. One camera from flags, or many from --config (a 'cameras:' list).",
    )
    add_common_arguments(parser)
    camera = parser.add_argument_group("single camera (defaults: 8-frame windows, stride 8, 128x128, 10 fps, JPEG 90)")
    camera.add_argument("--source", metavar="URL", help="file, rtsp://, http(s)://, or /dev/videoN")
    camera.add_argument("--camera-id", metavar="ID", help="stable camera name (the Kafka key)")
    camera.add_argument("--fps", type=float, help="sampling rate by PTS")
    camera.add_argument("--size", metavar="WxH", help="window frame size")
    camera.add_argument("--resize", choices=["crop", "letterbox"], help="centre crop (default) or letterbox")
    camera.add_argument("--color", choices=["rgb", "gray"], help="rgb (default) or gray")
    camera.add_argument("--window", type=int, metavar="T", help="frames per window")
    camera.add_argument("--stride", type=int, metavar="S", help="frames between window starts")
    camera.add_argument("--codec", choices=[c.value for c in FrameCodec], help="frame codec (default jpeg)")
    camera.add_argument("--quality", type=int, help="JPEG quality (default 90)")
    camera.add_argument("--loop", action="store_true", default=None, help="replay a file forever")
    camera.add_argument("--realtime", action="store_true", default=None, help="pace a file at its frame rate")
    camera.add_argument("--rtsp-transport", choices=["tcp", "udp"], help="default tcp")
    camera.add_argument("--stall-timeout", type=float, metavar="S", help="reconnect when no frame for S s (20)")
    camera.add_argument("--motion-threshold", type=float, help="skip windows below this motion energy (0 = off)")
    return parser


_CAMERA_FLAGS = {
    "source": "url",
    "camera_id": "camera_id",
    "fps": "fps",
    "size": "size",
    "resize": "resize",
    "color": "color",
    "window": "window",
    "stride": "stride",
    "codec": "codec",
    "quality": "quality",
    "loop": "loop",
    "realtime": "realtime",
    "rtsp_transport": "rtsp_transport",
    "stall_timeout": "stall_timeout_s",
    "motion_threshold": "motion_threshold",
}


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides = common_overrides(args)
    camera = {field: getattr(args, flag) for flag, field in _CAMERA_FLAGS.items() if getattr(args, flag) is not None}
    if camera:
        if "url" not in camera or "camera_id" not in camera:
            raise ConfigError("a single camera needs both --source and --camera-id")
        if camera.get("codec") and camera["codec"] != "jpeg" and "quality" not in camera:
            camera["quality"] = 1
        from_file = read_config_file(args.config).get("cameras", []) if args.config else []
        overrides["cameras"] = [*from_file, camera]
    return overrides


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def action() -> int:
        from ingest.service.config import IngestSettings
        from ingest.service.service import IngestService

        settings = load_settings(IngestSettings, args.config, _overrides(args))
        if not settings.cameras:
            raise ConfigError("no camera configured: give --source and --camera-id, or a 'cameras:' list in --config")
        start_logging(settings)
        with open_bus(settings.bus, settings.kafka) as bus:
            service = IngestService(settings, bus)

            on_stop_signals(service.request_stop, "finishing queued windows and flushing")
            telemetry = None
            if settings.metrics_port:
                telemetry = TelemetryServer(settings.metrics_port, service.metrics.registry, service.ready).start()
                log.info("metrics on :%d/metrics, probes on /healthz and /readyz", telemetry.port)
            try:
                service.start()
                service.wait()
            finally:
                abandoned = service.shutdown()
                if telemetry is not None:
                    telemetry.stop()
        return 0 if not abandoned else 1

    return run_command("streamssl-ingest", action)


if __name__ == "__main__":
    sys.exit(main())
