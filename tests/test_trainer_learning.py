"""A short CPU run on synthetic traffic learns; its export matches PyTorch; the gate promotes it over an untrained
production and refuses an untrained candidate.

Data: three synthetic cameras (40 s each, sampled at 5 fps into 8-frame 64×64 windows by the ingest service) on an
embedded bus; held out: two other cameras, in a windows file. Model: encoder width 16, D = 64, batch 16, 200 steps
(about 30 s on two free cores). One run serves every test of this module.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from prometheus_client import CollectorRegistry

from bench.trainer_fixtures import publish, small_settings, traffic_messages
from ingest.bus.embedded import EmbeddedBroker, EmbeddedBus
from ingest.registry import (
    RegistryError,
    production_version,
    set_production,
    verify_version,
    versions,
)
from trainer.checkpoint import checkpoint_files, read_checkpoint
from trainer.config import TrainerSettings, config_hash
from trainer.data.window_file import write_windows_file
from trainer.evaluate import evaluate_model, prepare_windows
from trainer.export_onnx import build_metadata, export_onnx, parity, quantise_frame_encoder
from trainer.export_onnx import publish as publish_onnx
from trainer.loop import RunResult, Trainer
from trainer.model import StreamSSLModel
from trainer.promotion_gate import run_gate

STEPS = 200
MODEL_NAME = "streamssl-encoder"


@dataclass
class Learned:
    settings: TrainerSettings
    result: RunResult
    untrained: dict[str, float]
    heldout: list[bytes]
    frames: np.ndarray  # held-out windows prepared for the model, [N, T, H, W, C]
    trainer: Trainer


def publish_model(model: StreamSSLModel, settings: TrainerSettings, directory: Path, step: int) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    files = export_onnx(model, directory, 17, "torchscript")
    metadata = build_metadata(
        model.config, files, model_name=MODEL_NAME, step=step, config_hash=config_hash(model.config, settings.loss),
        opset=17, metrics={}, extra={},
    )  # fmt: skip
    return publish_onnx(settings.registry, metadata, files)


def untrained_model(settings: TrainerSettings) -> StreamSSLModel:
    torch.manual_seed(settings.optim.seed)  # the trainer's own initialisation
    return StreamSSLModel(settings.model).eval()


@pytest.fixture(scope="module")
def learned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Learned]:
    tmp = tmp_path_factory.mktemp("learning")
    train = [m for seed in (1, 2, 3) for m in traffic_messages(seed)]
    heldout = [m.value for seed in (7, 8) for m in traffic_messages(seed, stride=8)]
    write_windows_file(tmp / "heldout.windows", heldout)
    name = f"learning-{uuid.uuid4().hex}"
    bus = EmbeddedBus(name)
    publish(bus, "traffic", train, partitions=2)
    settings = small_settings(
        tmp, f"embedded://{name}", "traffic", max_steps=STEPS, eval_every=STEPS, eval={"file": tmp / "heldout.windows"}
    )
    config = settings.model
    frames = prepare_windows(heldout, config.frame_height, config.frame_width, config.channels, config.window)
    untrained = untrained_model(settings)
    before = evaluate_model(untrained, frames, settings.eval.batch_size, torch.device("cpu"))
    # The untrained model is production before the run: the run's final gate must replace it.
    set_production(settings.registry, MODEL_NAME, publish_model(untrained, settings, tmp / "untrained", 0))
    trainer = Trainer(settings, bus, CollectorRegistry())
    result = trainer.run()
    yield Learned(settings, result, before, heldout, frames, trainer)
    EmbeddedBroker.forget(name)


def test_short_cpu_run_learns_order_and_future_prediction(learned: Learned) -> None:
    after, before = learned.result.last_eval, learned.untrained
    order_chance = 1 / 24
    future_chance = 1 / (learned.settings.eval.batch_size * learned.settings.model.future_frames)  # 1/48
    print(f"untrained: {before}\nafter {STEPS} steps: {after}")
    assert after["windows"] == len(learned.frames) >= 40
    # Thresholds. An untrained model sits at chance (order ~0.04, future top-1 ~0.02-0.05). Runs of this set-up
    # reached order 0.27-0.36 and future top-1 0.17-0.23 after 200-300 steps; the bars are set at ~3-4× chance so
    # that thread timing (which windows are fresh or replayed in a batch) cannot make the test flaky, while a model
    # that learns nothing (or collapses: future top-1 of a constant embedding is at most chance) fails them.
    assert after["order_accuracy"] >= 3 * order_chance, after
    assert after["order_accuracy"] >= before["order_accuracy"] + 0.06, (before, after)
    assert after["future_top1"] >= 4 * future_chance, after
    assert after["future_top1"] >= before["future_top1"] + 0.04, (before, after)
    # Both numbers come from the EMA model on windows of cameras the run never saw.
    sample = learned.trainer.metrics.registry.get_sample_value
    assert sample("streamssl_trainer_eval_metric", {"metric": "future_top1"}) == pytest.approx(after["future_top1"])
    assert (sample("streamssl_trainer_embedding_effective_rank") or 0) > 4  # not collapsed


def test_the_gate_promoted_the_trained_model_over_the_untrained_production(learned: Learned) -> None:
    decision = learned.result.gate
    assert decision is not None
    assert decision.promoted, decision.reasons
    assert decision.production == "1"
    assert decision.candidate == learned.result.exported_version == "2"
    assert production_version(learned.settings.registry, MODEL_NAME) == "2"
    assert decision.candidate_metrics["future_top1"] > decision.production_metrics["future_top1"]


def test_the_gate_refuses_an_untrained_candidate(learned: Learned, tmp_path: Path) -> None:
    settings = learned.settings
    candidate = publish_model(untrained_model(settings), settings, tmp_path / "export", 0)
    tolerances = {"future_top1": settings.export.gate_tolerance, "pixel_psnr_gain_db": 0.25}
    decision = run_gate(settings.registry, MODEL_NAME, candidate, learned.heldout, batch_size=16, tolerances=tolerances)
    assert not decision.promoted
    assert any(reason.startswith("future_top1: candidate") and " < " in reason for reason in decision.reasons)
    assert production_version(settings.registry, MODEL_NAME) == "2"


def trained_ema(learned: Learned) -> StreamSSLModel:
    state = read_checkpoint(checkpoint_files(learned.settings.checkpoint_dir)[0].path)
    model = StreamSSLModel(learned.settings.model)
    model.load_state_dict(state["ema"]["model"])
    return model.eval()


def test_export_matches_pytorch_and_the_registry_interface(learned: Learned, tmp_path: Path) -> None:
    model = trained_ema(learned)
    # The default exporter (torch.export-based), opset 18, on the trained weights and real held-out windows.
    files = export_onnx(model, tmp_path, opset=18, exporter="dynamo")
    differences = parity(model, files, learned.frames[:8], atol=1e-4)
    assert max(differences.values()) <= 1e-4
    assert set(differences) == {
        "frame_encoder.embedding",
        "clip_encoder.frame_embeddings",
        "clip_encoder.clip_embedding",
        "predictor.predicted",
        "pixel_predictor.next_frame",
    }
    onnx_types = {1: "float32", 2: "uint8"}
    for exported in files:
        proto = onnx.load(str(exported.path))
        assert proto.opset_import[0].version >= 17
        for declared, actual in ((exported.inputs, proto.graph.input), (exported.outputs, proto.graph.output)):
            for spec, value in zip(declared, actual, strict=True):
                assert value.name == spec.name
                assert onnx_types[value.type.tensor_type.elem_type] == spec.dtype
                dims = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
                assert dims == spec.shape, (exported.role, spec.name)
    # A dynamic batch: 1 and 5 frames through the frame encoder.
    session = ort.InferenceSession(str(files[0].path), providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        (embedding,) = session.run(None, {"frames": learned.frames[:batch, 0]})
        assert embedding.shape == (batch, learned.settings.model.embedding_dim)
        np.testing.assert_allclose(np.linalg.norm(embedding, axis=1), 1.0, atol=1e-5)
    # The version the run published verifies (checksums, metadata) and records its numbers.
    metadata = verify_version(learned.settings.registry / MODEL_NAME / "2")
    assert metadata.metrics["order_accuracy"] == pytest.approx(learned.result.last_eval["order_accuracy"])
    assert metadata.extra["parity_max_abs_diff"] <= 1e-4
    assert metadata.step == STEPS
    assert metadata.input.normalisation["mean"] == list(learned.settings.model.mean)


def test_int8_frame_encoder_agrees_with_fp32(learned: Learned, tmp_path: Path) -> None:
    model = trained_ema(learned)
    (fp32,) = [f for f in export_onnx(model, tmp_path, 17, "torchscript") if f.role == "frame_encoder"]
    frames = learned.frames.reshape(-1, *learned.frames.shape[2:])
    int8, agreement = quantise_frame_encoder(fp32, frames[:128], frames[128:256])
    assert int8.precision == "int8"
    assert int8.path.stat().st_size < fp32.path.stat().st_size / 2
    # Centred cosine: how well INT8 keeps the differences between frames (raw cosine flatters).
    assert agreement["int8_centred_cosine"] > 0.8, agreement
    assert agreement["int8_cosine"] >= agreement["int8_centred_cosine"]


def test_a_failed_publish_leaves_no_version(learned: Learned, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = learned.settings
    before = versions(settings.registry, MODEL_NAME)
    real_copy = shutil.copyfile
    copies: list[str] = []

    def failing_copy(source: str, destination: str) -> str:
        copies.append(str(source))
        if len(copies) == 2:
            raise OSError("disk full")
        return str(real_copy(source, destination))

    monkeypatch.setattr(shutil, "copyfile", failing_copy)
    with pytest.raises((OSError, RegistryError)):
        publish_model(untrained_model(settings), settings, tmp_path / "export", 0)
    assert versions(settings.registry, MODEL_NAME) == before
    assert not [p for p in (settings.registry / MODEL_NAME).iterdir() if p.name.startswith(".")]
