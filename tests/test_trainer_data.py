"""The data path below the loop: augmentation, replay buffer, windows file, record checks, the planner, the source."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from ingest.bus import TopicPartition
from ingest.bus.embedded import EmbeddedBus
from ingest.contract import FrameCodec, WindowDecodeError, encode_window
from ingest.contract.dead_letters import HEADER_ERROR
from ingest.contract.messages import window_message
from ingest.contract.topics import dead_letter_topic
from ingest.runtime.dead_letters import DeadLetters
from tests.conftest import make_window
from trainer.config import DataConfig, ModelConfig
from trainer.data.augment import ClipAugment, match_channels
from trainer.data.batches import BatchPlanner, Journal
from trainer.data.heldout import HeldOutSet, held_out_by_hash
from trainer.data.replay import ReplayBuffer, StoredWindow
from trainer.data.window_file import read_windows_file, write_windows_file
from trainer.data.window_source import WindowSource, check_record
from trainer.metrics import TrainerMetrics

MODEL = ModelConfig(encoder_width=8, embedding_dim=32, context_heads=2)


def test_augmentation_is_the_same_for_every_frame_of_a_window() -> None:
    augment = ClipAugment(MODEL, DataConfig(hflip=True))
    # 8 identical frames with structure: identical outputs prove one crop, one jitter and one flip per window.
    frame = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    clip = np.broadcast_to(frame, (10, 96, 128, 3)).copy()
    for seed in range(5):
        out = augment.train(clip, 1, np.random.default_rng(seed))
        assert out.shape == (8, 64, 64, 3)
        assert out.dtype == np.uint8
        assert all(np.array_equal(out[0], out[i]) for i in range(8))
    # Different seeds give different views; the same seed the same view.
    a = augment.train(clip, 0, np.random.default_rng(1))
    assert not np.array_equal(a, augment.train(clip, 0, np.random.default_rng(2)))
    assert np.array_equal(a, augment.train(clip, 0, np.random.default_rng(1)))


def test_evaluation_view_is_a_deterministic_centre_crop() -> None:
    augment = ClipAugment(MODEL, DataConfig())
    clip = np.zeros((8, 64, 128, 3), dtype=np.uint8)
    clip[:, :, 32:96] = 255  # the centred square is white, the sides black
    out = augment.evaluate(clip)
    assert out.shape == (8, 64, 64, 3)
    assert out.min() == 255


def test_channel_matching() -> None:
    gray = np.full((2, 4, 4, 1), 100, dtype=np.uint8)
    assert match_channels(gray, 3).shape == (2, 4, 4, 3)
    assert int(match_channels(match_channels(gray, 3), 1)[0, 0, 0, 0]) == 100


def stored(camera: str, index: int, size: int = 100) -> StoredWindow:
    return StoredWindow(f"{camera}:{index}", camera, bytes(size), 8)


def test_replay_buffer_is_bounded_by_count_and_bytes() -> None:
    by_count = ReplayBuffer(max_windows=50, max_bytes=10**9, seed=0)
    for index in range(1000):
        by_count.offer(stored("cam", index))
    assert len(by_count) == 50
    by_bytes = ReplayBuffer(max_windows=10**6, max_bytes=1000, seed=0)
    for index in range(1000):
        by_bytes.offer(stored("cam", index, size=64))
    assert by_bytes.nbytes <= 1000
    assert len(by_bytes) == 1000 // 64


def test_replay_reservoir_is_uniform_over_the_stream() -> None:
    # After offering 0..999 to a 100-window reservoir, early and late windows are held alike (Algorithm R).
    early = late = 0
    for seed in range(20):
        buffer = ReplayBuffer(max_windows=100, max_bytes=10**9, seed=seed)
        for index in range(1000):
            buffer.offer(stored("cam", index))
        kept = [int(w.key.split(":")[1]) for w in buffer.sample(100, np.random.default_rng(seed))]
        early += sum(1 for i in kept if i < 500)
        late += sum(1 for i in kept if i >= 500)
    assert 0.4 < early / (early + late) < 0.6


def test_replay_balances_cameras() -> None:
    buffer = ReplayBuffer(max_windows=100, max_bytes=10**9, seed=0)
    for index in range(2000):
        buffer.offer(stored("busy", index))
        if index % 100 == 0:
            buffer.offer(stored("quiet", index))
    assert buffer.cameras["quiet"] == 20
    drawn = Counter(w.camera for w in buffer.sample(4000, np.random.default_rng(0)))
    assert 0.45 < drawn["quiet"] / 4000 < 0.55


def test_replay_state_round_trip_continues_identically() -> None:
    a = ReplayBuffer(max_windows=30, max_bytes=10**9, seed=3)
    for index in range(200):
        a.offer(stored(f"cam-{index % 3}", index))
    b = ReplayBuffer(max_windows=30, max_bytes=10**9, seed=99)
    b.load_state_dict(a.state_dict())
    for index in range(200, 400):
        a.offer(stored(f"cam-{index % 3}", index))
        b.offer(stored(f"cam-{index % 3}", index))
    assert a.state_dict() == b.state_dict()


def test_windows_file_round_trip_and_truncation(tmp_path: Path) -> None:
    messages = [encode_window(make_window(sequence=i)) for i in range(3)]
    path = tmp_path / "held.windows"
    assert write_windows_file(path, messages) == 3
    assert read_windows_file(path) == messages
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(WindowDecodeError, match="truncated"):
        read_windows_file(path)


def record_of(bus: EmbeddedBus, topic: str, value: bytes, key: bytes | None = b"cam-1") -> None:
    bus.create_topic(topic, 1)
    with bus.producer() as producer:
        producer.send(topic, value, key=key).result()


def test_check_record_classifies_without_decoding_frames(embedded_bus: EmbeddedBus) -> None:
    good = window_message(make_window(frames=8))
    short = window_message(make_window(frames=4))
    record_of(embedded_bus, "t", good.value)
    record_of(embedded_bus, "t", b"garbage")
    record_of(embedded_bus, "t", good.value, key=b"other-camera")
    record_of(embedded_bus, "t", short.value)
    with embedded_bus.consumer(["t"], group_id=None) as consumer:
        records = consumer.poll(1.0)
    items = [check_record(record, min_frames=8) for record in records]
    assert items[0].problem is None
    assert items[1].malformed
    assert "magic" in (items[1].problem or "")
    assert items[2].malformed
    assert "does not match" in (items[2].problem or "")
    assert not items[3].malformed
    assert "4 frames" in (items[3].problem or "")


def test_held_out_choice_is_stable() -> None:
    ids = [f"cam-1:{i:08d}" for i in range(2000)]
    chosen = [i for i in ids if held_out_by_hash(i, 20)]
    assert 60 < len(chosen) < 140
    assert chosen == [i for i in ids if held_out_by_hash(i, 20)]
    assert not any(held_out_by_hash(i, 0) for i in ids)


def make_source(
    bus: EmbeddedBus, topic: str, start: dict[TopicPartition, int], metrics: TrainerMetrics
) -> WindowSource:
    return WindowSource(
        bus, topic, "g", start_offsets=start, min_frames=8, queue_records=64, poll_records=16, metrics=metrics
    )


def publish_windows(bus: EmbeddedBus, topic: str, count: int) -> None:
    """``count`` 8-frame windows of one camera, sequences 0.., on a new one-partition topic."""
    bus.create_topic(topic, 1)
    with bus.producer() as producer:
        for sequence in range(count):
            message = window_message(make_window(sequence=sequence, frames=8))
            producer.send(topic, message.value, key=message.key, headers=message.headers).result()


def drain(source: WindowSource, count: int) -> list[int]:
    offsets: list[int] = []
    deadline = time.monotonic() + 10
    while len(offsets) < count and time.monotonic() < deadline:
        item = source.get(0.2)
        if item is not None:
            offsets.append(item.record.offset)
    return offsets


def test_source_resumes_at_the_checkpoint_offset_forward_and_backward(embedded_bus: EmbeddedBus) -> None:
    topic = "resume"
    publish_windows(embedded_bus, topic, 20)
    partition = TopicPartition(topic, 0)
    metrics = TrainerMetrics(CollectorRegistry())
    # The group committed 5 but the checkpoint holds 8 (crash between checkpoint and commit): start at 8.
    with embedded_bus.consumer([topic], group_id="g") as member:
        member.poll(0.5)
        member.commit({partition: 5})
    source = make_source(embedded_bus, topic, {partition: 8}, metrics).start()
    try:
        assert drain(source, 12) == list(range(8, 20))
    finally:
        source.stop()
    # The group committed 15 but the only valid checkpoint holds 10: seek back to 10, skip nothing.
    with embedded_bus.consumer([topic], group_id="g") as member:
        member.poll(0.5)
        member.commit({partition: 15})
    source = make_source(embedded_bus, topic, {partition: 10}, metrics).start()
    try:
        assert drain(source, 10) == list(range(10, 20))
    finally:
        source.stop()


def test_planner_mixes_replay_dead_letters_malformed_and_skips_unusable(embedded_bus: EmbeddedBus) -> None:
    topic = "plan"
    embedded_bus.create_topic(topic, 1)
    with embedded_bus.producer() as producer:
        for sequence in range(40):
            if sequence == 5:
                producer.send(topic, b"not a window", key=b"cam-1").result()
                continue
            frames = 4 if sequence == 6 else 8
            message = window_message(make_window(sequence=sequence, frames=frames, codec=FrameCodec.JPEG))
            producer.send(topic, message.value, key=message.key, headers=message.headers).result()
    metrics = TrainerMetrics(CollectorRegistry())
    source = make_source(embedded_bus, topic, {}, metrics).start()
    data = DataConfig(batch_size=8, replay_ratio=0.5, fresh_wait_s=0.5, holdout_every=0)
    planner = BatchPlanner(
        source, ReplayBuffer(100, 10**9), None, DeadLetters(embedded_bus, topic), MODEL, data, metrics, 0, Journal(None)
    )
    stop = threading.Event()
    try:
        first = planner.plan(stop)
        second = planner.plan(stop)
    finally:
        source.stop()
    assert first is not None
    assert second is not None
    # The first batch is all fresh (nothing to replay yet); later ones are half replay.
    assert [w.origin for w in first.windows] == ["fresh"] * 8
    assert Counter(w.origin for w in second.windows) == {"fresh": 4, "replay": 4}
    assert planner.consumed[TopicPartition(topic, 0)] == 14  # 8 + 4 trained, 1 dead-lettered, 1 unusable
    registry = metrics.registry
    assert registry.get_sample_value("streamssl_trainer_dead_letters_total") == 1
    assert registry.get_sample_value("streamssl_trainer_skipped_windows_total", {"reason": "unusable"}) == 1
    with embedded_bus.consumer([dead_letter_topic(topic)], group_id=None) as consumer:
        (parked,) = consumer.poll(1.0)
    assert parked.value == b"not a window"
    assert b"magic" in (parked.header(HEADER_ERROR) or b"")


def test_held_out_set_from_a_topic(embedded_bus: EmbeddedBus) -> None:
    for sequence in range(5):
        record_of(embedded_bus, "held", window_message(make_window(sequence=sequence, frames=8)).value)
    record_of(embedded_bus, "held", b"junk")
    held = HeldOutSet.from_topic(embedded_bus, "held", max_windows=100, min_frames=8)
    assert len(held) == 5
    assert held.fixed


class StuckFirstConsumer:
    """An embedded bus whose first consumer never joins its group (as a kafka-python consumer stuck looking up its
    coordinator: polls return nothing, no partition is ever assigned); later consumers are normal."""

    def __init__(self, bus: EmbeddedBus) -> None:
        self.bus = bus
        self.opened = 0

    def consumer(self, topics: list[str], **options: object) -> object:
        self.opened += 1
        if self.opened > 1:
            return self.bus.consumer(topics, **options)  # type: ignore[arg-type]

        class Stuck:
            def __enter__(self) -> Stuck:
                return self

            def __exit__(self, *_: object) -> None:
                return None

            def poll(self, timeout_s: float, max_records: int | None = None) -> list[object]:
                return []  # at once, as a client without a coordinator does

            def assignment(self) -> set[TopicPartition]:
                return set()

            def pause(self, partitions: object) -> None:
                raise AssertionError("nothing to pause: the queue never filled")

            resume = pause

            def commit(self, offsets: object) -> None:
                return None

            def end_offsets(self, partitions: object) -> dict[TopicPartition, int]:
                return {}

        return Stuck()


def test_a_consumer_that_never_joins_its_group_is_replaced(embedded_bus: EmbeddedBus) -> None:
    topic = "stuck"
    publish_windows(embedded_bus, topic, 6)
    metrics = TrainerMetrics(CollectorRegistry())
    bus = StuckFirstConsumer(embedded_bus)
    source = WindowSource(
        bus, topic, "g", start_offsets={}, min_frames=8, queue_records=64, poll_records=16, metrics=metrics,  # type: ignore[arg-type]
        join_timeout_s=0.5,
    ).start()  # fmt: skip
    try:
        assert drain(source, 6) == list(range(6)), "the replacement consumer must read the topic"
    finally:
        source.stop()
    assert bus.opened == 2
    assert metrics.registry.get_sample_value("streamssl_trainer_consumer_restarts_total") == 1


def test_without_a_join_timeout_a_consumer_is_never_replaced(embedded_bus: EmbeddedBus) -> None:
    embedded_bus.create_topic("patient", 1)
    metrics = TrainerMetrics(CollectorRegistry())
    bus = StuckFirstConsumer(embedded_bus)
    source = WindowSource(
        bus, "patient", "g", start_offsets={}, min_frames=8, queue_records=64, poll_records=16, metrics=metrics,  # type: ignore[arg-type]
    ).start()  # fmt: skip
    try:
        assert source.get(1.5) is None
    finally:
        source.stop()
    assert bus.opened == 1, "more members than partitions: waiting without a partition is legitimate"
