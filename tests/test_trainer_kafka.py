"""The trainer against the real Kafka broker: commits only after durable checkpoints, ``kill -9`` and resume
without skipping a window, and two DDP processes (gloo) sharing one consumer group."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from bench.trainer_fixtures import Message, publish, small_settings, traffic_messages
from ingest.bus import TopicPartition, open_bus
from ingest.contract import decode_window
from ingest.contract.messages import window_message
from trainer.checkpoint import checkpoint_files, read_checkpoint
from trainer.data import window_source
from trainer.loop import Trainer
from trainer.metrics import TrainerMetrics

pytestmark = pytest.mark.kafka
ROOT = Path(__file__).resolve().parents[1]
CONFIG: dict[str, Any] = {
    "threads": 1,
    "progress_every": 5,
    "model": {"encoder_width": 8, "embedding_dim": 32},
    "data": {"batch_size": 8, "holdout_every": 0, "fresh_wait_s": 1.0, "prefetch_batches": 2},
    "checkpoint": {"every_steps": 5, "keep_last": 5},
    "export": {"at_end": False, "exporter": "torchscript", "opset": 17},
}


def relabelled(messages: tuple[Message, ...], cameras: int) -> list[Message]:
    """The windows spread over ``cameras`` camera ids, round robin. With 8 ids Kafka's partitioner (murmur2) puts
    windows in both of 2 partitions and in all of 4."""
    out = []
    for index, message in enumerate(messages):
        window = decode_window(message.value)
        camera = f"cam-{index % cameras}"
        renamed = dataclasses.replace(window, camera_id=camera, window_id=f"{camera}:{index}")
        encoded = window_message(renamed)
        out.append(Message(encoded.key, encoded.value, encoded.headers))
    return out


def trainer_command(
    bootstrap: str, topic: str, tmp_path: Path, group: str, journal: Path, steps: int, checkpoint_every: int = 5
) -> list[str]:
    config = tmp_path / "trainer.yaml"
    config.write_text(
        yaml.safe_dump({**CONFIG, "checkpoint": {**CONFIG["checkpoint"], "every_steps": checkpoint_every}})
    )
    return [
        "-m", "trainer", "--bus", f"kafka://{bootstrap}", "--topic", topic, "--registry", str(tmp_path / "registry"),
        "--checkpoint-dir", str(tmp_path / "checkpoints"), "--max-steps", str(steps), "--device", "cpu",
        "--group-id", group, "--journal", str(journal), "--config", str(config),
    ]  # fmt: skip


def journal(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def consumed_offsets(checkpoint: dict[str, Any]) -> dict[int, int]:
    result: dict[int, int] = {}
    for rank in checkpoint["ranks"]:
        for _topic, partition, offset in rank["planner"]["consumed"]:
            result[partition] = max(offset, result.get(partition, 0))
    return result


def committed(bootstrap: str, topic: str, group: str, partitions: int) -> dict[int, int | None]:
    with open_bus(f"kafka://{bootstrap}") as bus, bus.consumer([topic], group_id=group) as consumer:
        return {p: consumer.committed(TopicPartition(topic, p)) for p in range(partitions)}


def test_offsets_are_committed_only_after_the_checkpoint_holding_them_is_durable(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = f"trainer.{uuid.uuid4().hex[:8]}"
    messages = relabelled(traffic_messages(1), cameras=8)[:40]
    with open_bus(f"kafka://{kafka_bootstrap}") as bus:
        publish(bus, topic, messages, partitions=2)
        settings = small_settings(tmp_path, f"kafka://{kafka_bootstrap}", topic, max_steps=12, **CONFIG)
        checks: list[dict[TopicPartition, int]] = []
        original = window_source.WindowSource.commit

        def spy(self: window_source.WindowSource, offsets: Any) -> Any:
            # At the moment of every commit, the newest checkpoint on disk must already hold exactly these offsets.
            newest = read_checkpoint(checkpoint_files(settings.checkpoint_dir)[0].path)
            on_disk = {TopicPartition(t, p): o for t, p, o in newest["ranks"][0]["planner"]["consumed"]}
            assert dict(offsets) == on_disk
            checks.append(dict(offsets))
            return original(self, offsets)

        monkeypatch.setattr(window_source.WindowSource, "commit", spy)
        result = Trainer(settings, bus, CollectorRegistry()).run()
    assert result.step == 12
    assert len(checks) == 3  # steps 5, 10 and the final checkpoint at 12
    group = committed(kafka_bootstrap, topic, settings.data.group_id, 2)
    assert {TopicPartition(topic, p): o for p, o in group.items() if o is not None} == checks[-1]


def test_source_resumes_at_checkpoint_offsets_behind_or_ahead_of_the_group(kafka_bootstrap: str) -> None:
    topic = f"trainer.{uuid.uuid4().hex[:8]}"
    group = f"trainer-{uuid.uuid4().hex[:8]}"
    partition = TopicPartition(topic, 0)
    metrics = TrainerMetrics(CollectorRegistry())
    with open_bus(f"kafka://{kafka_bootstrap}") as bus:
        publish(bus, topic, relabelled(traffic_messages(1), cameras=1)[:20], partitions=1)
        for committed_offset, checkpoint_offset in ((5, 8), (15, 10)):
            with bus.consumer([topic], group_id=group) as member:
                deadline = time.monotonic() + 30
                while not member.assignment() and time.monotonic() < deadline:
                    member.poll(0.2)
                member.commit({partition: committed_offset})
            source = window_source.WindowSource(
                bus, topic, group, start_offsets={partition: checkpoint_offset}, min_frames=8, queue_records=64,
                poll_records=16, metrics=metrics,
            ).start()  # fmt: skip
            taken: list[int] = []
            try:
                deadline = time.monotonic() + 30
                while len(taken) < 20 - checkpoint_offset and time.monotonic() < deadline:
                    item = source.get(0.2)
                    if item is not None:
                        taken.append(item.record.offset)
            finally:
                source.stop()
            # Ahead of the group (crash between checkpoint and commit): re-delivered records are dropped. Behind
            # it (the newest checkpoint was lost): the consumer seeks back. Either way: exactly from the checkpoint.
            assert taken == list(range(checkpoint_offset, 20)), (committed_offset, checkpoint_offset)


def test_a_full_source_still_lets_a_new_group_member_in(kafka_bootstrap: str) -> None:
    """A rank whose queue is full (its trainer is busy, e.g. waiting in an all-reduce for a rank that has no data yet)
    must keep taking part in rebalances; otherwise the new member waits until Kafka drops the full one (60 s)."""
    topic = f"trainer.{uuid.uuid4().hex[:8]}"
    group = f"trainer-{uuid.uuid4().hex[:8]}"
    metrics = TrainerMetrics(CollectorRegistry())
    with open_bus(f"kafka://{kafka_bootstrap}") as bus:
        publish(bus, topic, relabelled(traffic_messages(1), cameras=4)[:40], partitions=4)
        # The trainer's own remedy for a member that joined with nothing (a leader whose metadata lacked the new
        # topic; seen once on a loaded CI machine): replace the consumer after ``join_timeout_s``.
        source = window_source.WindowSource(
            bus, topic, group, start_offsets={}, min_frames=8, queue_records=2, poll_records=16, metrics=metrics,
            join_timeout_s=10.0,
        ).start()  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while len(source.assignment) < 4 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert len(source.assignment) == 4, "the source did not get the topic's partitions within 60 s"
            time.sleep(1.0)  # the queue fills; nobody takes from it
            with bus.consumer([topic], group_id=group) as newcomer:
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    newcomer.poll(0.2)
                    if newcomer.assignment() and len(source.assignment) + len(newcomer.assignment()) == 4:
                        break
                assert newcomer.assignment(), "the new member got no partition: the full source held up the group"
                assert source.assignment, "the full source was dropped from its group instead of rebalancing"
            # Taking from the queue again resumes the source: it gets every record of its partitions.
            taken: list[tuple[int, int]] = []
            deadline = time.monotonic() + 30
            while len(set(taken)) < 40 and time.monotonic() < deadline:
                item = source.get(0.2)
                if item is not None:
                    taken.append((item.record.partition, item.record.offset))
            assert len(set(taken)) == 40, f"{len(set(taken))} of 40 records; a paused partition lost some"
            assert len(taken) == 40, "records re-delivered by the rebalances must be dropped, not taken twice"
        finally:
            source.stop()


def test_kill_9_then_restart_resumes_from_the_checkpoint_and_skips_no_window(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = f"trainer.{uuid.uuid4().hex[:8]}"
    # ~150 windows: at 4 fresh windows a step the stream lasts ~35 steps, well past the kill.
    messages = relabelled(traffic_messages(1) + traffic_messages(2) + traffic_messages(3), cameras=8)
    with open_bus(f"kafka://{kafka_bootstrap}") as bus:
        publish(bus, topic, messages, partitions=2)
    group = f"trainer-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first_journal, second_journal = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    checkpoints = tmp_path / "checkpoints"

    first_log = tmp_path / "first.log"
    with first_log.open("w") as log_file:  # a file, not a pipe: an unread pipe would stall the trainer's logging
        first = subprocess.Popen(
            # Checkpoints 20 steps (~2 s) apart: killed 0.5 s after the first, it has surely read past it.
            [sys.executable, *trainer_command(kafka_bootstrap, topic, tmp_path, group, first_journal, 1000, 20)],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log_file,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not checkpoint_files(checkpoints):
            assert first.poll() is None, first_log.read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.1)
        time.sleep(0.5)  # let it train past the checkpoint: those windows are lost and must be read again
        first.send_signal(signal.SIGKILL)
    finally:
        first.kill()
        first.wait(30)
    newest = checkpoint_files(checkpoints)[0]
    state = read_checkpoint(newest.path)
    at_checkpoint = consumed_offsets(state)
    # A damaged file that looks newer must be refused, loudly, not loaded.
    (checkpoints / "checkpoint-0000009999.ckpt").write_bytes(newest.path.read_bytes()[:5000])

    target = newest.step + 8
    second = subprocess.run(
        [sys.executable, *trainer_command(kafka_bootstrap, topic, tmp_path, group, second_journal, target)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert second.returncode == 0, second.stderr[-3000:]
    assert "INVALID CHECKPOINT" in second.stderr
    assert f"resumed at step {newest.step}" in second.stderr
    assert (checkpoints / "checkpoint-0000009999.ckpt.invalid").exists()
    final = read_checkpoint(checkpoint_files(checkpoints)[0].path)
    assert final["step"] == target

    before, after = defaultdict(list), defaultdict(list)
    for entry in journal(first_journal):
        before[entry["partition"]].append(entry["offset"])
    for entry in journal(second_journal):
        after[entry["partition"]].append(entry["offset"])
    ends = {p: max(before[p] + after[p]) + 1 for p in set(before) | set(after)}
    # A pre-filled topic is fetched partition by partition, so a short run may only reach one of them.
    assert ends, "no window was taken"
    assert sum(len(offsets) for offsets in after.values()) >= 8, "the restart trained on fresh windows"
    for partition, end in ends.items():
        start = at_checkpoint.get(partition, 0)
        # The restart reads each partition from exactly the checkpoint's offset, in order, without gaps...
        assert after[partition] == list(range(start, start + len(after[partition]))), partition
        # ...and everything before that offset was taken by the first run: no window is skipped.
        assert sorted(o for o in before[partition] if o < start) == list(range(start)), partition
        # Only windows taken after the checkpoint were read twice.
        assert all(o >= start for o in set(before[partition]) & set(after[partition]))
        assert max(after[partition], default=start - 1) < end
    # The first run had read past its checkpoint, so the restart really had windows to take again.
    summary = {p: (at_checkpoint.get(p), max(before[p], default=None), len(after[p])) for p in ends}
    assert any(offset >= at_checkpoint.get(p, 0) for p, offsets in before.items() for offset in offsets), summary
    group_offsets = committed(kafka_bootstrap, topic, group, 2)
    assert group_offsets == {p: consumed_offsets(final).get(p) for p in range(2)}


def test_two_ddp_processes_share_the_consumer_group_train_and_checkpoint(kafka_bootstrap: str, tmp_path: Path) -> None:
    topic = f"trainer.{uuid.uuid4().hex[:8]}"
    messages = relabelled(traffic_messages(3), cameras=8)
    with open_bus(f"kafka://{kafka_bootstrap}") as bus:
        publish(bus, topic, messages, partitions=4)
    group = f"trainer-{uuid.uuid4().hex[:8]}"
    run_journal = tmp_path / "journal.jsonl"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        *trainer_command(kafka_bootstrap, topic, tmp_path, group, run_journal, 10),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    # Its own session, so that a timeout kills torchrun's workers too instead of leaving them spinning.
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        _, stderr = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        _, stderr = process.communicate()
        raise AssertionError(f"the two ranks did not finish 10 steps in 300 s:\n{stderr[-4000:]}") from None
    assert process.returncode == 0, stderr[-4000:]
    state = read_checkpoint(checkpoint_files(tmp_path / "checkpoints")[0].path)
    assert state["step"] == 10
    assert len(state["ranks"]) == 2  # rank 0 saved both ranks' data state
    rank_journals = [journal(tmp_path / f"journal.rank{rank}.jsonl") for rank in (0, 1)]
    assert all(entries for entries in rank_journals), "each rank trained on windows of its own partitions"
    # Both ranks' consumed offsets are in the checkpoint and the group committed them.
    offsets = consumed_offsets(state)
    group_offsets = committed(kafka_bootstrap, topic, group, 4)
    assert {p for p, o in group_offsets.items() if o} == {p for p, o in offsets.items() if o}
    assert all(group_offsets[p] == o for p, o in offsets.items())

    # One process resumes what two wrote: it takes every partition's offset and the windows both had planned.
    data = {**CONFIG["data"], "group_id": group}
    settings = small_settings(tmp_path, f"kafka://{kafka_bootstrap}", topic, max_steps=12, **{**CONFIG, "data": data})
    with open_bus(f"kafka://{kafka_bootstrap}") as bus:
        result = Trainer(settings, bus, CollectorRegistry()).run()
    assert result.resumed_from is not None
    assert result.step == 12
    resumed = read_checkpoint(checkpoint_files(tmp_path / "checkpoints")[0].path)
    assert len(resumed["ranks"]) == 1
    assert all(consumed_offsets(resumed)[p] >= o for p, o in offsets.items())
