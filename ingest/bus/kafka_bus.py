"""The bus on Apache Kafka, through kafka-python 3.0.

Semantics are those of :mod:`ingest.bus.base`; how Kafka provides them:

* Partition by key: kafka-python's default partitioner (murmur2 of the key, as the Java clients), so a camera's
  windows land in the same partition whichever client produced them.
* Acknowledged sends: ``acks="all"``, retried, with one produce request in flight per connection, so a retry cannot
  overtake a later batch and one camera's windows stay in order. Not the idempotent producer, though kafka-python 3.0
  does speak it to Kafka 4.3: its non-transactional idempotent producer treats any non-retriable broker error as
  fatal (``TransactionManager.classify_batch_error``), so one window refused by the broker as too large fails every
  later send of that producer. Without idempotence a retry after a lost acknowledgement can store a message twice;
  consumers are at-least-once anyway.
* Groups: the classic group protocol with eager rebalancing. After any rebalance every member restarts each of its
  partitions at the group's committed offset, so records read but not committed are delivered again (at-least-once).
* Offsets are committed only by :meth:`KafkaBusConsumer.commit` (``enable_auto_commit=False``), synchronously.

Every kafka-python error is turned into a :class:`~ingest.bus.base.BusError`; the original is chained as its cause.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

import kafka.errors as kafka_errors
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KafkaTopicPartition
from kafka.net.compat import KafkaNetClient
from kafka.net.manager import KafkaConnectionManager
from kafka.net.selector import NetworkSelector
from kafka.record import util as kafka_record_util
from kafka.structs import OffsetAndMetadata

from ingest.bus.base import (
    Bus,
    BusConsumer,
    BusError,
    BusProducer,
    BusUnavailableError,
    Delivered,
    Headers,
    MessageTooLargeError,
    Record,
    StartPosition,
    TopicPartition,
    UnknownTopicError,
)
from ingest.bus.kafka_settings import KafkaSettings
from ingest.contract import DEFAULT_MAX_MESSAGE_BYTES

# A record carries its key, headers and framing besides its value; the producer's request limit allows this much on
# top of ``max_message_bytes``. With the defaults the limit is exactly 1 MiB, within the broker's default
# message.max.bytes (1,048,588), so a window the contract accepts always fits a broker left at its defaults.
RECORD_OVERHEAD_BYTES = 4_096

_UNKNOWN_TOPIC_OR_PARTITION = kafka_errors.UnknownTopicOrPartitionError.errno
_TOPIC_ALREADY_EXISTS = kafka_errors.TopicAlreadyExistsError.errno

# Errors that mean "the broker did not answer": connection refused or lost, no answer in time, no leader yet.
_UNAVAILABLE = (
    kafka_errors.KafkaTimeoutError,
    kafka_errors.KafkaConnectionError,
    kafka_errors.NodeNotReadyError,
    kafka_errors.RequestTimedOutError,
    kafka_errors.NotEnoughReplicasError,
    kafka_errors.NotEnoughReplicasAfterAppendError,
    kafka_errors.CoordinatorNotAvailableError,
    kafka_errors.LeaderNotAvailableError,
)

_Client = TypeVar("_Client")


def _addresses(servers: Sequence[str]) -> str:
    return ",".join(servers)


def _bus_error(error: BaseException, servers: Sequence[str], doing: str) -> BusError:
    """The :class:`BusError` for a kafka-python error raised while ``doing`` something."""
    if isinstance(error, BusError):
        return error
    # kafka-python's messages mostly start with the error's name already.
    detail = str(error) if type(error).__name__ in str(error) else f"{type(error).__name__}: {error}"
    if isinstance(error, kafka_errors.MessageSizeTooLargeError | kafka_errors.RecordListTooLargeError):
        return MessageTooLargeError(f"{doing}: the message is too large ({detail})")
    if isinstance(error, kafka_errors.SaslAuthenticationFailedError):
        return BusError(
            f"{doing}: authentication failed, Kafka at {_addresses(servers)} refused the credentials ({detail})"
        )
    if isinstance(error, _UntrustedCertificateError):  # its text is kafka-python's error, which names itself
        return BusError(
            f"{doing}: the TLS certificate of Kafka at {_addresses(servers)} is not trusted; check ssl_cafile and "
            f"ssl_check_hostname ({error})"
        )
    if isinstance(error, kafka_errors.UnknownTopicOrPartitionError):
        return UnknownTopicError(f"{doing}: unknown topic or partition ({detail})")
    if isinstance(error, _UNAVAILABLE):
        return BusUnavailableError(f"{doing}: Kafka at {_addresses(servers)} did not answer ({detail})")
    return BusError(f"{doing}: {detail}")


class _UntrustedCertificateError(kafka_errors.KafkaConnectionError):
    """The TLS handshake failed because the broker's certificate (or its name) is not trusted; reads as the
    handshake error it stands for."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else super().__str__()


class _ConnectionManager(KafkaConnectionManager):
    """kafka-python 3.0.12's connection manager, made to report refused credentials and untrusted certificates
    instead of retrying them until the bootstrap times out (which looked like a broker that does not answer).

    A broker that refuses a SASL login sends "authentication failed" and closes the connection at once; kafka-python
    3.0.12 reads both in one call and drops the response (its transports hand over no bytes that arrive with the
    end of the connection). Here each transport hands over what it read before the end. A refused login, or a
    certificate the client does not trust, is then recorded as the node's authentication failure, which kafka-python
    raises at the next attempt (its own ``_auth_failures``, meant for this but filled only by errors its
    initialisation never raises).
    """

    async def _build_transport(self, node: Any, timeout_at: float | None = None) -> Any:
        transport = await super()._build_transport(node, timeout_at=timeout_at)
        receive = getattr(transport, "_sock_recv", None)
        if receive is None:  # another kafka-python inside the pinned range: its own behaviour, unchanged
            return transport

        def receive_keeping_data() -> tuple[bytes, Any]:
            data, error = receive()
            # The end of the connection (or its error) is seen again at the next read, after the data.
            return (data, None) if data else (data, error)

        transport._sock_recv = receive_keeping_data
        return transport

    async def _connect(self, node: Any, conn: Any, *args: Any, **kwargs: Any) -> None:
        await super()._connect(node, conn, *args, **kwargs)
        init_future = getattr(conn, "init_future", None)
        if init_future is None or not isinstance(getattr(self, "_auth_failures", None), dict):
            return  # another kafka-python inside the pinned range: its own behaviour, unchanged
        failure = init_future.exception
        if isinstance(failure, kafka_errors.SaslAuthenticationFailedError):
            self._auth_failures[node.node_id] = failure
        elif isinstance(failure, kafka_errors.KafkaConnectionError) and isinstance(
            failure.__context__, ssl.SSLCertVerificationError
        ):
            # kafka-python's "Handshake failed: ..." keeps the verification error only as its context.
            self._auth_failures[node.node_id] = _UntrustedCertificateError(failure)


def _connect(factory: Callable[..., _Client], servers: Sequence[str], config: dict[str, Any]) -> _Client:
    """Build a kafka-python client, turning a failed bootstrap into :class:`BusUnavailableError` (refused
    credentials or an untrusted certificate: a :class:`BusError` that says so).

    kafka-python 3.0 clients connect in their constructor and, when that fails, leave their IO thread running; the
    network clients built for a failed constructor are captured here and stopped.
    """
    built: list[KafkaNetClient] = []

    def network_client(**configs: Any) -> KafkaNetClient:
        net = NetworkSelector(**configs)
        client = KafkaNetClient(net=net, manager=_ConnectionManager(net, **configs), **configs)
        built.append(client)
        return client

    try:
        return factory(bootstrap_servers=list(servers), kafka_client=network_client, **config)
    except Exception as error:
        for client in built:
            # Best effort: the client never worked, and the error to report is the one raised above.
            with contextlib.suppress(Exception):
                client.close()
            with contextlib.suppress(Exception):
                client._net.stop(timeout_ms=1_000)
        if isinstance(error, kafka_errors.KafkaError):
            # The protocol in the message: a listener that speaks another one (TLS, SASL) closes the connection, which
            # from here looks like a broker that does not answer.
            doing = f"connecting with security_protocol {config['security_protocol']}"
            raise _bus_error(error, servers, doing) from error
        raise


METADATA_MAX_AGE_MS = 5_000


log = logging.getLogger(__name__)
_crc_warned = False


def native_crc32c() -> bool:
    """Whether kafka-python checksums record batches in C (the ``crc32c`` package) rather than in pure Python.

    Every produced and every fetched batch carries a CRC-32C; kafka-python's pure-Python fallback costs ~18 ms per
    60 KB window on each side, a third of a serving node's CPU per window.
    """
    return kafka_record_util.crc32c_c is not None


def _warn_without_native_crc32c() -> None:
    global _crc_warned
    if not native_crc32c() and not _crc_warned:
        _crc_warned = True
        log.warning(
            "kafka-python computes CRC-32C in pure Python here (~18 ms of CPU per 60 KB window, on every send and "
            "fetch): pip install crc32c (streamssl's ingest and serving extras include it)"
        )


class KafkaBus(Bus):
    """A connection to a Kafka cluster.

    The admin client (topics) is opened on first use; producers and consumers open their own connections.

    The keyword arguments are timeouts, chosen so that failures show within seconds and group changes settle quickly
    in tests, while leaving room for a loaded machine:

    * ``connect_timeout_s``: how long a new client, or ``send`` waiting for a topic's metadata, may wait for the
      cluster before :class:`BusUnavailableError` (kafka-python's default is 30 s for the first and 60 s for the
      second: too long for a service's start-up check or a test of a dead address).
    * ``session_timeout_s``, ``heartbeat_interval_s``: a group member that stops heartbeating (crashed process) loses
      its partitions after the session timeout. 10 s is above the broker's minimum (6 s) with margin for a stalled
      CPU; heartbeats every second, as Kafka advises (at most a third of the session), make the other members notice a
      rebalance within about a second.
    * ``max_poll_interval_s``: a member that does not call :meth:`~KafkaBusConsumer.poll` for this long is removed
      from its group; it is also how long a rebalance may wait for a member that is alive but not polling. 60 s
      bounds that wait while leaving a consumer a minute of work (a training step, a checkpoint) between polls.
    * ``delivery_timeout_s``: a sent message's future fails with :class:`BusUnavailableError` if it is not
      acknowledged within this time (retries included); at least the request timeout.
    * ``topic_ready_timeout_s``: how long :meth:`create_topic` waits for every partition to have a leader.
    """

    def __init__(
        self,
        bootstrap_servers: Sequence[str],
        settings: KafkaSettings | None = None,
        *,
        connect_timeout_s: float = 10.0,
        session_timeout_s: float = 10.0,
        heartbeat_interval_s: float = 1.0,
        max_poll_interval_s: float = 60.0,
        delivery_timeout_s: float = 60.0,
        topic_ready_timeout_s: float = 30.0,
    ) -> None:
        if isinstance(bootstrap_servers, str):
            raise TypeError("bootstrap_servers is a list of HOST:PORT strings, not one string")
        if not bootstrap_servers:
            raise ValueError("KafkaBus needs at least one bootstrap server (HOST:PORT)")
        self.bootstrap_servers = list(bootstrap_servers)
        self.settings = settings or KafkaSettings()
        _warn_without_native_crc32c()
        self.connect_timeout_s = connect_timeout_s
        self.session_timeout_s = session_timeout_s
        self.heartbeat_interval_s = heartbeat_interval_s
        self.max_poll_interval_s = max_poll_interval_s
        self.delivery_timeout_s = delivery_timeout_s
        self.topic_ready_timeout_s = topic_ready_timeout_s
        self._admin: KafkaAdminClient | None = None
        self._admin_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"KafkaBus({self.bootstrap_servers!r})"

    # --- configuration ----------------------------------------------------------------------------------------
    def _client_config(self, **defaults: Any) -> dict[str, Any]:
        """``defaults``, then the deployment's settings (which may override them), for one kafka-python client."""
        return {
            "bootstrap_timeout_ms": _ms(self.connect_timeout_s),
            # After a broker restart, clients retry connecting with exponential backoff; kafka-python caps it at 30 s,
            # 5 s lets producers and consumers come back within seconds of the broker.
            "reconnect_backoff_max_ms": 5_000,
            **defaults,
            **self.settings.client_config(),
        }

    def _error(self, error: BaseException, doing: str) -> BusError:
        return _bus_error(error, self.bootstrap_servers, doing)

    # --- admin ------------------------------------------------------------------------------------------------
    def _admin_client(self) -> KafkaAdminClient:
        with self._admin_lock:
            if self._admin is None:
                self._admin = _connect(KafkaAdminClient, self.bootstrap_servers, self._client_config())
            return self._admin

    def _describe(self, topic: str) -> dict[str, Any]:
        try:
            (description,) = self._admin_client().describe_topics([topic])
        except kafka_errors.KafkaError as error:
            raise self._error(error, f"describing topic {topic!r}") from error
        return dict(description)

    def create_topic(self, name: str, partitions: int = 1) -> None:
        if partitions < 1:
            raise ValueError(f"a topic needs at least one partition, got {partitions}")
        admin = self._admin_client()
        doing = f"creating topic {name!r} with {partitions} partitions"
        try:
            # kafka-python 3.0 takes a dict; replication_factor -1 is the broker's default.replication.factor.
            response = admin.create_topics(
                {name: {"num_partitions": partitions, "replication_factor": -1}}, raise_errors=False
            )
            for result in response["topics"]:
                code = result["error_code"]
                if code not in (0, _TOPIC_ALREADY_EXISTS):
                    error = kafka_errors.for_code(code)(result.get("error_message") or "")
                    raise self._error(error, doing)
            # The broker acknowledged the topic before every partition has a leader in its metadata; a producer
            # that sent now could find no leader, so wait until the topic is usable (an existing one too).
            admin.wait_for_topics([name], timeout_ms=_ms(self.topic_ready_timeout_s))
        except kafka_errors.KafkaError as error:
            raise self._error(error, doing) from error

    def partitions(self, topic: str) -> int:
        description = self._describe(topic)
        if description["error_code"] == _UNKNOWN_TOPIC_OR_PARTITION:
            raise UnknownTopicError(f"topic {topic!r} does not exist on Kafka at {_addresses(self.bootstrap_servers)}")
        if description["error_code"] != 0:
            error = kafka_errors.for_code(description["error_code"])()
            raise self._error(error, f"describing topic {topic!r}")
        return len(description["partitions"])

    # --- clients ----------------------------------------------------------------------------------------------
    def producer(self, *, max_message_bytes: int | None = None) -> KafkaBusProducer:
        limit = DEFAULT_MAX_MESSAGE_BYTES if max_message_bytes is None else max_message_bytes
        if limit < 1:
            raise ValueError(f"max_message_bytes must be positive, got {limit}")
        request_timeout_ms = _ms(self.settings.request_timeout_s)
        config = self._client_config(
            # Tuning, which settings.extra may override.
            retries=10,
            retry_backoff_ms=200,
            max_block_ms=_ms(self.connect_timeout_s),
            # kafka-python insists on delivery_timeout_ms >= request_timeout_ms + linger_ms (0).
            delivery_timeout_ms=max(_ms(self.delivery_timeout_s), request_timeout_ms),
        )
        config.update(
            # Semantics, which nothing overrides: acknowledged by all in-sync replicas; in order per partition (one
            # request in flight; idempotence off, see the module docstring: kafka-python 3.0's idempotent producer
            # dies on the first message the broker refuses); no topic created by a typo; and room for a value of
            # ``limit`` bytes plus its key and headers.
            acks="all",
            enable_idempotence=False,
            max_in_flight_requests_per_connection=1,
            allow_auto_create_topics=False,
            max_request_size=limit + RECORD_OVERHEAD_BYTES,
        )
        producer = _connect(KafkaProducer, self.bootstrap_servers, config)
        return KafkaBusProducer(self, producer, limit)

    def consumer(
        self, topics: Sequence[str], *, group_id: str | None, start: StartPosition = "earliest"
    ) -> KafkaBusConsumer:
        if isinstance(topics, str):
            raise TypeError("topics is a list of topic names, not one string")
        if start not in ("earliest", "latest"):
            raise ValueError(f"start must be 'earliest' or 'latest', got {start!r}")
        # Without a group the consumer reads every partition, so they must exist now (UnknownTopicError if not).
        assigned = (
            []
            if group_id is not None
            else [KafkaTopicPartition(topic, index) for topic in topics for index in range(self.partitions(topic))]
        )
        config = self._client_config(
            session_timeout_ms=_ms(self.session_timeout_s),
            heartbeat_interval_ms=_ms(self.heartbeat_interval_s),
            max_poll_interval_ms=_ms(self.max_poll_interval_s),
            # A group leader whose metadata lacked a just-created topic assigns none of its partitions ("No
            # partition metadata for topic") and notices only at its next metadata refresh: 5 s, not 5 minutes.
            metadata_max_age_ms=METADATA_MAX_AGE_MS,
        )
        config.update(
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset=start,
            allow_auto_create_topics=False,
        )
        consumer = _connect(KafkaConsumer, self.bootstrap_servers, config)
        try:
            if group_id is not None:
                consumer.subscribe(list(topics))
            else:
                consumer.assign(assigned)
                # Fix "latest" now, as of this call, rather than at the first poll (kafka-python's lazy reset), so
                # records sent after the consumer was created are read.
                if start == "latest":
                    for partition, offset in consumer.end_offsets(assigned, _ms(self.connect_timeout_s)).items():
                        consumer.seek(partition, offset)
                else:
                    consumer.seek_to_beginning(*assigned)
        except kafka_errors.KafkaError as error:
            consumer.close(autocommit=False)
            raise self._error(error, f"subscribing to {list(topics)}") from error
        return KafkaBusConsumer(self, consumer, group_id)

    def close(self) -> None:
        with self._admin_lock:
            admin, self._admin = self._admin, None
        if admin is not None:
            admin.close()


class KafkaBusProducer(BusProducer):
    """A kafka-python producer; thread-safe, as kafka-python's is."""

    def __init__(self, bus: KafkaBus, producer: KafkaProducer, max_message_bytes: int) -> None:
        self._bus = bus
        self._producer = producer
        self.max_message_bytes = max_message_bytes
        self._known_topics: set[str] = set()

    def send(self, topic: str, value: bytes, *, key: bytes | None = None, headers: Headers = ()) -> Future[Delivered]:
        size = len(value)
        if size > self.max_message_bytes:
            raise MessageTooLargeError(
                f"message of {size} bytes for topic {topic!r} exceeds the producer's maximum message size of "
                f"{self.max_message_bytes} bytes; it was not sent"
            )
        if topic not in self._known_topics:
            # kafka-python would wait max_block_ms for a topic that does not exist; ask once per topic instead.
            self._bus.partitions(topic)
            self._known_topics.add(topic)
        doing = f"sending a message of {size} bytes to topic {topic!r}"
        try:
            sent = self._producer.send(
                topic, value=value, key=key, headers=[(name, bytes(data)) for name, data in headers]
            )
        except kafka_errors.MessageSizeTooLargeError as error:
            # The value fits but value, key, headers and framing together exceed max_request_size.
            raise MessageTooLargeError(
                f"{doing}: with its key and headers the record exceeds the producer's request limit of "
                f"{self.max_message_bytes + RECORD_OVERHEAD_BYTES} bytes ({error})"
            ) from error
        except kafka_errors.KafkaError as error:
            raise self._bus._error(error, doing) from error

        delivered: Future[Delivered] = Future()
        # A queued message cannot be recalled: a running future cannot be cancelled.
        delivered.set_running_or_notify_cancel()

        def on_success(metadata: Any) -> None:
            delivered.set_result(Delivered(metadata.topic, metadata.partition, metadata.offset))

        def on_failure(error: BaseException) -> None:
            if isinstance(error, kafka_errors.MessageSizeTooLargeError | kafka_errors.RecordListTooLargeError):
                failure: BusError = MessageTooLargeError(
                    f"{doing}: the broker refused it as too large (the producer's limit is {self.max_message_bytes} "
                    f"bytes; the broker's message.max.bytes or the topic's max.message.bytes is lower): {error}"
                )
            else:
                failure = self._bus._error(error, doing)
            failure.__cause__ = error
            delivered.set_exception(failure)

        # Callbacks run on kafka-python's sender thread, or here if the send already failed.
        sent.add_callback(on_success)
        sent.add_errback(on_failure)
        return delivered

    def flush(self, timeout_s: float | None = None) -> None:
        try:
            self._producer.flush(timeout=timeout_s)
        except kafka_errors.KafkaError as error:
            raise self._bus._error(error, f"flushing the producer (timeout {timeout_s} s)") from error

    def close(self, timeout_s: float | None = None) -> None:
        try:
            self._producer.close(timeout=timeout_s)
        except kafka_errors.KafkaError as error:
            raise self._bus._error(error, "closing the producer") from error


class KafkaBusConsumer(BusConsumer):
    """A kafka-python consumer; use it from one thread, as kafka-python's."""

    def __init__(self, bus: KafkaBus, consumer: KafkaConsumer, group_id: str | None) -> None:
        self._bus = bus
        self._consumer = consumer
        self.group_id = group_id
        self._closed = False

    def poll(self, timeout_s: float, max_records: int | None = None) -> list[Record]:
        if self._closed:
            raise BusError("poll on a closed consumer")
        try:
            batches = self._consumer.poll(timeout_ms=_ms(timeout_s), max_records=max_records)
        except kafka_errors.KafkaError as error:
            raise self._bus._error(error, "polling") from error
        return [
            Record(
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                key=record.key,
                value=b"" if record.value is None else record.value,
                headers=tuple((name, b"" if data is None else data) for name, data in record.headers or ()),
                timestamp_ms=record.timestamp,
            )
            for partition in sorted(batches)
            for record in batches[partition]
        ]

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        if self.group_id is None:
            raise BusError("a consumer without a group cannot commit offsets")
        if not offsets:
            return
        negative = {partition: offset for partition, offset in offsets.items() if offset < 0}
        if negative:
            raise ValueError(f"offsets to commit must not be negative: {negative}")
        foreign = sorted(set(offsets) - self.assignment())
        if foreign:
            # Kafka's classic protocol would accept these from a member of the current generation; refuse them as
            # the embedded bus does, since another member may own and commit them.
            raise BusError(f"cannot commit {foreign}: not assigned to this member of group {self.group_id!r}")
        try:
            self._consumer.commit(
                {
                    KafkaTopicPartition(partition.topic, partition.partition): OffsetAndMetadata(offset, "", -1)
                    for partition, offset in offsets.items()
                }
            )
        except (kafka_errors.CommitFailedError, kafka_errors.RebalanceInProgressError) as error:
            # The records will be delivered again to whichever member owns their partitions after the rebalance.
            raise BusError(
                f"commit refused: group {self.group_id!r} is rebalancing or has rebalanced without this member; "
                f"poll again ({error})"
            ) from error
        except kafka_errors.KafkaError as error:
            raise self._bus._error(error, f"committing offsets of group {self.group_id!r}") from error

    def committed(self, partition: TopicPartition) -> int | None:
        if self.group_id is None:
            return None
        # A fresh OffsetFetch from the admin client: the consumer's own committed() may hand back the answer of a
        # fetch that was already in flight before our commit (its position lookup), i.e. "nothing committed".
        wanted = KafkaTopicPartition(partition.topic, partition.partition)
        try:
            groups = self._bus._admin_client().list_group_offsets({self.group_id: [wanted]})
        except kafka_errors.KafkaError as error:
            raise self._bus._error(error, f"reading the committed offset of {partition}") from error
        found = groups.get(self.group_id, {}).get(wanted)
        return None if found is None or found.offset < 0 else int(found.offset)

    @contextlib.contextmanager
    def _translated(self, doing: str) -> Iterator[None]:
        """kafka-python's errors (its own, and the AssertionError some of its checks raise) as a BusError."""
        try:
            yield
        except (kafka_errors.KafkaError, AssertionError) as error:
            raise self._bus._error(error, doing) from error

    def assignment(self) -> set[TopicPartition]:
        with self._translated("reading the assignment"):
            assigned = self._consumer.assignment()
        return {TopicPartition(partition.topic, partition.partition) for partition in assigned}

    def seek(self, partition: TopicPartition, offset: int) -> None:
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        if partition not in self.assignment():
            raise BusError(f"cannot seek {partition}: not assigned to this consumer")
        with self._translated(f"seeking {partition} to {offset}"):
            self._consumer.seek(KafkaTopicPartition(partition.topic, partition.partition), offset)

    def _assigned(self, partitions: Collection[TopicPartition]) -> list[KafkaTopicPartition]:
        assigned = self.assignment()
        return [KafkaTopicPartition(p.topic, p.partition) for p in partitions if p in assigned]

    def pause(self, partitions: Collection[TopicPartition]) -> None:
        assigned = self._assigned(partitions)
        with self._translated(f"pausing {sorted(partitions)}"):
            self._consumer.pause(*assigned)

    def resume(self, partitions: Collection[TopicPartition]) -> None:
        assigned = self._assigned(partitions)
        with self._translated(f"resuming {sorted(partitions)}"):
            self._consumer.resume(*assigned)

    def end_offsets(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        if not partitions:
            return {}
        try:
            ends = self._consumer.end_offsets(
                [KafkaTopicPartition(partition.topic, partition.partition) for partition in partitions],
                timeout_ms=_ms(self._bus.connect_timeout_s),
            )
        except kafka_errors.KafkaError as error:
            raise self._bus._error(error, f"reading the end offsets of {list(partitions)}") from error
        return {TopicPartition(partition.topic, partition.partition): offset for partition, offset in ends.items()}

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Leaves the group (LeaveGroup), so the other members take over at once instead of after the session timeout.
        with self._translated(f"closing the consumer of group {self.group_id!r}"):
            self._consumer.close(autocommit=False, timeout_ms=_ms(self._bus.connect_timeout_s))


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))
