"""Records are encoded before the write lock; the offsets still come from the file.

``--workers N`` gives N processes one SQLite file: each encodes its next
append at the end offset it last wrote, outside the write lock, and checks
that guess under the lock.
"""

import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from eventspine.errors import LogError
from eventspine.log import LogRecord, SqliteLog, TopicSpec
from log_faults import FailingCommitFile


def _values(log: SqliteLog, topic: str) -> list[tuple[int, bytes | None]]:
    return [(r.offset, r.value) for r in log.read(topic, 0, 0, 100)]


def test_two_writers_of_one_partition_get_dense_offsets(tmp_path: Path) -> None:
    a = SqliteLog(tmp_path / "log.db")
    b = SqliteLog(tmp_path / "log.db")
    a.create_topic(TopicSpec("t"))
    # Each writer's guess of the end is stale after the other one wrote.
    assert a.append("t", 0, [LogRecord(None, b"a0", 1), LogRecord(None, b"a1", 1)]) == 0
    assert b.append("t", 0, [LogRecord(None, b"b0", 2)]) == 2
    assert a.append("t", 0, [LogRecord(None, b"a2", 3)]) == 3
    with b.transaction() as txn:
        txn.append("t", 0, [LogRecord(None, b"b1", 4)])
        txn.commit_positions("g", "t", {0: 5})
    with a.transaction() as txn:
        txn.append("t", 0, [LogRecord(None, b"a3", 5)])
    with a.transaction() as txn:  # a knows by now that b writes "t" too
        txn.append("t", 0, [LogRecord(None, b"a4", 6)])
    expected = [(0, b"a0"), (1, b"a1"), (2, b"b0"), (3, b"a2"), (4, b"b1"), (5, b"a3")]
    assert _values(a, "t") == [*expected, (6, b"a4")]
    assert _values(b, "t") == _values(a, "t")
    a.close()
    b.close()


def test_a_failed_commit_leaves_no_gap(tmp_path: Path) -> None:
    """The end this object expects is past the rolled-back records: it must not be used."""
    log = SqliteLog(tmp_path / "log.db", file_type=FailingCommitFile)
    log.create_topic(TopicSpec("t"))
    log.append("t", 0, [LogRecord(None, b"a", 1)])
    FailingCommitFile.error = "database or disk is full"

    def checkpoint() -> None:
        with log.transaction() as txn:
            txn.append("t", 0, [LogRecord(None, b"lost", 2), LogRecord(None, b"lost", 2)])

    with pytest.raises(LogError, match="disk is full"):
        checkpoint()
    assert log.append("t", 0, [LogRecord(None, b"b", 3)]) == 1
    with log.transaction() as txn:
        txn.append("t", 0, [LogRecord(None, b"c", 4)])
    assert _values(log, "t") == [(0, b"a"), (1, b"b"), (2, b"c")]
    log.close()


def test_an_invalid_record_is_refused_without_waiting_for_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    log = SqliteLog(path, busy_timeout=timedelta(milliseconds=200))
    log.create_topic(TopicSpec("t"))
    log.append("t", 0, [LogRecord(None, b"a", 1)])
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        bad = LogRecord(None, "not bytes", 2)  # type: ignore[arg-type]
        with pytest.raises(LogError) as err, log.transaction() as txn:
            txn.append("t", 0, [LogRecord(None, b"ok", 2), bad])
        # Encoded before the lock: the error names the record, not a busy file.
        assert "record 1" in str(err.value)
        assert "locked" not in str(err.value)
    finally:
        other.rollback()
        other.close()
    assert _values(log, "t") == [(0, b"a")]
    log.close()
