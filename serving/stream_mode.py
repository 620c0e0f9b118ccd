"""Stream mode: windows from a bus topic in, one result per window out, at least once.

One thread owns the consumer (Kafka clients are not thread-safe). Per poll it decodes the windows, scores them through
the batcher, publishes one JSON result per window to the output topic keyed by camera id (so a camera's results stay
in order in one partition), waits until the bus acknowledged every result, and only then commits the input offsets.
A crash before the commit means those windows are read again: duplicates after a crash, never losses.

A message that is not a window, or a window the model cannot take, goes to the dead-letter topic with the reason in
the ``streamssl-error`` header and is committed past. A fault on the node's side (inference failed) is never filed
as bad input: nothing of the batch is published or committed, and the windows are read again. If results cannot be
published, nothing is committed either and the consumer is reopened, so it resumes at the last committed offset.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

from ingest.bus import Bus, BusConsumer, BusError, BusProducer, Delivered, Record, TopicPartition
from ingest.contract import Window, WindowDecodeError
from ingest.contract.messages import window_from_record
from ingest.runtime.dead_letters import DeadLetters
from serving.anomaly import ScoreNormaliser
from serving.batcher import Batcher
from serving.errors import InvalidInputError
from serving.metrics import ServingMetrics
from serving.model import LoadedModel, WindowOutputs
from serving.model_slot import ModelSlot
from serving.tensors import dumps
from serving.windows import RESULT_SCHEMA, score_window, window_frames

log = logging.getLogger(__name__)

_POLL_S = 0.5
_LAG_INTERVAL_S = 5.0
_RECONNECT_S = 2.0
_REPUBLISH_S = 1.0  # pause before reading unacknowledged windows again, so a dead broker is not hammered


@dataclass(frozen=True)
class StreamConfig:
    input_topic: str
    output_topic: str
    group_id: str
    partitions: int = 8
    poll_records: int = 64
    ack_timeout_s: float = 60.0


class StreamWorker:
    """Runs the consume → score → publish → commit loop on its own thread until :meth:`stop`."""

    def __init__(
        self,
        bus: Bus,
        config: StreamConfig,
        *,
        slot: ModelSlot,
        batcher: Batcher,
        normaliser: ScoreNormaliser,
        metrics: ServingMetrics,
    ) -> None:
        self.bus = bus
        self.config = config
        self.slot = slot
        self.batcher = batcher
        self.normaliser = normaliser
        self.metrics = metrics
        self.consuming = threading.Event()  # set while a consumer is open (for readiness)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stream", daemon=True)
        self._next_offsets: dict[TopicPartition, int] = {}
        self._lag_checked = 0.0

    def start(self) -> None:
        for topic in (self.config.input_topic, self.config.output_topic):
            self.bus.create_topic(topic, self.config.partitions)
        self._thread.start()

    def stop(self, timeout_s: float = 60.0) -> None:
        """Finish the batch in hand (publish, commit), leave the group, return."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while self.slot.current is None and not self._stop.wait(0.2):
            pass  # nothing to score with yet: do not take partitions from members that could
        with self.bus.producer() as producer:
            dead_letters = DeadLetters(self.bus, self.config.input_topic, producer)
            while not self._stop.is_set():
                try:
                    with self.bus.consumer(
                        [self.config.input_topic], group_id=self.config.group_id, start="earliest"
                    ) as consumer:
                        self.consuming.set()
                        log.info(
                            "stream mode: %s → %s (group %s, dead letters to %s)",
                            self.config.input_topic,
                            self.config.output_topic,
                            self.config.group_id,
                            dead_letters.topic,
                        )
                        self._consume(consumer, producer, dead_letters)
                except BusError as error:  # the broker is away: expected, its message says it all
                    log.warning("stream mode: %s; reconnecting in %.0f s", error, _RECONNECT_S)
                    self._stop.wait(_RECONNECT_S)
                except Exception as error:  # the loop must outlive any processing failure; a bug gets its traceback
                    log.error("stream mode: %s; reconnecting in %.0f s", error, _RECONNECT_S, exc_info=error)
                    self._stop.wait(_RECONNECT_S)
                finally:
                    self.consuming.clear()

    def _consume(self, consumer: BusConsumer, producer: BusProducer, dead_letters: DeadLetters) -> None:
        while not self._stop.is_set():
            records = consumer.poll(_POLL_S, max_records=self.config.poll_records)
            if records:
                if not self._process(records, producer, dead_letters):
                    self._stop.wait(_REPUBLISH_S)
                    return  # reopen: the group hands back the partitions at their committed offsets
                offsets: dict[TopicPartition, int] = {}
                for record in records:
                    offsets[record.topic_partition] = max(offsets.get(record.topic_partition, 0), record.offset + 1)
                try:
                    consumer.commit(offsets)
                except BusError as error:
                    # A rebalance took the partitions: their new owner reads these windows again (duplicates).
                    log.warning("stream mode: commit refused (%s); the windows will be scored again", error)
                else:
                    self._next_offsets.update(offsets)
            self._update_lag(consumer)

    def _process(self, records: list[Record], producer: BusProducer, dead_letters: DeadLetters) -> bool:
        """Score and publish ``records``; True once every result and dead letter is acknowledged.

        Only bad input is dead-lettered (not a window, or a window the model cannot take). A fault on our side (an
        inference error, a model swap gone wrong) publishes nothing of the batch and commits nothing: the windows
        are read again, never parked as if they were bad.
        """
        try:
            with self.slot.acquire() as model:
                parked, pending = self._prepare(model, records)
                try:
                    scored = [(record, window, future.result()) for record, window, future in pending]
                except Exception as error:
                    self.metrics.stream_inference_errors.inc()
                    log.error(
                        "stream mode: inference failed (%s); nothing of these %d windows is published or committed: "
                        "they will be scored again",
                        error,
                        len(records),
                    )
                    return False
                for record, reason in parked:
                    dead_letters.send(record, reason)
                sends = [self._publish(producer, model, window, outputs) for _, window, outputs in scored]
            for sent in sends:
                sent.result(timeout=self.config.ack_timeout_s)
            dead_letters.flush(self.config.ack_timeout_s)
        except Exception as error:  # not acknowledged: commit nothing, read these windows again
            self.metrics.stream_publish_errors.inc()
            log.error(
                "stream mode: results of %d windows not acknowledged (%s); reading them again", len(records), error
            )
            return False
        self.metrics.stream_windows.labels("scored").inc(len(scored))
        self.metrics.stream_windows.labels("dead_lettered").inc(len(parked))
        return True

    def _prepare(
        self, model: LoadedModel, records: list[Record]
    ) -> tuple[list[tuple[Record, str]], list[tuple[Record, Window, Future[WindowOutputs]]]]:
        """Decode and check each record; (bad input with its reason, windows submitted for inference)."""
        parked: list[tuple[Record, str]] = []
        pending: list[tuple[Record, Window, Future[WindowOutputs]]] = []
        for record in records:
            try:
                window = window_from_record(record)
                frames = window_frames(model, window)
            except (WindowDecodeError, InvalidInputError) as error:
                parked.append((record, str(error)))
                continue
            pending.append((record, window, self.batcher.submit_windows(model, frames, block=True)))
        return parked, pending

    def _publish(
        self, producer: BusProducer, model: LoadedModel, window: Window, outputs: WindowOutputs
    ) -> Future[Delivered]:
        result = score_window(model, window, outputs, self.normaliser, self.metrics, with_embedding=True)
        return producer.send(
            self.config.output_topic,
            dumps(result),
            key=window.camera_id.encode("utf-8"),
            headers=(("content-type", b"application/json"), ("streamssl-schema", RESULT_SCHEMA.encode())),
        )

    def _update_lag(self, consumer: BusConsumer) -> None:
        now = time.monotonic()
        if now - self._lag_checked < _LAG_INTERVAL_S:
            return
        self._lag_checked = now
        assigned = sorted(consumer.assignment())
        try:
            ends = consumer.end_offsets(assigned)
            for partition in assigned:
                position = self._next_offsets.get(partition)
                if position is None:
                    position = consumer.committed(partition) or 0
                    self._next_offsets[partition] = position
                lag = max(0, ends.get(partition, position) - position)
                self.metrics.stream_lag.labels(str(partition.partition)).set(lag)
        except BusError as error:
            log.debug("stream mode: could not read end offsets for the lag: %s", error)
