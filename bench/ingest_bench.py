"""Ingest throughput against FFmpeg's own decoder, on the same H.264 files, in the same run.

    python bench/ingest_bench.py [--seconds 10] [--threads 2] [--sizes 1280x720,1920x1080]

For each clip (a synthetic traffic scene rendered at the size, H.264 30 fps), it times:
  * reference: ``ffmpeg -threads N -i clip -f null -`` (decode only), frames/s;
  * ours: the ingest service's whole path (decode → sample by PTS → resize to 128×128 → JPEG windows → embedded
    bus), keeping every frame (30 fps) and sampling 10 fps, frames/s of source video;
and prints ours / reference, plus cameras per core at 10 fps: seconds of video handled per CPU-second of the process.
"""

from __future__ import annotations

import argparse
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


def make_clip(directory: Path, width: int, height: int, seconds: float) -> Path:
    small = generate_clip(SynthConfig(seconds=seconds, seed=3, width=640, height=360, events=()), directory / "s.mp4")
    clip = directory / f"traffic-{width}x{height}.mp4"
    # Upscale with fresh noise so the encoder cannot coast on the upscaled smoothness.
    subprocess.run(
        [
            "ffmpeg",
            "-loglevel",
            "error",
            "-y",
            "-i",
            str(small.video_path),
            "-vf",
            f"scale={width}:{height},noise=alls=6:allf=t",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-g",
            "60",
            "-pix_fmt",
            "yuv420p",
            str(clip),
        ],
        check=True,
    )
    return clip


def ffmpeg_fps(clip: Path, threads: int, frames: int) -> float:
    started = time.perf_counter()
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-threads", str(threads), "-i", str(clip), "-f", "null", "-"], check=True
    )
    return frames / (time.perf_counter() - started)


def ours(clip: Path, fps: float, threads: int) -> tuple[float, float, int]:
    """Source frames per second, CPU-seconds used, windows published."""
    bus = EmbeddedBus(f"bench-{uuid.uuid4().hex}")
    settings = IngestSettings(
        topic="bench",
        partitions=1,
        cameras=[CameraConfig(camera_id="bench", url=str(clip), fps=fps, decode_threads=threads)],
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=2, help="decoder threads for both ffmpeg and ours")
    parser.add_argument("--sizes", default="1280x720,1920x1080")
    parser.add_argument("--repeats", type=int, default=3, help="best of N runs of each")
    args = parser.parse_args()
    if shutil.which("ffmpeg") is None:
        raise SystemExit("ffmpeg is not installed")
    print(
        f"| clip | ffmpeg -threads {args.threads} -f null | ours, every frame | ratio | ours, 10 fps | ratio "
        "| cameras/core at 10 fps |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as scratch:
        for size in args.sizes.split(","):
            width, height = (int(part) for part in size.split("x"))
            clip = make_clip(Path(scratch), width, height, args.seconds)
            frames = round(args.seconds * 30)
            reference = max(ffmpeg_fps(clip, args.threads, frames) for _ in range(args.repeats))
            every = max(ours(clip, 30.0, args.threads)[0] for _ in range(args.repeats))
            runs = [ours(clip, 10.0, args.threads) for _ in range(args.repeats)]
            sampled = max(run[0] for run in runs)
            per_core = args.seconds / min(run[1] for run in runs)
            print(
                f"| {width}x{height} 30 fps, {args.seconds:g} s | {reference:.0f} fps | {every:.0f} fps "
                f"| {every / reference:.2f}× | {sampled:.0f} fps | {sampled / reference:.2f}× | {per_core:.1f} |"
            )


if __name__ == "__main__":
    main()
