"""SqliteLog compacts a changelog inside the transaction that makes it twice its live size.

A changelog that rewrites one large value at every checkpoint must not make a
restore read every old copy: once the bytes appended since the last compaction
reach what that compaction kept, the appending transaction itself compacts the
partition. What survives is exactly what ``enforce_retention`` keeps (the
latest record per key; old tombstones dropped), checked against ``MemoryLog``;
a failed commit leaves the partition as it was.
"""

import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

import eventspine.log.sqlite as sqlite_log
from eventspine.errors import LogError
from eventspine.log import LogRecord, MemoryLog, SqliteLog, TopicSpec
from eventspine.log.base import StoredRecord
from log_faults import FailingCommitFile

STATE = TopicSpec("state", compacted=True, tombstone_retention=timedelta(milliseconds=10))


def everything(log: SqliteLog | MemoryLog, topic: str = "state") -> list[StoredRecord]:
    info = log.topics()[topic].offsets[0]
    return log.read(topic, 0, info.log_start, 1 << 20) if info.end > info.log_start else []


def state_of(log: SqliteLog | MemoryLog) -> dict[bytes | None, bytes]:
    latest = {r.key: r.value for r in everything(log)}
    return {k: v for k, v in latest.items() if v is not None}


def stored_bytes(log: SqliteLog) -> int:
    con = sqlite3.connect(log.path)
    try:
        return int(con.execute("SELECT coalesce(sum(size), 0) FROM batches").fetchone()[0])
    finally:
        con.close()


def test_rewriting_one_large_value_keeps_one_copy(tmp_path: Path) -> None:
    log = SqliteLog(tmp_path / "log.db")
    log.create_topic(STATE)
    big = 5 << 20  # above COMPACT_MIN_BYTES
    for i in range(6):
        with log.transaction() as txn:
            txn.append("state", 0, [LogRecord(b"meta", str(i).encode(), 0)])
            txn.append("state", 0, [LogRecord(b"frame", bytes([i]) * big, 0)])
        # Never more than the live value and the one just replaced.
        assert stored_bytes(log) < 2 * big + 4096
    recs = everything(log)
    assert {r.key: r.value for r in recs} == {b"meta": b"5", b"frame": bytes([5]) * big}
    # Survivors keep their offsets; the end never moves.
    assert [r.offset for r in recs] == [10, 11]
    assert log.topics()["state"].offsets[0].end == 12
    log.close()
    reopened = SqliteLog(tmp_path / "log.db")
    assert [r.offset for r in everything(reopened)] == [10, 11]
    reopened.close()


def test_small_appends_wait_for_the_minimum(tmp_path: Path) -> None:
    log = SqliteLog(tmp_path / "log.db")
    log.create_topic(STATE)
    for i in range(50):
        log.append("state", 0, [LogRecord(b"k", str(i).encode(), 0)])
    assert len(everything(log)) == 50  # 50 small records: nowhere near 4 MiB
    log.enforce_retention()
    assert [r.value for r in everything(log)] == [b"49"]
    log.close()


@pytest.mark.parametrize("seed", range(4))
def test_compaction_on_append_keeps_what_enforce_retention_keeps(
    tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_log, "COMPACT_MIN_BYTES", 200)
    rng = random.Random(seed)
    sqlite = SqliteLog(tmp_path / "log.db")
    memory = MemoryLog()
    for log in (sqlite, memory):
        log.create_topic(STATE)
    ts = 0
    for _ in range(60):
        records = []
        for _ in range(rng.randint(1, 30)):
            ts += rng.randint(0, 3)
            key = f"k{rng.randint(0, 12)}".encode()
            value = None if rng.random() < 0.2 else rng.randbytes(rng.randint(0, 40))
            records.append(LogRecord(key, value, ts))
        for log in (sqlite, memory):
            with log.transaction() as txn:
                txn.append("state", 0, records)
        # Compaction on append never changes what a restore sees (tombstones: deleted keys).
        assert state_of(sqlite) == state_of(memory)
    assert len(everything(sqlite)) < len(everything(memory))  # it did compact on append
    for log in (sqlite, memory):
        log.enforce_retention()
    assert everything(sqlite) == everything(memory)
    sqlite.close()


def test_a_failed_commit_keeps_the_old_copies_and_compacts_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_log, "COMPACT_MIN_BYTES", 100)
    log = SqliteLog(tmp_path / "log.db", file_type=FailingCommitFile)
    log.create_topic(STATE)
    log.append("state", 0, [LogRecord(b"a", b"x" * 150, 0), LogRecord(b"b", b"1", 0)])
    before = everything(log)
    FailingCommitFile.error = "disk I/O error (injected)"
    with pytest.raises(LogError, match="disk I/O"), log.transaction() as txn:
        # Enough bytes to compact inside the failing transaction.
        txn.append("state", 0, [LogRecord(b"a", b"f" * 200, 0)])
    assert everything(log) == before  # nothing of the failed transaction, compaction included
    for value in (b"y", b"z"):  # the second makes the appended bytes reach the kept ones
        with log.transaction() as txn:
            txn.append("state", 0, [LogRecord(b"a", value * 150, 0)])
    assert [(r.key, r.value, r.offset) for r in everything(log)] == [
        (b"b", b"1", 1),
        (b"a", b"z" * 150, 3),
    ]
    log.close()


def test_a_partly_superseded_batch_is_rewritten_with_its_survivors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_log, "COMPACT_MIN_BYTES", 10)
    log = SqliteLog(tmp_path / "log.db")
    log.create_topic(STATE)
    first = [LogRecord(f"k{i}".encode(), b"v" * 20, 0, (("h", b"1"),)) for i in range(5)]
    log.append("state", 0, first)
    log.append("state", 0, [LogRecord(b"k1", b"w" * 200, 0), LogRecord(b"k3", None, 0)])
    got = [(r.key, r.value, r.headers, r.offset) for r in everything(log)]
    assert got == [
        (b"k0", b"v" * 20, (("h", b"1"),), 0),
        (b"k2", b"v" * 20, (("h", b"1"),), 2),
        (b"k4", b"v" * 20, (("h", b"1"),), 4),
        (b"k1", b"w" * 200, (), 5),
        (b"k3", None, (), 6),  # a recent tombstone stays
    ]
    log.close()


_KILLED_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from eventspine.log import LogRecord, SqliteLog, TopicSpec
    from eventspine.log.sqlite_file import SqliteLogFile

    class KillBeforeCommit(SqliteLogFile):
        armed = False
        def commit(self):
            if KillBeforeCommit.armed:
                os.kill(os.getpid(), signal.SIGKILL)  # compacted and appended, not committed
            super().commit()

    log = SqliteLog(sys.argv[1], file_type=KillBeforeCommit)
    log.create_topic(TopicSpec("state", compacted=True))
    big = 5 << 20
    for i in range(3):
        with log.transaction() as txn:
            txn.append("state", 0, [LogRecord(b"frame", bytes([i]) * big, 0)])
            txn.append("state", 0, [LogRecord(b"meta", str(i).encode(), 0)])
    KillBeforeCommit.armed = True
    with log.transaction() as txn:
        txn.append("state", 0, [LogRecord(b"frame", b"\\xff" * big, 0)])
        txn.append("state", 0, [LogRecord(b"meta", b"lost", 0)])
    """
)


def test_kill_9_inside_a_compacting_commit_keeps_the_last_committed_state(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[3] / "src")}
    child = subprocess.run(
        [sys.executable, "-c", _KILLED_CHILD, str(path)], env=env, capture_output=True, timeout=120
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()
    with SqliteLog(path) as log:
        assert log.topics()["state"].offsets[0].end == 6
        recs = everything(log)
        assert {r.key: r.value for r in recs} == {b"frame": bytes([2]) * (5 << 20), b"meta": b"2"}
        assert [r.offset for r in recs] == [4, 5]  # compacted by the committed transactions
