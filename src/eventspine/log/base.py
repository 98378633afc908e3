"""The durable log port: records, topic specs and the ``Log`` protocol.

A log holds **topics**; a topic has a fixed number of **partitions**; a
partition is an append-only sequence of records numbered by **offsets**
(0, 1, 2, ...). This is Kafka's model, so the same port has a memory
backend (the fake), an SQLite backend (one machine, durable) and later a
Kafka backend.

Offsets of one partition only grow. Two numbers describe a partition
(:class:`PartitionOffsets`): ``log_start``, the first offset still kept
(retention advances it), and ``end``, the offset the next appended record
gets (Kafka's high watermark). Compaction removes superseded records but
keeps the offsets of the survivors, so a compacted partition has gaps:
a reader must take the next offset from the records it got (``offset + 1``
of the last one) and must treat ``end`` as "caught up", never expect
``end - 1`` to exist.

**Checkpoints and state.** The runtime commits source positions, state
changes and outputs in one :meth:`Log.transaction`. Keyed state is not a
separate API: state deltas are records appended, inside that same
transaction, to **compacted changelog topics** (key = state key, value =
the encoded state, ``None`` = deleted). Compaction keeps the latest value
per key, so restoring state is reading the changelog from ``log_start`` to
``end``. This works unchanged on Kafka (Kafka Streams does the same), and on
SQLite the whole checkpoint is one database transaction.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import timedelta
from operator import attrgetter
from types import TracebackType
from typing import Annotated, Protocol, Self

import msgspec

from eventspine.errors import ConfigError
from eventspine.timeutil import to_duration_ms

__all__ = [
    "Log",
    "LogRecord",
    "LogTail",
    "LogTransaction",
    "PartitionOffsets",
    "RecordColumns",
    "StoredRecord",
    "TopicInfo",
    "TailRecord",
    "TopicSpec",
    "append_in_transaction",
    "fold_latest",
    "open_tail",
    "read_all",
    "read_columns",
    "read_range",
]

_INT64 = msgspec.Meta(ge=-(1 << 63), le=(1 << 63) - 1)
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
#: The most partitions one topic may have.
MAX_PARTITIONS = 10_000


class LogRecord(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One record to append: immutable, compared by value.

    Attributes:
        key: the record key (partitioning and compaction); ``None`` if unkeyed.
        value: the payload; ``None`` is a tombstone (deletes the key on compaction).
        ts_ms: the event time in epoch milliseconds (any int64).
        headers: ``(name, value)`` pairs carried with the record.
    """

    key: bytes | None
    value: bytes | None
    ts_ms: Annotated[int, _INT64]
    headers: tuple[tuple[str, bytes], ...] = ()


class StoredRecord(LogRecord, frozen=True, array_like=True, gc=False, kw_only=True):
    """A record read back from the log: a :class:`LogRecord` plus its offset.

    A ``StoredRecord`` is a ``LogRecord``, so it can be appended elsewhere
    as it is (its offset is then ignored).

    Attributes:
        offset: the position of the record in its partition.
    """

    offset: int


class TopicSpec(msgspec.Struct, frozen=True):
    """The settings of a topic, fixed when it is created.

    Args:
        name: 1 to 249 characters from ``[A-Za-z0-9._-]``.
        partitions: the number of partitions (1 to 10,000).
        compacted: keep only the latest record per key (Kafka
            ``cleanup.policy=compact``); every record must have a key.
        retention: delete batches whose newest record is older than this,
            measured back from the newest record of the partition (event
            time, not the wall clock). ``None`` keeps everything.
        retention_bytes: delete the oldest batches while a partition holds
            more than this many bytes (the newest batch is always kept).
        tombstone_retention: how long a tombstone (``value=None``) of a
            compacted topic survives after it became the latest record of
            its key, measured like ``retention`` (Kafka ``delete.retention.ms``).

    Raises:
        ConfigError: a value is out of range.
    """

    name: str
    partitions: int = 1
    compacted: bool = False
    retention: timedelta | None = None
    retention_bytes: int | None = None
    tombstone_retention: timedelta = timedelta(days=1)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _TOPIC_NAME.fullmatch(self.name):
            raise ConfigError(
                f"topic name {self.name!r} is invalid: use 1 to 249 characters "
                f"from letters, digits, '.', '_' and '-'"
            )
        if not isinstance(self.partitions, int) or not 1 <= self.partitions <= MAX_PARTITIONS:
            raise ConfigError(
                f"topic {self.name!r}: partitions must be an int from 1 to "
                f"{MAX_PARTITIONS}, not {self.partitions!r}"
            )
        if self.retention is not None and to_duration_ms(self.retention, "retention") <= 0:
            raise ConfigError(f"topic {self.name!r}: retention must be at least 1 ms or None")
        if self.retention_bytes is not None and (
            not isinstance(self.retention_bytes, int) or self.retention_bytes <= 0
        ):
            raise ConfigError(
                f"topic {self.name!r}: retention_bytes must be a positive int or None, "
                f"not {self.retention_bytes!r}"
            )
        if to_duration_ms(self.tombstone_retention, "tombstone_retention") < 0:
            raise ConfigError(f"topic {self.name!r}: tombstone_retention must not be negative")

    @property
    def retention_ms(self) -> int | None:
        """The time retention in milliseconds (``None``: keep forever)."""
        return None if self.retention is None else to_duration_ms(self.retention)

    @property
    def tombstone_retention_ms(self) -> int:
        """The tombstone retention in milliseconds."""
        return to_duration_ms(self.tombstone_retention)

    def settings(self) -> dict[str, object]:
        """Return the settings as plain values (milliseconds for durations)."""
        return {
            "partitions": self.partitions,
            "compacted": self.compacted,
            "retention_ms": self.retention_ms,
            "retention_bytes": self.retention_bytes,
            "tombstone_retention_ms": self.tombstone_retention_ms,
        }


class PartitionOffsets(msgspec.Struct, frozen=True):
    """Where a partition starts and ends.

    Attributes:
        partition: the partition number.
        log_start: the first offset still kept (records below were deleted by retention).
        end: the offset the next appended record gets (the high watermark).
    """

    partition: int
    log_start: int
    end: int


class TopicInfo(msgspec.Struct, frozen=True):
    """A topic as the log describes it: its spec and its partitions' offsets."""

    spec: TopicSpec
    offsets: tuple[PartitionOffsets, ...]

    @property
    def name(self) -> str:
        """The topic name."""
        return self.spec.name


class LogTransaction(Protocol):
    """Writes that become visible together, or not at all.

    Get one from :meth:`Log.transaction` and use it in a ``with`` block.
    Appends and positions are buffered; when the block exits normally they
    are committed atomically (all visible to readers at once, durable per
    the backend's guarantee); when it exits with an exception, nothing is
    written and the exception propagates. If the commit itself fails (an
    invalid record, a full disk), nothing is written and the error
    propagates from the ``with`` statement. A transaction is used once.
    """

    def append(self, topic: str, partition: int, records: Sequence[LogRecord]) -> None:
        """Buffer ``records`` for ``topic[partition]``.

        Offsets are assigned at commit (Kafka reports them only after the
        commit, so this returns nothing). Several appends to the same
        partition land in order, as if they were one append.

        Raises:
            TopicNotFoundError: the topic does not exist.
            LogError: the partition does not exist, or the transaction is not open.
        """
        ...

    def commit_positions(self, group: str, topic: str, positions: Mapping[int, int]) -> None:
        """Buffer ``group``'s next offsets to read, ``{partition: next_offset}``.

        Raises:
            TopicNotFoundError: the topic does not exist.
            LogError: a partition or offset is invalid, or the transaction is not open.
        """
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class Log(Protocol):
    """Topics of partitioned, append-only records with consumer positions.

    Every method may be called from any thread; writes are serialized.
    Every method raises :class:`~eventspine.errors.LogError` after
    :meth:`close`. Readers see only committed writes.
    """

    def create_topic(self, spec: TopicSpec) -> None:
        """Create a topic, or do nothing if it exists with the same settings.

        Raises:
            LogError: the topic exists with other settings (the message names them).
        """
        ...

    def topics(self) -> dict[str, TopicInfo]:
        """Return every topic by name, with the committed offsets of its partitions."""
        ...

    def delete_topic(self, name: str) -> None:
        """Delete a topic, its records and every group's positions for it.

        An administrative operation (``eventspine state reset``); never called
        while a pipeline uses the topic.

        Raises:
            TopicNotFoundError: the topic does not exist.
        """
        ...

    def append(self, topic: str, partition: int, records: Sequence[LogRecord]) -> int:
        """Append ``records`` in order and return the offset of the first one.

        When this returns the records are committed: visible to readers and
        durable per the backend's guarantee (SQLite: the database
        transaction committed). An empty ``records`` writes nothing and
        returns the current end offset.

        Raises:
            TopicNotFoundError: the topic does not exist.
            LogError: the partition does not exist, a record is invalid (the
                message names its index and field; nothing is written), or
                the storage failed.
        """
        ...

    def read(
        self, topic: str, partition: int, offset: int, max_records: int = 1000
    ) -> list[StoredRecord]:
        """Return up to ``max_records`` committed records at offsets ``>= offset``, in order.

        Reading at ``end`` returns ``[]``. On a compacted topic the offsets
        may have gaps; continue from the last offset returned plus one.

        Raises:
            TopicNotFoundError: the topic does not exist.
            LogError: ``offset`` is below the partition's log start (deleted by
                retention; the message gives the log start) or above its end,
                or the partition does not exist.
            StorageCorruptError: stored data failed its checksum.
        """
        ...

    def committed(self, group: str, topic: str) -> dict[int, int]:
        """Return ``group``'s committed next offsets for ``topic``, by partition.

        Partitions without a committed position are absent.

        Raises:
            TopicNotFoundError: the topic does not exist.
        """
        ...

    def transaction(self) -> LogTransaction:
        """Return a new transaction; use it as ``with log.transaction() as txn:``."""
        ...

    def enforce_retention(self) -> None:
        """Apply compaction and time/size retention to every partition now.

        Called periodically by the runtime (for example after checkpoints);
        backends may also compact on their own at any time, as Kafka does
        (SqliteLog compacts a changelog inside the append that doubles it);
        readers must tolerate gaps. It may advance log starts and removes
        superseded records of compacted topics; ends never move.
        A backend whose server does this by itself (Kafka) does nothing.
        """
        ...

    def close(self) -> None:
        """Release files and connections; calling it again does nothing."""
        ...


def read_range(
    log: Log, topic: str, partition: int, start: int, end: int, batch: int = 10_000
) -> Iterator[list[StoredRecord]]:
    """Yield the committed records of ``topic[partition]`` from ``start`` until ``end``.

    One list per ``Log.read`` (at most ``batch`` records). Offsets may have gaps
    (compaction, Kafka transaction markers), so reading continues after the last
    offset returned and stops at ``end`` or when a read returns nothing.
    """
    offset = start
    while offset < end:
        records = log.read(topic, partition, offset, batch)
        if not records:
            return
        yield records
        offset = records[-1].offset + 1


def fold_latest(
    log: Log, topic: str, partition: int, start: int, end: int, latest: dict[bytes, bytes | None]
) -> Iterator[tuple[int, int]]:
    """Fold the committed records of ``topic[partition]`` from ``start`` to ``end`` into ``latest``.

    ``latest[key]`` becomes the value of the key's last record (``None`` for a
    tombstone): the state a compacted changelog holds. Yields ``(next offset,
    records folded)`` after each read, for progress reports; iterate to the end.
    A log may fold faster by itself (``log.fold_latest(...)``, same contract:
    the Kafka log skips building a :class:`StoredRecord` per message). Meant
    for changelogs, whose records all have keys.
    """
    if start >= end:
        return  # nothing to read: no reader opened, no round trip
    own = getattr(log, "fold_latest", None)
    if own is not None:
        yield from own(topic, partition, start, end, latest)
        return
    for records in read_range(log, topic, partition, start, end):
        for record in records:
            latest[record.key] = record.value  # type: ignore[index]  # changelogs are keyed
        yield records[-1].offset + 1, len(records)


class RecordColumns:
    """Committed records of one partition as parallel lists (what :func:`read_columns` returns).

    ``len()`` is the number of records; continue reading at ``offsets[-1] + 1``.

    Attributes:
        offsets: the records' offsets, increasing (with gaps where the log has them).
        values: their values (``None`` for a tombstone).
        ts_ms: their timestamps.
    """

    __slots__ = ("offsets", "ts_ms", "values")

    def __init__(self, offsets: list[int], values: list[bytes | None], ts_ms: list[int]) -> None:
        self.offsets = offsets
        self.values = values
        self.ts_ms = ts_ms

    def __len__(self) -> int:
        return len(self.offsets)


_OFFSET = attrgetter("offset")
_VALUE = attrgetter("value")
_TS_MS = attrgetter("ts_ms")


def read_columns(
    log: Log, topic: str, partition: int, offset: int, max_records: int
) -> RecordColumns:
    """Like ``log.read``, as offsets, values and timestamps (keys and headers are left out).

    What a topic source needs per record, without a :class:`StoredRecord` each
    when the log can do without (``log.read_columns(...)``, same arguments and
    errors: the Kafka log takes the columns straight from its messages).
    """
    own = getattr(log, "read_columns", None)
    if own is not None:
        columns: RecordColumns = own(topic, partition, offset, max_records)
        return columns
    records = log.read(topic, partition, offset, max_records)
    return RecordColumns(
        list(map(_OFFSET, records)), list(map(_VALUE, records)), list(map(_TS_MS, records))
    )


def append_in_transaction(
    log: Log, appends: Sequence[tuple[str, int, Sequence[LogRecord]]]
) -> None:
    """Append ``(topic, partition, records)`` groups in one transaction (none: nothing)."""
    if appends:
        with log.transaction() as txn:
            for topic, partition, records in appends:
                txn.append(topic, partition, records)


def read_all(log: Log, info: TopicInfo) -> Iterator[tuple[int, StoredRecord]]:
    """Yield ``(partition, record)`` for every committed record of a topic, in partition order."""
    for po in info.offsets:
        for records in read_range(log, info.name, po.partition, po.log_start, po.end):
            for record in records:
                yield po.partition, record


#: One record a :class:`LogTail` delivers: ``(topic, partition, offset, key, value)``.
TailRecord = tuple[str, int, int, bytes | None, bytes | None]


class LogTail(Protocol):
    """Follows the committed records of many partitions at once, without blocking.

    Standby tasks use one to keep warm copies of changelogs; it hands out bare
    keys and values (no headers, no timestamps), which is all a changelog needs.
    """

    def assign(self, positions: Mapping[tuple[str, int], int]) -> None:
        """Follow each ``(topic, partition)`` from the given offset on."""
        ...

    def unassign(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Stop following these partitions."""
        ...

    def poll(self, max_records: int) -> list[TailRecord]:
        """Return at most ``max_records`` records that have arrived (``[]`` at once if none).

        Raises:
            LogError: the log failed; the tail's positions are then undefined.
        """
        ...

    def close(self) -> None:
        """Release the tail's resources."""
        ...


class _ReadingTail:
    """A :class:`LogTail` on top of ``Log.read``, for logs whose reads are local and cheap."""

    def __init__(self, log: Log) -> None:
        self._log = log
        self._next: dict[tuple[str, int], int] = {}

    def assign(self, positions: Mapping[tuple[str, int], int]) -> None:
        self._next.update(positions)

    def unassign(self, partitions: Iterable[tuple[str, int]]) -> None:
        for tp in partitions:
            self._next.pop(tp, None)

    def poll(self, max_records: int) -> list[TailRecord]:
        out: list[TailRecord] = []
        for (topic, partition), offset in self._next.items():
            if len(out) >= max_records:
                break
            records = self._log.read(topic, partition, offset, max_records - len(out))
            if records:
                out.extend((topic, partition, r.offset, r.key, r.value) for r in records)
                self._next[topic, partition] = records[-1].offset + 1
        return out

    def close(self) -> None:
        self._next.clear()


def open_tail(log: Log) -> LogTail:
    """A :class:`LogTail` of ``log``: its own (``log.open_tail()``) if it has one, else reads."""
    factory = getattr(log, "open_tail", None)
    if factory is not None:
        tail: LogTail = factory()
        return tail
    return _ReadingTail(log)
