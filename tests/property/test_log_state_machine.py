"""SqliteLog behaves exactly like MemoryLog, through failed commits, crashes and reopens."""

import shutil
import sqlite3
import tempfile
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from eventspine.errors import LogError
from eventspine.log import LogRecord, LogTransaction, MemoryLog, SqliteLog, TopicSpec
from eventspine.log.sqlite_file import SqliteLogFile

TOPICS = (
    TopicSpec("plain", partitions=2),
    TopicSpec("kept", compacted=True, tombstone_retention=timedelta(milliseconds=5)),
    TopicSpec("short", retention=timedelta(milliseconds=20), retention_bytes=300),
)
GROUPS = ("g1", "g2")


class FaultyFile(SqliteLogFile):
    """Fails the next COMMIT when armed (after every row of the transaction is written)."""

    armed = False

    def commit(self) -> None:
        if FaultyFile.armed:
            FaultyFile.armed = False
            raise sqlite3.OperationalError("disk I/O error (injected)")
        super().commit()


keys = st.sampled_from([b"a", b"b", b"c", b""])
values = st.one_of(st.none(), st.binary(max_size=40))
record = st.builds(
    LogRecord,
    key=st.one_of(keys, st.none()),
    value=values,
    ts_ms=st.integers(0, 100),
    headers=st.sampled_from([(), (("h", b"1"),)]),
)
keyed_record = st.builds(LogRecord, key=keys, value=values, ts_ms=st.integers(0, 100))
target = st.sampled_from([("plain", 0), ("plain", 1), ("kept", 0), ("short", 0)])
batch = st.one_of(
    st.tuples(target, st.lists(record, max_size=12)),  # the compacted topic refuses unkeyed
    st.tuples(st.just(("kept", 0)), st.lists(keyed_record, max_size=12)),
)


def outcome(call: Callable[[], Any]) -> Any:
    """Return the call's result, or the type of the LogError it raised."""
    try:
        return call()
    except LogError as exc:
        return type(exc)


class LogsAgree(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="eventspine-log-sm-"))
        self.path = self.dir / "log.db"
        self.name = f"sm-{uuid.uuid4().hex}"
        self.real = SqliteLog(self.path, file_type=FaultyFile)
        self.model = MemoryLog(self.name)
        self.abandoned: list[SqliteLog] = []
        for spec in TOPICS:
            self.real.create_topic(spec)
            self.model.create_topic(spec)

    def teardown(self) -> None:
        FaultyFile.armed = False
        for log in (self.real, *self.abandoned):
            log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(batch=batch)
    def append(self, batch: tuple[tuple[str, int], list[LogRecord]]) -> None:
        (topic, partition), records = batch
        expected = outcome(lambda: self.model.append(topic, partition, records))
        assert outcome(lambda: self.real.append(topic, partition, records)) == expected

    @rule(
        batches=st.lists(batch, max_size=4),
        positions=st.dictionaries(st.sampled_from(GROUPS), st.integers(0, 50), max_size=2),
        abort=st.booleans(),
    )
    def transaction(self, batches: list[Any], positions: dict[str, int], abort: bool) -> None:
        def run(log: Any) -> Any:
            def body() -> None:
                with log.transaction() as txn:
                    self._fill(txn, batches, positions)
                    if abort:
                        raise KeyError("abort")

            try:
                return outcome(body)
            except KeyError:
                return "aborted"

        assert run(self.real) == run(self.model)

    @rule(batches=st.lists(batch, min_size=1, max_size=3))
    def failed_commit(self, batches: list[Any]) -> None:
        FaultyFile.armed = True
        try:
            with self.real.transaction() as txn:
                self._fill(txn, batches, {"g1": 99})
        except LogError as exc:
            if "injected" not in str(exc):  # a record was refused before COMMIT
                FaultyFile.armed = False
        else:  # every append was refused before COMMIT, so the fault did not fire
            FaultyFile.armed = False
            raise AssertionError("the injected commit failure did not surface")

    @rule()
    def enforce_retention(self) -> None:
        self.real.enforce_retention()
        self.model.enforce_retention()

    @rule(target_=target, data=st.data())
    def read(self, target_: tuple[str, int], data: st.DataObject) -> None:
        topic, partition = target_
        info = self.model.topics()[topic].offsets[partition]
        offset = data.draw(st.integers(0, info.end + 1))
        max_records = data.draw(st.integers(1, 8))
        expected = outcome(lambda: self.model.read(topic, partition, offset, max_records))
        assert outcome(lambda: self.real.read(topic, partition, offset, max_records)) == expected

    @rule(batches=st.lists(batch, max_size=3), clean=st.booleans())
    def crash_and_reopen(self, batches: list[Any], clean: bool) -> None:
        for log in (self.real, self.model):  # a transaction in flight is lost
            txn = log.transaction().__enter__()
            outcome(lambda txn=txn: self._fill(txn, batches, {"g2": 7}))
        if clean:
            self.real.close()
        else:  # no close: the process "died"; its connections just stop
            self.abandoned.append(self.real)
        self.model.close()
        self.real = SqliteLog(self.path, file_type=FaultyFile)
        self.model = MemoryLog(self.name)

    @precondition(lambda self: len(self.abandoned) > 3)
    @rule()
    def bury_the_dead(self) -> None:
        for log in self.abandoned:
            log.close()
        self.abandoned.clear()

    @staticmethod
    def _fill(txn: LogTransaction, batches: list[Any], positions: dict[str, int]) -> None:
        for (topic, partition), records in batches:
            txn.append(topic, partition, records)
        for group, offset in positions.items():
            txn.commit_positions(group, "plain", {0: offset})

    @invariant()
    def same_topics_positions_and_records(self) -> None:
        topics = self.model.topics()
        assert self.real.topics() == topics
        for group in GROUPS:
            assert self.real.committed(group, "plain") == self.model.committed(group, "plain")
        for name, info in topics.items():
            for p in info.offsets:
                expected = self.model.read(name, p.partition, p.log_start, 10_000)
                assert self.real.read(name, p.partition, p.log_start, 10_000) == expected


LogsAgree.TestCase.settings = settings(
    max_examples=30,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_sqlite_log_agrees_with_memory_log = LogsAgree.TestCase
