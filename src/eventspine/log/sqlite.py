"""``SqliteLog``: the durable log of one machine, in one SQLite database file.

**One file.** Topics, batches, consumer positions (and, through compacted
changelog topics, keyed state; see ``eventspine.log.base``) live in one
database, because WAL gives no atomicity across ATTACHed files. A
transaction (:meth:`SqliteLog.transaction`) is one SQLite transaction.

**Storage.** Each append stores one row per batch of up to 4,096 records
(``_codec`` gives the framing: a version byte, a CRC-32 and the msgpack
records). Every read checks the CRC; a mismatch raises
``StorageCorruptError`` naming the file, the topic, the partition and the
offsets. All SQL is in :class:`~eventspine.log.sqlite_file.SqliteLogFile`.

**Compaction.** A compacted partition is compacted inside the very
transaction that appends to it once the bytes appended since its last
compaction reach the bytes it held after it (and at least
``COMPACT_MIN_BYTES``): a changelog then holds at most about twice its live
state plus one checkpoint's changes, so a restore reads a bounded amount, and
a crash at any point leaves either the old batches or the compacted ones,
never a mix. ``enforce_retention`` also compacts any partition with appends
since its last compaction, as before. Compaction reads only the keys of the
records (a batch holding one large value costs its CRC check); only batches
that keep some but not all of their records are decoded and re-encoded.

**Crash model.** ``append`` and a transaction's commit return after the
SQLite transaction commits in WAL mode. With ``synchronous="NORMAL"`` (the
default) a committed write survives a crash of the process (kill -9, OOM,
exception); after an OS crash or power loss a suffix of the most recent
commits may be lost, never half of one, and the file is never corrupted.
With ``synchronous="FULL"`` every commit is fsynced and survives power loss
too, at the cost of one fsync per commit. A failed SQLite write is treated
like a crash: the transaction is rolled back and the file is reopened, so
nothing is assumed durable that was not committed.

**Concurrency.** One process writes at a time (others may read meanwhile).
Within the process every method is thread-safe; writes are serialized and
a second writing process waits up to ``busy_timeout`` for the lock. The
workers of ``eventspine run --workers N`` share one file: each encodes the
records of its next commit before it takes the lock (at the end offset it
last wrote, checked under the lock), so the lock is held only for the
inserts and the commit.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import timedelta
from operator import attrgetter
from pathlib import Path
from types import TracebackType
from typing import Self, final, get_args

from eventspine.errors import ConfigError, LogError, StorageCorruptError, TopicNotFoundError
from eventspine.log._checks import check_in_range, check_partition, check_read, spec_difference
from eventspine.log._codec import (
    BadBatchError,
    EncodedBatch,
    KeyEntry,
    encode_records,
    encode_stored,
    unframe,
    unframe_keys,
)
from eventspine.log._retention import BatchSummary, expired_prefix
from eventspine.log._txn import BufferedTransaction, Pending
from eventspine.log.base import (
    LogRecord,
    LogTransaction,
    PartitionOffsets,
    StoredRecord,
    TopicInfo,
    TopicSpec,
)
from eventspine.log.sqlite_file import (
    DEFAULT_CHECK,
    BatchRow,
    Check,
    SqliteLogFile,
    Synchronous,
)
from eventspine.timeutil import to_duration_ms

__all__ = ["COMPACT_MIN_BYTES", "SqliteLog"]

_OFFSET = attrgetter("offset")
#: A compacted partition is compacted on append only once this many bytes were appended.
COMPACT_MIN_BYTES = 4 << 20


@final
class SqliteLog:
    """A :class:`~eventspine.log.base.Log` in one SQLite database file.

    Args:
        path: the database file; it and its parent directories are created
            if missing.
        synchronous: ``"NORMAL"`` (survives process crashes) or ``"FULL"``
            (also survives power loss); see the module docstring.
        busy_timeout: how long a write waits for another process's lock.
        check: what is verified when the file is opened: ``"full"`` (SQLite's
            ``integrity_check``, the default: a damaged page or index is refused before
            anything is trusted, whatever the last process died of), ``"quick"``
            (``quick_check``: about half the time on files of many small batches, but it
            does not compare indexes with their tables) or ``"none"`` (for very large
            logs; damage then shows when read).
        file_type: the SQL layer; tests pass a subclass to inject faults.

    Raises:
        ConfigError: ``synchronous`` is not ``"NORMAL"`` or ``"FULL"``.
        StorageCorruptError: the file is not an SQLite database or is damaged.
        LogError: the file is not an eventspine log or has a newer schema version.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Synchronous = "NORMAL",
        busy_timeout: timedelta = timedelta(seconds=5),
        check: Check = DEFAULT_CHECK,
        file_type: type[SqliteLogFile] = SqliteLogFile,
    ) -> None:
        if synchronous not in get_args(Synchronous):
            raise ConfigError(f"synchronous must be 'NORMAL' or 'FULL', not {synchronous!r}")
        self._path = Path(path).absolute()
        self._synchronous: Synchronous = synchronous
        self._timeout_s = to_duration_ms(busy_timeout, "busy_timeout") / 1000
        self._file_type = file_type
        self._check: Check = check
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._topics: dict[str, tuple[int, TopicSpec]] = {}
        # Per compacted (topic id, partition): [bytes kept by the last compaction, bytes
        # appended since], loaded from the file on first use; a heuristic only (it decides
        # when to compact, never what survives), dropped after any failed write.
        self._sizes: dict[tuple[int, int], list[int]] = {}
        # Per (topic id, partition): its end offset after this object's last append. The
        # records of the next append are encoded at that offset *before* the write lock is
        # taken (another worker process may be waiting for it); under the lock the true end
        # is checked, and a batch encoded at a stale offset is encoded again. A partition
        # found stale once is taken to be written by another process too (a repartition
        # topic; or this object's commit failed, which only costs speed): from then on its
        # records are encoded under the lock, as they were before this guess existed.
        self._ends: dict[tuple[int, int], int] = {}
        self._shared: set[tuple[int, int]] = set()
        self._closed = False
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LogError(
                f"cannot create the directory of the log file {self._path}: {exc}"
            ) from exc
        self._file: SqliteLogFile | None = self._open_file()

    def __repr__(self) -> str:
        return f"SqliteLog({str(self._path)!r})"

    @property
    def path(self) -> Path:
        """The absolute path of the database file."""
        return self._path

    def create_topic(self, spec: TopicSpec) -> None:
        """Create a topic, or do nothing if it exists with the same settings (see ``Log``)."""
        with self._writing(f"create topic {spec.name!r}") as f:
            # The write lock is held, so the reader sees every committed topic.
            self._reload_topics()
            existing = self._topics.get(spec.name)
            if existing is None:
                self._topics[spec.name] = (f.insert_topic(spec), spec)
            elif difference := spec_difference(existing[1], spec):
                raise LogError(difference)

    def delete_topic(self, name: str) -> None:
        """Delete a topic, its records and every group's positions for it (see ``Log``)."""
        with self._writing(f"delete topic {name!r}") as f:
            self._reload_topics()
            tid, _spec = self._lookup(name)
            f.delete_topic(tid)
            del self._topics[name]
            self._sizes.clear()
            self._ends.clear()
            self._shared.clear()

    def topics(self) -> dict[str, TopicInfo]:
        """Return every topic with its partitions' committed offsets (see ``Log``)."""
        with self._reading("describe the topics") as f, f.snapshot():
            rows = f.topic_rows()
            offsets: dict[int, list[PartitionOffsets]] = {}
            for tid, partition, log_start, end in f.offsets():
                offsets.setdefault(tid, []).append(PartitionOffsets(partition, log_start, end))
        self._topics = {spec.name: (tid, spec) for tid, spec in rows}
        return {spec.name: TopicInfo(spec, tuple(offsets[tid])) for tid, spec in rows}

    def append(self, topic: str, partition: int, records: Sequence[LogRecord]) -> int:
        """Append records in one SQLite transaction; return the first offset (see ``Log``)."""
        tid, spec = self._lookup(topic)
        check_partition(spec, partition)
        if not records:
            with self._reading("read an end offset") as f:
                return f.bounds(tid, partition)[1]
        ahead = self._encode_ahead(tid, spec, partition, records)
        with self._writing(f"append to {topic}[{partition}]") as f:
            first = self._append(f, tid, spec, partition, records, ahead)
            if spec.compacted:
                self._compact_if_due(f, tid, spec, partition)
            return first

    def _append(
        self,
        f: SqliteLogFile,
        tid: int,
        spec: TopicSpec,
        partition: int,
        records: Sequence[LogRecord],
        ahead: list[EncodedBatch] | None = None,
    ) -> int:
        """Insert ``records`` at the partition's end (``ahead``: encoded at a guess of it)."""
        log_start, end, cleaned_end = f.partition_state(tid, partition)
        batches = ahead
        if batches is None or batches[0].base_offset != end:
            if batches is not None:
                self._shared.add((tid, partition))
            where = f"{spec.name}[{partition}]"
            batches = encode_records(where, records, end, keyed=spec.compacted, decode=False)
        for batch in batches:
            _insert(f, tid, partition, batch)
        new_end = batches[-1].last_offset + 1
        f.set_partition_state(tid, partition, log_start, new_end, cleaned_end)
        self._ends[(tid, partition)] = new_end  # a guess: a rollback makes it stale
        if spec.compacted:
            sizes = self._sizes.get((tid, partition))
            if sizes is None:  # read after the insert: the new batches count as appended
                self._sizes[(tid, partition)] = list(f.partition_bytes(tid, partition))
            else:
                sizes[1] += sum(b.size for b in batches)
        return end

    def _encode_ahead(
        self, tid: int, spec: TopicSpec, partition: int, records: Sequence[LogRecord]
    ) -> list[EncodedBatch] | None:
        """Encode ``records`` at the end this object last wrote, outside the write lock.

        None when this object has not written the partition yet, or another process
        writes it too: they are encoded (and validated) under the lock. Else invalid
        records raise here, before the lock is waited for.
        """
        end = self._ends.get((tid, partition))
        if end is None or (tid, partition) in self._shared:
            return None
        where = f"{spec.name}[{partition}]"
        return encode_records(where, records, end, keyed=spec.compacted, decode=False)

    def read(
        self, topic: str, partition: int, offset: int, max_records: int = 1000
    ) -> list[StoredRecord]:
        """Return committed records from ``offset`` on, checking CRCs (see ``Log.read``)."""
        tid, spec = self._lookup(topic)
        check_read(spec, partition, offset, max_records)
        with self._reading(f"read {topic}[{partition}]") as f, f.snapshot():
            log_start, end = f.bounds(tid, partition)
            check_in_range(topic, partition, offset, log_start, end)
            out: list[StoredRecord] = []
            if offset == end:
                return out
            cursor = f.batches_from(tid, partition, offset)
            try:
                for base, last, count, payload in cursor:
                    try:
                        records = unframe(payload, base, last, count)
                    except BadBatchError as exc:
                        raise self._corrupt(topic, partition, base, last, str(exc)) from None
                    skip = 0
                    if offset > base:
                        dense = last - base + 1 == count
                        skip = offset - base if dense else bisect_left(records, offset, key=_OFFSET)
                    if not out and skip == 0 and count <= max_records:
                        out = records
                    else:
                        out.extend(records[skip : skip + max_records - len(out)])
                    if len(out) >= max_records:
                        break
            finally:
                cursor.close()
            return out

    def committed(self, group: str, topic: str) -> dict[int, int]:
        """Return ``group``'s committed next offsets for ``topic`` (see ``Log``)."""
        tid, _ = self._lookup(topic)
        with self._reading(f"read the positions of group {group!r}") as f:
            return f.positions(group, tid)

    def transaction(self) -> LogTransaction:
        """Return a transaction committed as one SQLite transaction (see ``Log``)."""
        self._check_open()
        return BufferedTransaction(lambda topic: self._lookup(topic)[1], self._commit)

    def _commit(self, pending: Pending) -> None:
        appends = [
            (*self._lookup(topic), partition, records)
            for (topic, partition), records in pending.appends.items()
            if records
        ]
        ahead = [self._encode_ahead(tid, spec, p, records) for tid, spec, p, records in appends]
        with self._writing("commit a transaction") as f:
            compacted: list[tuple[int, TopicSpec, int]] = []
            for (tid, spec, partition, records), encoded in zip(appends, ahead, strict=True):
                self._append(f, tid, spec, partition, records, encoded)
                if spec.compacted:
                    compacted.append((tid, spec, partition))
            for (group, topic), positions in pending.positions.items():
                f.upsert_positions(group, self._lookup(topic)[0], positions)
            for tid, spec, partition in compacted:
                self._compact_if_due(f, tid, spec, partition)

    def enforce_retention(self) -> None:
        """Compact and apply retention, one SQLite transaction per partition (see ``Log``)."""
        self.topics()  # refresh the topic cache
        for tid, spec in list(self._topics.values()):
            for partition in range(spec.partitions):
                with self._writing(f"enforce retention on {spec.name}[{partition}]") as f:
                    self._retain(f, tid, spec, partition)

    def _retain(self, f: SqliteLogFile, tid: int, spec: TopicSpec, partition: int) -> None:
        log_start, end, cleaned_end = f.partition_state(tid, partition)
        if spec.compacted and cleaned_end != end:
            self._compact(f, tid, spec, partition)
            cleaned_end = end
        rows = f.batch_rows(tid, partition)
        deleted = expired_prefix([BatchSummary(r[0], r[3], r[4]) for r in rows], spec)
        if deleted:
            last_deleted = rows[deleted - 1][0]
            f.delete_batches_through(tid, partition, last_deleted)
            log_start = max(log_start, last_deleted + 1)
            f.set_partition_state(tid, partition, log_start, end, cleaned_end)
            self._sizes.pop((tid, partition), None)

    def _compact_if_due(self, f: SqliteLogFile, tid: int, spec: TopicSpec, partition: int) -> None:
        """Compact the partition if as many bytes were appended as its last compaction kept."""
        clean, dirty = self._sizes.get((tid, partition)) or f.partition_bytes(tid, partition)
        if dirty >= max(clean, COMPACT_MIN_BYTES):
            self._compact(f, tid, spec, partition)

    def _compact(self, f: SqliteLogFile, tid: int, spec: TopicSpec, partition: int) -> None:
        """Keep the latest record of each key (the rules of ``_retention``), in ``f``'s transaction.

        Two passes over the keys (nothing but the latest offsets is held in memory);
        only batches that keep some of their records are decoded in full.
        """
        log_start, end, _cleaned = f.partition_state(tid, partition)
        rows = f.batch_rows(tid, partition)
        kept_bytes = 0
        if rows:
            cutoff = max(row[3] for row in rows) - spec.tombstone_retention_ms
            latest: dict[bytes | None, int] = {}
            for row in rows:
                for e in self._keys(f, tid, spec, partition, row):
                    latest[e.key] = e.offset
            for row in rows:
                last, _base, _count, _ts, size = row
                keep = {
                    e.offset
                    for e in self._keys(f, tid, spec, partition, row)
                    if latest[e.key] == e.offset and (not e.tombstone or e.ts_ms >= cutoff)
                }
                if len(keep) == row[2]:
                    kept_bytes += size
                    continue
                survivors = [
                    r for r in self._records(f, tid, spec, partition, row) if r.offset in keep
                ]
                f.delete_batch(tid, partition, last)
                if survivors:
                    batch = encode_stored(survivors)
                    _insert(f, tid, partition, batch)
                    kept_bytes += batch.size
        f.set_partition_state(tid, partition, log_start, end, end)
        self._sizes[(tid, partition)] = [kept_bytes, 0]

    def _keys(
        self, f: SqliteLogFile, tid: int, spec: TopicSpec, partition: int, row: BatchRow
    ) -> list[KeyEntry]:
        last, base, count, _, _ = row
        try:
            return unframe_keys(f.batch_payload(tid, partition, last), base, last, count)
        except BadBatchError as exc:
            raise self._corrupt(spec.name, partition, base, last, str(exc)) from None

    def _records(
        self, f: SqliteLogFile, tid: int, spec: TopicSpec, partition: int, row: BatchRow
    ) -> list[StoredRecord]:
        last, base, count, _, _ = row
        try:
            return unframe(f.batch_payload(tid, partition, last), base, last, count)
        except BadBatchError as exc:
            raise self._corrupt(spec.name, partition, base, last, str(exc)) from None

    def close(self) -> None:
        """Close the database connections; calling it again does nothing."""
        with self._write_lock, self._read_lock:
            self._closed = True
            if self._file is not None:
                self._file.close()
                self._file = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- plumbing -------------------------------------------------------------

    def _open_file(self) -> SqliteLogFile:
        try:
            return self._file_type(
                self._path,
                synchronous=self._synchronous,
                busy_timeout_s=self._timeout_s,
                check=self._check,
            )
        except sqlite3.Error as exc:
            raise self._translate(exc, "open the log") from exc

    def _check_open(self) -> SqliteLogFile:
        if self._closed:
            raise LogError(f"{self!r} is closed")
        if self._file is None:
            raise LogError(
                f"{self!r} is unusable after a storage failure that it could not recover "
                f"from by reopening the file; close it and open the log again"
            )
        return self._file

    @contextmanager
    def _writing(self, what: str) -> Iterator[SqliteLogFile]:
        """Hold the write lock around one SQLite write transaction."""
        with self._write_lock:
            f = self._check_open()
            try:
                f.begin()
                yield f
                f.commit()
            except sqlite3.Error as exc:
                self._sizes.clear()
                self._reset(f)
                raise self._translate(exc, what) from exc
            except BaseException:
                self._sizes.clear()
                try:
                    f.rollback()
                except sqlite3.Error:
                    self._reset(f)
                raise

    @contextmanager
    def _reading(self, what: str) -> Iterator[SqliteLogFile]:
        with self._read_lock:
            f = self._check_open()
            try:
                yield f
            except sqlite3.Error as exc:
                raise self._translate(exc, what) from exc

    def _reset(self, f: SqliteLogFile) -> None:
        """After a failed write, reopen the file as a restart would (write lock held)."""
        with self._read_lock:
            self._file = None
            # Closing rolls back what the failed transaction left; if the connection
            # is broken beyond that, reopening the file recovers it like a restart.
            with suppress(sqlite3.Error):
                f.close()
            try:
                self._file = self._open_file()
            except LogError:
                self._file = None

    def _lookup(self, topic: str) -> tuple[int, TopicSpec]:
        found = self._topics.get(topic)
        if found is None:
            self._reload_topics()
            found = self._topics.get(topic)
            if found is None:
                raise TopicNotFoundError(
                    f"topic {topic!r} does not exist in {self._path}; create it with "
                    f"log.create_topic(TopicSpec({topic!r}, ...))"
                )
        return found

    def _reload_topics(self) -> None:
        with self._reading("load the topics") as f:
            self._topics = {spec.name: (tid, spec) for tid, spec in f.topic_rows()}

    def _corrupt(
        self, topic: str, partition: int, base: int, last: int, reason: str
    ) -> StorageCorruptError:
        return StorageCorruptError(
            f"{self._path}: the batch of {topic}[{partition}] at offsets {base} to {last} is "
            f"damaged ({reason}). The file was changed outside eventspine or by a disk fault; "
            f"restore it from a backup (records before offset {base} are still readable)"
        )

    def _translate(self, exc: sqlite3.Error, what: str) -> LogError:
        text = str(exc)
        if "malformed" in text or "not a database" in text:
            return StorageCorruptError(
                f"{self._path}: cannot {what}: the database file is damaged ({text}); "
                f"restore it from a backup"
            )
        hint = ""
        if "locked" in text or "busy" in text:
            hint = "; another process is writing to this file (one writer process per log)"
        return LogError(f"{self._path}: cannot {what}: {text}{hint}")


def _insert(f: SqliteLogFile, tid: int, partition: int, batch: EncodedBatch) -> None:
    count = (
        batch.last_offset - batch.base_offset + 1 if batch.records is None else len(batch.records)
    )
    row = (batch.last_offset, batch.base_offset, count, batch.max_ts, batch.size)
    f.insert_batch(tid, partition, row, batch.payload)
