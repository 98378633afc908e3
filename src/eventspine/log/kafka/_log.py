"""``KafkaLog``: the ``Log`` port on Apache Kafka (see the package docstring)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import timedelta
from types import TracebackType
from typing import Self, final

from confluent_kafka import (
    IsolationLevel,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]  # re-exported without __all__

from eventspine.errors import LogError, TopicNotFoundError
from eventspine.log._checks import check_partition, check_read
from eventspine.log.base import (
    LogRecord,
    LogTransaction,
    PartitionOffsets,
    RecordColumns,
    StoredRecord,
    TopicInfo,
    TopicSpec,
)
from eventspine.log.kafka._batch import KafkaBatch
from eventspine.log.kafka._config import LOGGER, KafkaSettings, make_client
from eventspine.log.kafka._group import KafkaGroupMember
from eventspine.log.kafka._reader import ReaderPool
from eventspine.log.kafka._records import Deliveries, produce_records, validate_records
from eventspine.log.kafka._tail import KafkaTail
from eventspine.log.kafka._topics import create_topic, delete_topic, describe_topics
from eventspine.log.kafka._txn import KafkaTransaction, TransactionalProducer

__all__ = ["KafkaLog"]

_EARLIEST: OffsetSpec = OffsetSpec.earliest()  # type: ignore[no-untyped-call]  # untyped classmethod
_LATEST: OffsetSpec = OffsetSpec.latest()  # type: ignore[no-untyped-call]


#: ``transaction.abort.timed.out.transaction.cleanup.interval.ms``, the broker's default
_ABORT_SCAN_S = 10.0


def _key(tp: TopicPartition) -> tuple[str, int]:
    return tp.topic, tp.partition


def _ms(value: timedelta, name: str) -> int:
    ms = value // timedelta(milliseconds=1)
    if not isinstance(value, timedelta) or ms < 1:
        raise LogError(f"KafkaLog {name} must be a timedelta of at least 1 ms, not {value!r}")
    return ms


@final
class KafkaLog:
    """A :class:`~eventspine.log.base.Log` on an Apache Kafka cluster.

    Args:
        bootstrap: ``host:port[,host:port...]`` of the cluster.
        replication_factor: of the topics this log creates (default 1).
        transactional_id: the stable ``transactional.id`` of this process's
            transactions; a restarted process that passes the same id fences its
            previous incarnation. ``None`` generates one (no fencing across restarts).
        transaction_timeout: ``transaction.timeout.ms``; the broker aborts a
            transaction open longer than this.
        request_timeout: bounds every blocking client call (must be below
            ``transaction_timeout``).
        client_config: extra librdkafka settings for every client (security,
            SASL, ...); they win over the defaults.
        topic_config: extra topic configs for the topics this log creates.
        max_readers: how many partition consumers ``read`` keeps open.

    Raises:
        ConfigError: a setting is out of range.

    The constructor does not wait for the cluster: an unreachable cluster
    shows as a ``LogError`` from the first call that needs it.
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        replication_factor: int = 1,
        transactional_id: str | None = None,
        transaction_timeout: timedelta = timedelta(seconds=15),
        request_timeout: timedelta = timedelta(seconds=10),
        client_config: Mapping[str, str] | None = None,
        topic_config: Mapping[str, str] | None = None,
        max_readers: int = 8,
    ) -> None:
        settings = KafkaSettings(
            bootstrap,
            replication_factor=replication_factor,
            transactional_id=transactional_id,
            transaction_timeout_ms=_ms(transaction_timeout, "transaction_timeout"),
            request_timeout_ms=_ms(request_timeout, "request_timeout"),
            max_readers=max_readers,
            client_config=dict(client_config or {}),
            topic_config=dict(topic_config or {}),
        )
        self._init(settings)

    @classmethod
    def from_settings(cls, settings: KafkaSettings) -> KafkaLog:
        """Return a log configured by ``settings`` (what ``open_log("kafka://...")`` uses)."""
        log = cls.__new__(cls)
        log._init(settings)
        return log

    def _init(self, settings: KafkaSettings) -> None:
        self._settings = settings
        self._admin = make_client(AdminClient, settings.base())
        self._readers = ReaderPool(settings)
        self._txn = TransactionalProducer(settings)
        self._producer: Producer | None = None
        self._append_lock = threading.Lock()
        self._committed_lock = threading.Lock()
        self._specs: dict[str, TopicSpec] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"KafkaLog({self._settings.bootstrap!r})"

    @property
    def transactional_id(self) -> str:
        """The ``transactional.id`` of this log's transactions."""
        return self._txn.transactional_id

    # -- topics -------------------------------------------------------------------

    def create_topic(self, spec: TopicSpec) -> None:
        """Create a topic, or do nothing if it exists with the same settings.

        Waits until every partition has a leader.

        Raises:
            LogError: the topic exists with other settings (the message names them), or
                the cluster refused.
        """
        self._check_open()
        create_topic(self._admin, spec, self._settings)
        self._specs[spec.name] = spec

    def delete_topic(self, name: str) -> None:
        """Delete a topic; the brokers drop its records and every group's positions for it.

        Returns once the cluster metadata no longer lists it (a topic of the same name can
        then be created).

        Raises:
            TopicNotFoundError: the topic does not exist.
            LogError: the cluster refused or timed out.
        """
        self._spec(name)
        try:
            delete_topic(self._admin, name, self._settings.timeout_s)
        finally:
            self._specs.pop(name, None)
            self._readers.forget(name)

    def topics(self) -> dict[str, TopicInfo]:
        """Return every topic but the broker-internal ones, with partition offsets.

        ``log_start`` is the earliest offset, ``end`` the last stable offset
        (LSO): what a ``read_committed`` reader reaches, equal to the high
        watermark unless a transaction is open on the partition.
        """
        self._check_open()
        timeout = self._settings.timeout_s
        specs = describe_topics(self._admin, None, timeout, self._specs)
        self._specs.update(specs)
        wanted = [TopicPartition(n, p) for n, s in specs.items() for p in range(s.partitions)]
        starts = self._list_offsets(wanted, _EARLIEST)
        ends = self._list_offsets(wanted, _LATEST)
        return {
            name: TopicInfo(
                spec,
                tuple(
                    PartitionOffsets(p, starts[name, p], ends[name, p])
                    for p in range(spec.partitions)
                ),
            )
            for name, spec in sorted(specs.items())
        }

    def _list_offsets(
        self,
        partitions: list[TopicPartition],
        which: OffsetSpec,
        isolation: IsolationLevel = IsolationLevel.READ_COMMITTED,
    ) -> dict[tuple[str, int], int]:
        if not partitions:
            return {}
        timeout = self._settings.timeout_s
        deadline = time.monotonic() + timeout
        delay = 0.01
        while True:
            try:
                futures = self._admin.list_offsets(
                    dict.fromkeys(partitions, which),
                    isolation_level=isolation,
                    request_timeout=timeout,
                )
                found = {
                    (tp.topic, tp.partition): future.result(timeout=timeout + 5).offset
                    for tp, future in futures.items()
                }
                if all(offset >= 0 for offset in found.values()):
                    return found
                # A partition without a leader (its broker just died) answers -1001 for a
                # moment: not an offset, ask again (below) until the timeout.
                if time.monotonic() > deadline:
                    missing = sorted(f"{t}[{p}]" for (t, p), o in found.items() if o < 0)
                    raise LogError(f"no offsets for Kafka partitions {missing}: no leader")
            except (KafkaException, TimeoutError) as exc:  # TimeoutError: the future's wait
                error = exc.args[0] if exc.args else None
                # A partition whose leader is moving (a new topic, a broker restart) answers
                # NOT_LEADER / LEADER_NOT_AVAILABLE for a moment: ask again until the timeout.
                fatal = isinstance(error, KafkaError) and error.fatal()
                if fatal or time.monotonic() > deadline:
                    raise LogError(f"cannot list the offsets of Kafka partitions: {exc}") from exc
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    def _spec(self, topic: str) -> TopicSpec:
        self._check_open()
        spec = self._specs.get(topic)
        if spec is None:
            spec = describe_topics(self._admin, [topic], self._settings.timeout_s).get(topic)
            if spec is None:
                raise TopicNotFoundError(
                    f"topic {topic!r} does not exist in {self!r}; create it with "
                    f"log.create_topic(TopicSpec({topic!r}, ...))"
                )
            self._specs[topic] = spec
        return spec

    # -- records ------------------------------------------------------------------

    def append(self, topic: str, partition: int, records: Sequence[LogRecord]) -> int:
        """Append with the idempotent producer and return the first offset.

        Returns once every record is acknowledged by all in-sync replicas
        (``acks=all``). Records are validated first, so an invalid record
        writes nothing; but if the broker refuses a record (for example one
        above ``max.message.bytes``) the records before it may be written:
        use a transaction for all-or-nothing.

        Raises:
            TopicNotFoundError: the topic does not exist.
            LogError: bad partition, invalid record, or the broker refused or timed out.
        """
        spec = self._spec(topic)
        check_partition(spec, partition)
        if not records:
            return self._readers.offsets(topic, partition)[1]
        validate_records(spec, partition, records)
        timeout = self._settings.timeout_s
        with self._append_lock:
            self._check_open()
            if self._producer is None:
                self._producer = make_client(Producer, self._settings.producer())
            producer = self._producer
            deliveries = Deliveries()
            produce_records(producer, topic, partition, records, deliveries, timeout)
            if producer.flush(timeout) > 0:
                raise LogError(
                    f"appending to {topic}[{partition}]: records were not acknowledged within "
                    f"{timeout:.0f} s; some of them may still be written"
                )
        deliveries.check(f"appending to {topic}[{partition}]")
        return deliveries.first[topic, partition]

    def read(
        self, topic: str, partition: int, offset: int, max_records: int = 1000
    ) -> list[StoredRecord]:
        """Return up to ``max_records`` committed records from ``offset`` (``read_committed``).

        Offsets have gaps where transaction markers and aborted records are
        (and, after compaction, superseded records): continue from the last
        offset returned plus one. A read at ``end`` returns ``[]`` at once.

        Raises:
            TopicNotFoundError: the topic does not exist.
            LogError: bad partition, ``offset`` below the log start (the message names
                it) or above the end, or the broker failed.
        """
        check_read(self._spec(topic), partition, offset, max_records)
        return self._readers.read(topic, partition, offset, max_records)

    def read_columns(
        self, topic: str, partition: int, offset: int, max_records: int = 1000
    ) -> RecordColumns:
        """Like :meth:`read`, as columns (see :func:`eventspine.log.base.read_columns`).

        Raises:
            TopicNotFoundError: the topic does not exist.
            LogError: as :meth:`read`.
        """
        check_read(self._spec(topic), partition, offset, max_records)
        return self._readers.read_columns(topic, partition, offset, max_records)

    def fold_latest(
        self, topic: str, partition: int, start: int, end: int, latest: dict[bytes, bytes | None]
    ) -> Iterator[tuple[int, int]]:
        """Fold the committed records from ``start`` to ``end`` into ``latest`` (key -> value).

        See :func:`eventspine.log.base.fold_latest`: restores use it to read changelogs.

        Raises:
            TopicNotFoundError: the topic does not exist.
            LogError: as :meth:`read`.
        """
        check_read(self._spec(topic), partition, start, 1)
        return self._readers.fold_latest(topic, partition, start, end, latest)

    def committed(self, group: str, topic: str) -> dict[int, int]:
        """Return ``group``'s committed next offsets for ``topic`` (stable offsets only).

        Asked through a ``read_committed`` consumer of the group that never joins it
        (an OffsetFetch with ``require_stable``), not through the admin API: librdkafka's
        admin ListConsumerGroupOffsets can abort the process when the group coordinator
        restarts mid-request (librdkafka issues 3663 and 4605).
        """
        spec = self._spec(topic)
        wanted = [TopicPartition(topic, p) for p in range(spec.partitions)]
        timeout = self._settings.timeout_s
        with self._committed_lock:
            consumer = self._txn.group_consumer(group)
            try:
                partitions = consumer.committed(wanted, timeout=timeout)
            except KafkaException as exc:
                raise LogError(f"cannot read the positions of group {group!r}: {exc}") from exc
        errors = [tp.error for tp in partitions if tp.error is not None]
        if errors:
            raise LogError(
                f"cannot read the positions of group {group!r} for {topic!r}: {errors[0].str()}"
            )
        return {tp.partition: tp.offset for tp in partitions if tp.offset >= 0}

    # -- transactions -------------------------------------------------------------

    def transaction(self) -> LogTransaction:
        """Return a new Kafka transaction (see :mod:`eventspine.log.kafka._txn`)."""
        self._check_open()
        return KafkaTransaction(self._txn, self._spec, self._await_stable)

    def await_settled(self, partitions: Sequence[tuple[str, int]]) -> bool:
        """Wait until no transaction is open on ``partitions``; return whether it waited.

        "Open" means the last stable offset (LSO) is below the end.

        A writer that died inside a transaction holds the last stable offset back until
        the broker aborts it (``transaction_timeout_ms``); a ``read_committed`` read
        before then misses whatever was committed after it. Restoring a task waits here
        first, for at most the transaction timeout, plus the broker's 10 s abort scan and
        the request timeout.

        Raises:
            LogError: a transaction stayed open that long, or the broker failed.
        """
        tps = [TopicPartition(t, p) for t, p in partitions]
        # The broker aborts expired transactions on a periodic scan (every 10 s by default).
        limit = (
            self._settings.transaction_timeout_ms / 1000 + _ABORT_SCAN_S + self._settings.timeout_s
        )
        deadline = time.monotonic() + limit
        waited = False
        while tps:
            stable = self._list_offsets(tps, _LATEST)
            ends = self._list_offsets(tps, _LATEST, IsolationLevel.READ_UNCOMMITTED)
            tps = [tp for tp in tps if stable[_key(tp)] < ends[_key(tp)]]
            if not tps:
                break
            if time.monotonic() > deadline:
                names = sorted(f"{tp.topic}[{tp.partition}]" for tp in tps)
                raise LogError(
                    f"a transaction stayed open on {names} for {limit:.0f} s (the last stable "
                    f"offset did not reach the end); its writer may still be running, or the "
                    f"transaction hangs (see `kafka-transactions.sh find-hanging` and `abort`)"
                )
            waited = True
            time.sleep(0.1)
        return waited

    def open_tail(self) -> KafkaTail:
        """Return a :class:`~eventspine.log.base.LogTail` with its own consumer (close it)."""
        self._check_open()
        return KafkaTail(self._settings)

    def non_atomic_transaction(self) -> LogTransaction:
        """Return an at-least-once batch (see :mod:`eventspine.log.kafka._batch`)."""
        self._check_open()
        return KafkaBatch(self._spec, self._produce_async, self._flush_plain, self._commit_plain)

    def join_group(
        self,
        group: str,
        anchor: str,
        *,
        on_assign: Callable[[list[int]], None],
        on_revoke: Callable[[list[int]], None],
        on_lost: Callable[[list[int]], None],
    ) -> KafkaGroupMember:
        """Join ``group`` as a worker owning partitions of ``anchor`` (the tasks).

        The member's group metadata then goes into this log's transactions for
        ``group`` (see :mod:`eventspine.log.kafka._group`). Close the member to leave.
        """
        self._check_open()
        member = KafkaGroupMember(
            self._settings,
            group,
            anchor,
            on_assign=on_assign,
            on_revoke=on_revoke,
            on_lost=on_lost,
            session_timeout_ms=self._settings.session_timeout_ms,
        )
        self._txn.members[group] = member

        def forget() -> None:
            if self._txn.members.get(group) is member:
                del self._txn.members[group]

        member.on_close = forget
        return member

    def _plain_producer(self) -> Producer:
        if self._producer is None:
            self._producer = make_client(Producer, self._settings.producer())
        return self._producer

    def _produce_async(
        self, topic: str, partition: int, records: Sequence[LogRecord], deliveries: Deliveries
    ) -> None:
        with self._append_lock:
            self._check_open()
            produce_records(
                self._plain_producer(),
                topic,
                partition,
                records,
                deliveries,
                self._settings.timeout_s,
            )

    def _flush_plain(self) -> None:
        timeout = self._settings.timeout_s
        with self._append_lock:
            if self._producer is not None and self._producer.flush(timeout) > 0:
                raise LogError(f"records were not acknowledged within {timeout:.0f} s")

    def _commit_plain(self, group: str, offsets: Mapping[str, Mapping[int, int]]) -> None:
        member = self._txn.members.get(group)
        if member is not None:
            member.commit(offsets)
            return
        tps = [TopicPartition(t, p, o) for t, ps in offsets.items() for p, o in ps.items()]
        try:
            self._txn.group_consumer(group).commit(offsets=tps, asynchronous=False)
        except KafkaException as exc:
            raise LogError(f"committing positions of group {group!r}: {exc}") from exc

    def _await_stable(self, last: Mapping[tuple[str, int], int]) -> None:
        """Wait until the LSO of each partition is past ``last[partition]`` (bounded)."""
        pending = [TopicPartition(t, p) for t, p in last]
        deadline = time.monotonic() + self._settings.timeout_s
        delay = 0.002
        while pending:
            ends = self._list_offsets(pending, _LATEST)
            pending = [
                tp for tp in pending if ends[tp.topic, tp.partition] <= last[tp.topic, tp.partition]
            ]
            if not pending:
                return
            if time.monotonic() > deadline:
                LOGGER.warning(
                    "the last stable offset of %s did not pass the transaction within %.0f s",
                    [f"{tp.topic}[{tp.partition}]" for tp in pending],
                    self._settings.timeout_s,
                )
                return
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def enforce_retention(self) -> None:
        """Do nothing: the brokers compact and delete by themselves.

        On Kafka, retention and compaction are eventual: the log cleaner
        compacts closed segments on its own schedule, and time retention
        deletes whole closed segments whose newest timestamp is older than
        ``retention.ms`` by the broker's wall clock.
        """
        self._check_open()

    def close(self) -> None:
        """Close every client; calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        self._readers.close()
        with self._append_lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            producer.flush(self._settings.timeout_s)
        self._txn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise LogError(f"{self!r} is closed")
