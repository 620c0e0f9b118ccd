"""The training loop on the embedded bus with real windows: exact resume, dead letters, invalid checkpoints, the
export's parity guard, the operator's metrics and the command line."""

from __future__ import annotations

import json
import logging
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from prometheus_client import CollectorRegistry

from bench.trainer_fixtures import Message, publish, small_settings, traffic_messages
from ingest.bus import TopicPartition
from ingest.bus.embedded import EmbeddedBus
from ingest.contract.dead_letters import HEADER_ERROR
from ingest.contract.topics import dead_letter_topic
from ingest.registry import versions
from trainer.__main__ import main
from trainer.checkpoint import CheckpointError, checkpoint_files, read_checkpoint
from trainer.config import ExportConfig, LossConfig, ModelConfig
from trainer.export_job import BackgroundExport, ExportJob, ExportSpec
from trainer.loop import RunResult, Trainer
from trainer.model.streamssl_model import StreamSSLModel

# Small batches keep these tests at a few seconds each; learning is tested in test_trainer_learning.py.
SMALL = {"data": {"batch_size": 8, "replay_ratio": 0.5, "fresh_wait_s": 0.5, "prefetch_batches": 3}}


def run(settings_bus: EmbeddedBus, tmp_path: Path, topic: str, **overrides: object) -> tuple[Trainer, RunResult]:
    settings = small_settings(tmp_path, f"embedded://{settings_bus.name}", topic, **{**SMALL, **overrides})
    trainer = Trainer(settings, settings_bus, CollectorRegistry())
    return trainer, trainer.run()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_resume_continues_exactly_as_the_uninterrupted_run(embedded_bus: EmbeddedBus, tmp_path: Path) -> None:
    # One partition, every window published first: the uninterrupted run is deterministic, so a run resumed from
    # its step-10 checkpoint must end with the very same weights, optimiser state, replay buffer and offsets.
    topic = "resume"
    publish(embedded_bus, topic, traffic_messages(1)[:32])
    # A generous wait for fresh windows, so that batch composition cannot depend on thread timing.
    patient = {**SMALL["data"], "fresh_wait_s": 2.0}
    common = {"max_steps": 20, "checkpoint": {"every_steps": 10}, "export": {"at_end": False}, "data": patient}
    _, whole_result = run(embedded_bus, tmp_path / "whole", topic, **common)
    final = read_checkpoint(checkpoint_files(tmp_path / "whole" / "checkpoints")[0].path)
    assert final["step"] == 20

    resumed_dir = tmp_path / "resumed" / "checkpoints"
    resumed_dir.mkdir(parents=True)
    step10 = next(f for f in checkpoint_files(tmp_path / "whole" / "checkpoints") if f.step == 10)
    shutil.copy(step10.path, resumed_dir)
    fresh_group = {**common, "data": {**patient, "group_id": f"other-{uuid.uuid4().hex[:6]}"}}  # nothing committed
    _, resumed_result = run(embedded_bus, tmp_path / "resumed", topic, **fresh_group)
    assert resumed_result.resumed_from is not None
    assert resumed_result.steps_this_run == 10
    again = read_checkpoint(checkpoint_files(resumed_dir)[0].path)

    for name, tensor in final["model"].items():
        assert torch.equal(tensor, again["model"][name]), f"model.{name} differs after resume"
    for name, tensor in final["ema"]["model"].items():
        assert torch.equal(tensor, again["ema"]["model"][name]), f"ema.{name} differs after resume"
    assert final["ranks"][0]["planner"]["consumed"] == again["ranks"][0]["planner"]["consumed"]
    assert final["ranks"][0]["replay"] == again["ranks"][0]["replay"]
    assert final["optimizer"]["state"][0]["step"] == again["optimizer"]["state"][0]["step"]
    assert whole_result.committed == {TopicPartition(topic, 0): 32}


def test_a_compiled_run_trains_and_its_checkpoint_resumes_without_compile(
    embedded_bus: EmbeddedBus, tmp_path: Path
) -> None:
    # torch.compile (inductor, on CPU here) wraps the module; checkpoints must hold the plain model's state so that a
    # run with or without compile can resume from them. About a minute, most of it compiling.
    topic = "compiled"
    publish(embedded_bus, topic, traffic_messages(1)[:24])
    common = {"checkpoint": {"every_steps": 2}, "export": {"at_end": False}}
    _, compiled = run(embedded_bus, tmp_path, topic, max_steps=4, compile=True, **common)
    assert compiled.steps_this_run == 4
    state = read_checkpoint(checkpoint_files(tmp_path / "checkpoints")[0].path)
    assert state["step"] == 4
    assert not any("_orig_mod" in name for name in state["model"]), "the checkpoint holds the compiled wrapper's names"
    assert all(torch.isfinite(tensor).all() for tensor in state["model"].values() if tensor.is_floating_point())
    _, resumed = run(embedded_bus, tmp_path, topic, max_steps=6, **common)
    assert resumed.resumed_from is not None
    assert (resumed.step, resumed.steps_this_run) == (6, 2)


def test_malformed_messages_are_dead_lettered_and_training_continues(embedded_bus: EmbeddedBus, tmp_path: Path) -> None:
    topic = "dirty"
    good = list(traffic_messages(1)[:24])
    truncated = Message(good[3].key, good[3].value[:-100], good[3].headers)
    wrong_key = Message(b"somebody-else", good[4].value, good[4].headers)
    dirty = [*good[:5], Message(b"cam-2", b"\x00garbage", ()), truncated, *good[5:10], wrong_key, *good[10:]]
    publish(embedded_bus, topic, dirty)
    trainer, result = run(embedded_bus, tmp_path, topic, max_steps=6, export={"at_end": False})
    assert result.step == 6
    registry = trainer.metrics.registry
    assert registry.get_sample_value("streamssl_trainer_dead_letters_total") == 3
    assert registry.get_sample_value("streamssl_trainer_skipped_windows_total", {"reason": "decode_error"}) == 3
    with embedded_bus.consumer([dead_letter_topic(topic)], group_id=None) as consumer:
        parked = consumer.poll(1.0)
    assert [record.value for record in parked] == [b"\x00garbage", truncated.value, wrong_key.value]
    reasons = [(record.header(HEADER_ERROR) or b"").decode() for record in parked]
    assert "magic" in reasons[0]
    assert "truncated" in reasons[1]
    assert "does not match" in reasons[2]
    assert all(f"{topic}[0]@" in reason for reason in reasons)
    assert parked[0].key == b"cam-2"  # parked unchanged: key, value, headers


def test_invalid_newest_checkpoint_falls_back_and_none_valid_refuses_to_start(
    embedded_bus: EmbeddedBus, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    topic = "fallback"
    publish(embedded_bus, topic, traffic_messages(1)[:24])
    no_export = {"export": {"at_end": False}}
    run(embedded_bus, tmp_path, topic, max_steps=4, checkpoint={"every_steps": 2}, **no_export)
    directory = tmp_path / "checkpoints"
    newest = checkpoint_files(directory)[0]
    assert newest.step == 4
    newest.path.write_bytes(newest.path.read_bytes()[:1000])  # a partial write
    with caplog.at_level(logging.ERROR):
        trainer, result = run(embedded_bus, tmp_path, topic, max_steps=5, checkpoint={"every_steps": 2}, **no_export)
    assert result.resumed_from is not None
    assert result.resumed_from.name == "checkpoint-0000000002.ckpt"
    assert result.step == 5
    assert "INVALID CHECKPOINT" in caplog.text
    assert trainer.metrics.registry.get_sample_value("streamssl_trainer_checkpoint_load_failures_total") == 1
    for checkpoint in checkpoint_files(directory):
        checkpoint.path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="none is valid"):
        run(embedded_bus, tmp_path, topic, max_steps=6)


def test_a_stop_request_checkpoints_and_commits_then_returns(embedded_bus: EmbeddedBus, tmp_path: Path) -> None:
    topic = "stop"
    publish(embedded_bus, topic, traffic_messages(1)[:24])
    settings = small_settings(tmp_path, f"embedded://{embedded_bus.name}", topic, **SMALL)  # no max_steps
    trainer = Trainer(settings, embedded_bus, CollectorRegistry())
    results: list[RunResult] = []
    thread = threading.Thread(target=lambda: results.append(trainer.run()))
    thread.start()
    deadline = time.monotonic() + 60
    while (trainer.metrics.registry.get_sample_value("streamssl_trainer_step") or 0) < 3:
        assert time.monotonic() < deadline, "the trainer did not reach step 3"
        time.sleep(0.05)
    trainer.request_stop()  # what SIGTERM does
    thread.join(60)
    assert not thread.is_alive()
    (result,) = results
    newest = read_checkpoint(checkpoint_files(settings.checkpoint_dir)[0].path)
    assert newest["step"] == result.step >= 3
    consumed = {TopicPartition(t, p): o for t, p, o in newest["ranks"][0]["planner"]["consumed"]}
    assert result.committed == consumed
    assert result.exported_version is None  # only bounded runs export when they end


def test_parity_failure_publishes_nothing(embedded_bus: EmbeddedBus, tmp_path: Path) -> None:
    topic = "parity"
    publish(embedded_bus, topic, traffic_messages(1)[:24])
    holdout = {"data": {**SMALL["data"], "holdout_every": 3}}
    trainer, result = run(embedded_bus, tmp_path, topic, max_steps=3, export={"parity_atol": 1e-12}, **holdout)
    assert result.exported_version is None
    assert versions(tmp_path / "registry", "streamssl-encoder") == []
    sample = trainer.metrics.registry.get_sample_value
    assert sample("streamssl_trainer_exports_total", {"result": "parity_failed"}) == 1


def test_periodic_exports_run_in_a_child_process_and_publish(embedded_bus: EmbeddedBus, tmp_path: Path) -> None:
    topic = "periodic"
    publish(embedded_bus, topic, traffic_messages(1)[:24])
    holdout = {"data": {**SMALL["data"], "holdout_every": 3}}
    trainer, result = run(embedded_bus, tmp_path, topic, max_steps=12, export_every=4, eval_every=4, **holdout)
    registry = tmp_path / "registry"
    published = versions(registry, "streamssl-encoder")
    steps = [
        json.loads((registry / "streamssl-encoder" / version / "metadata.json").read_text())["step"]
        for version in published
    ]
    # Step 4's export started in the background; step 8's ran too or was skipped while 4's still ran; the final
    # export (step 12) waited for the background one, so the versions are in step order.
    assert steps[0] == 4
    assert steps[-1] == 12
    assert steps == sorted(steps)
    assert result.exported_version == published[-1]
    sample = trainer.metrics.registry.get_sample_value
    assert sample("streamssl_trainer_exports_total", {"result": "published"}) == len(published)
    skipped = sample("streamssl_trainer_exports_total", {"result": "skipped_busy"})
    assert len(published) + skipped == 3
    assert sample("streamssl_trainer_exports_total", {"result": "failed"}) == 0
    gates = [entry for entry in journal_entries(tmp_path) if entry["kind"] == "gate"]
    assert [entry["step"] for entry in gates] == steps, "every published version went through the gate"


def journal_entries(run_dir: Path) -> list[dict[str, object]]:
    eval_log = next((run_dir / "checkpoints").glob("*.jsonl"))
    return [json.loads(line) for line in eval_log.read_text().splitlines()]


def test_a_background_export_does_not_block_and_reports_a_failure(tmp_path: Path) -> None:
    config = ModelConfig(encoder_width=8, embedding_dim=32)
    model = StreamSSLModel(config)
    weights = {name: value.clone() for name, value in model.state_dict().items()}
    weights["encoder.stem.0.weight"] = torch.zeros(1)  # a shape the model cannot load
    frames = np.zeros((2, config.window, config.frame_height, config.frame_width, config.channels), np.uint8)
    spec = ExportSpec(
        step=7, registry=tmp_path / "registry", export=ExportConfig(exporter="torchscript", opset=17), model=config,
        loss=LossConfig(), ema_decay=0.99, eval_batch_size=4, config_hash="x", metrics={},
        eval_log=tmp_path / "eval.jsonl",
    )  # fmt: skip
    background = BackgroundExport(ExportJob(spec, weights, frames, frames[:0], []), threads=1)
    assert background.poll() is None, "the export must run beside the caller, not in it"
    outcome = background.wait()
    assert (outcome.result, outcome.step, outcome.version) == ("failed", 7, None)
    assert outcome.error is not None
    assert "size mismatch" in outcome.error or "Missing key" in outcome.error or "Unexpected key" in outcome.error
    assert not (tmp_path / "registry").exists() or versions(tmp_path / "registry", "streamssl-encoder") == []


def test_metrics_cover_what_an_operator_watches(embedded_bus: EmbeddedBus, tmp_path: Path) -> None:
    topic = "metrics"
    publish(embedded_bus, topic, traffic_messages(1)[:30])
    holdout = {"data": {**SMALL["data"], "holdout_every": 4}}
    trainer, result = run(embedded_bus, tmp_path, topic, max_steps=4, progress_every=2, eval_every=2, **holdout)

    def sample(name: str, labels: dict[str, str] | None = None) -> float:
        value = trainer.metrics.registry.get_sample_value(name, labels or {})
        assert value is not None, name
        return value

    for task in ("total", "future", "order", "pixel"):
        sample("streamssl_trainer_loss", {"task": task})
    assert sample("streamssl_trainer_windows_per_second") > 0
    assert 0 <= sample("streamssl_trainer_data_wait_fraction") <= 1
    assert sample("streamssl_trainer_replay_windows") > 0
    assert 0 < sample("streamssl_trainer_replay_fill_ratio") <= 1
    assert sample("streamssl_trainer_checkpoint_age_seconds") >= 0
    assert sample("streamssl_trainer_checkpoints_total") == 1
    assert sample("streamssl_trainer_step") == 4
    assert sample("streamssl_trainer_last_exported_version") == 1
    assert sample("streamssl_trainer_production_version") == 1
    assert sample("streamssl_trainer_gate_decisions_total", {"decision": "promoted"}) == 1
    assert 0 <= sample("streamssl_trainer_eval_metric", {"metric": "order_accuracy"}) <= 1
    assert sample("streamssl_trainer_embedding_std") > 0
    assert sample("streamssl_trainer_embedding_effective_rank") > 1
    assert sample("streamssl_trainer_consumer_lag_records", {"partition": "0"}) >= 0
    assert sample("streamssl_trainer_heldout_windows") > 0
    lines = [json.loads(line) for line in (tmp_path / "checkpoints" / "eval.jsonl").read_text().splitlines()]
    assert [line["kind"] for line in lines] == ["eval", "eval", "gate"]
    assert lines[-1]["decision"] == "promoted"
    assert result.gate is not None


def test_command_line_bounded_run_exports_and_exits_zero(
    embedded_bus: EmbeddedBus, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = "cli"
    publish(embedded_bus, topic, traffic_messages(1)[:24])
    config = tmp_path / "trainer.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "threads": 2,
                "progress_every": 2,
                "model": {"encoder_width": 8, "embedding_dim": 32},
                "data": {"batch_size": 8, "holdout_every": 3, "fresh_wait_s": 1.0},
                "export": {"exporter": "torchscript", "opset": 17},
            }
        )
    )
    argv = [
        "--bus", f"embedded://{embedded_bus.name}", "--topic", topic, "--registry", str(tmp_path / "reg"),
        "--checkpoint-dir", str(tmp_path / "ckpt"), "--max-steps", "4", "--eval-every", "2", "--device", "cpu",
        "--config", str(config),
    ]  # fmt: skip
    port = free_port()
    scraped: dict[str, str] = {}

    def scrape() -> None:  # while the run lasts, as Prometheus would
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(scraped) < 2:
            for path in ("/metrics", "/readyz"):
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as response:
                        body = response.read().decode()
                except OSError:
                    continue
                if path == "/readyz" or "streamssl_trainer_step" in body:
                    scraped[path] = body
            time.sleep(0.05)

    scraper = threading.Thread(target=scrape, daemon=True)
    scraper.start()
    assert main([*argv, "--metrics-port", str(port)]) == 0
    scraper.join(5)
    assert 'streamssl_trainer_loss{task="future"}' in scraped["/metrics"]
    assert json.loads(scraped["/readyz"])["status"] in ("ready", "not ready")
    # The progress line of a bounded run.
    assert re.search(r"step 4/4 \(100%, eta \d+ s\) \| loss \d", capsys.readouterr().err)
    assert versions(tmp_path / "reg", "streamssl-encoder") == ["1"]
    assert (tmp_path / "reg" / "streamssl-encoder" / "production").read_text().strip() == "1"
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["model"]["encoder_width"] == 8


def test_command_line_requires_the_registry_and_checkpoint_directory(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--bus", "embedded://nothing", "--topic", "t"]) == 2
    error = capsys.readouterr().err
    assert "registry" in error
    assert "checkpoint_dir" in error


def test_a_time_bounded_run_exports_like_a_step_bounded_one(embedded_bus: EmbeddedBus, tmp_path: Path) -> None:
    topic = "minutes"
    publish(embedded_bus, topic, traffic_messages(1)[:30])
    holdout = {"data": {**SMALL["data"], "holdout_every": 4}}
    # Reports are due every 10,000 steps, far more than 6 s of training: the run's end reports its last step anyway.
    _, result = run(embedded_bus, tmp_path, topic, max_minutes=0.1, progress_every=10_000, **holdout)
    assert 0 < result.steps_this_run < 10_000
    assert result.exported_version == "1", "the end of a time-bounded run exports"
    assert result.gate is not None
    train_log = [json.loads(line) for line in (tmp_path / "checkpoints" / "train.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in train_log] == [result.step], "a run that ends between reports logs its last"
    assert {"loss_total", "loss_future", "loss_order", "loss_pixel", "windows_per_s"} <= set(train_log[-1])


def test_a_hung_background_export_is_killed_at_its_timeout(tmp_path: Path) -> None:
    config = ModelConfig(encoder_width=8, embedding_dim=32)
    frames = np.zeros((2, config.window, config.frame_height, config.frame_width, config.channels), np.uint8)
    spec = ExportSpec(
        step=3, registry=tmp_path / "registry", export=ExportConfig(exporter="torchscript", opset=17), model=config,
        loss=LossConfig(), ema_decay=0.99, eval_batch_size=4, config_hash="x", metrics={},
        eval_log=tmp_path / "eval.jsonl",
    )  # fmt: skip
    weights = dict(StreamSSLModel(config).state_dict())
    background = BackgroundExport(ExportJob(spec, weights, frames, frames[:0], []), threads=1)
    background._process.kill()  # stand in a child that hangs for the real one
    background._process.wait()
    background._process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    hung = background._process
    outcome = background.wait(timeout_s=0.5)
    assert (outcome.result, outcome.step) == ("failed", 3)
    assert "did not finish within 0.5 s" in (outcome.error or "")
    assert hung.poll() is not None, "the hung child was killed"


def test_a_failing_final_export_is_reported_not_raised(
    embedded_bus: EmbeddedBus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trainer.export_scheduler

    def broken(job: ExportJob) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(trainer.export_scheduler, "run_export", broken)
    publish(embedded_bus, "final", traffic_messages(1)[:12])
    trained, result = run(embedded_bus, tmp_path, "final", max_steps=3)
    assert result.step == 3
    assert result.exported_version is None
    assert result.export_error is not None
    assert "No space left on device" in result.export_error
    failed = trained.metrics.registry.get_sample_value("streamssl_trainer_exports_total", {"result": "failed"})
    assert failed == 1
    assert checkpoint_files(tmp_path / "checkpoints"), "the training is checkpointed all the same"
