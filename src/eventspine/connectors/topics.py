"""Topics of the run's durable log as sources and sinks: ``es.topic(...)``.

One definition serves both ends::

    orders = p.source("orders", es.topic("orders", Order), timestamps=es.EventTime("ts"))
    bars.sink("out", es.topic("bars", key="symbol", partitions=4))

**The log.** A topic lives in the run's log (``OpenContext.log``, an
``eventspine.log.Log``; ``eventspine run`` opens the one its ``--log-url``
names). Opening a topic without a log raises ``ConfigError``
(``es.testing.run`` replaces sources and sinks, so tests need no log). The
topic is created when opened if missing. If it exists, the settings given
explicitly (``partitions``, ``compacted``, ``retention``) must equal its
settings, or the log refuses with a message naming the difference; with none
given, the existing topic is used as it is (a new one gets one partition).

**Source.** One reader per partition, named ``"{topic}/{partition}"``
(attributes ``topic`` and ``partition_id`` let the checkpoint commit
positions). A reader starts at the position the runtime gives with
``seek`` (the last checkpoint), else at the position committed for the
run's group (``OpenContext.group``, the pipeline name), else at the log
start; a position that retention has deleted meanwhile moves to the log
start with a warning (Kafka's ``auto.offset.reset=earliest``). It reads
only committed records and never ends (``bounded = False``): when it is
caught up it returns empty chunks. Offsets are the log's offsets (compacted
topics have gaps: ``Chunk.offsets`` is then explicit). Each value is decoded
by the codec; a value that cannot be decoded is a
``DecodeError(position="{topic}/{partition}@{offset}", raw=value)`` in
``Chunk.errors`` (the source's ``on_error`` policy decides). Tombstones
(``value=None``) are skipped.

**Event time.** Records carry the log's ``ts_ms``. A chunk cannot carry
timestamps beside its records, so ``ts_field="ts"`` copies ``ts_ms`` into
the field ``ts`` of each decoded record (overwriting it; a typed event must
declare it, e.g. ``ts: int = 0``); then ``timestamps=es.EventTime("ts")``
uses it. Without ``ts_field``, event time comes from the record's own fields
as for any source.

**Sink.** Each record is encoded by the codec. Its key comes from ``key`` (a
field name or a function; ``str`` keys are UTF-8, ``bytes`` as they are,
others their JSON form); its partition is ``zlib.crc32(key) % partitions``
(stable across runs and machines). Unkeyed records go round-robin by their
source offset (``offset % partitions``), or by the CRC32 of the value when
they have none (e.g. window results): the same output lands in the same
partition in a resumed run. Each record's ``ts_ms`` is its event time.

**Exactly-once.** With a checkpointer (``OpenContext.transactional``) the
writer only buffers: ``write`` and ``flush`` append nothing; the checkpoint
takes the buffered records with ``drain_log_records()`` and appends them in
its transaction, together with the source positions and state. So a topic
sink's records become visible only when a checkpoint commits, and exactly
once. Without a checkpointer, ``flush`` appends the buffered records in one
log transaction (at-least-once if the process dies between a flush and the
end).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from itertools import repeat
from typing import Any, cast, final, overload

import msgspec

from eventspine.dataflow.ports import Chunk, OpenContext
from eventspine.errors import ConfigError, DecodeError, DefinitionError, LogError, SinkError
from eventspine.log.base import (
    Log,
    LogRecord,
    RecordColumns,
    TopicSpec,
    append_in_transaction,
    read_columns,
)
from eventspine.log.partitioner import key_bytes, partition_for
from eventspine.records import Batch, is_event_type
from eventspine.serde.codecs import Codec, JsonCodec, decode_all, encode_all

__all__ = ["Topic", "key_bytes", "partition_for", "topic"]

_log = logging.getLogger(__name__)
_DECODE_PREFIX = "cannot decode the input: "


@final
class Topic:
    """A topic of the run's log, usable as a source and as a sink (see the module doc).

    Build it with :func:`topic`. ``open`` returns a :class:`TopicConnection`,
    which is both the list of partition readers (as a source) and the writer
    (as a sink); whichever role the runtime uses, the other does nothing.
    """

    bounded = False
    columnar = False

    def __init__(
        self,
        name: str,
        record_type: type,
        *,
        key: str | Callable[[Any], Any] | None,
        codec: Codec,
        spec: TopicSpec,
        explicit: bool,
        ts_field: str | None,
    ) -> None:
        self.name = name
        self.record_type = record_type
        self.key = key
        self.codec = codec
        self.spec = spec
        self.explicit = explicit
        self.ts_field = ts_field

    def __repr__(self) -> str:
        return f"topic({self.name!r}, {self.record_type.__name__})"

    def open(self, context: OpenContext) -> TopicConnection:
        """Create the topic if missing and return its readers/writer.

        Raises:
            ConfigError: the run has no log (``context.log is None``).
            LogError: the topic exists with other settings than those given.
        """
        log: Log | None = context.log
        if log is None:
            raise ConfigError(
                f"step '{context.step}': {self!r} needs the run's durable log, but this run has "
                f"none; run it with `eventspine run` (log URL from --log-url), or replace the "
                f"source/sink in tests (es.testing.run does)"
            )
        partitions = self._ensure(log)
        return TopicConnection(self, log, context, partitions)

    def log_partitions(self, log: Log) -> int:
        """Create the topic if missing; return its partition count (tasks are split by it)."""
        return self._ensure(log)

    def _ensure(self, log: Log) -> int:
        if not self.explicit:
            existing = log.topics().get(self.name)
            if existing is not None:
                return existing.spec.partitions
        log.create_topic(self.spec)
        return self.spec.partitions


def topic(
    name: str,
    record_type: type = dict,
    *,
    key: str | Callable[[Any], Any] | None = None,
    codec: Codec | None = None,
    partitions: int | None = None,
    compacted: bool = False,
    retention: timedelta | None = None,
    ts_field: str | None = None,
) -> Topic:
    """Return a topic of the run's log, to read (``p.source``) or write (``stream.sink``).

    Args:
        name: the topic name (1 to 249 of ``[A-Za-z0-9._-]``).
        record_type: ``dict`` or an ``es.Event`` subclass the values decode into.
        key: the sink's record key: a field name or a function ``record -> key``. On a
            source, a field name declares that the topic is partitioned by that field
            (every record of one value in one partition): a ``key_by`` of the same field
            right after it (or after filters only) then needs no repartitioning in a
            partitioned run (see :mod:`eventspine.runtime.repartition`).
        codec: how values are encoded (default ``JsonCodec(record_type)``).
        partitions: partitions of a topic created here (default 1); if given, an
            existing topic must have as many.
        compacted: keep only the latest record per key (requires ``key`` for a sink).
        retention: delete records older than this (event time; ``None``: keep all).
        ts_field: copy each read record's log timestamp (``ts_ms``) into this field.

    Raises:
        DefinitionError: an argument is invalid.
    """
    if not (isinstance(record_type, type) and (record_type is dict or is_event_type(record_type))):
        raise DefinitionError(
            f"topic {name!r}: record_type must be dict or an es.Event subclass, not {record_type!r}"
        )
    if key is not None and not (isinstance(key, str) or callable(key)):
        raise DefinitionError(f"topic {name!r}: key must be a field name or a function")
    if ts_field is not None and is_event_type(record_type):
        fields = {f.name for f in msgspec.structs.fields(record_type)}
        if ts_field not in fields:
            raise DefinitionError(
                f"topic {name!r}: ts_field={ts_field!r} is not a field of "
                f"{record_type.__name__}; declare it (e.g. {ts_field}: int = 0) or use a dict"
            )
    try:
        spec = TopicSpec(name, 1 if partitions is None else partitions, compacted, retention)
    except ConfigError as exc:
        raise DefinitionError(str(exc)) from exc
    return Topic(
        name,
        record_type,
        key=key,
        codec=codec if codec is not None else JsonCodec(record_type),
        spec=spec,
        explicit=partitions is not None or compacted or retention is not None,
        ts_field=ts_field,
    )


@final
class TopicConnection(Sequence["TopicReader"]):
    """An opened topic: a sequence of partition readers and a sink writer at once.

    The readers are made on first use as a sequence; the writer methods
    buffer records (see the module doc for when they are appended).
    """

    def __init__(self, topic: Topic, log: Log, context: OpenContext, partitions: int) -> None:
        self._topic = topic
        self._log = log
        self._context = context
        self._partitions = partitions
        self._readers: list[TopicReader] | None = None
        self._pending: dict[int, list[LogRecord]] = {}
        self._key = _key_getter(topic.key)

    # -- as a source ---------------------------------------------------------------------
    def _reader_list(self) -> list[TopicReader]:
        if self._readers is None:
            t = self._topic
            group = self._context.group
            committed = self._log.committed(group, t.name) if group else {}
            owned = self._context.partitions
            self._readers = [
                TopicReader(self._log, t, p, committed.get(p))
                for p in range(self._partitions)
                if owned is None or p in owned
            ]
        return self._readers

    def __len__(self) -> int:
        return len(self._reader_list())

    @overload
    def __getitem__(self, index: int) -> TopicReader: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[TopicReader]: ...
    def __getitem__(self, index: int | slice) -> TopicReader | Sequence[TopicReader]:
        return self._reader_list()[index]

    def __iter__(self) -> Iterator[TopicReader]:
        return iter(self._reader_list())

    # -- as a sink -----------------------------------------------------------------------
    def write(self, batch: Batch) -> None:
        """Encode and buffer the batch's records (nothing is appended here)."""
        rows, ts, offsets = batch.rows, batch.ts, batch.offsets
        codec, keyfn, n = self._topic.codec, self._key, self._partitions
        if keyfn is not None and self._write_keyed(rows, ts, codec, keyfn, n):
            return
        compacted = self._topic.spec.compacted
        for i, row in enumerate(rows):
            value = codec.encode(row)
            kb = key_bytes(keyfn(row)) if keyfn is not None else None
            if kb is not None:
                part = partition_for(kb, n)
            elif compacted:
                raise SinkError(
                    f"topic {self._topic.name!r} is compacted, so every record needs a key; "
                    f"give es.topic(..., key='field') (record: {row!r:.200})"
                )
            elif offsets is not None:
                part = offsets[i] % n
            else:
                part = zlib.crc32(value) % n
            self._pending.setdefault(part, []).append(LogRecord(kb, value, ts[i]))

    def _write_keyed(
        self, rows: list[Any], ts: list[int], codec: Codec, keyfn: Callable[[Any], Any], n: int
    ) -> bool:
        """Buffer a keyed batch with C-level passes; ``False`` if a record needs the slow path.

        The slow path (:meth:`write`'s loop) handles a key that is ``None`` and raises
        the error that names a value the codec cannot encode. A key function that
        raises leaves none of the batch buffered (the slow path kept the records
        before it; either way the step fails).
        """
        values = encode_all(codec, rows)
        if values is None:
            return False
        keys: list[bytes | None] = list(map(key_bytes, map(keyfn, rows)))
        if None in keys:
            return False
        records = map(LogRecord, keys, values, ts)
        pending = self._pending
        if n == 1:
            pending.setdefault(0, []).extend(records)
        else:
            parts = map(partition_for, cast("list[bytes]", keys), repeat(n))  # no None left
            for part, record in zip(parts, records, strict=True):
                pending.setdefault(part, []).append(record)
        return True

    def drain_log_records(self) -> list[tuple[str, int, list[LogRecord]]]:
        """Return and forget the buffered records as ``(topic, partition, records)``.

        The checkpoint calls this inside its log transaction and appends the
        records there; partitions are in ascending order, records in write order.
        """
        out = [(self._topic.name, p, recs) for p, recs in sorted(self._pending.items()) if recs]
        self._pending = {}
        return out

    def flush(self) -> None:
        """Append buffered records only without a checkpointer (see the module doc)."""
        if self._context.transactional:
            return
        append_in_transaction(self._log, self.drain_log_records())

    def close(self) -> None:
        """Flush (without a checkpointer); with one, undrained records are discarded."""
        self.flush()
        self._pending = {}


@final
class TopicReader:
    """Reads one partition of a topic (see the module doc).

    Attributes:
        partition: ``"{topic}/{partition_id}"``.
        topic: the topic name.
        partition_id: the partition number.
    """

    def __init__(self, log: Log, topic: Topic, partition_id: int, committed: int | None) -> None:
        self.topic = topic.name
        self.partition_id = partition_id
        self.partition = f"{topic.name}/{partition_id}"
        self._log = log
        self._codec = topic.codec
        self._ts_field = topic.ts_field
        self._typed = is_event_type(topic.record_type)
        self._pos: int | None = committed

    @property
    def position(self) -> int | None:
        """The next offset to read (``None`` until the first poll without a seek)."""
        return self._pos

    def seek(self, offset: int) -> None:
        """Resume at ``offset`` (the ``next_offset`` of a committed chunk)."""
        self._pos = offset

    def poll(self, max_records: int, columnar: bool) -> Chunk:
        """Return the next committed records (an empty chunk when caught up); never ``None``."""
        if self._pos is None:
            self._pos = self._bounds()[0]
        pos, limit = self._pos, max(1, max_records)
        try:
            columns = read_columns(self._log, self.topic, self.partition_id, pos, limit)
        except LogError:
            start, _ = self._bounds()
            if pos >= start:
                raise
            _log.warning(
                "%s: offsets %d to %d were deleted by retention before they were read; "
                "continuing at the log start %d",
                self.partition,
                pos,
                start - 1,
                start,
            )
            self._pos = pos = start
            columns = read_columns(self._log, self.topic, self.partition_id, pos, limit)
        if not columns:
            return Chunk([], pos, pos)
        records, offsets, errors = self._decode(columns)
        self._pos = columns.offsets[-1] + 1
        if not offsets:
            return Chunk([], pos, self._pos, errors=errors)
        consecutive = offsets[-1] - offsets[0] + 1 == len(offsets)
        return Chunk(
            records, offsets[0], self._pos, offsets=None if consecutive else offsets, errors=errors
        )

    def close(self) -> None:
        """Nothing to release: the log belongs to the run."""

    def _bounds(self) -> tuple[int, int]:
        info = self._log.topics()[self.topic]
        po = info.offsets[self.partition_id]
        return po.log_start, po.end

    def _decode(self, columns: RecordColumns) -> tuple[list[Any], list[int], list[DecodeError]]:
        values, field = columns.values, self._ts_field
        if None not in values:  # no tombstones: decode the lot at once (errors: one by one)
            decoded = decode_all(self._codec, values)  # type: ignore[arg-type]  # no None
            if decoded is not None:
                if field is not None:
                    stamp, stamps = self._stamp, columns.ts_ms
                    decoded = [stamp(v, field, ts) for v, ts in zip(decoded, stamps, strict=True)]
                return decoded, columns.offsets, []
        records: list[Any] = []
        offsets: list[int] = []
        errors: list[DecodeError] = []
        decode = self._codec.decode
        for raw, offset, ts_ms in zip(values, columns.offsets, columns.ts_ms, strict=True):
            if raw is None:
                continue
            try:
                value = decode(raw)
            except DecodeError as exc:
                detail = str(exc).removeprefix(_DECODE_PREFIX)
                errors.append(
                    DecodeError(
                        detail,
                        source=f"topic {self.topic!r}",
                        position=f"{self.partition}@{offset}",
                        raw=raw,
                    )
                )
                continue
            if field is not None:
                value = self._stamp(value, field, ts_ms)
            records.append(value)
            offsets.append(offset)
        return records, offsets, errors

    def _stamp(self, value: Any, field: str, ts_ms: int) -> Any:
        if self._typed:
            return msgspec.structs.replace(value, **{field: ts_ms})
        if isinstance(value, dict):
            value[field] = ts_ms
        return value


def _key_getter(key: str | Callable[[Any], Any] | None) -> Callable[[Any], Any] | None:
    if key is None or callable(key):
        return key
    name = key

    def get(record: Any) -> Any:
        try:
            return record[name] if isinstance(record, dict) else getattr(record, name)
        except (KeyError, AttributeError):
            raise SinkError(
                f"the record has no key field {name!r}: {record!r:.200}; give every record the "
                f"field or use es.topic(..., key=function)"
            ) from None

    return get
