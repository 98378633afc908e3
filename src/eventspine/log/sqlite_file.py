"""``SqliteLogFile``: every SQL statement of the SQLite log, in one class.

``SqliteLog`` holds the logic (offsets, validation, retention) and calls
only these methods, so a test can subclass this class to fail the N-th
write, commit or read (SQLite-style fault injection) without touching the
log. It does not translate ``sqlite3`` errors; ``SqliteLog`` does.

Schema (version 1; ``PRAGMA application_id`` = ``0x45534C47`` "ESLG",
``PRAGMA user_version`` = schema version, also kept in the ``meta`` table)::

    meta(name PK, value)                       format, schema_version
    topics(topic_id PK, name UNIQUE, partitions, compacted, retention_ms,
           retention_bytes, tombstone_retention_ms)
    partitions(topic_id, partition, log_start, end_offset, cleaned_end) PK (topic_id, partition)
    batches(topic_id, partition, last_offset, base_offset, record_count,
            max_ts, size, payload)               PK (topic_id, partition, last_offset)
    positions(group_id, topic_id, partition, next_offset) PK (group_id, topic_id, partition)

Three connections: the writer (``BEGIN IMMEDIATE`` ... ``COMMIT``), the
reader (``query_only``; each read is one snapshot, so readers never see a
write that is not committed) and the checkpointer, used by a daemon thread
that copies the WAL into the database file off the appending thread.

Failpoints (fault tests, see :mod:`eventspine.failpoints`): ``log.sqlite.begin``,
``log.sqlite.insert_batch``, ``log.sqlite.before_commit``, ``log.sqlite.after_commit``;
their ``raise`` action raises ``sqlite3.OperationalError("disk I/O error ...")`` as a
failing disk would, so the log's own error handling (rollback, reopen) is exercised.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import timedelta
from pathlib import Path
from typing import Final, Literal

from eventspine import failpoints
from eventspine.errors import ConfigError, LogError, StorageCorruptError
from eventspine.log.base import TopicSpec

__all__ = ["DEFAULT_CHECK", "SCHEMA_VERSION", "Check", "SqliteLogFile", "Synchronous"]

Synchronous = Literal["NORMAL", "FULL"]
#: What is verified when the file is opened: quick_check, integrity_check, or nothing.
Check = Literal["quick", "full", "none"]
#: The check of an open when none is asked for (the one place that sets it).
DEFAULT_CHECK: Final[Check] = "full"
SCHEMA_VERSION: Final = 1
APPLICATION_ID: Final = 0x45534C47
_MAGIC = b"SQLite format 3\x00"
_PAGE_SIZE = 16384  # measured: 4 KiB pages cost 1.8x more per batch (overflow chains)
_CHECKPOINT_BYTES = 8 << 20  # ask the checkpoint thread to run after this much is written
_WRITER_CHECKPOINT_PAGES = 16384  # 256 MiB: the writer checkpoints itself only past this
# After a checkpoint, a WAL file larger than this is truncated to it when it is reused, so
# one burst of large writes (a state rewrite) does not leave a large file to scan at open.
_WAL_KEEP_BYTES = 64 << 20

_SCHEMA = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE topics (
  topic_id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, partitions INTEGER NOT NULL,
  compacted INTEGER NOT NULL, retention_ms INTEGER, retention_bytes INTEGER,
  tombstone_retention_ms INTEGER NOT NULL);
CREATE TABLE partitions (
  topic_id INTEGER NOT NULL, partition INTEGER NOT NULL, log_start INTEGER NOT NULL,
  end_offset INTEGER NOT NULL, cleaned_end INTEGER NOT NULL,
  PRIMARY KEY (topic_id, partition)) WITHOUT ROWID;
CREATE TABLE batches (
  topic_id INTEGER NOT NULL, partition INTEGER NOT NULL, last_offset INTEGER NOT NULL,
  base_offset INTEGER NOT NULL, record_count INTEGER NOT NULL, max_ts INTEGER NOT NULL,
  size INTEGER NOT NULL, payload BLOB NOT NULL,
  PRIMARY KEY (topic_id, partition, last_offset));
CREATE TABLE positions (
  group_id TEXT NOT NULL, topic_id INTEGER NOT NULL, partition INTEGER NOT NULL,
  next_offset INTEGER NOT NULL, PRIMARY KEY (group_id, topic_id, partition)) WITHOUT ROWID;
"""

#: One row of ``batches`` without its payload: last, base, count, max_ts, size.
BatchRow = tuple[int, int, int, int, int]


class SqliteLogFile:
    """The SQL of one eventspine log database file.

    Not thread-safe: ``SqliteLog`` serializes writer calls and reader calls.

    Args:
        path: the database file (created with its schema if missing or empty).
        synchronous: ``"NORMAL"`` or ``"FULL"`` (see ``SqliteLog``).
        busy_timeout_s: how long to wait for another connection's write lock.

    Raises:
        StorageCorruptError: the file is not an SQLite database or is damaged.
        LogError: the file is an SQLite database of something else, or was
            written by a newer eventspine.
    """

    def __init__(
        self,
        path: Path,
        *,
        synchronous: Synchronous,
        busy_timeout_s: float,
        check: Check = DEFAULT_CHECK,
    ) -> None:
        self.path = path
        self._timeout = busy_timeout_s
        self._check = check
        if synchronous not in ("NORMAL", "FULL"):  # it is put into a PRAGMA below
            raise ConfigError(f"synchronous must be 'NORMAL' or 'FULL', not {synchronous!r}")
        self._synchronous = synchronous
        _check_header(path)
        opened: list[sqlite3.Connection] = []
        try:
            self._writer = self._connect(opened)
            self._prepare()
            self._writer.execute(f"PRAGMA wal_autocheckpoint = {_WRITER_CHECKPOINT_PAGES}")
            self._writer.execute(f"PRAGMA journal_size_limit = {_WAL_KEEP_BYTES}")
            self._reader = self._connect(opened)
            self._reader.execute("PRAGMA query_only = ON")
            self._checkpointer = self._connect(opened)
        except BaseException:
            for conn in reversed(opened):
                conn.close()
            raise
        self._unchecked_bytes = 0
        self._checkpoint_wanted = threading.Event()
        self._closing = False
        self._thread = threading.Thread(
            target=self._checkpoint_loop, name=f"eventspine-log-checkpoint:{path.name}", daemon=True
        )
        self._thread.start()

    def _connect(self, opened: list[sqlite3.Connection]) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False
        )
        opened.append(conn)
        # 8 MiB: holds a few batches; a larger cache measured slower while it fills (page faults)
        conn.execute("PRAGMA cache_size = -8192")
        conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        return conn

    def _prepare(self) -> None:
        w = self._writer
        try:
            app_id = w.execute("PRAGMA application_id").fetchone()[0]
            tables = w.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise StorageCorruptError(
                f"{self.path} cannot be opened as an eventspine log: {exc}. The file is "
                f"damaged or is not an SQLite database; restore it from a backup or move "
                f"it away to start an empty log"
            ) from exc
        if app_id != APPLICATION_ID and (tables or app_id):
            raise LogError(
                f"{self.path} is an SQLite database but not an eventspine log "
                f"(application_id {app_id:#x}); point the log at another file"
            )
        if tables == 0:
            w.execute(f"PRAGMA page_size = {_PAGE_SIZE}")
        mode = w.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise LogError(
                f"{self.path}: SQLite cannot use WAL mode for this file (journal mode {mode!r}); "
                f"put the log on a local file system"
            )
        if tables == 0:
            self._create_schema()
        version = w.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
        if version is None or not version[0].isdigit():
            raise StorageCorruptError(f"{self.path}: the eventspine schema version is missing")
        if int(version[0]) > SCHEMA_VERSION:
            raise LogError(
                f"{self.path} was written by a newer eventspine (log schema version "
                f"{version[0]}; this version reads up to {SCHEMA_VERSION}); upgrade eventspine"
            )
        if self._check != "none" and tables:
            self._verify("quick_check" if self._check == "quick" else "integrity_check")

    def _verify(self, pragma: str) -> None:
        """Check the b-tree structure of the file before trusting it (after any crash).

        Batch payloads carry their own CRC, but a damaged page of an index or of
        the positions table would otherwise only show when (or if) it is read.
        """
        try:
            rows = self._writer.execute(f"PRAGMA {pragma}(5)").fetchall()
        except sqlite3.DatabaseError as exc:
            rows = [(str(exc),)]
        if rows != [("ok",)]:
            found = "; ".join(str(r[0]) for r in rows)
            raise StorageCorruptError(
                f"{self.path}: the SQLite {pragma} found damage ({found}); restore the file "
                f"from a backup, or move it away to start an empty log (this discards its "
                f"topics, positions and pipeline state)"
            )

    def _create_schema(self) -> None:
        w = self._writer
        w.execute("BEGIN IMMEDIATE")
        try:
            if w.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        w.execute(statement)
                w.executemany(
                    "INSERT INTO meta VALUES (?, ?)",
                    [("format", "eventspine-log"), ("schema_version", str(SCHEMA_VERSION))],
                )
                w.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                w.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            w.execute("COMMIT")
        except BaseException:
            w.execute("ROLLBACK")
            raise

    # -- writer: transactions ------------------------------------------------

    def begin(self) -> None:
        """Start the write transaction (waits up to the busy timeout for the lock)."""
        _io_failpoint("log.sqlite.begin")
        self._writer.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        """Commit the write transaction: when this returns, the writes are durable."""
        _io_failpoint("log.sqlite.before_commit")
        self._writer.execute("COMMIT")
        _io_failpoint("log.sqlite.after_commit")
        if self._unchecked_bytes > _CHECKPOINT_BYTES:
            self._unchecked_bytes = 0
            self._checkpoint_wanted.set()

    def checkpoint(self) -> None:
        """Copy committed WAL frames into the database file without blocking the writer.

        Runs on the checkpoint thread after every few MiB written. In WAL mode
        with ``synchronous=NORMAL`` the checkpoint is where SQLite fsyncs, so
        running it here keeps fsync waits off the appending thread; the
        writer's own autocheckpoint (at a much longer WAL) is the backstop.
        """
        self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def _checkpoint_loop(self) -> None:
        while True:
            self._checkpoint_wanted.wait()
            self._checkpoint_wanted.clear()
            if self._closing:
                return
            # A failed checkpoint loses nothing: the frames stay in the WAL and
            # the next request (or the writer's autocheckpoint) copies them.
            with suppress(sqlite3.Error):
                self.checkpoint()

    def rollback(self) -> None:
        """Roll the write transaction back, if one is open."""
        if self._writer.in_transaction:
            self._writer.execute("ROLLBACK")

    # -- writer: statements inside a write transaction -------------------------

    def insert_topic(self, spec: TopicSpec) -> int:
        """Insert a topic and its partitions; return its id."""
        cur = self._writer.execute(
            "INSERT INTO topics (name, partitions, compacted, retention_ms, retention_bytes, "
            "tombstone_retention_ms) VALUES (?, ?, ?, ?, ?, ?)",
            (
                spec.name,
                spec.partitions,
                int(spec.compacted),
                spec.retention_ms,
                spec.retention_bytes,
                spec.tombstone_retention_ms,
            ),
        )
        topic_id = cur.lastrowid
        assert topic_id is not None
        self._writer.executemany(
            "INSERT INTO partitions VALUES (?, ?, 0, 0, 0)",
            [(topic_id, p) for p in range(spec.partitions)],
        )
        return topic_id

    def delete_topic(self, topic_id: int) -> None:
        """Delete a topic's rows: batches, partitions, positions and the topic itself."""
        for table in ("batches", "partitions", "positions", "topics"):
            self._writer.execute(f"DELETE FROM {table} WHERE topic_id = ?", (topic_id,))  # noqa: S608  # table names are constants

    def partition_state(self, topic_id: int, partition: int) -> tuple[int, int, int]:
        """Return ``(log_start, end, cleaned_end)`` as the writer sees it."""
        row = self._writer.execute(
            "SELECT log_start, end_offset, cleaned_end FROM partitions "
            "WHERE topic_id = ? AND partition = ?",
            (topic_id, partition),
        ).fetchone()
        assert row is not None, "partition rows are created with their topic"
        return row[0], row[1], row[2]

    def set_partition_state(
        self, topic_id: int, partition: int, log_start: int, end: int, cleaned_end: int
    ) -> None:
        """Store a partition's offsets."""
        self._writer.execute(
            "UPDATE partitions SET log_start = ?, end_offset = ?, cleaned_end = ? "
            "WHERE topic_id = ? AND partition = ?",
            (log_start, end, cleaned_end, topic_id, partition),
        )

    def insert_batch(
        self, topic_id: int, partition: int, row: BatchRow, payload: bytes | bytearray
    ) -> None:
        """Insert one batch (``row`` = last, base, count, max_ts, size)."""
        last, base, count, max_ts, size = row
        _io_failpoint("log.sqlite.insert_batch")
        self._unchecked_bytes += len(payload)
        self._writer.execute(
            "INSERT INTO batches VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (topic_id, partition, last, base, count, max_ts, size, payload),
        )

    def delete_batch(self, topic_id: int, partition: int, last_offset: int) -> None:
        """Delete the batch ending at ``last_offset``."""
        self._writer.execute(
            "DELETE FROM batches WHERE topic_id = ? AND partition = ? AND last_offset = ?",
            (topic_id, partition, last_offset),
        )

    def delete_batches_through(self, topic_id: int, partition: int, last_offset: int) -> None:
        """Delete every batch ending at or before ``last_offset``."""
        self._writer.execute(
            "DELETE FROM batches WHERE topic_id = ? AND partition = ? AND last_offset <= ?",
            (topic_id, partition, last_offset),
        )

    def upsert_positions(self, group: str, topic_id: int, positions: dict[int, int]) -> None:
        """Set ``group``'s next offsets for the topic's partitions."""
        self._writer.executemany(
            "INSERT INTO positions VALUES (?, ?, ?, ?) ON CONFLICT DO UPDATE "
            "SET next_offset = excluded.next_offset",
            [(group, topic_id, p, o) for p, o in positions.items()],
        )

    def batch_rows(self, topic_id: int, partition: int) -> list[BatchRow]:
        """Return every batch of a partition without payloads, oldest first."""
        return self._writer.execute(
            "SELECT last_offset, base_offset, record_count, max_ts, size FROM batches "
            "WHERE topic_id = ? AND partition = ? ORDER BY last_offset",
            (topic_id, partition),
        ).fetchall()

    def partition_bytes(self, topic_id: int, partition: int) -> tuple[int, int]:
        """Return the body bytes of a partition's batches below and from its ``cleaned_end``."""
        row = self._writer.execute(
            "SELECT coalesce(sum(b.size) FILTER (WHERE b.last_offset < p.cleaned_end), 0), "
            "coalesce(sum(b.size) FILTER (WHERE b.last_offset >= p.cleaned_end), 0) "
            "FROM partitions p LEFT JOIN batches b USING (topic_id, partition) "
            "WHERE p.topic_id = ? AND p.partition = ?",
            (topic_id, partition),
        ).fetchone()
        return row[0], row[1]

    def batch_payload(self, topic_id: int, partition: int, last_offset: int) -> bytes:
        """Return the stored payload of the batch ending at ``last_offset``."""
        row = self._writer.execute(
            "SELECT CAST(payload AS BLOB) FROM batches "
            "WHERE topic_id = ? AND partition = ? AND last_offset = ?",
            (topic_id, partition, last_offset),
        ).fetchone()
        assert row is not None, "called with a last_offset from batch_rows"
        payload: bytes = row[0]
        return payload

    # -- reader -----------------------------------------------------------------

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Run reader calls on one committed snapshot."""
        self._reader.execute("BEGIN")
        try:
            yield
        finally:
            self._reader.execute("COMMIT")

    def topic_rows(self) -> list[tuple[int, TopicSpec]]:
        """Return ``(topic_id, spec)`` of every committed topic."""
        rows = self._reader.execute(
            "SELECT topic_id, name, partitions, compacted, retention_ms, retention_bytes, "
            "tombstone_retention_ms FROM topics ORDER BY name"
        ).fetchall()
        return [
            (
                tid,
                TopicSpec(
                    name,
                    partitions,
                    bool(compacted),
                    None if retention is None else timedelta(milliseconds=retention),
                    retention_bytes,
                    timedelta(milliseconds=tombstone),
                ),
            )
            for tid, name, partitions, compacted, retention, retention_bytes, tombstone in rows
        ]

    def offsets(self) -> list[tuple[int, int, int, int]]:
        """Return ``(topic_id, partition, log_start, end)`` of every partition."""
        return self._reader.execute(
            "SELECT topic_id, partition, log_start, end_offset FROM partitions "
            "ORDER BY topic_id, partition"
        ).fetchall()

    def bounds(self, topic_id: int, partition: int) -> tuple[int, int]:
        """Return the committed ``(log_start, end)`` of a partition."""
        row = self._reader.execute(
            "SELECT log_start, end_offset FROM partitions WHERE topic_id = ? AND partition = ?",
            (topic_id, partition),
        ).fetchone()
        assert row is not None, "partition rows are created with their topic"
        return row[0], row[1]

    def batches_from(self, topic_id: int, partition: int, offset: int) -> sqlite3.Cursor:
        """Return a cursor on ``(base, last, count, payload)`` of batches ending >= ``offset``."""
        return self._reader.execute(
            # CAST: a payload damaged into TEXT still comes back as bytes (and fails its CRC).
            "SELECT base_offset, last_offset, record_count, CAST(payload AS BLOB) FROM batches "
            "WHERE topic_id = ? AND partition = ? AND last_offset >= ? ORDER BY last_offset",
            (topic_id, partition, offset),
        )

    def positions(self, group: str, topic_id: int) -> dict[int, int]:
        """Return ``group``'s committed next offsets for a topic."""
        rows = self._reader.execute(
            "SELECT partition, next_offset FROM positions WHERE group_id = ? AND topic_id = ? "
            "ORDER BY partition",
            (group, topic_id),
        ).fetchall()
        return dict(rows)

    def close(self) -> None:
        """Stop the checkpoint thread and close the connections.

        An open write transaction is rolled back; the last connection to close
        checkpoints the WAL into the database file.
        """
        self._closing = True
        self._checkpoint_wanted.set()
        self._thread.join()
        self._checkpointer.close()
        self._reader.close()
        self._writer.close()


def _io_failpoint(name: str) -> None:
    """Failpoint ``name`` (fault tests); its ``raise`` action becomes an SQLite I/O error."""
    try:
        failpoints.hit(name)
    except failpoints.FailpointError as exc:
        raise sqlite3.OperationalError(f"disk I/O error ({exc})") from exc


def _check_header(path: Path) -> None:
    try:
        with path.open("rb") as f:
            head = f.read(len(_MAGIC))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise LogError(f"cannot open the log file {path}: {exc}") from exc
    if head and head != _MAGIC:
        raise StorageCorruptError(
            f"{path} is not an SQLite database (its first bytes are {head[:16]!r}); "
            f"point the log at another file, or restore this one from a backup"
        )
