"""Trainer throughput through the real data path, next to the bare frame encoder, in the same run.

    python bench/trainer_bench.py [--frames 8,16] [--steps 20] [--batch 8] [--device cpu|cuda|all] [--threads 2]
                                  [--rounds 2]

For each window length T (128×128 JPEG windows cut by the ingest service from synthetic traffic):
  * data path: the trainer itself on an embedded bus — consumer thread → planner → decode pool (JPEG decode,
    clip-consistent crop and jitter) → collate → forward/backward of the whole model (encoder, predictor, order and
    pixel heads) → AdamW → EMA; windows/s and the share of wall time the loop waited for data, over the last
    ``--steps`` steps after a warm-up;
  * full model: the same model and optimiser on a batch already in memory (no data path);
  * bare encoder: the frame encoder alone, forward + backward + AdamW on random channels-last tensors of the same
    frames/step.
The three are measured in turn, ``--rounds`` times, and the best of each is kept (as timeit does): on a shared
machine a neighbour's load only ever slows a measurement down. Prints a Markdown table; data path / full model near
1 with a small wait share means decoding keeps up with training.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import torch
from prometheus_client import CollectorRegistry

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a clone without installing the package

from ingest.bus.embedded import EmbeddedBroker, EmbeddedBus  # noqa: E402
from ingest.contract import decode_window  # noqa: E402
from ingest.service.config import CameraConfig, IngestSettings  # noqa: E402
from ingest.service.service import IngestService  # noqa: E402
from ingest.tools.synth import SynthConfig, generate_clip  # noqa: E402
from trainer.config import LossConfig, ModelConfig, OptimConfig, TrainerSettings  # noqa: E402
from trainer.loop import Trainer  # noqa: E402
from trainer.losses.total import compute_losses  # noqa: E402
from trainer.model import StreamSSLModel  # noqa: E402
from trainer.optim import build_optimizer  # noqa: E402

SIZE = 128


def make_windows(directory: Path, frames: int, seconds: float) -> list[tuple[bytes, bytes | None]]:
    clip = directory / "traffic.mp4"
    if not clip.exists():
        generate_clip(SynthConfig(seconds=seconds, seed=5, width=320, height=180, fps=10, events=()), clip)
    name = f"bench-{uuid.uuid4().hex}"
    bus = EmbeddedBus(name)
    camera = CameraConfig(camera_id="cam-bench", url=str(clip), size=f"{SIZE}x{SIZE}", window=frames, stride=2)
    service = IngestService(IngestSettings(bus=f"embedded://{name}", topic="w", partitions=1, cameras=[camera]), bus)
    service.start()
    service.wait()
    service.shutdown()
    with bus.consumer(["w"], group_id=None) as consumer:
        records = consumer.poll(2.0)
    EmbeddedBroker.forget(name)
    return [(record.value, record.key) for record in records]


def model_config(frames: int) -> ModelConfig:
    context = frames * 5 // 8
    return ModelConfig(
        frame_height=SIZE,
        frame_width=SIZE,
        window=frames,
        context_frames=context,
        future_frames=frames - context,
        order_stride=2 if frames < 16 else 4,
    )


def data_path(
    windows: list[tuple[bytes, bytes | None]], frames: int, batch: int, steps: int, device: str, threads: int
) -> tuple[float, float]:
    """(windows/s, data-wait share) of the trainer over its last ``steps`` steps."""
    name = f"bench-{uuid.uuid4().hex}"
    bus = EmbeddedBus(name)
    bus.create_topic("w", 1)
    warmup = 5
    needed = (warmup + steps + 4) * batch
    with bus.producer() as producer:
        for index in range(needed):
            value, key = windows[index % len(windows)]
            producer.send("w", value, key=key)
    with tempfile.TemporaryDirectory() as scratch:
        settings = TrainerSettings(
            bus=f"embedded://{name}",
            topic="w",
            registry=Path(scratch) / "registry",
            checkpoint_dir=Path(scratch) / "checkpoints",
            max_steps=warmup + steps,
            progress_every=steps,  # the last interval: steps after the warm-up
            eval_every=10**9,
            device=device,
            threads=threads,
            model=model_config(frames),
            # Every window fresh: the whole batch goes through decoding (replay would decode as much anyway).
            data={"batch_size": batch, "replay_ratio": 0.0, "holdout_every": 0, "decode_workers": 2},
            checkpoint={"every_steps": 10**9, "every_s": 10**9},
            export={"at_end": False},
        )
        trainer = Trainer(settings, bus, CollectorRegistry())
        trainer.run()
    EmbeddedBroker.forget(name)
    sample = trainer.metrics.registry.get_sample_value
    return sample("streamssl_trainer_windows_per_second") or 0.0, sample("streamssl_trainer_data_wait_fraction") or 0.0


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def full_model(windows: list[tuple[bytes, bytes | None]], frames: int, batch: int, steps: int, device: str) -> float:
    """Windows/s of the whole model and optimiser on one batch already in memory."""
    config = model_config(frames)
    target = torch.device(device)
    model = StreamSSLModel(config).to(target)
    optimizer = build_optimizer(model, OptimConfig())
    clips = np.stack([decode_window(windows[i % len(windows)][0]).frames[:frames] for i in range(batch)])
    x = torch.from_numpy(clips).to(target)
    offsets = torch.zeros(batch, dtype=torch.long, device=target)
    labels = torch.arange(batch, device=target) % 24
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=target.type == "cuda")

    def step() -> None:
        with autocast:
            parts = compute_losses(model(x, offsets, labels), labels, config, LossConfig())
        optimizer.zero_grad(set_to_none=True)
        parts.total.backward()
        optimizer.step()

    for _ in range(3):
        step()
    synchronise(target)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    synchronise(target)
    return steps * batch / (time.perf_counter() - started)


def bare_encoder(frames_per_step: int, steps: int, device: str) -> float:
    """Frames/s of the frame encoder alone: forward + backward + AdamW on random normalised frames."""
    config = model_config(8)
    target = torch.device(device)
    encoder = StreamSSLModel(config).encoder.to(target)
    optimizer = torch.optim.AdamW(encoder.parameters())
    # Channels-last, the layout the model's normaliser hands the encoder (it permutes NHWC pixels): convolutions
    # run ~20% faster in it on CPU, so a contiguous NCHW tensor would make the bare encoder look slower than it is.
    x = torch.randn(frames_per_step, 3, SIZE, SIZE, device=target).contiguous(memory_format=torch.channels_last)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=target.type == "cuda")

    def step() -> None:
        with autocast:
            loss = encoder(x).float().square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    synchronise(target)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    synchronise(target)
    return steps * frames_per_step / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", default="8,16", help="window lengths T")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2, help="measure each this many times, keep the best")
    parser.add_argument("--batch", type=int, default=8, help="windows per step")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "all"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        devices.remove("cuda")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for frames in (int(text) for text in args.frames.split(",")):
            windows = make_windows(Path(scratch), frames, seconds=30.0)
            for device in devices:
                best = (0.0, 1.0, 0.0, 0.0)
                for _ in range(args.rounds):
                    per_s, wait = data_path(windows, frames, args.batch, args.steps, device, args.threads)
                    model_per_s = full_model(windows, frames, args.batch, max(5, args.steps // 2), device)
                    encoder_fps = bare_encoder(args.batch * frames, max(5, args.steps // 2), device)
                    best = (
                        max(best[0], per_s),
                        min(best[1], wait),
                        max(best[2], model_per_s),
                        max(best[3], encoder_fps),
                    )
                rows.append((frames, device, *best))
    print(f"\nTrainer throughput, {SIZE}×{SIZE} JPEG windows, batch {args.batch} windows, {args.threads} threads\n")
    print(
        "| T | device | data path windows/s | data path frames/s | data wait | full model windows/s (no data path) "
        "| data path / full model | bare encoder frames/s (fwd+bwd) | data path frames / bare encoder |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for frames, device, per_s, wait, model_per_s, encoder_fps in rows:
        print(
            f"| {frames} | {device} | {per_s:.1f} | {per_s * frames:.0f} | {100 * wait:.0f}% | {model_per_s:.1f} | "
            f"{per_s / model_per_s:.2f} | {encoder_fps:.0f} | {per_s * frames / encoder_fps:.2f} |"
        )


if __name__ == "__main__":
    main()
