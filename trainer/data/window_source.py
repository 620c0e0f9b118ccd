"""Windows from the bus: one thread owns the group consumer (Kafka clients are not thread-safe), polls, checks each
record's header and CRC, and queues it for the batch planner; commits and lag queries run on the same thread.

Offsets: the planner tells the source where each partition's next untaken record is (``start_offsets`` from the
checkpoint). Records below it are dropped (already trained, or held in the checkpoint); when the first records of a
partition start *after* it (the group committed more than the checkpoint holds, e.g. the newest checkpoint was
corrupt), the consumer seeks back so nothing is skipped.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass

from ingest.bus import Bus, BusConsumer, BusError, BusUnavailableError, Record, TopicPartition
from ingest.contract import WindowDecodeError, WindowHeader
from ingest.contract.messages import header_from_record
from trainer.metrics import TrainerMetrics

log = logging.getLogger(__name__)

# Poll briefly, so commit requests and a stop are served within ~0.1 s.
_POLL_TIMEOUT_S = 0.1
_LAG_INTERVAL_S = 5.0
# A broker that does not answer is retried with exponential backoff up to this (kafka-python reconnects by itself).
_MAX_BACKOFF_S = 30.0


@dataclass(frozen=True)
class SourceItem:
    """One record as the planner receives it.

    ``problem`` is None for a usable window. ``malformed`` tells an unreadable message (dead-lettered) from a valid
    window this model cannot use (e.g. too few frames; skipped and counted).
    """

    record: Record
    header: WindowHeader | None
    problem: str | None = None
    malformed: bool = False


def check_record(record: Record, min_frames: int) -> SourceItem:
    """Validate schema header, wire header, CRC and key without decoding frames."""
    try:
        header = header_from_record(record)
    except WindowDecodeError as error:
        return SourceItem(record, None, str(error), malformed=True)
    if header.frame_count < min_frames:
        return SourceItem(
            record, header, f"{record.position}: window has {header.frame_count} frames, the model needs {min_frames}"
        )
    return SourceItem(record, header)


def seek_partition(consumer: BusConsumer, partition: TopicPartition, offset: int) -> bool:
    """Move ``consumer``'s position on ``partition``; False if the partition is not (or no longer) assigned."""
    try:
        consumer.seek(partition, offset)
    except BusError:
        return False
    return True


class WindowSource:
    """The consumer thread. Use :meth:`get` from the planner; :meth:`commit` from anywhere."""

    def __init__(
        self,
        bus: Bus,
        topic: str,
        group_id: str,
        *,
        start_offsets: Mapping[TopicPartition, int],
        min_frames: int,
        queue_records: int,
        poll_records: int,
        metrics: TrainerMetrics,
        join_timeout_s: float | None = None,
    ) -> None:
        self.bus = bus
        self.topic = topic
        self.group_id = group_id
        self.min_frames = min_frames
        self.poll_records = poll_records
        self.metrics = metrics
        # Set when every group member should get a partition (no more members than partitions): a consumer still
        # without one after this long is stuck (kafka-python can stay in its coordinator lookup for good) and is
        # replaced, as restarting the process would.
        self.join_timeout_s = join_timeout_s
        # Bounded by the consumer thread (it pauses its partitions at this size), not by the queue itself: a put must
        # never block the thread that keeps this member in its group.
        self._capacity = queue_records
        self._queue: queue.Queue[SourceItem] = queue.Queue()
        self._floor: dict[TopicPartition, int] = dict(start_offsets)
        self._from_checkpoint = set(start_offsets)
        self._seeks_tried: set[TopicPartition] = set()
        self._commits: queue.Queue[tuple[dict[TopicPartition, int], Future[dict[TopicPartition, int]]]] = queue.Queue()
        self._taken: dict[TopicPartition, int] = dict(start_offsets)
        self._taken_lock = threading.Lock()
        self._assignment: set[TopicPartition] = set()
        self._stop = threading.Event()
        self._ready = threading.Event()
        # Set once the group has assigned this consumer a partition: before that, no records is not an idle stream.
        self.assigned = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="window-source", daemon=True)

    # --- planner side -----------------------------------------------------------------------------------------
    def start(self) -> WindowSource:
        self._thread.start()
        return self

    def get(self, timeout_s: float) -> SourceItem | None:
        """The next record, or None after ``timeout_s``. Raises if the consumer thread died."""
        if self.error is not None:
            raise self.error
        try:
            return self._queue.get(timeout=timeout_s)
        except queue.Empty:
            if self.error is not None:
                raise self.error from None
            return None

    def note_taken(self, offsets: Mapping[TopicPartition, int]) -> None:
        """What the planner has taken so far (for the lag metric)."""
        with self._taken_lock:
            self._taken.update(offsets)

    def commit(self, offsets: Mapping[TopicPartition, int]) -> Future[dict[TopicPartition, int]]:
        """Commit on the consumer thread; the future gives the offsets committed (only assigned partitions)."""
        future: Future[dict[TopicPartition, int]] = Future()
        if self.error is not None:
            future.set_exception(self.error)
            return future
        self._commits.put((dict(offsets), future))
        return future

    @property
    def assignment(self) -> set[TopicPartition]:
        return set(self._assignment)

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.error("the window source did not stop within %.0f s", timeout_s)

    # --- consumer thread --------------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                with self.bus.consumer([self.topic], group_id=self.group_id, start="earliest") as consumer:
                    self._ready.set()
                    if self._consume(consumer):
                        self._serve_commits(consumer)
                        return
                self.metrics.consumer_restarts.inc()
        except BaseException as error:
            log.exception("the window source failed")
            self.error = error
            while not self._commits.empty():
                self._commits.get_nowait()[1].set_exception(error)
        finally:
            self._ready.set()

    def _consume(self, consumer: BusConsumer) -> bool:
        """Poll until stopped (True), or until the consumer is found stuck outside its group (False: replace it)."""
        opened = time.monotonic()
        joined = False
        last_lag = 0.0
        backoff = 1.0
        paused: set[TopicPartition] = set()
        while not self._stop.is_set():
            self._serve_commits(consumer)
            room = self._capacity - self._queue.qsize()
            if room > 0 and paused:
                consumer.resume(paused)
                paused = set()
            elif room <= 0:
                # Full: keep polling with every partition paused. A member that stops polling holds up its whole
                # group's next rebalance (e.g. another rank joining) until Kafka's max poll interval.
                paused = consumer.assignment()
                consumer.pause(paused)
            started = time.monotonic()
            try:
                records = consumer.poll(_POLL_TIMEOUT_S, max_records=max(1, min(room, self.poll_records)))
            except BusUnavailableError as error:
                # The broker is away: keep the consumer and retry (training goes on with replay).
                log.warning("polling the bus failed, retrying in %.0f s: %s", backoff, error)
                self._stop.wait(backoff)
                backoff = min(_MAX_BACKOFF_S, backoff * 2)
                continue
            backoff = 1.0
            self._assignment = consumer.assignment()
            if self._assignment:
                joined = True
                self.assigned.set()
            elif not joined and self.join_timeout_s is not None and started - opened > self.join_timeout_s:
                timeout = self.join_timeout_s
                log.warning("the consumer has not joined group %r within %.0f s; replacing it", self.group_id, timeout)
                return False
            # While full, records come only from partitions a rebalance just assigned (not paused yet): at most one
            # per poll, kept rather than lost.
            self._accept(consumer, records)
            if not records and time.monotonic() - started < _POLL_TIMEOUT_S / 10:
                self._stop.wait(_POLL_TIMEOUT_S / 10)  # the client answered at once (paused, no coordinator): no spin
            if time.monotonic() - last_lag > _LAG_INTERVAL_S:
                last_lag = time.monotonic()
                self._update_lag(consumer)
        return True

    def _serve_commits(self, consumer: BusConsumer) -> None:
        while not self._commits.empty():
            offsets, future = self._commits.get_nowait()
            assigned = consumer.assignment()
            mine = {partition: offset for partition, offset in offsets.items() if partition in assigned}
            try:
                consumer.commit(mine)
            except Exception as error:
                future.set_exception(error)
            else:
                future.set_result(mine)

    def _accept(self, consumer: BusConsumer, records: list[Record]) -> None:
        by_partition: dict[TopicPartition, list[Record]] = {}
        for record in records:
            by_partition.setdefault(record.topic_partition, []).append(record)
        for partition, batch in by_partition.items():
            floor = self._floor.get(partition)
            # Only the first records of a partition the checkpoint knows are compared with it: later gaps are
            # another group member's progress after a rebalance, not a skip.
            if floor is not None and batch[0].offset > floor and partition in self._from_checkpoint:
                if partition not in self._seeks_tried:
                    self._seeks_tried.add(partition)
                    if seek_partition(consumer, partition, floor):
                        log.warning(
                            "%s: the group's position %d is past the checkpoint's %d; seeking back so that no "
                            "window trained only into a lost checkpoint is skipped",
                            partition,
                            batch[0].offset,
                            floor,
                        )
                        continue
                log.error(
                    "%s: records %d..%d are not re-read: the bus could not seek back to the checkpoint's offset",
                    partition,
                    floor,
                    batch[0].offset - 1,
                )
            self._from_checkpoint.discard(partition)
            for record in batch:
                if floor is not None and record.offset < floor:
                    self.metrics.records_redelivered.inc()
                    continue
                self._queue.put(check_record(record, self.min_frames))
                floor = record.offset + 1
            if floor is not None:
                self._floor[partition] = floor

    def _update_lag(self, consumer: BusConsumer) -> None:
        assigned = sorted(consumer.assignment())
        if not assigned:
            return
        try:
            ends = consumer.end_offsets(assigned)
        except Exception as error:  # lag is a metric: never stop training for it
            log.debug("could not read end offsets: %s", error)
            return
        with self._taken_lock:
            taken = dict(self._taken)
        for partition, end in ends.items():
            position = taken.get(partition, self._floor.get(partition, 0))
            self.metrics.consumer_lag.labels(str(partition.partition)).set(max(0, end - position))
