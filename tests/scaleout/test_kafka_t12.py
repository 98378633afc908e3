"""T12 and T7 on Kafka: recovery edge cases, and a rebalance while a worker restores.

Real ``eventspine run`` workers of ``tests/scaleout/pipeline.py`` on the suite's broker;
every run ends judged against the oracle (``judge``, ``judge_windows``):

* restore from changelogs holding exactly 0 and exactly 1 record; every EOS changelog
  ends with a transaction marker after its last record, and the restore must end
  (the reader stops at the partition's end, not at "last offset seen + 1");
* restore from a changelog the broker's cleaner compacted (gaps in the offsets);
* a committed source position below the log start (``delete_records`` after a kill): the
  documented policy (``eventspine.connectors.topics``) is to continue at the log start
  with a warning; the output is the oracle's of the records still in the log;
* a crash in the first epoch (inside the first checkpoint's transaction);
* T7: a worker joins while another restores a large state, and a restoring worker is
  killed while another joins.

Workers' log URL shortens ``transaction_timeout_ms``: a killed worker's open transaction
holds back the last stable offset until the broker aborts it.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from eventspine.connectors.topics import key_bytes, partition_for
from eventspine.log import Log
from eventspine.log.base import LogRecord, TopicSpec, read_range
from eventspine.log.kafka import KafkaLog
from eventspine.runtime.checkpoint import names, read_last_meta

from .cluster import T0, Workers, judge, judge_windows, make_input, read_topic, wait_output
from .pipeline import expected

pytestmark = pytest.mark.kafka

URL_OPTIONS = "?transaction_timeout_ms=6000&request_timeout_ms=5000"
STATEFUL = ("stats", "counts")
#: A restore that makes no progress for this long fails the test (T12 watchdog).
RESTORE_BOUND_S = 60.0


class Run:
    """One pipeline's topics and workers (``SCALE_APP`` = ``app-<tag>``)."""

    def __init__(self, log: Log, bootstrap: str, tmp: Path, slow_ms: float = 0) -> None:
        self.tag = uuid.uuid4().hex[:8]
        self.log = log
        self.src, self.out, self.app = f"in-{self.tag}", f"out-{self.tag}", f"app-{self.tag}"
        env = {
            "SCALE_IN": self.src,
            "SCALE_OUT": self.out,
            "SCALE_APP": self.app,
            "SCALE_SLOW_MS": str(slow_ms),
            "EVENTSPINE_FAILPOINTS_LOG": str(tmp / "hits.txt"),
        }
        self.workers = Workers(f"kafka://{bootstrap}{URL_OPTIONS}", env, tmp)
        self.tmp = tmp

    def start(self, failpoints: str = "", slow_ms: float | None = None, *extra: str) -> Any:
        env = self.workers.env
        env["EVENTSPINE_FAILPOINTS"] = failpoints
        if slow_ms is not None:
            env["SCALE_SLOW_MS"] = str(slow_ms)
        return self.workers.start(*extra)

    def kill(self, proc: Any) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def err(self, index: int) -> str:
        return (self.tmp / f"worker{index}.err").read_text(errors="replace")

    def changelog(self, step: str) -> str:
        return names.changelog(self.app, step)

    def finish(self, records: list[dict[str, Any]]) -> None:
        """Wait for the whole oracle output, stop the live workers, judge."""
        wait_output(self.log, self.out, len(expected(records)), self.workers, timeout=120)
        time.sleep(1.0)  # a duplicate would show up late: give it time to be committed
        for proc in self.workers.procs:
            if proc.poll() is None:
                assert self.workers.stop(proc) in (0, 143), self.workers.stderr()
        judge(records, read_topic(self.log, self.out))
        judge_windows(records, read_topic(self.log, f"{self.out}.windows"))
        assert "Traceback" not in self.workers.stderr(), self.workers.stderr()


def _append(log: Log, topic: str, recs: list[dict[str, Any]], partitions: int) -> None:
    """Append oracle records to ``topic``, keyed like ``make_input`` does."""
    by_part: dict[int, list[LogRecord]] = {}
    for rec in recs:
        kb = key_bytes(rec["key"])
        assert kb is not None
        by_part.setdefault(partition_for(kb, partitions), []).append(
            LogRecord(kb, json.dumps(rec).encode(), rec["ts"])
        )
    for p, batch in by_part.items():
        log.append(topic, p, batch)


def _records(key: str, seqs: range, t: int) -> list[dict[str, Any]]:
    return [{"key": key, "seq": s, "value": s * 7 % 13, "ts": T0 + t + s * 500} for s in seqs]


def _tail(log: Log, topic: str, partition: int) -> tuple[int, int | None, int]:
    """``(committed records, offset of the last one, end)`` of one partition."""
    po = log.topics()[topic].offsets[partition]
    count, last = 0, None
    for batch in read_range(log, topic, partition, po.log_start, po.end):
        count += len(batch)
        last = batch[-1].offset
    return count, last, po.end


def _started(text: str) -> list[float]:
    """The restore times (s) of the ``task N started (checkpoint C) in T s`` lines."""
    out = []
    for line in text.splitlines():
        if "started (checkpoint" in line:
            out.append(float(line.rsplit(" in ", 1)[1].removesuffix(" s")))
    return out


def _group_state(bootstrap: str, group: str) -> str:
    """The consumer group's state (``STABLE``, ``PREPARING_REBALANCING``, ...)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    description = admin.describe_consumer_groups([group])[group].result(timeout=10)
    return str(description.state.name)


def _wait_for(what: str, check: Any, timeout: float, run: Run) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{what} did not happen in {timeout:.0f} s\n{run.workers.stderr()}"
            )
        time.sleep(0.1)


# -- T12 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [0, 1])
def test_restore_from_0_or_1_changelog_records_ending_in_a_marker(
    kafka_log: Log, kafka_bootstrap: str, tmp_path: Path, count: int
) -> None:
    """A checkpoint whose changelogs hold ``count`` records; kill; restart; more input."""
    run = Run(kafka_log, kafka_bootstrap, tmp_path)
    kafka_log.create_topic(TopicSpec(run.src, 1))
    first = _records("k0", range(1, count + 1), 0)
    _append(kafka_log, run.src, first, 1)
    try:
        # One task: ckpt.after_publish is hit once per checkpoint; the 3rd is past the input.
        crashed = run.start("ckpt.after_publish=crash@3")
        assert crashed.wait(60) == -signal.SIGKILL, run.workers.stderr()
        meta = read_last_meta(kafka_log, run.app, 0)
        assert meta is not None, "no checkpoint committed"
        assert meta.positions["input"] == {f"{run.src}/0": count}, meta.positions
        records, _, _ = _tail(kafka_log, run.changelog("stats"), 0)
        assert records == count, f"stats: {records} changelog records, want {count}"
        for step in STATEFUL:  # the window step also keeps a metadata record
            _, last, end = _tail(kafka_log, run.changelog(step), 0)
            if last is not None:
                # The commit marker of the record's transaction follows it: the restore
                # must stop at the partition's end, never wait for a record at end - 1.
                assert end > last + 1, f"{step}: no transaction marker after offset {last}"
        more = _records("k0", range(count + 1, count + 6), 0)
        _append(kafka_log, run.src, more, 1)
        run.start()
        run.workers.wait_log(1, "started (checkpoint", timeout=RESTORE_BOUND_S)
        assert f"task 0 started (checkpoint {meta.id})" in run.err(1), run.err(1)
        run.finish(first + more)
    finally:
        run.workers.close()


def test_restore_from_a_compacted_changelog(
    kafka_log: Log, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The broker's cleaner compacts the changelogs mid-run; a kill; the restore == oracle.

    The changelogs are created first, by a log whose ``topic.*`` options roll segments
    every 500 ms and make them cleanable at once, so the cleaner (which runs every
    ``log.cleaner.backoff.ms``, 15 s by default) removes superseded states during the run.
    """
    run = Run(kafka_log, kafka_bootstrap, tmp_path, slow_ms=0.5)
    partitions = 2
    recs = make_input(kafka_log, run.src, records=60_000, keys=6, partitions=partitions)
    aggressive = {
        "segment.ms": "500",
        "min.cleanable.dirty.ratio": "0.01",
        "min.compaction.lag.ms": "0",
    }
    with KafkaLog(kafka_bootstrap, topic_config=aggressive) as maker:
        for step in STATEFUL:
            maker.create_topic(TopicSpec(run.changelog(step), partitions, compacted=True))
    try:
        first = run.start()
        # Offsets of the changelogs (created empty here: log start 0, which compaction never
        # moves) are state records and one transaction marker per checkpoint; every
        # checkpoint writes at least one record per partition (the stats step rewrites its
        # keys each time), so at least half the offsets below `ends` were records. Wait
        # for enough checkpoints first: the cleaner may compact some of them meanwhile.
        stats = run.changelog("stats")

        def ends_now() -> dict[int, int]:
            return {po.partition: po.end for po in kafka_log.topics()[stats].offsets}

        deadline = time.monotonic() + 60
        while sum((ends := ends_now()).values()) < 120:
            assert first.poll() is None, "the run ended before 30 checkpoints: slow it down"
            assert time.monotonic() < deadline, f"too few checkpoints in 60 s: {ends}"
            time.sleep(0.5)
        span = sum(ends.values())

        def count() -> int:
            starts = kafka_log.topics()[stats].offsets
            return sum(
                len(b)
                for p, end in ends.items()
                for b in read_range(kafka_log, stats, p, starts[p].log_start, end)
            )

        # Uncompacted, the range holds at least span / 2 records: wait for half of that.
        deadline = time.monotonic() + 90
        while (now := count()) * 4 > span:
            assert first.poll() is None, "the run ended before the cleaner ran: slow it down"
            if time.monotonic() > deadline:
                pytest.fail(f"the log cleaner did not compact the changelog in 90 s: {now}/{span}")
            time.sleep(1.0)
        wait_output(kafka_log, run.out, len(read_topic(kafka_log, run.out)) + 200, run.workers, 60)
        run.kill(first)
        run.start(slow_ms=0)
        run.workers.wait_log(1, "started (checkpoint", timeout=RESTORE_BOUND_S)
        assert "started (checkpoint None)" not in run.err(1), run.err(1)
        run.finish(recs)
    finally:
        run.workers.close()


def test_committed_position_below_the_log_start(
    kafka_log: Log, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Records past the checkpoint's positions are deleted: continue at the log start.

    The documented policy (``eventspine.connectors.topics``): a position that retention
    deleted moves to the log start with a warning (``auto.offset.reset=earliest``). The
    output is then the oracle's of the records that are still in the log (the keys that
    lost records get a ``seq_gap`` alert, as the oracle says).
    """
    run = Run(kafka_log, kafka_bootstrap, tmp_path, slow_ms=3)
    partitions = 2
    recs = make_input(kafka_log, run.src, records=3000, keys=20, partitions=partitions)
    try:
        first = run.start()
        wait_output(kafka_log, run.out, 600, run.workers, timeout=60)
        run.kill(first)
        time.sleep(7)  # the killed worker's open transaction is aborted (6 s timeout)
        metas = [read_last_meta(kafka_log, run.app, p) for p in range(partitions)]
        assert all(m is not None for m in metas), metas
        positions = {
            int(name.rsplit("/", 1)[1]): off
            for m in metas
            if m is not None
            for name, off in m.positions["input"].items()
        }
        assert kafka_log.committed(run.app, run.src) == positions
        gone = 150
        new_start = {p: positions[p] + gone for p in range(partitions)}
        admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
        futures = admin.delete_records(
            [TopicPartition(run.src, p, o) for p, o in new_start.items()]
        )
        for future in futures.values():
            future.result(timeout=30)
        starts = {po.partition: po.log_start for po in kafka_log.topics()[run.src].offsets}
        assert starts == new_start, starts
        # The records still in the log: below each partition's position, and from its start.
        offsets: dict[int, int] = {}
        kept = []
        for rec in recs:
            kb = key_bytes(rec["key"])
            assert kb is not None
            p = partition_for(kb, partitions)
            offset = offsets[p] = offsets.get(p, -1) + 1
            if offset < positions[p] or offset >= new_start[p]:
                kept.append(rec)
        assert len(kept) == len(recs) - gone * partitions
        run.start(slow_ms=0)
        run.finish(kept)
        warned = run.err(1)
        for p in range(partitions):
            assert (
                f"{run.src}/{p}: offsets {positions[p]} to {new_start[p] - 1} were deleted "
                f"by retention" in warned
            ), warned
        assert any(r.get("alert") == "seq_gap" for r in read_topic(kafka_log, run.out))
    finally:
        run.workers.close()


def test_crash_in_the_first_epoch(kafka_log: Log, kafka_bootstrap: str, tmp_path: Path) -> None:
    """SIGKILL inside the first checkpoint's transaction: nothing committed; restart == oracle."""
    run = Run(kafka_log, kafka_bootstrap, tmp_path, slow_ms=1)
    recs = make_input(kafka_log, run.src, records=1500, keys=20, partitions=2)
    try:
        crashed = run.start("ckpt.after_state_write=crash@1")
        assert crashed.wait(60) == -signal.SIGKILL, run.workers.stderr()
        assert read_last_meta(kafka_log, run.app, 0) is None
        assert read_last_meta(kafka_log, run.app, 1) is None
        assert read_topic(kafka_log, run.out) == []
        run.start(slow_ms=0)
        run.finish(recs)
        assert "started (checkpoint None)" in run.err(1), run.err(1)
    finally:
        run.workers.close()


# -- T7: rebalance during restore -------------------------------------------------------


def _big_state(run: Run, partitions: int) -> tuple[list[dict[str, Any]], Any]:
    """Input with 20,000 keys; the first worker runs until most of it is in its state."""
    recs = make_input(run.log, run.src, records=30_000, keys=20_000, partitions=partitions)
    first = run.start()
    wait_output(run.log, run.out, 15_000, run.workers, timeout=90)
    return recs, first


def test_worker_joins_while_another_restores(
    kafka_log: Log, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Worker 2 restores a large state (slowed by failpoints); worker 3 joins meanwhile."""
    run = Run(kafka_log, kafka_bootstrap, tmp_path, slow_ms=0.2)
    recs, first = _big_state(run, partitions=4)
    run.kill(first)
    slow_restore = "recovery.before_restore=sleep:9000@1,recovery.mid_replay=sleep:5000@3"
    run.start(slow_restore, slow_ms=0)
    try:
        run.workers.wait_log(1, "assigned task(s)", timeout=30)
        run.start(slow_ms=0)
        # Worker 3's JoinGroup puts the group into a rebalance, which waits for worker 2
        # to finish its current restore: it serves the group between two restores, so it
        # hands tasks it has not restored yet to worker 3 instead of restoring all four.
        run.workers.wait_log(1, "revoking task(s)", timeout=60)
        run.workers.wait_log(2, "assigned task(s)", timeout=60)
        text = run.err(1)
        before = text.partition("revoking task(s)")[0]
        assert len(_started(before)) < 4, f"the restores ended before the join\n{text}"
        assert "started (checkpoint None)" not in text, text
        run.finish(recs)
    finally:
        run.workers.close()


@pytest.mark.slow
def test_restoring_worker_killed_while_another_joins(
    kafka_log: Log, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Worker 2 is killed mid-restore right after worker 3 joined; worker 3 restores all."""
    run = Run(kafka_log, kafka_bootstrap, tmp_path, slow_ms=0.2)
    recs, first = _big_state(run, partitions=4)
    run.kill(first)
    restoring = run.start("recovery.mid_replay=sleep:15000@2", slow_ms=0)
    try:
        run.workers.wait_log(1, "assigned task(s)", timeout=30)
        run.start(slow_ms=0)
        _wait_for(
            "a rebalance",
            lambda: _group_state(kafka_bootstrap, run.app) == "PREPARING_REBALANCING",
            40,
            run,
        )
        assert restoring.poll() is None
        assert not _started(run.err(1)), "the restore ended before the kill: slow it down"
        run.kill(restoring)
        run.finish(recs)
        text = run.err(2)
        assert "started (checkpoint None)" not in text, text
        assert len(_started(text)) == 4, text
    finally:
        run.workers.close()


def test_two_takeovers_within_the_transaction_timeout(
    kafka_log: Log, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Worker 1 dies inside a transaction; worker 2 takes over, commits, dies; worker 3.

    Worker 1's open transaction holds the last stable offset of the task's partitions
    until the broker aborts it (``transaction_timeout_ms``, 20 s here). Worker 2 restores
    correctly (from what is below it), commits checkpoint ``n + 1`` and dies right after
    the commit. Worker 3 takes over before the abort: it must resume from ``n + 1``.
    """
    run = Run(kafka_log, kafka_bootstrap, tmp_path, slow_ms=2)
    run.workers.url = f"kafka://{kafka_bootstrap}?transaction_timeout_ms=20000"
    recs = make_input(kafka_log, run.src, records=3000, keys=20, partitions=1)
    try:
        first = run.start("kafka.txn.after_flush=crash@4")  # records acknowledged, open
        assert first.wait(60) == -signal.SIGKILL, run.workers.stderr()
        second = run.start("kafka.txn.after_commit=crash@1")  # committed, then dead
        assert second.wait(60) == -signal.SIGKILL, run.workers.stderr()
        run.start(slow_ms=0)
        run.workers.wait_log(2, "started (checkpoint", timeout=RESTORE_BOUND_S)
        resumed = int(run.err(2).split("started (checkpoint ")[1].split(")")[0])
        time.sleep(25)  # the broker aborts worker 1's transaction: everything is visible
        meta = read_last_meta(kafka_log, run.app, 0)
        assert meta is not None
        run.finish(recs)
        assert resumed >= 4, f"worker 3 resumed from checkpoint {resumed}, not 4"
    finally:
        run.workers.close()
