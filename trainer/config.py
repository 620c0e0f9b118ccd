"""Settings of the continual trainer: the common service settings plus model, loss, optimiser, data, checkpoint,
evaluation and export sections.

Sources, lowest to highest priority: a YAML file (``--config``), command-line flags, ``STREAMSSL_*`` variables
(nested with ``__``, e.g. ``STREAMSSL_MODEL__WIDTH=32``). The model section decides the architecture; on resume the
architecture comes from the checkpoint (as nanoGPT does), everything else from these settings.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ingest.contract.topics import validate_topic
from ingest.registry import DEFAULT_MODEL_NAME
from ingest.runtime.settings import CommonSettings

# ImageNet statistics: a neutral, widely used choice; they are written into the registry metadata.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ORDER_FRAMES = 4  # VCOP with 4 clips: 4! = 24 permutation classes


class ModelConfig(BaseModel):
    """The architecture. Changing any field makes a different model (and a different config hash)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    frame_height: int = Field(64, ge=16, le=1024, description="H: frame height the encoder sees")
    frame_width: int = Field(64, ge=16, le=1024, description="W: frame width the encoder sees")
    channels: Literal[1, 3] = 3
    window: int = Field(8, ge=4, le=64, description="T: frames per training window")
    context_frames: int = Field(5, ge=1, description="K: frames the predictor sees")
    future_frames: int = Field(3, ge=1, description="M: frames the predictor predicts")
    encoder_width: int = Field(
        16, ge=4, le=256, description="channels of the encoder's first stage (doubles per stage)"
    )
    stages: int = Field(4, ge=1, le=6, description="encoder stages; each halves the resolution")
    blocks_per_stage: int = Field(1, ge=1, le=4)
    spatial_grid: int = Field(
        4, ge=1, le=8, description="pool the last feature map to G×G cells before the projection (keeps where)"
    )
    norm: Literal["batch", "group"] = Field("batch", description="batch norm folds into convs at export")
    embedding_dim: int = Field(64, ge=8, le=2048, description="D")
    context_layers: int = Field(2, ge=1, le=12, description="transformer layers of the temporal context network")
    context_heads: int = Field(4, ge=1, le=32)
    pixel_height: int = Field(32, ge=4, description="h of the pixel head's low-resolution prediction")
    pixel_width: int = Field(32, ge=4, description="w of the pixel head's low-resolution prediction")
    order_stride: int = Field(2, ge=1, description="frames between the 4 frames of the order task")
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    @model_validator(mode="after")
    def _consistent(self) -> ModelConfig:
        if self.context_frames + self.future_frames > self.window:
            raise ValueError(
                f"context_frames + future_frames ({self.context_frames} + {self.future_frames}) must fit in the "
                f"window of {self.window} frames"
            )
        if (ORDER_FRAMES - 1) * self.order_stride + 1 > self.window:
            raise ValueError(f"4 frames at order_stride {self.order_stride} do not fit a window of {self.window}")
        if self.embedding_dim % self.context_heads:
            raise ValueError(f"embedding_dim {self.embedding_dim} must be divisible by context_heads")
        if len(self.mean) != self.channels or len(self.std) != self.channels or min(self.std) <= 0:
            raise ValueError(f"mean and std need {self.channels} values each, std positive")
        reduction = 2**self.stages * self.spatial_grid
        if self.frame_height % reduction or self.frame_width % reduction:
            raise ValueError(
                f"frame sides must be multiples of 2**stages * spatial_grid = {reduction}, got "
                f"{self.frame_width}x{self.frame_height}"
            )
        if self.frame_height % self.pixel_height or self.frame_width % self.pixel_width:
            raise ValueError(
                f"the pixel head's {self.pixel_width}x{self.pixel_height} must divide the frame size "
                f"{self.frame_width}x{self.frame_height} (targets are block means)"
            )
        return self


class LossConfig(BaseModel):
    """Weights of the three tasks (total = weighted sum) and their knobs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    future_weight: float = Field(1.0, ge=0)
    order_weight: float = Field(1.0, ge=0)
    pixel_weight: float = Field(1.0, ge=0)
    temperature: float = Field(0.1, gt=0, le=10, description="InfoNCE temperature (CPC/DPC use 0.07-0.1)")
    global_negatives: bool = Field(
        True, description="with DDP, every rank's future targets are negatives for every rank's predictions"
    )
    ssim_weight: float = Field(0.0, ge=0, le=1, description="share of (1-SSIM)/2 in the pixel loss; rest is L1")
    pixel_norm: Literal["l1", "l2"] = Field("l1", description="distance of the pixel loss (l2 optimises PSNR)")


class OptimConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    warmup_steps: int = Field(50, ge=0, description="linear warm-up, then constant: a stream has no end to decay to")
    grad_clip: float = Field(1.0, gt=0)
    ema_decay: float = Field(0.99, ge=0, lt=1, description="EMA of the weights used for evaluation and export")
    seed: int = Field(0, ge=0)


class DataConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    group_id: str = Field("streamssl-trainer", min_length=1, description="consumer group of the trainer")
    batch_size: int = Field(16, ge=2, description="windows per step (per process with DDP)")
    replay_ratio: float = Field(0.5, ge=0, lt=1, description="share of each batch drawn from the replay buffer")
    replay_windows: int = Field(2000, ge=1, description="replay buffer bound by count")
    replay_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="replay buffer bound by encoded bytes (it is saved in every checkpoint)"
    )
    decode_workers: int = Field(2, ge=1, le=64, description="threads decoding and augmenting windows")
    prefetch_batches: int = Field(3, ge=1, le=64, description="batches planned ahead of the training step")
    poll_records: int = Field(64, ge=1, description="records per bus poll")
    raw_queue_records: int = Field(512, ge=1, description="records buffered between the bus and the planner")
    join_timeout_s: float = Field(
        30.0, gt=0, description="a consumer not in its group after this long is closed and opened again"
    )
    fresh_wait_s: float = Field(5.0, gt=0, description="wait this long for fresh windows before replay-only steps")
    replay_when_idle: bool = Field(True, description="train on replay alone while the stream is idle")
    holdout_every: int = Field(25, ge=0, description="hold 1 in N stream windows out for evaluation (0 = none)")
    holdout_windows: int = Field(128, ge=0, description="at most this many held-out windows are kept")
    crop_scale: tuple[float, float] = Field((0.6, 1.0), description="area range of the clip-consistent random crop")
    brightness: float = Field(0.3, ge=0, le=1)
    contrast: float = Field(0.3, ge=0, le=1)
    saturation: float = Field(0.3, ge=0, le=1)
    hflip: bool = Field(False, description="mirror windows (off: traffic direction per lane is a real cue)")
    journal: Path | None = Field(None, description="JSON-lines log of every record taken (debugging, tests)")


class CheckpointConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    every_steps: int = Field(100, ge=1)
    every_s: float = Field(300.0, gt=0, description="also checkpoint when the last one is this old")
    keep_last: int = Field(3, ge=1)


class EvalConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    topic: str | None = Field(None, description="held-out windows on this topic (read whole, no group)")
    file: Path | None = Field(None, description="held-out windows in a windows file (trainer.data.window_file)")
    max_windows: int = Field(256, ge=1)
    batch_size: int = Field(16, ge=2, description="in-batch candidates for future top-1 = batch_size × M")
    log_name: str = Field("eval.jsonl", description="JSON-lines log in the checkpoint directory")
    train_log_name: str = Field(
        "train.jsonl", description="JSON-lines log of the losses and throughput at every progress report"
    )

    @model_validator(mode="after")
    def _one_source(self) -> EvalConfig:
        if self.topic is not None:
            validate_topic(self.topic)
        if self.topic is not None and self.file is not None:
            raise ValueError("give eval.topic or eval.file, not both")
        return self


class ExportConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    model_name: str = Field(DEFAULT_MODEL_NAME, pattern=r"^[A-Za-z0-9._-]+$")
    opset: int = Field(18, ge=17, le=23)
    exporter: Literal["dynamo", "torchscript"] = Field("dynamo", description="torch.onnx.export path")
    parity_atol: float = Field(1e-4, gt=0, description="max |torch - onnxruntime| on real windows, fp32")
    parity_windows: int = Field(8, ge=1)
    int8: bool = Field(False, description="also publish an INT8 frame encoder (onnxruntime static quantisation)")
    calibration_windows: int = Field(32, ge=1)
    pixel_predictor: bool = True
    at_end: bool = Field(True, description="export and run the gate when a bounded run (max_steps) ends")
    timeout_s: float = Field(
        1800.0, gt=0, description="a background export child still running this long at shutdown is killed"
    )
    gate_tolerance: float = Field(0.02, ge=0, description="allowed drop of future top-1 (absolute)")
    gate_psnr_tolerance_db: float = Field(0.25, ge=0, description="allowed drop of pixel PSNR gain (dB)")


class TrainerSettings(CommonSettings):
    """Everything ``streamssl-train`` needs. Paths are required; the rest has working defaults."""

    registry: Path = Field(description="model registry directory")
    checkpoint_dir: Path = Field(description="checkpoints, the resolved config and the eval log")
    max_steps: int | None = Field(None, ge=1, description="stop (export, gate, exit 0) after this many steps")
    max_minutes: float | None = Field(
        None, gt=0, description="stop (export, gate, exit 0) after training this many minutes"
    )
    eval_every: int = Field(200, ge=1)
    export_every: int = Field(1000, ge=1)
    progress_every: int = Field(20, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = Field(2, ge=1, le=256, description="torch CPU threads per process")
    compile: bool = Field(False, description="torch.compile the model (inductor: needs g++ on CPU)")
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)


def config_hash(model: ModelConfig, loss: LossConfig) -> str:
    """SHA-256 (first 16 hex digits) of what defines the learned function: architecture and objectives."""
    text = json.dumps({"model": model.model_dump(mode="json"), "loss": loss.model_dump(mode="json")}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
