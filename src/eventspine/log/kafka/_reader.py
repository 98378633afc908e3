"""Reading partitions with a small pool of ``read_committed`` consumers.

One consumer per ``(topic, partition)``, assigned (never subscribed), kept
in a least-recently-used pool. A consumer remembers the offset its queue
delivers next, so a reader that continues where its last read stopped
(the common case) takes records librdkafka already prefetched, and any
other offset re-assigns the partition there.

**Where a read stops.** ``end`` is the last stable offset (LSO): what a
``read_committed`` consumer can reach. Transaction markers and aborted
records occupy offsets but are never delivered, so a read never waits for
"the record at ``end - 1``": it stops at ``max_records``, at a record at
``end - 1`` or later, or at librdkafka's end-of-partition event for an
offset ``>= end`` (the fetch position reached the LSO, past any markers and
aborted records). The consumer's ``position()`` is not used: right after a
re-assignment it can still report the previous position.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from operator import itemgetter, lt
from typing import TypeVar, cast

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from eventspine.errors import LogError
from eventspine.log._checks import check_in_range
from eventspine.log.base import RecordColumns, StoredRecord
from eventspine.log.kafka._config import KafkaSettings, make_client
from eventspine.log.kafka._records import stored_record, stored_ts

__all__ = ["ReaderPool"]

#: How long one wait for the next fetched message lasts before the position is checked again.
_WAIT_S = 0.05
#: Most messages taken from librdkafka's queue at once.
_BATCH = 10_000


class _Reader:
    __slots__ = ("bounds", "broken", "consumer", "lock", "next_offset", "tp")

    def __init__(self, consumer: Consumer, topic: str, partition: int) -> None:
        self.consumer = consumer
        self.tp = TopicPartition(topic, partition)
        self.next_offset = -1  # not assigned yet
        self.lock = threading.Lock()
        self.broken = False  # a read failed: replace the consumer (its metadata may be stale)
        #: ``(log_start, end)`` as last asked of the broker: everything below that ``end``
        #: was committed then and stays so, so a reader behind it needs not ask again
        self.bounds = (0, 0)


class ReaderPool:
    """The consumers behind ``KafkaLog.read`` and the offsets of single partitions."""

    def __init__(self, settings: KafkaSettings) -> None:
        self._settings = settings
        self._group = f"eventspine-reader-{uuid.uuid4().hex[:12]}"
        self._readers: OrderedDict[tuple[str, int], _Reader] = OrderedDict()
        self._lock = threading.Lock()
        # Offsets come from a consumer that never fetches: a reader's connection may be
        # busy with a long-poll fetch, which a ListOffsets request would queue behind.
        self._offsets_client: Consumer | None = None

    def _reader(self, topic: str, partition: int) -> _Reader:
        key = (topic, partition)
        evicted: list[_Reader] = []
        with self._lock:
            reader = self._readers.get(key)
            if reader is not None and reader.broken:
                evicted.append(self._readers.pop(key))
                reader = None
            if reader is None:
                consumer = make_client(Consumer, self._settings.consumer(self._group))
                reader = self._readers[key] = _Reader(consumer, topic, partition)
                while len(self._readers) > self._settings.max_readers:
                    evicted.append(self._readers.popitem(last=False)[1])
            self._readers.move_to_end(key)
        for old in evicted:
            with old.lock:
                old.consumer.close()
        return reader

    def offsets(self, topic: str, partition: int) -> tuple[int, int]:
        """Return ``(log_start, end)`` of a partition, ``end`` being the LSO.

        Raises:
            LogError: the broker did not answer within the request timeout.
        """
        with self._lock:
            if self._offsets_client is None:
                self._offsets_client = make_client(Consumer, self._settings.consumer(self._group))
            client = self._offsets_client
        try:
            low, high = client.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=self._settings.timeout_s, cached=False
            )
        except KafkaException as exc:
            # A client can keep stale metadata after a broker dies ("Unknown partition" for
            # minutes): the next call starts afresh with a new one.
            with self._lock:
                if self._offsets_client is client:
                    self._offsets_client = None
            client.close()
            raise LogError(f"cannot get the offsets of {topic}[{partition}]: {exc}") from exc
        return int(low), int(high)

    def read(self, topic: str, partition: int, offset: int, max_records: int) -> list[StoredRecord]:
        """Return up to ``max_records`` committed records from ``offset`` (see ``Log.read``).

        Raises:
            LogError: ``offset`` is below the log start or above the end, or the broker
                failed or did not deliver within the request timeout.
        """
        return self._read(topic, partition, offset, max_records, _records)

    def read_columns(
        self, topic: str, partition: int, offset: int, max_records: int
    ) -> RecordColumns:
        """Like :meth:`read`, as columns (see ``read_columns`` in ``log.base``).

        Raises:
            LogError: as :meth:`read`.
        """
        return self._read(topic, partition, offset, max_records, _columns)

    def _read(
        self,
        topic: str,
        partition: int,
        offset: int,
        max_records: int,
        collect: Callable[[Iterator[_Batch]], _Out],
    ) -> _Out:
        reader = self._reader(topic, partition)
        with reader.lock:
            if reader.next_offset == offset and offset < reader.bounds[1]:
                # Catching up (the common case under load): no offsets round trip per read.
                out = collect(self._messages(reader, offset, max_records, reader.bounds[1]))
                if len(out):
                    return out
            reader.bounds = self.offsets(topic, partition)
            log_start, end = reader.bounds
            check_in_range(topic, partition, offset, log_start, end)
            if offset == end:
                return collect(iter(()))
            return collect(self._messages(reader, offset, max_records, end))

    def fold_latest(
        self, topic: str, partition: int, start: int, end: int, latest: dict[bytes, bytes | None]
    ) -> Iterator[tuple[int, int]]:
        """Fold the committed records from ``start`` to ``end`` into ``latest`` (key -> value).

        What a restore of a compacted changelog needs, without building a
        :class:`StoredRecord` per message (see ``fold_latest`` in ``log.base``).
        The partition's reader stays locked until the iteration ends: do not read
        the same partition from inside the loop.

        Raises:
            LogError: as :meth:`read`.
        """
        reader = self._reader(topic, partition)
        with reader.lock:
            log_start, _end = reader.bounds = self.offsets(topic, partition)
            check_in_range(topic, partition, start, log_start, end)
            if start == end:
                return
            for messages, _offsets in self._messages(reader, start, 1 << 62, end):
                for message in messages:
                    # Unkeyed messages never reach a changelog; bytes without deserializers.
                    latest[message.key()] = message.value()  # type: ignore[index]
                yield reader.next_offset, len(messages)

    def _messages(
        self, reader: _Reader, offset: int, max_records: int, end: int
    ) -> Iterator[_Batch]:
        """Yield the messages from ``offset`` until ``max_records`` or ``end``, in batches.

        Each batch comes with its messages' offsets. The caller holds the reader's
        lock until the iteration ends.
        """
        topic, partition = reader.tp.topic, reader.tp.partition
        consumer = reader.consumer
        if reader.next_offset != offset:
            consumer.assign([TopicPartition(topic, partition, offset)])
            reader.next_offset = offset
        count = 0
        deadline = time.monotonic() + self._settings.timeout_s
        while count < max_records:
            messages = consumer.consume(min(max_records - count, _BATCH), 0)
            if not messages:
                if time.monotonic() > deadline:
                    reader.next_offset = -1
                    reader.broken = True
                    raise LogError(
                        f"reading {topic}[{partition}] from offset {offset}: no record "
                        f"arrived within {self._settings.timeout_s:.0f} s although the "
                        f"partition ends at {end}; check the broker"
                    )
                message = consumer.poll(_WAIT_S)
                if message is None:
                    continue
                messages = [message]
            deadline = time.monotonic() + self._settings.timeout_s
            good, offsets, at_end = _sift(reader, messages, offset, end)
            if good:
                count += len(good)
                yield good, offsets
            if at_end or (good and reader.next_offset >= end):
                break

    def forget(self, topic: str) -> None:
        """Close the consumers of ``topic`` (deleted: their positions mean nothing now)."""
        with self._lock:
            keys = [key for key in self._readers if key[0] == topic]
            readers = [self._readers.pop(key) for key in keys]
        for reader in readers:
            with reader.lock:
                reader.consumer.close()

    def close(self) -> None:
        """Close every consumer."""
        with self._lock:
            readers = list(self._readers.values())
            self._readers.clear()
            client, self._offsets_client = self._offsets_client, None
        for reader in readers:
            with reader.lock:
                reader.consumer.close()
        if client is not None:
            client.close()


def _read_error(topic: str, partition: int, offset: int, error: KafkaError) -> LogError:
    if error.code() == KafkaError.OFFSET_OUT_OF_RANGE:
        return LogError(
            f"offset {offset} of {topic}[{partition}] is no longer in the log: retention "
            f"deleted it while it was being read ({error.str()}); read from the log start"
        )
    return LogError(f"reading {topic}[{partition}] from offset {offset} failed: {error.str()}")


_Batch = tuple[list[Message], list[int]]
_Out = TypeVar("_Out", list[StoredRecord], RecordColumns)
_ERROR = Message.error
_OFFSET = Message.offset
_VALUE = Message.value
_TIMESTAMP = Message.timestamp
_HEADERS = Message.headers
_SECOND = itemgetter(1)


def _sift(
    reader: _Reader, messages: list[Message], start: int, end: int
) -> tuple[list[Message], list[int], bool]:
    """Return the records among ``messages``, their offsets, and whether the end was reached.

    Advances ``reader.next_offset`` past the records. The common batch (records
    only, in increasing offsets from the next one) is checked by C-level passes;
    anything else message by message: end-of-partition events, errors (raised),
    and records below the next offset (fetched before a re-assign: dropped).

    Raises:
        LogError: a message carries an error other than end-of-partition.
    """
    if not any(map(_ERROR, messages)):
        # A delivered record always has an offset (None is for errors and events only).
        offsets = cast("list[int]", list(map(_OFFSET, messages)))
        if offsets[0] >= reader.next_offset and all(map(lt, offsets, offsets[1:])):
            reader.next_offset = offsets[-1] + 1
            return messages, offsets, False
    topic, partition = reader.tp.topic, reader.tp.partition
    good: list[Message] = []
    positions: list[int] = []
    at_end = False
    for message in messages:
        position = message.offset() or 0
        error = message.error()
        if error is None:
            if position >= reader.next_offset:  # older ones: before a re-assign
                good.append(message)
                positions.append(position)
                reader.next_offset = position + 1
        elif error.code() == KafkaError._PARTITION_EOF:
            if position >= end:
                at_end = True
                reader.next_offset = max(reader.next_offset, position)
        else:
            reader.next_offset = -1
            reader.broken = True
            raise _read_error(topic, partition, start, error)
    return good, positions, at_end


def _records(batches: Iterator[_Batch]) -> list[StoredRecord]:
    out: list[StoredRecord] = []
    for messages, _offsets in batches:
        out.extend(map(stored_record, messages))
    return out


def _columns(batches: Iterator[_Batch]) -> RecordColumns:
    """Collect offsets, values and timestamps with C-level passes (no object per record)."""
    out = RecordColumns([], [], [])
    for messages, offsets in batches:
        first = len(out.ts_ms)
        out.offsets.extend(offsets)
        out.values.extend(map(_VALUE, messages))
        out.ts_ms.extend(map(_SECOND, map(_TIMESTAMP, messages)))
        if any(map(_HEADERS, messages)):
            for i, message in enumerate(messages, first):
                ts = stored_ts(message)
                if ts is not None:
                    out.ts_ms[i] = ts
    return out
