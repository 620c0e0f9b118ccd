"""A looping RTSP camera for tests: GStreamer's RTSP server streaming an Annex-B H.264 file forever.

    /usr/bin/python3 scripts/rtsp_camera.py --port N --path /cam --h264 FILE.h264 [--fps 30] [--host 127.0.0.1]

Run it with the SYSTEM python (Debian's /usr/bin/python3, which has ``gi``; scripts/install-rtsp.sh installs the
packages), not the project's virtualenv. It imports nothing from the project.

Once the server listens it prints one line to stdout, ``ready rtsp://HOST:PORT/PATH``, with the port it really bound
(``--port 0`` picks a free one). Every client sees the same live stream (the media is shared), paced in real time at
``--fps`` and looping over the file. SIGTERM or SIGINT stop it cleanly (exit 0); with ``--exit-with-stdin`` it also
stops when its stdin reaches end of file, so a parent that dies without cleaning up does not leave it running.
Errors (missing file, port in use, missing GStreamer parts) go to stderr with exit status 2.

Make the input with: ``ffmpeg -i x.mp4 -c copy -bsf:v h264_mp4toannexb -f h264 x.h264``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from typing import Any, NoReturn


def die(message: str) -> NoReturn:
    print("rtsp_camera: " + message, file=sys.stderr, flush=True)
    sys.exit(2)


def gst_quote(value: str) -> str:
    """A value for a gst-launch line, double-quoted so that spaces and '!' stay inside it."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def launch_line(h264: str, fps: int) -> str:
    # h264parse splits the looping byte stream into access units and, given a frame rate, gives them decode times
    # that keep increasing across loops; the RTSP server's sinks then pace the stream in real time. config-interval=-1
    # repeats SPS/PPS before every IDR, so a client that joins the shared stream mid-way can decode from the next one.
    return (
        f"( multifilesrc location={gst_quote(h264)} loop=true"
        f" ! h264parse name=parse ! video/x-h264,framerate={fps}/1"
        " ! rtph264pay name=pay0 pt=96 config-interval=-1 )"
    )


def on_media_configure(_factory: Any, media: Any, gst: Any) -> None:
    """Give every access unit a presentation time: h264parse only interpolates decode times (DTS) for a raw H.264
    stream, and RTP carries presentation times, so without this every RTP packet has the same timestamp and clients
    see frames without usable pts (and FFmpeg spends its whole analyzeduration probing). PTS = DTS is exact for
    streams without B-frames, which is what IP cameras send and what tests/cameras.py's h264_annexb() produces.
    """

    def set_pts(_pad: Any, info: Any) -> Any:
        buffer = info.get_buffer()
        if buffer is not None and buffer.pts == gst.CLOCK_TIME_NONE and buffer.dts != gst.CLOCK_TIME_NONE:
            buffer.pts = buffer.dts
        return gst.PadProbeReturn.OK

    parse = media.get_element().get_by_name("parse")
    parse.get_static_pad("src").add_probe(gst.PadProbeType.BUFFER, set_pts)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Serve an Annex-B H.264 file as a looping RTSP camera.")
    parser.add_argument("--port", type=int, required=True, help="TCP port for RTSP; 0 picks a free one")
    parser.add_argument("--path", default="/cam", help="mount path (default /cam)")
    parser.add_argument("--h264", required=True, help="Annex-B H.264 elementary stream file")
    parser.add_argument("--fps", type=int, default=30, help="frame rate of the file (default 30)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--exit-with-stdin", action="store_true", help="stop when stdin reaches end of file")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port {args.port} is not a TCP port")
    if args.fps <= 0:
        parser.error("--fps must be positive")
    if not args.path.startswith("/"):
        args.path = "/" + args.path
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    h264 = os.path.abspath(args.h264)
    if not os.path.isfile(h264) or os.path.getsize(h264) == 0:
        die(f"no H.264 input at {h264}")

    # Imported by name: the project's virtualenv, where mypy runs, has no `gi` (PyGObject) nor stubs for it.
    try:
        gi = importlib.import_module("gi")
        gi.require_version("Gst", "1.0")
        gi.require_version("GstRtspServer", "1.0")
        glib = importlib.import_module("gi.repository.GLib")
        gst = importlib.import_module("gi.repository.Gst")
        gst_rtsp_server = importlib.import_module("gi.repository.GstRtspServer")
    except (ImportError, ValueError) as error:
        die(f"GStreamer's RTSP server is not available to {sys.executable} ({error}); run scripts/install-rtsp.sh")

    gst.init(None)
    missing = [name for name in ("multifilesrc", "h264parse", "rtph264pay") if gst.ElementFactory.find(name) is None]
    if missing:
        die(f"GStreamer elements missing: {', '.join(missing)}; run scripts/install-rtsp.sh")

    server = gst_rtsp_server.RTSPServer()
    server.set_address(args.host)
    server.set_service(str(args.port))
    factory = gst_rtsp_server.RTSPMediaFactory()
    factory.set_launch(launch_line(h264, args.fps))
    factory.set_shared(True)
    factory.connect("media-configure", on_media_configure, gst)
    server.get_mount_points().add_factory(args.path, factory)

    loop = glib.MainLoop()
    stop_reason: list[str] = []

    def stop(reason: str) -> bool:
        stop_reason.append(reason)
        loop.quit()
        return False  # remove the source

    glib.unix_signal_add(glib.PRIORITY_HIGH, signal.SIGTERM, stop, "SIGTERM")
    glib.unix_signal_add(glib.PRIORITY_HIGH, signal.SIGINT, stop, "SIGINT")
    if args.exit_with_stdin:

        def on_stdin(_fd: Any, _condition: Any) -> bool:
            # Readable with no data (EOF), or hung up: the parent is gone.
            if not os.read(0, 4096):
                return stop("stdin closed")
            return True

        glib.io_add_watch(0, glib.PRIORITY_DEFAULT, glib.IO_IN | glib.IO_HUP | glib.IO_ERR, on_stdin)

    # attach() binds and listens; it returns 0 (GStreamer logs why) when it cannot, e.g. the port is taken.
    try:
        source_id = server.attach(None)
    except glib.Error as error:
        die(f"cannot listen on {args.host}:{args.port}: {error.message}")
    port = server.get_bound_port()
    if not source_id or port <= 0:
        die(f"cannot listen on {args.host}:{args.port} (port in use?)")

    print(f"ready rtsp://{args.host}:{port}{args.path}", flush=True)
    loop.run()
    print(f"rtsp_camera: stopping ({stop_reason[0] if stop_reason else 'loop ended'})", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
