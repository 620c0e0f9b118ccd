"""One semantic suite, run against the real Apache Kafka broker and the embedded bus alike."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import numpy as np
import pytest

from ingest.bus import Bus, BusError, MessageTooLargeError, TopicPartition, UnknownTopicError, open_bus
from ingest.bus.embedded import EmbeddedBus
from ingest.contract import FrameCodec, Window, WindowTooLargeError
from ingest.contract.messages import window_from_record, window_message
from tests.bus_members import GroupMember, wait_until
from tests.conftest import make_window

CAMERAS = [f"cam-{index}" for index in range(8)]
WINDOWS_PER_CAMERA = 125  # 8 × 125 = 1,000 windows
# Kafka needs a few seconds to form a group and rebalance; the embedded bus does it at once.
GROUP_TIMEOUT_S = 60.0


@pytest.fixture(params=["embedded", pytest.param("kafka", marks=pytest.mark.kafka)])
def bus(request: pytest.FixtureRequest) -> Iterator[Bus]:
    if request.param == "embedded":
        embedded: EmbeddedBus = request.getfixturevalue("embedded_bus")
        yield embedded
        return
    bootstrap: str = request.getfixturevalue("kafka_bootstrap")
    with open_bus(f"kafka://{bootstrap}") as kafka:
        yield kafka


def fresh_topic(bus: Bus, partitions: int) -> str:
    topic = f"test.windows.{uuid.uuid4().hex[:12]}"
    bus.create_topic(topic, partitions)
    return topic


def publish(bus: Bus, topic: str, windows: list[Window]) -> None:
    with bus.producer() as producer:
        futures = []
        for window in windows:
            message = window_message(window)
            futures.append(producer.send(topic, message.value, key=message.key, headers=message.headers))
        producer.flush()
        for future in futures:
            future.result(timeout=30)


def traffic(sequences: range) -> list[Window]:
    """Windows of all cameras, interleaved the way several live cameras would produce them."""
    return [make_window(camera, sequence, frames=2, height=8, width=8) for sequence in sequences for camera in CAMERAS]


def start_group(bus: Bus, topic: str, group_id: str, members: int, partitions: int) -> list[GroupMember]:
    started = [GroupMember(bus, topic, group_id, f"member-{index}") for index in range(members)]
    for member in started:
        member.start()

    def balanced() -> bool:
        assignments = [member.snapshot()[1] for member in started]
        return all(assignments) and sum(len(a) for a in assignments) == partitions

    wait_until(balanced, GROUP_TIMEOUT_S, f"{members} members share the {partitions} partitions")
    return started


def test_topic_creation_is_idempotent_and_reports_partitions(bus: Bus) -> None:
    topic = fresh_topic(bus, 4)
    bus.create_topic(topic, 4)
    assert bus.partitions(topic) == 4
    with pytest.raises(UnknownTopicError):
        bus.partitions(f"missing.{uuid.uuid4().hex[:8]}")


def test_group_of_two_receives_every_window_once_in_camera_order(bus: Bus) -> None:
    topic = fresh_topic(bus, 4)
    members = start_group(bus, topic, f"group-{uuid.uuid4().hex[:8]}", members=2, partitions=4)
    windows = traffic(range(WINDOWS_PER_CAMERA))
    publish(bus, topic, windows)
    wait_until(lambda: sum(len(m.snapshot()[0]) for m in members) >= len(windows), GROUP_TIMEOUT_S, "all arrived")
    for member in members:
        member.stop()

    received = [item for member in members for item in member.received]
    ids = [window.window_id for _, window in received]
    assert len(ids) == len(windows) == 1000
    assert len(set(ids)) == len(ids), "a window arrived twice"
    assert set(ids) == {w.window_id for w in windows}
    assert all(member.received for member in members), "one member got no work"
    for camera in CAMERAS:
        records = [record for record, window in received if window.camera_id == camera]
        assert len({record.partition for record in records}) == 1, f"{camera} was spread over partitions"
        in_offset_order = sorted(records, key=lambda record: record.offset)
        sequences = [window_from_record(record).sequence for record in in_offset_order]
        assert sequences == list(range(WINDOWS_PER_CAMERA)), f"{camera} out of order"


def test_remaining_member_takes_over_the_partitions_of_one_that_leaves(bus: Bus) -> None:
    topic = fresh_topic(bus, 4)
    first, second = start_group(bus, topic, f"group-{uuid.uuid4().hex[:8]}", members=2, partitions=4)
    publish(bus, topic, traffic(range(10)))
    wait_until(lambda: len(first.snapshot()[0]) + len(second.snapshot()[0]) >= 80, GROUP_TIMEOUT_S, "first batch")
    second.stop()

    wait_until(lambda: len(first.snapshot()[1]) == 4, GROUP_TIMEOUT_S, "the remaining member owns all 4 partitions")
    publish(bus, topic, traffic(range(10, 20)))
    wait_until(
        lambda: len({w.window_id for _, w in first.snapshot()[0] if w.sequence >= 10}) >= 80,
        GROUP_TIMEOUT_S,
        "the remaining member reads the second batch",
    )
    first.stop()
    late = {window.window_id for _, window in first.received if window.sequence >= 10}
    assert late == {w.window_id for w in traffic(range(10, 20))}
    everything = [w.window_id for _, w in first.received] + [w.window_id for _, w in second.received]
    assert set(everything) == {w.window_id for w in traffic(range(20))}


def test_restarted_consumer_resumes_right_after_the_last_commit(bus: Bus) -> None:
    topic = fresh_topic(bus, 4)
    group = f"group-{uuid.uuid4().hex[:8]}"
    windows = traffic(range(25))  # 200 windows
    publish(bus, topic, windows)

    processed: list[tuple[TopicPartition, int, str]] = []
    with bus.consumer([topic], group_id=group, start="earliest") as consumer:
        while len(processed) < 70:
            for record in consumer.poll(1.0, max_records=70 - len(processed)):
                processed.append((record.topic_partition, record.offset, window_from_record(record).window_id))
        commit: dict[TopicPartition, int] = {}
        for partition, offset, _ in processed:
            commit[partition] = max(commit.get(partition, 0), offset + 1)
        consumer.commit(commit)
        for partition, offset in commit.items():
            assert consumer.committed(partition) == offset

    resumed: list[tuple[TopicPartition, int, str]] = []
    with bus.consumer([topic], group_id=group, start="earliest") as consumer:
        idle_polls = 0
        while len(resumed) < len(windows) - len(processed) and idle_polls < 60:
            records = consumer.poll(1.0)
            idle_polls += not records
            resumed.extend((r.topic_partition, r.offset, window_from_record(r).window_id) for r in records)

    first_offsets: dict[TopicPartition, int] = {}
    for partition, offset, _ in resumed:
        first_offsets.setdefault(partition, offset)
    for partition, offset in first_offsets.items():
        assert offset == commit.get(partition, 0), f"{partition} resumed at {offset}, committed {commit.get(partition)}"
    before = {window_id for _, _, window_id in processed}
    after = {window_id for _, _, window_id in resumed}
    assert not before & after, "a committed window was read again"
    assert before | after == {w.window_id for w in windows}, "a window was skipped"
    assert len(resumed) == len(after)


def test_oversize_window_is_refused_and_nothing_is_sent(bus: Bus) -> None:
    topic = fresh_topic(bus, 1)
    noisy = np.random.default_rng(1).integers(0, 256, (16, 160, 160, 3), dtype=np.uint8)
    huge = Window(
        "cam-big",
        0,
        "cam-big:0",
        noisy,
        np.arange(16) / 10,
        np.arange(16) + 1.7e9,
        10.0,
        codec=FrameCodec.PNG,
        quality=1,
    )
    with pytest.raises(WindowTooLargeError, match=r"over the maximum message size of \d+ bytes"):
        window_message(huge)
    with bus.producer(max_message_bytes=1000) as producer, pytest.raises(MessageTooLargeError, match="1000"):
        producer.send(topic, b"x" * 1001, key=b"cam-big")
    with bus.consumer([topic], group_id=None, start="earliest") as consumer:
        leftovers = [record for _ in range(3) for record in consumer.poll(0.5)]
    assert leftovers == []


def test_seek_moves_the_position_of_an_assigned_partition_only(bus: Bus) -> None:
    topic = fresh_topic(bus, 1)
    publish(bus, topic, [make_window("cam-1", sequence) for sequence in range(6)])
    partition = TopicPartition(topic, 0)
    with bus.consumer([topic], group_id=f"group-{uuid.uuid4().hex[:8]}", start="earliest") as consumer:
        first: list[int] = []
        while len(first) < 6:
            first += [record.offset for record in consumer.poll(1.0)]
        consumer.seek(partition, 2)
        again: list[int] = []
        while len(again) < 4:
            again += [record.offset for record in consumer.poll(1.0)]
        assert again == [2, 3, 4, 5]
        with pytest.raises(BusError):
            consumer.seek(TopicPartition(topic, 7), 0)


def test_paused_partitions_keep_their_position_and_their_member_in_the_group(bus: Bus) -> None:
    topic = fresh_topic(bus, 2)
    publish(bus, topic, traffic(range(5)))  # 40 windows over both partitions
    group = f"group-{uuid.uuid4().hex[:8]}"
    with bus.consumer([topic], group_id=group, start="earliest") as first:
        taken: list[tuple[TopicPartition, int]] = []

        def take(into: list[tuple[TopicPartition, int]], count: int, max_records: int | None = None) -> bool:
            into.extend((record.topic_partition, record.offset) for record in first.poll(0.2, max_records))
            return len(into) >= count

        wait_until(lambda: take(taken, 4, max_records=4), GROUP_TIMEOUT_S, "the first records arrive")
        first.pause(first.assignment() | {TopicPartition(topic, 9)})  # an unassigned partition is ignored
        assert all(not first.poll(0.2) for _ in range(3)), "a paused partition returns nothing"
        first.resume(first.assignment())
        rest: list[tuple[TopicPartition, int]] = []
        wait_until(lambda: take(rest, 40 - len(taken)), GROUP_TIMEOUT_S, "the rest arrives after resume")
        assert sorted(taken + rest) == sorted(set(taken + rest)), "nothing twice"
        assert len(taken + rest) == 40, "nothing lost while paused"

        # A member that polls with everything paused still takes part in a rebalance: the group splits at once
        # instead of waiting for it to be dropped (Kafka's max poll interval).
        first.pause(first.assignment())
        with bus.consumer([topic], group_id=group, start="earliest") as second:

            def split() -> bool:
                first.poll(0.1)
                second.poll(0.1)
                return len(first.assignment()) == 1 and len(second.assignment()) == 1

            wait_until(split, GROUP_TIMEOUT_S / 2, "the paused member and a new one share the partitions")
