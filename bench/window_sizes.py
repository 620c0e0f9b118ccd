"""Size and speed of one window on the wire, per frame codec, on synthetic traffic video.

    python bench/window_sizes.py [--seconds 20] [--frames 16] [--size 128]

Prints, per codec, the mean encoded size of a window next to its raw pixel size (the reference, as a ratio),
and the encode/decode time per window measured in the same run.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a clone without installing the package

from ingest.bus.embedded import EmbeddedBus  # noqa: E402
from ingest.contract import FrameCodec, Window, decode_window, encode_window  # noqa: E402
from ingest.contract.messages import window_from_record  # noqa: E402
from ingest.service.config import CameraConfig, IngestSettings  # noqa: E402
from ingest.service.service import IngestService  # noqa: E402
from ingest.tools.synth import SynthConfig, generate_clip  # noqa: E402


def ingest_windows(clip: Path, frames: int, size: int) -> list[Window]:
    """Windows exactly as the ingest service publishes them (JPEG 90), read back from the embedded bus."""
    bus = EmbeddedBus("window-sizes")
    camera = CameraConfig(camera_id="bench", url=str(clip), window=frames, stride=frames, size=f"{size}x{size}")
    service = IngestService(IngestSettings(topic="sizes", partitions=1, cameras=[camera]), bus, CollectorRegistry())
    service.start()
    service.wait(poll_s=0.05)
    service.shutdown()
    with bus.consumer(["sizes"], group_id=None) as consumer:
        return [window_from_record(record) for record in consumer.poll(1.0)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        clip = Path(scratch) / "traffic.mp4"
        generate_clip(SynthConfig(seconds=args.seconds, seed=1), clip)
        windows = ingest_windows(clip, args.frames, args.size)
    raw = windows[0].frames.nbytes
    print(f"{len(windows)} windows of {args.frames}×{args.size}×{args.size}×3 from synthetic traffic; raw {raw} bytes")
    print(f"{'codec':<10} {'quality':>7} {'mean bytes':>11} {'vs raw':>7} {'encode ms':>10} {'decode ms':>10}")
    for codec, quality in ((FrameCodec.JPEG, 90), (FrameCodec.JPEG, 75), (FrameCodec.PNG, 1), (FrameCodec.RAW_ZLIB, 1)):
        variants = [dataclasses.replace(w, codec=codec, quality=quality) for w in windows]
        started = time.perf_counter()
        messages = [encode_window(w, max_bytes=None) for w in variants]
        encode_ms = (time.perf_counter() - started) * 1000 / len(variants)
        started = time.perf_counter()
        for message in messages:
            decode_window(message)
        decode_ms = (time.perf_counter() - started) * 1000 / len(messages)
        mean = float(np.mean([len(m) for m in messages]))
        print(f"{codec.value:<10} {quality:>7} {mean:>11.0f} {mean / raw:>7.3f} {encode_ms:>10.2f} {decode_ms:>10.2f}")


if __name__ == "__main__":
    main()
