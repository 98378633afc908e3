"""Failed writes and process crashes never leave a partial transaction visible."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from eventspine.errors import LogError
from eventspine.log import LogRecord, SqliteLog, TopicSpec
from log_faults import FailingCommitFile


def test_a_failed_commit_rolls_back_and_the_log_keeps_working(tmp_path: Path) -> None:
    log = SqliteLog(tmp_path / "log.db", file_type=FailingCommitFile)
    log.create_topic(TopicSpec("out"))
    log.append("out", 0, [LogRecord(None, b"a", 1)])
    FailingCommitFile.error = "database or disk is full"

    def checkpoint() -> None:
        with log.transaction() as txn:
            txn.append("out", 0, [LogRecord(None, b"b", 2)])
            txn.commit_positions("g", "out", {0: 1})

    with pytest.raises(LogError, match="disk is full") as err:
        checkpoint()
    assert str(tmp_path / "log.db") in str(err.value)
    assert [r.value for r in log.read("out", 0, 0)] == [b"a"]
    assert log.committed("g", "out") == {}
    assert log.append("out", 0, [LogRecord(None, b"c", 3)]) == 1
    log.close()


_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from eventspine.log import LogRecord, SqliteLog, TopicSpec
    from eventspine.log.sqlite_file import SqliteLogFile

    class KillBeforeCommit(SqliteLogFile):
        armed = False
        def commit(self):
            if KillBeforeCommit.armed:
                os.kill(os.getpid(), signal.SIGKILL)  # every row is written, COMMIT is not
            super().commit()

    log = SqliteLog(sys.argv[1], file_type=KillBeforeCommit)
    log.create_topic(TopicSpec("out", partitions=2))
    for i in range(50):  # enough to pass a WAL checkpoint or two
        log.append("out", i % 2, [LogRecord(b"k", b"x" * 100, i)] * 1000)
    with log.transaction() as txn:
        txn.commit_positions("app", "out", {0: 25_000})
    KillBeforeCommit.armed = True
    with log.transaction() as txn:
        txn.append("out", 0, [LogRecord(b"k", b"lost", 0)] * 500)
        txn.append("out", 1, [LogRecord(b"k", b"lost", 0)] * 500)
        txn.commit_positions("app", "out", {0: 25_500, 1: 25_500})
    """
)


def test_kill_9_inside_a_commit_loses_exactly_that_transaction(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[3] / "src")}
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path)], env=env, capture_output=True, timeout=120
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()
    assert (tmp_path / "log.db-wal").exists(), "the crash left a WAL to recover"
    with SqliteLog(path) as log:
        offsets = log.topics()["out"].offsets
        assert [(p.log_start, p.end) for p in offsets] == [(0, 25_000), (0, 25_000)]
        assert log.committed("app", "out") == {0: 25_000}
        for partition in (0, 1):
            values = {r.value for r in log.read("out", partition, 24_000, 5000)}
            assert values == {b"x" * 100}
        assert log.append("out", 0, [LogRecord(b"k", b"after", 1)]) == 25_000
