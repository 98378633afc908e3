"""``MemoryLog``: the in-process log, the first-class fake of the ``Log`` port.

It has the semantics of the durable backends (same validation, same
batches, same retention, compaction and transactions; the shared rules live
in ``_codec``, ``_retention``, ``_txn`` and ``_checks``) and it keeps its
data only in this process.

``MemoryLog()`` is private to its object. ``MemoryLog("name")`` (URL
``memory://name``) opens a storage shared by every ``MemoryLog("name")`` of
the process; it lives until the process ends, so closing one and opening
another is a "restart" that keeps everything committed, which tests use.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Sequence
from operator import attrgetter
from types import TracebackType
from typing import Self, final

from eventspine.errors import LogError, TopicNotFoundError
from eventspine.log._checks import check_in_range, check_partition, check_read, spec_difference
from eventspine.log._codec import EncodedBatch, encode_records, encode_stored
from eventspine.log._retention import BatchSummary, compact_batch, expired_prefix, latest_offsets
from eventspine.log._txn import BufferedTransaction, Pending
from eventspine.log.base import (
    LogRecord,
    LogTransaction,
    PartitionOffsets,
    StoredRecord,
    TopicInfo,
    TopicSpec,
)

__all__ = ["MemoryLog"]

_OFFSET = attrgetter("offset")


class _Batch:
    __slots__ = ("max_ts", "records", "size")

    def __init__(self, encoded: EncodedBatch) -> None:
        assert encoded.records is not None, "encoded with decode=True"
        self.records: list[StoredRecord] = encoded.records
        self.max_ts = encoded.max_ts
        self.size = encoded.size

    def summary(self) -> BatchSummary:
        return BatchSummary(self.records[-1].offset, self.max_ts, self.size)


class _Partition:
    __slots__ = ("batches", "cleaned_end", "end", "lasts", "log_start")

    def __init__(self) -> None:
        self.batches: list[_Batch] = []
        self.lasts: list[int] = []  # last offset of each batch, for bisect
        self.log_start = 0
        self.end = 0
        self.cleaned_end = 0

    def add(self, batches: list[EncodedBatch]) -> None:
        for encoded in batches:
            self.batches.append(_Batch(encoded))
            self.lasts.append(encoded.last_offset)
            self.end = encoded.last_offset + 1

    def set_batches(self, batches: list[_Batch]) -> None:
        self.batches = batches
        self.lasts = [b.records[-1].offset for b in batches]


class _Storage:
    __slots__ = ("lock", "positions", "topics")

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.topics: dict[str, tuple[TopicSpec, list[_Partition]]] = {}
        self.positions: dict[tuple[str, str], dict[int, int]] = {}


_SHARED: dict[str, _Storage] = {}
_SHARED_LOCK = threading.Lock()


@final
class MemoryLog:
    """A :class:`~eventspine.log.base.Log` held in memory.

    Args:
        name: share the storage with every ``MemoryLog(name)`` of this
            process (it outlives :meth:`close`); ``None`` for a private log.
    """

    def __init__(self, name: str | None = None) -> None:
        if name is None:
            self._storage = _Storage()
        else:
            with _SHARED_LOCK:
                self._storage = _SHARED.setdefault(name, _Storage())
        self._name = name
        self._closed = False

    def __repr__(self) -> str:
        return f"MemoryLog({self._name!r})"

    def create_topic(self, spec: TopicSpec) -> None:
        """Create a topic, or do nothing if it exists with the same settings (see ``Log``)."""
        with self._storage.lock:
            self._check_open()
            existing = self._storage.topics.get(spec.name)
            if existing is None:
                parts = [_Partition() for _ in range(spec.partitions)]
                self._storage.topics[spec.name] = (spec, parts)
            elif difference := spec_difference(existing[0], spec):
                raise LogError(difference)

    def delete_topic(self, name: str) -> None:
        """Delete a topic and every group's positions for it (see ``Log``)."""
        with self._storage.lock:
            self._check_open()
            self._topic(name)
            del self._storage.topics[name]
            for key in [k for k in self._storage.positions if k[1] == name]:
                del self._storage.positions[key]

    def topics(self) -> dict[str, TopicInfo]:
        """Return every topic with its partitions' offsets (see ``Log``)."""
        with self._storage.lock:
            self._check_open()
            return {
                name: TopicInfo(
                    spec,
                    tuple(
                        PartitionOffsets(i, p.log_start, p.end) for i, p in enumerate(partitions)
                    ),
                )
                for name, (spec, partitions) in sorted(self._storage.topics.items())
            }

    def append(self, topic: str, partition: int, records: Sequence[LogRecord]) -> int:
        """Append records and return the first offset (see ``Log.append``)."""
        with self._storage.lock:
            spec, parts = self._topic(topic)
            check_partition(spec, partition)
            part = parts[partition]
            first = part.end
            if records:
                where = f"{topic}[{partition}]"
                part.add(encode_records(where, records, first, keyed=spec.compacted, decode=True))
            return first

    def read(
        self, topic: str, partition: int, offset: int, max_records: int = 1000
    ) -> list[StoredRecord]:
        """Return committed records from ``offset`` on (see ``Log.read``)."""
        with self._storage.lock:
            spec, parts = self._topic(topic)
            check_read(spec, partition, offset, max_records)
            part = parts[partition]
            check_in_range(topic, partition, offset, part.log_start, part.end)
            out: list[StoredRecord] = []
            index = bisect_left(part.lasts, offset)
            while index < len(part.batches) and len(out) < max_records:
                records = part.batches[index].records
                skip = (
                    0 if offset <= records[0].offset else bisect_left(records, offset, key=_OFFSET)
                )
                out.extend(records[skip : skip + max_records - len(out)])
                index += 1
            return out

    def committed(self, group: str, topic: str) -> dict[int, int]:
        """Return ``group``'s committed next offsets for ``topic`` (see ``Log``)."""
        with self._storage.lock:
            self._topic(topic)
            return dict(sorted(self._storage.positions.get((group, topic), {}).items()))

    def transaction(self) -> LogTransaction:
        """Return a new transaction (see ``Log.transaction``)."""
        self._check_open()
        return BufferedTransaction(lambda topic: self._topic(topic)[0], self._commit)

    def _commit(self, pending: Pending) -> None:
        with self._storage.lock:
            self._check_open()
            staged: list[tuple[_Partition, list[EncodedBatch]]] = []
            for (topic, partition), records in pending.appends.items():
                spec, parts = self._topic(topic)
                if records:
                    where = f"{topic}[{partition}]"
                    encoded = encode_records(
                        where, records, parts[partition].end, keyed=spec.compacted, decode=True
                    )
                    staged.append((parts[partition], encoded))
            # Everything is validated: from here on nothing can fail.
            for part, encoded in staged:
                part.add(encoded)
            for key, positions in pending.positions.items():
                self._storage.positions.setdefault(key, {}).update(positions)

    def enforce_retention(self) -> None:
        """Compact and apply retention to every partition now (see ``_retention``)."""
        with self._storage.lock:
            self._check_open()
            for spec, parts in self._storage.topics.values():
                for part in parts:
                    if part.batches:
                        _retain(spec, part)

    def close(self) -> None:
        """Close this handle; a named storage stays for the next ``MemoryLog(name)``."""
        self._closed = True

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

    def _topic(self, topic: str) -> tuple[TopicSpec, list[_Partition]]:
        self._check_open()
        found = self._storage.topics.get(topic)
        if found is None:
            raise TopicNotFoundError(
                f"topic {topic!r} does not exist in {self!r}; create it with "
                f"log.create_topic(TopicSpec({topic!r}, ...))"
            )
        return found


def _retain(spec: TopicSpec, part: _Partition) -> None:
    if spec.compacted and part.cleaned_end != part.end:
        newest = max(b.max_ts for b in part.batches)
        latest = latest_offsets(b.records for b in part.batches)
        cutoff = newest - spec.tombstone_retention_ms
        kept: list[_Batch] = []
        for batch in part.batches:
            survivors = compact_batch(batch.records, latest, cutoff)
            if survivors is None:
                kept.append(batch)
            elif survivors:
                kept.append(_Batch(encode_stored(survivors)))
        part.set_batches(kept)
        part.cleaned_end = part.end
    deleted = expired_prefix([b.summary() for b in part.batches], spec)
    if deleted:
        part.log_start = max(part.log_start, part.batches[deleted - 1].records[-1].offset + 1)
        part.set_batches(part.batches[deleted:])
