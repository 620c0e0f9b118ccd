"""INT8 against FP32 on a *trained* encoder: speed and how closely INT8 keeps the embeddings.

    python bench/int8_bench.py [--steps 300] [--width 16] [--seconds 2] [--rounds 3]

``bench/serving_bench.py`` measures INT8 on a random-weight stand-in, whose embeddings of different images are
nearly parallel, so its cosines say little. Here the trainer learns for ``--steps`` on synthetic traffic (three
cameras on an embedded bus, as ``tests/test_trainer_learning.py`` does), exports with ``export.int8`` (onnxruntime
static quantisation, QDQ, per-channel weights, calibrated on replayed windows), and then, on held-out frames of two
cameras it never saw:

* FP32 and INT8 throughput of the frame encoder, bare ``InferenceSession.run``, batch 1 and 32, alternating rounds;
* cosine of each frame's INT8 embedding to its FP32 embedding, raw and centred (the FP32 mean embedding subtracted
  from both: centred cosine measures how well INT8 keeps the differences between frames), mean and 1st percentile;
* for scale, the raw cosine between the FP32 embeddings of consecutive held-out frames.

Prints Markdown.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    result: np.ndarray = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
    return result


def throughput(session: Any, frames: np.ndarray, seconds: float) -> float:
    session.run(None, {"frames": frames})
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        session.run(None, {"frames": frames})
        done += len(frames)
    return done / (time.perf_counter() - start)


def train(scratch: Path, steps: int, width: int) -> tuple[Path, np.ndarray, dict[str, Any]]:
    """Train and export; the production version's directory, held-out frames [N, H, W, C] and the run's metadata."""
    from prometheus_client import CollectorRegistry

    from bench.trainer_fixtures import publish, small_settings, traffic_messages
    from ingest.bus.embedded import EmbeddedBus
    from ingest.registry import DEFAULT_MODEL_NAME, ModelMetadata, production_version
    from trainer.data.window_file import write_windows_file
    from trainer.evaluate import prepare_windows
    from trainer.loop import Trainer

    print("rendering synthetic traffic…", file=sys.stderr)
    messages = [m for seed in (1, 2, 3) for m in traffic_messages(seed)]
    heldout = [m.value for seed in (7, 8) for m in traffic_messages(seed, stride=8)]
    write_windows_file(scratch / "heldout.windows", heldout)
    name = f"int8-bench-{uuid.uuid4().hex}"
    bus = EmbeddedBus(name)
    publish(bus, "traffic", messages, partitions=2)
    settings = small_settings(
        scratch,
        f"embedded://{name}",
        "traffic",
        max_steps=steps,
        eval_every=steps,
        eval={"file": scratch / "heldout.windows"},
        export={"int8": True, "calibration_windows": 32},
        model={"encoder_width": width, "embedding_dim": 64},
    )
    print(f"training {steps} steps on CPU…", file=sys.stderr)
    Trainer(settings, bus, CollectorRegistry()).run()
    version = production_version(settings.registry, DEFAULT_MODEL_NAME)
    if version is None:
        raise RuntimeError("the run promoted no version")
    directory = settings.registry / DEFAULT_MODEL_NAME / version
    metadata = ModelMetadata.model_validate_json((directory / "metadata.json").read_text())
    config = settings.model
    windows = prepare_windows(heldout, config.frame_height, config.frame_width, config.channels, config.window)
    frames = windows.reshape(-1, *windows.shape[2:])
    return directory, frames, {"step": metadata.step, "metrics": metadata.metrics, "input": metadata.input}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps before the export")
    parser.add_argument("--width", type=int, default=16, help="encoder width (the trainer's default: 16)")
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds per throughput slice")
    parser.add_argument("--rounds", type=int, default=3, help="FP32/INT8 alternations per batch size")
    args = parser.parse_args()

    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="int8-bench-") as scratch:
        directory, frames, metadata = train(Path(scratch), args.steps, args.width)
        fp32 = ort.InferenceSession(str(directory / "frame_encoder.onnx"), providers=["CPUExecutionProvider"])
        int8 = ort.InferenceSession(str(directory / "frame_encoder.int8.onnx"), providers=["CPUExecutionProvider"])
        e32 = np.concatenate([fp32.run(None, {"frames": frames[i : i + 64]})[0] for i in range(0, len(frames), 64)])
        e8 = np.concatenate([int8.run(None, {"frames": frames[i : i + 64]})[0] for i in range(0, len(frames), 64)])
        raw = cosines(e32, e8)
        mean = e32.mean(0, keepdims=True)
        centred = cosines(e32 - mean, e8 - mean)
        between = cosines(e32[:-1], e32[1:])
        rows = []
        for batch in (1, 32):
            sample = frames[:batch]
            f32, q8 = [], []
            for _ in range(args.rounds):
                f32.append(throughput(fp32, sample, args.seconds))
                q8.append(throughput(int8, sample, args.seconds))
            rows.append((batch, statistics.mean(f32), statistics.mean(q8)))

    spec = metadata["input"]
    metrics = metadata["metrics"]
    order, future = metrics.get("order_accuracy", float("nan")), metrics.get("future_top1", float("nan"))
    print(
        f"\nINT8 bench: encoder width {args.width}, trained {metadata['step']} steps "
        f"({spec.height}×{spec.width}×{spec.channels} frames), "
        f"{len(frames)} held-out frames of unseen cameras; held-out order accuracy "
        f"{order:.3f}, future top-1 {future:.3f}\n"
    )
    print("| batch | FP32 img/s | INT8 img/s | INT8 / FP32 |")
    print("|---:|---:|---:|---:|")
    for batch, f, q in rows:
        print(f"| {batch} | {f:.0f} | {q:.0f} | {q / f:.2f}× |")
    print(
        f"\nINT8 vs FP32 embeddings: raw cosine mean {raw.mean():.4f} (1st percentile {np.percentile(raw, 1):.4f}); "
        f"centred cosine mean {centred.mean():.4f} (1st percentile {np.percentile(centred, 1):.4f}); for scale, raw "
        f"cosine between consecutive frames under FP32: {between.mean():.4f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
