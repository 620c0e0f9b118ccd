"""One export: ONNX files → parity check → optional INT8 → atomic publish → promotion gate. In this process (the
final export of a bounded run) or in a child process (periodic exports, so training does not stop for them).

A periodic export takes seconds of Python-heavy work (tracing, onnxruntime sessions, quantisation, the gate's
evaluation). In the training process it would stall rank 0, and with DDP every rank at its next all-reduce; in a
thread it would still contend for the GIL with the loop that launches the kernels. So the loop snapshots what the
export needs (EMA weights, parity, calibration and held-out windows, metrics) into a private directory and starts
``python -m trainer.export_job DIR``, a fresh interpreter (never a fork of a process holding CUDA or worker threads).
The child writes ``outcome.json``; the loop polls it between steps and updates its metrics.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch
from pydantic import BaseModel, ConfigDict

from ingest.registry import RegistryError
from trainer.config import ExportConfig, LossConfig, ModelConfig
from trainer.data.window_file import read_windows_file, write_windows_file
from trainer.evaluate import EvalLog
from trainer.export_onnx import ParityError, build_metadata, export_onnx, parity, publish, quantise_frame_encoder
from trainer.model.streamssl_model import StreamSSLModel
from trainer.promotion_gate import GateDecision, run_gate

log = logging.getLogger(__name__)

Result = Literal["published", "parity_failed", "failed"]


class ExportSpec(BaseModel):
    """The settings and numbers one export needs (the weights and windows travel beside it)."""

    model_config = ConfigDict(frozen=True)

    step: int
    registry: Path
    export: ExportConfig
    model: ModelConfig
    loss: LossConfig
    ema_decay: float
    eval_batch_size: int
    config_hash: str
    metrics: dict[str, float]
    eval_log: Path


@dataclass(frozen=True)
class ExportJob:
    spec: ExportSpec
    weights: dict[str, torch.Tensor]  # the EMA model's state, on the CPU
    parity_frames: npt.NDArray[np.uint8]  # [N, T, H, W, C]
    calibration_frames: npt.NDArray[np.uint8]  # [N, T, H, W, C]; empty without INT8
    heldout: list[bytes]  # encoded windows for the gate


@dataclass(frozen=True)
class ExportOutcome:
    result: Result
    step: int
    version: str | None = None
    decision: GateDecision | None = None
    production: str | None = None  # the production version after the gate
    error: str | None = None

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "decision": None if self.decision is None else self.decision.as_dict()})

    @classmethod
    def from_json(cls, text: str) -> ExportOutcome:
        data = json.loads(text)
        decision = data.pop("decision")
        return cls(**data, decision=None if decision is None else GateDecision(**decision))


def run_export(job: ExportJob) -> ExportOutcome:
    """Export, check, publish and gate; a parity failure publishes nothing. Other errors propagate."""
    spec, export = job.spec, job.spec.export
    model = StreamSSLModel(spec.model)
    model.load_state_dict(job.weights)
    model.eval()
    frames = job.parity_frames
    with tempfile.TemporaryDirectory(prefix="streamssl-export-") as scratch:
        files = export_onnx(model, Path(scratch), export.opset, export.exporter, export.pixel_predictor)
        try:
            differences = parity(model, files, frames, export.parity_atol)
        except ParityError as error:
            log.error("export at step %d not published: %s", spec.step, error)
            return ExportOutcome("parity_failed", spec.step, error=str(error))
        extra: dict[str, Any] = {
            "parity_max_abs_diff": max(differences.values()),
            "parity_windows": int(frames.shape[0]),
            "embeddings": "L2-normalised; clip_embedding is the normalised mean of the frame embeddings",
            "pixel_resolution": [spec.model.pixel_height, spec.model.pixel_width],
            "ema_decay": spec.ema_decay,
            "trainer": {"model": spec.model.model_dump(mode="json"), "loss": spec.loss.model_dump(mode="json")},
        }
        if export.int8:
            calibration = job.calibration_frames
            check = frames.reshape(-1, *frames.shape[2:])
            int8, agreement = quantise_frame_encoder(files[0], calibration.reshape(-1, *calibration.shape[2:]), check)
            files.append(int8)
            extra.update(agreement)
        metadata = build_metadata(
            spec.model,
            files,
            model_name=export.model_name,
            step=spec.step,
            config_hash=spec.config_hash,
            opset=export.opset,
            metrics=spec.metrics,
            extra=extra,
        )
        version = publish(spec.registry, metadata, files)
    log.info(
        "published %s version %s (step %d, parity %.1e)",
        export.model_name,
        version,
        spec.step,
        extra["parity_max_abs_diff"],
    )
    decision = run_gate(
        spec.registry,
        export.model_name,
        version,
        job.heldout,
        batch_size=spec.eval_batch_size,
        tolerances={"future_top1": export.gate_tolerance, "pixel_psnr_gain_db": export.gate_psnr_tolerance_db},
        eval_log=EvalLog(spec.eval_log),
        step=spec.step,
    )
    production = decision.candidate if decision.promoted else decision.production
    return ExportOutcome("published", spec.step, version, decision, production)


# --- in a child process -------------------------------------------------------------------------------------------
def write_job(job: ExportJob, directory: Path) -> None:
    """Everything the child needs, in ``directory`` (created private)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    (directory / "spec.json").write_text(job.spec.model_dump_json(), encoding="utf-8")
    torch.save(job.weights, directory / "weights.pt")
    np.save(directory / "parity.npy", job.parity_frames)
    np.save(directory / "calibration.npy", job.calibration_frames)
    write_windows_file(directory / "heldout.windows", job.heldout)


def read_job(directory: Path) -> ExportJob:
    return ExportJob(
        spec=ExportSpec.model_validate_json((directory / "spec.json").read_text(encoding="utf-8")),
        weights=torch.load(directory / "weights.pt", map_location="cpu", weights_only=True),
        parity_frames=np.load(directory / "parity.npy"),
        calibration_frames=np.load(directory / "calibration.npy"),
        heldout=read_windows_file(directory / "heldout.windows"),
    )


class BackgroundExport:
    """One export running in a child process; :meth:`poll` gives its outcome once it has finished."""

    def __init__(self, job: ExportJob, threads: int) -> None:
        self.step = job.spec.step
        self.started = time.monotonic()
        self._scratch = tempfile.TemporaryDirectory(prefix="streamssl-export-job-")
        self._directory = Path(self._scratch.name)
        write_job(job, self._directory)
        command = [sys.executable, "-m", "trainer.export_job", str(self._directory), "--threads", str(threads)]
        # The same code as this process, installed or not; its log lines go to this process's stderr.
        source_root = str(Path(__file__).resolve().parents[1])
        path = os.pathsep.join(p for p in (source_root, os.environ.get("PYTHONPATH")) if p)
        self._process = subprocess.Popen(command, env={**os.environ, "PYTHONPATH": path})

    def poll(self) -> ExportOutcome | None:
        """The outcome once the child has exited (a crash is a ``failed`` outcome), else None."""
        if self._process.poll() is None:
            return None
        return self._finish()

    def wait(self, timeout_s: float | None = None) -> ExportOutcome:
        """The outcome once the child has exited; a child still running after ``timeout_s`` is killed (a hung
        export must not hang the trainer's shutdown) and is a ``failed`` outcome. None: no limit."""
        try:
            self._process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
            self._scratch.cleanup()
            error = f"the export did not finish within {timeout_s:g} s: killed"
            return ExportOutcome("failed", self.step, error=error)
        return self._finish()

    def _finish(self) -> ExportOutcome:
        outcome_file = self._directory / "outcome.json"
        try:
            if outcome_file.exists():
                return ExportOutcome.from_json(outcome_file.read_text(encoding="utf-8"))
            return ExportOutcome(
                "failed", self.step, error=f"the export process exited with {self._process.returncode}"
            )
        finally:
            self._scratch.cleanup()


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m trainer.export_job", description="run one export job")
    parser.add_argument("directory", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s export-job: %(message)s")
    torch.set_num_threads(args.threads)
    job = read_job(args.directory)
    try:
        outcome = run_export(job)
    except RegistryError as error:  # e.g. a full registry disk: the message says what and where, no traceback
        log.error("export at step %d failed: %s", job.spec.step, error)
        outcome = ExportOutcome("failed", job.spec.step, error=str(error))
    except Exception as error:  # reported to the trainer, which counts it and trains on
        log.exception("export at step %d failed", job.spec.step)
        outcome = ExportOutcome("failed", job.spec.step, error=f"{type(error).__name__}: {error}")
    (args.directory / "outcome.json").write_text(outcome.to_json(), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
