"""Held-out evaluation, of the PyTorch model during training and of exported ONNX versions for the gate.

Metrics (the same code computes them from PyTorch or onnxruntime outputs):

* ``future_top1``: each predicted embedding of frames K..K+M-1 against all ``B·M`` targets of its evaluation batch
  (fixed batches of ``batch_size`` windows in a fixed order), as the InfoNCE objective; chance ``1/(B·M)``.
* ``future_loss``: the InfoNCE loss on the same candidates.
* ``order_accuracy`` (PyTorch only: the order head is not exported): every window in all 24 orders; chance 1/24.
* ``pixel_psnr_db`` of the pixel head's frame K+1, ``copy_last_psnr_db`` of repeating frame K, and their difference
  ``pixel_psnr_gain_db`` (> 0: the head beats the copy-last baseline).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from ingest.contract import WindowDecodeError, decode_window
from ingest.contract.model_input import model_input
from ingest.registry import ModelMetadata, verify_version
from ingest.runtime.durable_files import append_whole
from trainer.losses.infonce import info_nce
from trainer.losses.order import ORDER_CLASSES
from trainer.losses.pixel import psnr
from trainer.model.streamssl_model import StreamSSLModel

log = logging.getLogger(__name__)

# The temperature only scales future_loss; top-1 does not depend on it. Fixed, so losses of runs compare.
EVAL_TEMPERATURE = 0.1


def prepare_windows(
    windows: Sequence[bytes], height: int, width: int, channels: int, window: int
) -> npt.NDArray[np.uint8]:
    """Decode and crop held-out windows to a model's input, ``[N, T, H, W, C]``; unusable ones are skipped."""
    frames: list[npt.NDArray[np.uint8]] = []
    for data in windows:
        try:
            decoded = decode_window(data).frames
        except WindowDecodeError as error:
            log.warning("held-out window skipped: %s", error)
            continue
        if decoded.shape[0] >= window:
            frames.append(model_input(decoded, height, width, channels, window))
    if not frames:
        return np.zeros((0, window, height, width, channels), dtype=np.uint8)
    return np.stack(frames)


def future_metrics(predicted: Tensor, target: Tensor, batch_size: int) -> dict[str, float]:
    """Top-1 and InfoNCE loss over fixed consecutive batches (a last batch of fewer than 2 windows is dropped)."""
    correct = 0.0
    candidates = 0
    losses: list[float] = []
    for start in range(0, predicted.shape[0], batch_size):
        chunk_p, chunk_t = predicted[start : start + batch_size], target[start : start + batch_size]
        if chunk_p.shape[0] < 2:
            continue
        loss, top1 = info_nce(chunk_p.float(), chunk_t.float(), EVAL_TEMPERATURE)
        count = chunk_p.shape[0] * chunk_p.shape[1]
        correct += float(top1) * count
        candidates += count
        losses.append(float(loss) * count)
    if candidates == 0:
        return {}
    return {"future_top1": correct / candidates, "future_loss": sum(losses) / candidates}


def pixel_metrics(predicted: Tensor, target: Tensor, last: Tensor) -> dict[str, float]:
    """Mean PSNR of the prediction and of the copy-last baseline; all ``[N, C, h, w]`` in [0, 1]."""
    ours = float(psnr(predicted, target).mean())
    baseline = float(psnr(last, target).mean())
    return {"pixel_psnr_db": ours, "copy_last_psnr_db": baseline, "pixel_psnr_gain_db": ours - baseline}


@torch.no_grad()
def evaluate_model(
    model: StreamSSLModel, frames: npt.NDArray[np.uint8], batch_size: int, device: torch.device
) -> dict[str, float]:
    """Every metric of the module docstring for ``model`` (switched to eval mode and back) on ``frames``."""
    if frames.shape[0] < 2:
        return {}
    config = model.config
    k, m = config.context_frames, config.future_frames
    was_training = model.training
    model.eval()
    predicted: list[Tensor] = []
    targets: list[Tensor] = []
    pixel: list[Tensor] = []
    pixel_target: list[Tensor] = []
    last: list[Tensor] = []
    order_correct = 0
    order_total = 0
    steps = torch.arange(4, device=device) * config.order_stride
    permutations = model.permutations
    try:
        for start in range(0, frames.shape[0], batch_size):
            chunk = torch.from_numpy(frames[start : start + batch_size]).to(device)
            features, embeddings, unit = model.encode(chunk)
            future = model.predictor(embeddings[:, :k])
            predicted.append(future.cpu())
            targets.append(embeddings[:, k : k + m].cpu())
            pixel.append(model.pixel_head(unit[:, :k], future[:, 0]).cpu())
            low = model.pixel_head.low_resolution(unit[:, k - 1 : k + 1]).cpu()
            last.append(low[:, 0])
            pixel_target.append(low[:, 1])
            for label in range(ORDER_CLASSES):
                chosen = features[:, steps[permutations[label]]]
                order_correct += int((model.order_head(chosen).argmax(dim=1) == label).sum())
                order_total += chunk.shape[0]
    finally:
        model.train(was_training)
    metrics = future_metrics(torch.cat(predicted), torch.cat(targets), batch_size)
    metrics.update(pixel_metrics(torch.cat(pixel), torch.cat(pixel_target), torch.cat(last)))
    metrics["order_accuracy"] = order_correct / order_total
    metrics["windows"] = float(frames.shape[0])
    return metrics


def _block_mean(frames: npt.NDArray[np.uint8], height: int, width: int) -> Tensor:
    """uint8 ``[N, H, W, C]`` → float ``[N, C, h, w]`` block means in [0, 1], as the pixel head's targets."""
    unit = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
    return F.avg_pool2d(unit, (frames.shape[1] // height, frames.shape[2] // width))


class OnnxModel:
    """A published registry version, run with onnxruntime: what serving would run."""

    def __init__(self, directory: Path) -> None:
        import onnxruntime as ort

        self.directory = directory
        self.metadata: ModelMetadata = verify_version(directory)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        options.inter_op_num_threads = 1
        self.sessions: dict[str, Any] = {}
        for spec in self.metadata.files:
            if spec.precision == "fp32":
                self.sessions[spec.role] = ort.InferenceSession(
                    str(directory / spec.path), options, providers=["CPUExecutionProvider"]
                )

    def run(self, role: str, inputs: dict[str, np.ndarray[Any, Any]]) -> list[np.ndarray[Any, Any]]:
        outputs: list[np.ndarray[Any, Any]] = self.sessions[role].run(None, inputs)
        return outputs

    def evaluate(self, windows: Sequence[bytes], batch_size: int) -> dict[str, float]:
        """Future top-1/loss and (with a pixel predictor) PSNR on ``windows``, prepared for this version's input."""
        spec = self.metadata.input
        k, m = spec.context_frames, spec.future_frames
        frames = prepare_windows(windows, spec.height, spec.width, spec.channels, spec.window)
        if frames.shape[0] < 2:
            return {}
        embeddings: list[np.ndarray[Any, Any]] = []
        predicted: list[np.ndarray[Any, Any]] = []
        pixel: list[np.ndarray[Any, Any]] = []
        pixel_file = self.metadata.file("pixel_predictor")
        for start in range(0, frames.shape[0], batch_size):
            chunk = frames[start : start + batch_size]
            frame_embeddings = self.run("clip_encoder", {"frames": chunk})[0]
            embeddings.append(frame_embeddings)
            predicted.append(self.run("predictor", {"context": frame_embeddings[:, :k]})[0])
            if pixel_file is not None:
                feed = pixel_file.pixel_predictor_feed(chunk[:, :k], predicted[-1][:, 0])
                pixel.append(self.run("pixel_predictor", feed)[0])
        all_embeddings = torch.from_numpy(np.concatenate(embeddings))
        metrics = future_metrics(torch.from_numpy(np.concatenate(predicted)), all_embeddings[:, k : k + m], batch_size)
        if pixel:
            ours = torch.from_numpy(np.concatenate(pixel)).permute(0, 3, 1, 2)
            h, w = ours.shape[-2:]
            metrics.update(pixel_metrics(ours, _block_mean(frames[:, k], h, w), _block_mean(frames[:, k - 1], h, w)))
        metrics["windows"] = float(frames.shape[0])
        return metrics


class EvalLog:
    """Appends one JSON object per evaluation (or gate decision) to a JSON-lines file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, kind: str, step: int, values: dict[str, Any]) -> None:
        """Append one line; a file system that refuses it (a full disk) loses the line, not the run."""
        entry = {"kind": kind, "step": step, "time": time.time(), **values}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            append_whole(self.path, (json.dumps(entry, sort_keys=True) + "\n").encode())
        except OSError as error:
            log.warning("%s line of step %d not written to %s: %s", kind, step, self.path, error)
