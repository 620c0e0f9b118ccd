"""Ingest throughput against FFmpeg's own decoder, on the same H.264 files, in the same run.

    python bench/ingest_bench.py [--seconds 10] [--threads 2] [--clips 768x432@12.5,1280x720@30] [--clip FILE ...]

For each clip (a synthetic traffic scene rendered at the size and frame rate, H.264; or a real file given with
``--clip``, repeatable), it times:
  * reference: ``ffmpeg -threads N -i clip -f null -`` (decode only), frames/s;
  * ours: the ingest service's whole path (decode → sample by PTS → resize to 128×128 → JPEG windows → embedded
    bus), keeping every frame and sampling 10 fps, frames/s of source video;
and prints ours / reference, plus cameras per core at 10 fps: seconds of video handled per CPU-second of the process.
The default clips are the substream sizes traffic cameras are usually read at (640×360, 768×432 at 10–15 fps) and
the main-stream sizes (720p and 1080p at 30 fps).
"""

from __future__ import annotations

import argparse
import math
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from prometheus_client import CollectorRegistry

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a clone without installing the package

from ingest.bus.embedded import EmbeddedBus  # noqa: E402
from ingest.service.config import CameraConfig, IngestSettings  # noqa: E402
from ingest.service.service import IngestService  # noqa: E402
from ingest.tools.synth import SynthConfig, generate_clip  # noqa: E402


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def make_clip(directory: Path, width: int, height: int, fps: float, args: argparse.Namespace) -> Path:
    """A synthetic clip of ``args.frames`` frames: the rendered scene looped, rescaled, with fresh noise per frame
    (so the encoder cannot coast on rescaled smoothness or on the loop). Long enough that ffmpeg's start-up (~0.1 s)
    does not count against the reference."""
    scene = directory / "scene.mp4"
    if not scene.exists():
        generate_clip(SynthConfig(seconds=args.seconds, seed=3, width=640, height=360, events=()), scene)
    clip = directory / f"traffic-{width}x{height}-{fps:g}fps.mp4"
    loops = max(0, math.ceil(args.frames / fps / args.seconds) - 1)
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-stream_loop", str(loops), "-i", str(scene),
         "-vf", f"fps={fps:g},scale={width}:{height},noise=alls=6:allf=t", "-frames:v", str(args.frames),
         "-c:v", "libx264", "-preset", "veryfast", "-g", str(round(2 * fps)), "-pix_fmt", "yuv420p", str(clip)],
        check=True,
    )  # fmt: skip
    return clip


def probe(clip: Path) -> tuple[str, float, int]:
    """``WxH``, frame rate and frame count of the clip's video stream (counted, not taken from the header)."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_packets",
         "-show_entries", "stream=width,height,r_frame_rate,nb_read_packets", "-of", "csv=p=0", str(clip)],
        check=True, capture_output=True, text=True,
    ).stdout.strip().split(",")  # fmt: skip
    width, height, rate, frames = out[:4]
    numerator, _, denominator = rate.partition("/")
    return f"{width}x{height}", float(numerator) / float(denominator or 1), int(frames)


def ffmpeg_fps(clip: Path, threads: int, frames: int) -> float:
    started = time.perf_counter()
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-threads", str(threads), "-i", str(clip), "-f", "null", "-"], check=True
    )
    return frames / (time.perf_counter() - started)


def ours(
    clip: Path, fps: float, threads: int, read_ahead: int | None = None, skip_loop_filter: bool | None = None
) -> tuple[float, float, int]:
    """Source frames per second, CPU-seconds used, windows published."""
    bus = EmbeddedBus(f"bench-{uuid.uuid4().hex}")
    extra: dict[str, int | bool] = {} if read_ahead is None else {"read_ahead_frames": read_ahead}
    if skip_loop_filter is not None:
        extra["skip_loop_filter"] = skip_loop_filter
    settings = IngestSettings(
        topic="bench",
        partitions=1,
        cameras=[CameraConfig(camera_id="bench", url=str(clip), fps=fps, decode_threads=threads, **extra)],
    )
    service = IngestService(settings, bus, CollectorRegistry())
    cpu_before, started = cpu_seconds(), time.perf_counter()
    service.start()
    service.wait(poll_s=0.01)
    service.shutdown()
    elapsed, cpu = time.perf_counter() - started, cpu_seconds() - cpu_before
    registry = service.metrics.registry
    decoded = registry.get_sample_value("streamssl_ingest_frames_decoded_total", {"camera": "bench"}) or 0.0
    published = registry.get_sample_value("streamssl_ingest_windows_published_total", {"camera": "bench"}) or 0.0
    return decoded / elapsed, cpu, int(published)


def measure(clip: Path, label: str, args: argparse.Namespace) -> str:
    size, rate, frames = probe(clip)
    knobs = (args.read_ahead, args.skip_loop_filter)
    references, everys, runs = [], [], []
    for _ in range(args.repeats):  # interleaved, so that a slow spell of a shared machine hits all three alike
        references.append(ffmpeg_fps(clip, args.threads, frames))
        everys.append(ours(clip, rate, args.threads, *knobs)[0])
        runs.append(ours(clip, 10.0, args.threads, *knobs))
    reference, every, sampled = max(references), max(everys), max(run[0] for run in runs)
    per_core = frames / rate / min(run[1] for run in runs)
    return (
        f"| {label}: {size} {rate:g} fps, {frames} frames | {reference:.0f} fps | {every:.0f} fps "
        f"| {every / reference:.2f}× | {sampled:.0f} fps | {sampled / reference:.2f}× | {per_core:.1f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the rendered scene the clips loop")
    parser.add_argument("--frames", type=int, default=3000, help="frames in each synthetic clip")
    parser.add_argument("--threads", type=int, default=2, help="decoder threads for both ffmpeg and ours")
    parser.add_argument(
        "--clips", default="640x360@10,768x432@10,768x432@12.5,768x432@15,1280x720@30,1920x1080@30",
        help="synthetic clips WxH@FPS, comma-separated ('' for none)",
    )  # fmt: skip
    parser.add_argument("--clip", type=Path, action="append", default=[], help="a real video file (repeatable)")
    parser.add_argument(
        "--read-ahead", type=int, default=None, metavar="N",
        help="ours: frames decoded ahead of conversion (read_ahead_frames; default: the service's, 0: off)",
    )  # fmt: skip
    parser.add_argument(
        "--skip-loop-filter", action=argparse.BooleanOptionalAction, default=None,
        help="ours: decode without deblocking (skip_loop_filter; default: the service's, --no-...: full decode)",
    )  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3, help="best of N runs of each")
    args = parser.parse_args()
    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        raise SystemExit("ffmpeg and ffprobe are needed: apt-get install -y --no-install-recommends ffmpeg")
    print(
        f"| clip | ffmpeg -threads {args.threads} -f null | ours, every frame | ratio | ours, 10 fps | ratio "
        "| cameras/core at 10 fps |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as scratch:
        for spec in filter(None, args.clips.split(",")):
            size, _, fps = spec.partition("@")
            width, height = (int(part) for part in size.split("x"))
            clip = make_clip(Path(scratch), width, height, float(fps or 30), args)
            print(measure(clip, "synthetic", args), flush=True)
        for clip in args.clip:
            print(measure(clip, clip.name, args), flush=True)


if __name__ == "__main__":
    main()
