"""The conformance suite of the ``Log`` port: every backend passes the same checks.

Subclass :class:`LogConformance` in a pytest module, name the subclass
``Test...`` and implement :meth:`LogConformance.open_log`::

    class TestSqliteLog(LogConformance):
        @pytest.fixture(autouse=True)
        def _fresh(self, tmp_path):
            self.path = tmp_path / "log.db"

        def open_log(self):
            return SqliteLog(self.path)

Each ``test_*`` method is one check. A test calls ``open_log`` again to
"restart" (after closing the previous log), so every call within one test
must open the same storage, and each test must start with empty storage.
The suite uses no pytest API: failures are ``AssertionError`` with a message.

**Capability flags.** Where a backend legitimately differs (Kafka), the
subclass sets a class attribute and the affected checks assert that
backend's behaviour instead, explicitly; with the flags off (the default)
every check is exactly as strict as before:

``broker_retention``
    The server compacts and deletes on its own schedule (Kafka: closed
    segments only, time measured by the broker's wall clock), so
    :meth:`Log.enforce_retention` changes nothing. The retention and
    compaction checks then assert that nothing changed, that the spec
    carries the settings, and (through :meth:`LogConformance.advance_log_start`,
    which the subclass implements) that reads below a moved log start fail
    like after retention.
``aborts_take_offsets``
    Records of an aborted transaction that already reached the server, and
    the abort marker, keep their offsets (Kafka): the end may move on an
    abort. The checks then assert that nothing of the abort is readable and
    that the next append gets the end.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from eventspine.errors import LogError, TopicNotFoundError
from eventspine.log.base import (
    Log,
    LogRecord,
    PartitionOffsets,
    StoredRecord,
    TopicSpec,
    fold_latest,
    read_columns,
)

__all__ = ["LogConformance"]


def records(n: int, *, start: int = 0, keys: int = 0, ts_ms: int = 1_000) -> list[LogRecord]:
    """Return ``n`` records ``v<i>`` (keyed ``k<i % keys>`` if ``keys``), ``ts_ms`` rising by 1."""
    return [
        LogRecord(b"k%d" % (i % keys) if keys else None, b"v%d" % i, ts_ms + i)
        for i in range(start, start + n)
    ]


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def _equal(actual: object, expected: object, what: str) -> None:
    _check(actual == expected, f"{what}: expected {expected!r}, got {actual!r}")


@contextmanager
def _raises(kind: type[Exception], pattern: str) -> Iterator[None]:
    try:
        yield
    except kind as exc:
        _check(
            re.search(pattern, str(exc)) is not None,
            f"{type(exc).__name__} message {str(exc)!r} does not match {pattern!r}",
        )
    else:
        raise AssertionError(f"expected {kind.__name__} matching {pattern!r}; nothing was raised")


def _values(got: list[StoredRecord]) -> list[bytes | None]:
    return [r.value for r in got]


def _offsets(got: list[StoredRecord]) -> list[int]:
    return [r.offset for r in got]


class LogConformance:
    """The checks every :class:`~eventspine.log.base.Log` backend passes.

    Override :meth:`open_log`; override :meth:`topic_name` if topics persist
    between tests (a shared Kafka cluster).
    """

    #: The server applies retention and compaction by itself (see the module docstring).
    broker_retention: bool = False
    #: Aborted transactions may leave offsets behind (see the module docstring).
    aborts_take_offsets: bool = False

    def open_log(self) -> Log:
        """Open the log under test (same storage on every call within one test)."""
        raise NotImplementedError("a LogConformance subclass implements open_log()")

    def advance_log_start(self, log: Log, topic: str, partition: int, offset: int) -> None:
        """Delete the records of ``topic[partition]`` below ``offset``, as retention would.

        Only called when :attr:`broker_retention` is set (Kafka: ``delete_records``).
        """
        raise NotImplementedError("a LogConformance subclass with broker_retention implements this")

    def topic_name(self, base: str) -> str:
        """Return the name to use for topic ``base`` in this test."""
        return base

    @contextmanager
    def _log(self, *specs: TopicSpec) -> Iterator[Log]:
        log = self.open_log()
        try:
            for spec in specs:
                log.create_topic(spec)
            yield log
        finally:
            log.close()

    def _read_all(self, log: Log, topic: str, partition: int = 0) -> list[StoredRecord]:
        """Read a partition from its log start to its end, as a consumer does."""
        info = log.topics()[topic].offsets[partition]
        out: list[StoredRecord] = []
        offset = info.log_start
        while offset < info.end:
            got = log.read(topic, partition, offset, 7)
            if not got:
                break
            out.extend(got)
            offset = got[-1].offset + 1
        return out

    # -- topics -----------------------------------------------------------------

    def test_create_topic_and_describe(self) -> None:
        """A new topic has empty partitions; creating it again with the same spec is a no-op."""
        name = self.topic_name("orders")
        spec = TopicSpec(name, partitions=3, retention=timedelta(hours=1), retention_bytes=10**6)
        with self._log(spec) as log:
            log.create_topic(spec)
            info = log.topics()[name]
            _equal(info.spec, spec, "described spec")
            _equal(info.offsets, tuple(PartitionOffsets(p, 0, 0) for p in range(3)), "offsets")
            with _raises(LogError, "partitions=3 \\(requested 4\\)"):
                log.create_topic(TopicSpec(name, partitions=4))
            with _raises(LogError, "compacted=False \\(requested True\\)"):
                log.create_topic(TopicSpec(name, partitions=3, compacted=True))

    def test_unknown_topic_and_partition_are_refused(self) -> None:
        """Unknown topics raise ``TopicNotFoundError``; a bad partition raises ``LogError``."""
        name = self.topic_name("known")
        with self._log(TopicSpec(name, partitions=2)) as log:
            missing = self.topic_name("missing")
            with _raises(TopicNotFoundError, "missing"):
                log.append(missing, 0, records(1))
            with _raises(TopicNotFoundError, "missing"):
                log.read(missing, 0, 0)
            with _raises(TopicNotFoundError, "missing"):
                log.committed("g", missing)
            with _raises(LogError, "no partition 2"):
                log.append(name, 2, records(1))
            with _raises(LogError, "no partition -1"):
                log.read(name, -1, 0)

    # -- append and read ----------------------------------------------------------

    def test_append_then_read_in_order(self) -> None:
        """Offsets are dense from 0; records come back equal, with their offsets."""
        name = self.topic_name("events")
        sent = [
            LogRecord(b"a", b"one", 5, (("trace", b"t1"), ("n", b""))),
            LogRecord(None, b"two", -3),
            LogRecord(b"", None, 2**62),
        ]
        with self._log(TopicSpec(name, partitions=2)) as log:
            _equal(log.append(name, 1, sent), 0, "first offset of the first append")
            _equal(log.append(name, 1, records(4)), 3, "first offset of the second append")
            _equal(log.append(name, 1, []), 7, "an empty append returns the end")
            got = log.read(name, 1, 0, 100)
            _equal(_offsets(got), list(range(7)), "offsets")
            _equal(
                [LogRecord(r.key, r.value, r.ts_ms, r.headers) for r in got[:3]], sent, "records"
            )
            _equal(got[0].headers, (("trace", b"t1"), ("n", b"")), "headers")
            _equal(log.read(name, 0, 0), [], "the other partition")
            _equal(log.topics()[name].offsets[1], PartitionOffsets(1, 0, 7), "offsets")

    def test_read_from_the_middle_of_a_batch_and_across_batches(self) -> None:
        """A read may start inside a batch and span batches, up to ``max_records``."""
        name = self.topic_name("middle")
        with self._log(TopicSpec(name)) as log:
            log.append(name, 0, records(10))
            log.append(name, 0, records(10, start=10))
            _equal(_offsets(log.read(name, 0, 3, 4)), [3, 4, 5, 6], "inside the first batch")
            _equal(_offsets(log.read(name, 0, 8, 5)), [8, 9, 10, 11, 12], "across batches")
            _equal(_values(log.read(name, 0, 19, 5)), [b"v19"], "the last record")
            _equal(len(log.read(name, 0, 0, 1000)), 20, "everything")

    def test_read_at_end_is_empty_and_past_end_is_refused(self) -> None:
        """Reading at ``end`` returns ``[]``; reading past it or a negative offset raises."""
        name = self.topic_name("ends")
        with self._log(TopicSpec(name)) as log:
            _equal(log.read(name, 0, 0), [], "reading an empty partition")
            log.append(name, 0, records(3))
            _equal(log.read(name, 0, 3), [], "reading at the end")
            with _raises(LogError, "beyond the end"):
                log.read(name, 0, 4)
            with _raises(LogError, "offset must be an int >= 0"):
                log.read(name, 0, -1)
            with _raises(LogError, "max_records"):
                log.read(name, 0, 0, 0)

    def test_invalid_records_are_refused_and_nothing_is_written(self) -> None:
        """A bad record fails the whole append with a message naming it."""
        name = self.topic_name("strict")
        with self._log(TopicSpec(name)) as log:
            bad = [*records(2), LogRecord("text", b"v", 1)]  # type: ignore[arg-type]
            with _raises(LogError, "record 2 .*key"):
                log.append(name, 0, bad)
            with _raises(LogError, "ts_ms"):
                log.append(name, 0, [LogRecord(b"k", b"v", 1 << 63)])
            with _raises(LogError, "ts_ms"):
                log.append(name, 0, [LogRecord(b"k", b"v", -(1 << 63) - 1)])
            with _raises(LogError, "record 1 .*value"):
                log.append(name, 0, [*records(1), LogRecord(b"k", "text", 1)])  # type: ignore[arg-type]
            with _raises(LogError, "record 1 .*not an eventspine.log.LogRecord"):
                log.append(name, 0, [*records(1), (b"k", b"v", 1)])  # type: ignore[list-item]
            _equal(log.topics()[name].offsets[0].end, 0, "end after refused appends")

    # -- transactions -------------------------------------------------------------

    def test_transaction_commits_everything_at_once(self) -> None:
        """Nothing is visible until the block exits; then all of it is."""
        out, state = self.topic_name("out"), self.topic_name("state")
        with self._log(TopicSpec(out, partitions=2), TopicSpec(state, compacted=True)) as log:
            log.append(out, 0, records(2))
            with log.transaction() as txn:
                txn.append(out, 0, records(3, start=2))
                txn.append(out, 1, records(1))
                txn.append(out, 0, records(1, start=5))
                txn.append(state, 0, records(2, keys=2))
                txn.commit_positions("app", out, {0: 2})
                _equal(log.read(out, 0, 0, 100), log.read(out, 0, 0, 2), "inside the block")
                _equal(log.committed("app", out), {}, "positions inside the block")
            _equal(_values(log.read(out, 0, 0, 100)), [b"v%d" % i for i in range(6)], "out[0]")
            _equal(_values(log.read(out, 1, 0)), [b"v0"], "out[1]")
            _equal(len(log.read(state, 0, 0)), 2, "state")
            _equal(log.committed("app", out), {0: 2}, "positions")

    def test_transaction_aborted_by_an_exception_leaves_nothing(self) -> None:
        """An exception in the block discards every append and position."""
        name = self.topic_name("aborted")
        with self._log(TopicSpec(name)) as log:
            try:
                with log.transaction() as txn:
                    txn.append(name, 0, records(5))
                    txn.commit_positions("app", name, {0: 5})
                    raise KeyError("boom")
            except KeyError:
                pass
            end = log.topics()[name].offsets[0].end
            if self.aborts_take_offsets:  # at most the 5 records and the abort marker
                _check(0 <= end <= 6, f"end after abort: expected 0 to 6, got {end}")
                _equal(log.read(name, 0, 0), [], "records after abort")
            else:
                _equal(end, 0, "end after abort")
            _equal(log.committed("app", name), {}, "positions after abort")
            _equal(log.append(name, 0, records(1)), end, "next offset after abort")

    def test_transaction_with_a_bad_record_commits_nothing(self) -> None:
        """If the commit fails, no partition of the transaction changes."""
        good, bad = self.topic_name("good"), self.topic_name("keyed")
        with self._log(TopicSpec(good), TopicSpec(bad, compacted=True)) as log:
            with _raises(LogError, "no key"), log.transaction() as txn:
                txn.append(good, 0, records(3))
                txn.append(bad, 0, records(2))  # unkeyed records in a compacted topic
                txn.commit_positions("app", good, {0: 1})
            _equal(log.read(good, 0, 0), [], "good topic after the failed commit")
            _equal(log.committed("app", good), {}, "positions after the failed commit")

    def test_transaction_is_used_once_and_checks_arguments(self) -> None:
        """Appends outside the block, a second use and bad arguments are refused."""
        name = self.topic_name("once")
        with self._log(TopicSpec(name)) as log:
            txn = log.transaction()
            with _raises(LogError, "not open"):
                txn.append(name, 0, records(1))
            with txn:
                with _raises(TopicNotFoundError, "nope"):
                    txn.append(self.topic_name("nope"), 0, records(1))
                with _raises(LogError, "no partition 1"):
                    txn.commit_positions("g", name, {1: 0})
                with _raises(LogError, ">= 0"):
                    txn.commit_positions("g", name, {0: -1})
            with _raises(LogError, "not open"):
                txn.append(name, 0, records(1))

    def test_committed_positions_per_group(self) -> None:
        """Later commits override earlier ones, per group and partition."""
        name = self.topic_name("positions")
        with self._log(TopicSpec(name, partitions=3)) as log:
            for positions in ({0: 5, 2: 1}, {2: 7}):
                with log.transaction() as txn:
                    txn.commit_positions("a", name, positions)
            with log.transaction() as txn:
                txn.commit_positions("b", name, {1: 3})
            _equal(log.committed("a", name), {0: 5, 2: 7}, "group a")
            _equal(log.committed("b", name), {1: 3}, "group b")
            _equal(log.committed("c", name), {}, "group c")

    def test_delete_topic_removes_records_and_positions(self) -> None:
        """A deleted topic is gone with its positions; a new one by that name starts empty."""
        name = self.topic_name("deleted")
        other = self.topic_name("kept")
        with self._log(TopicSpec(name), TopicSpec(other)) as log:
            log.append(name, 0, records(3))
            log.append(other, 0, records(2))
            with log.transaction() as txn:
                txn.commit_positions("g", name, {0: 3})
                txn.commit_positions("g", other, {0: 2})
            log.delete_topic(name)
            _check(name not in log.topics(), "the deleted topic is still listed")
            with _raises(TopicNotFoundError, name):
                log.read(name, 0, 0)
            with _raises(TopicNotFoundError, name):
                log.delete_topic(name)
            _equal(log.committed("g", other), {0: 2}, "positions of the other topic")
            _equal(len(log.read(other, 0, 0)), 2, "records of the other topic")
            log.create_topic(TopicSpec(name))
            _equal(log.read(name, 0, 0), [], "a new topic of the same name")
            _equal(log.committed("g", name), {}, "positions of the new topic")

    # -- retention and compaction -------------------------------------------------

    def test_time_retention_moves_the_log_start(self) -> None:
        """Batches older than ``retention`` before the newest record go; reads below fail."""
        name = self.topic_name("recent")
        with self._log(TopicSpec(name, retention=timedelta(seconds=10))) as log:
            log.append(name, 0, records(5, ts_ms=0))  # offsets 0-4, ts 0-4
            log.append(name, 0, records(5, ts_ms=6_000))  # offsets 5-9
            log.append(name, 0, records(5, ts_ms=15_000))  # offsets 10-14, newest ts 15_014
            log.enforce_retention()
            if self.broker_retention:
                self._retention_is_the_servers(log, name, 15, "retention", timedelta(seconds=10))
                self.advance_log_start(log, name, 0, 5)
            _equal(log.topics()[name].offsets[0], PartitionOffsets(0, 5, 15), "offsets")
            _equal(_offsets(log.read(name, 0, 5, 100)), list(range(5, 15)), "kept records")
            with _raises(LogError, "deleted by retention.*starts at offset 5"):
                log.read(name, 0, 4)
            _equal(log.append(name, 0, records(1, ts_ms=15_100)), 15, "offsets continue")

    def test_size_retention_keeps_the_newest_batches(self) -> None:
        """The oldest batches go while the partition is over ``retention_bytes``."""
        name = self.topic_name("small")
        value = b"x" * 1000
        with self._log(TopicSpec(name, retention_bytes=2500)) as log:
            for i in range(5):
                log.append(name, 0, [LogRecord(None, value, i)])
            log.enforce_retention()
            if self.broker_retention:
                self._retention_is_the_servers(log, name, 5, "retention_bytes", 2500)
                self.advance_log_start(log, name, 0, 3)
            _equal(log.topics()[name].offsets[0], PartitionOffsets(0, 3, 5), "offsets")
            _equal(_offsets(log.read(name, 0, 3)), [3, 4], "kept records")

    def test_compaction_keeps_the_latest_record_per_key_with_gaps(self) -> None:
        """Superseded records go; survivors keep their offsets; the ends do not move."""
        name = self.topic_name("latest")
        with self._log(TopicSpec(name, compacted=True)) as log:
            log.append(name, 0, records(6, keys=3))  # k0 k1 k2 k0 k1 k2 at offsets 0-5
            log.append(name, 0, [LogRecord(b"k1", b"new", 100)])  # offset 6
            log.enforce_retention()
            if self.broker_retention:
                self._retention_is_the_servers(log, name, 7, "compacted", True)
                _equal(_offsets(log.read(name, 0, 4)), [4, 5, 6], "a read from the middle")
                with _raises(LogError, "no key"):
                    log.append(name, 0, records(1))
                return
            got = log.read(name, 0, 0, 100)
            _equal([(r.offset, r.key, r.value) for r in got], [
                (3, b"k0", b"v3"), (5, b"k2", b"v5"), (6, b"k1", b"new")
            ], "survivors")  # fmt: skip
            _equal(log.topics()[name].offsets[0], PartitionOffsets(0, 0, 7), "offsets")
            _equal(_offsets(log.read(name, 0, 4)), [5, 6], "a read from a gap")
            with _raises(LogError, "no key"):
                log.append(name, 0, records(1))

    def test_tombstones_delete_keys_and_then_vanish(self) -> None:
        """A tombstone hides its key; after ``tombstone_retention`` it goes too."""
        name = self.topic_name("deletes")
        spec = TopicSpec(name, compacted=True, tombstone_retention=timedelta(seconds=1))
        with self._log(spec) as log:
            log.append(name, 0, records(2, keys=2))  # k0, k1
            log.append(name, 0, [LogRecord(b"k0", None, 2_000)])  # tombstone at offset 2
            log.enforce_retention()
            if self.broker_retention:
                self._retention_is_the_servers(
                    log, name, 3, "tombstone_retention", timedelta(seconds=1)
                )
                _equal(log.read(name, 0, 2)[0].value, None, "the tombstone reads as value None")
                return
            kept = [(r.offset, r.key, r.value) for r in log.read(name, 0, 0)]
            _equal(kept, [(1, b"k1", b"v1"), (2, b"k0", None)], "after the first compaction")
            log.append(name, 0, [LogRecord(b"k1", b"v9", 2_500)])  # newest ts 2_500
            log.enforce_retention()
            _equal([r.offset for r in log.read(name, 0, 0)], [2, 3], "tombstone still young")
            log.append(name, 0, [LogRecord(b"k2", b"v", 3_500)])  # tombstone now 1.5 s old
            log.enforce_retention()
            _equal([r.offset for r in log.read(name, 0, 0)], [3, 4], "tombstone gone")

    def test_fold_latest_gives_the_latest_value_per_key(self) -> None:
        """``fold_latest`` (what a state restore reads): last value per key, committed only."""
        name = self.topic_name("fold")
        with self._log(TopicSpec(name, compacted=True)) as log:
            log.append(name, 0, records(4, keys=2))  # k0 k1 k0 k1: v0 v1 v2 v3
            try:
                with log.transaction() as txn:
                    txn.append(name, 0, [LogRecord(b"k0", b"aborted", 2_000)])
                    raise KeyError("boom")
            except KeyError:
                pass
            with log.transaction() as txn:
                txn.append(name, 0, [LogRecord(b"k1", None, 2_000), LogRecord(b"k2", b"v", 2_000)])
            end = log.topics()[name].offsets[0].end
            latest: dict[bytes, bytes | None] = {}
            steps = list(fold_latest(log, name, 0, 0, end, latest))
            _equal(latest, {b"k0": b"v2", b"k1": None, b"k2": b"v"}, "folded from the start")
            folded = sum(n for _, n in steps)
            if self.broker_retention:  # the server may have compacted k0: v0, k1: v1 and v3
                _check(3 <= folded <= 6, f"records folded: expected 3 to 6, got {folded}")
            else:
                _equal(folded, 6, "records folded")
            _check(steps[-1][0] <= end, f"next offset {steps[-1][0]} past the end {end}")
            middle: dict[bytes, bytes | None] = {b"k9": b"kept"}
            list(fold_latest(log, name, 0, 3, end, middle))
            _equal(middle, {b"k9": b"kept", b"k1": None, b"k2": b"v"}, "folded from offset 3")
            _equal(list(fold_latest(log, name, 0, end, end, {})), [], "a fold at the end")

    def test_read_columns_match_read(self) -> None:
        """``read_columns`` (what topic sources read) holds what ``read`` returns, as columns."""
        name = self.topic_name("columns")
        with self._log(TopicSpec(name)) as log:
            log.append(
                name,
                0,
                [
                    LogRecord(b"k", b"a", 0),  # ts 0 (Kafka keeps it in a header)
                    LogRecord(None, None, -5),  # a tombstone, a negative ts
                    LogRecord(b"k", b"c", 7, (("h", b"x"),)),
                ],
            )
            try:
                with log.transaction() as txn:
                    txn.append(name, 0, [LogRecord(None, b"aborted", 8)])
                    raise KeyError("boom")
            except KeyError:
                pass
            log.append(name, 0, [LogRecord(None, b"e", 9)])
            end = log.topics()[name].offsets[0].end
            for start, limit in ((0, 100), (0, 2), (2, 100)):
                got = read_columns(log, name, 0, start, limit)
                want = log.read(name, 0, start, limit)
                what = f"read_columns from {start}, at most {limit}"
                _equal(len(got), len(want), f"{what}: len()")
                _equal(got.offsets, _offsets(want), f"{what}: offsets")
                _equal(got.values, _values(want), f"{what}: values")
                _equal(got.ts_ms, [r.ts_ms for r in want], f"{what}: ts_ms")
            _equal(len(read_columns(log, name, 0, end, 10)), 0, "read_columns at the end")
            with _raises(LogError, r"offset"):
                read_columns(log, name, 0, end + 1, 10)

    def _retention_is_the_servers(
        self, log: Log, topic: str, end: int, setting: str, value: object
    ) -> None:
        """With ``broker_retention``: the spec carries the setting, and nothing was deleted."""
        info = log.topics()[topic]
        _equal(getattr(info.spec, setting), value, f"described {setting}")
        _equal(info.offsets[0], PartitionOffsets(0, 0, end), "offsets after enforce_retention")
        _equal(_offsets(self._read_all(log, topic)), list(range(end)), "records kept for now")

    # -- durability and lifecycle --------------------------------------------------

    def test_reopen_keeps_everything_committed(self) -> None:
        """After close and reopen, topics, records, offsets and positions are intact."""
        name = self.topic_name("durable")
        with self._log(TopicSpec(name, partitions=2)) as log:
            log.append(name, 0, records(3))
            with log.transaction() as txn:
                txn.append(name, 1, records(2))
                txn.commit_positions("app", name, {0: 3, 1: 2})
            try:
                with log.transaction() as txn:
                    txn.append(name, 1, records(9))
                    raise RuntimeError("abort")
            except RuntimeError:
                pass
            before = log.topics()
        with self._log() as log:
            _equal(log.topics(), before, "topics after reopen")
            _equal(_values(log.read(name, 0, 0)), [b"v0", b"v1", b"v2"], "records after reopen")
            _equal(log.committed("app", name), {0: 3, 1: 2}, "positions after reopen")
            expected = 2
            if self.aborts_take_offsets:  # plus the commit marker and what the abort left
                expected = before[name].offsets[1].end
                _check(expected >= 3, f"end of partition 1: expected >= 3, got {expected}")
            _equal(log.append(name, 1, records(1)), expected, "next offset after reopen")

    def test_checkpoint_of_outputs_state_and_positions(self) -> None:
        """The runtime's pattern: outputs, state changelog and positions in one transaction."""
        src, out, changelog = (self.topic_name(n) for n in ("src", "out", "counts-changelog"))
        specs = (TopicSpec(src), TopicSpec(out), TopicSpec(changelog, compacted=True))
        with self._log(*specs) as log:
            log.append(src, 0, records(4, keys=2))
            for position, fail in ((2, False), (4, True), (4, False)):
                try:
                    with log.transaction() as txn:
                        txn.append(out, 0, records(1, start=position))
                        txn.append(changelog, 0, [LogRecord(b"k0", b"%d" % position, position)])
                        txn.commit_positions("app", src, {0: position})
                        if fail:
                            raise RuntimeError("crash before commit")
                except RuntimeError:
                    pass
            log.enforce_retention()
        with self._log() as log:
            state = {r.key: r.value for r in self._read_all(log, changelog)}
            _equal(state, {b"k0": b"4"}, "restored state")
            _equal(_values(log.read(out, 0, 0)), [b"v2", b"v4"], "outputs")
            _equal(log.committed("app", src), {0: 4}, "positions")

    def test_closed_log_refuses_calls(self) -> None:
        """Every call after ``close`` raises ``LogError``; closing twice is fine."""
        name = self.topic_name("closing")
        log = self.open_log()
        log.create_topic(TopicSpec(name))
        log.close()
        log.close()
        with _raises(LogError, "closed"):
            log.append(name, 0, records(1))
        with _raises(LogError, "closed"):
            log.topics()
