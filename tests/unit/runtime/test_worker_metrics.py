"""Worker metrics: per-task step metrics merged, rebalances, restores, checkpoints, lag.

The bookkeeping first (plain objects), then a real :class:`Worker` on an SQLite
log in this process: two tasks, a stateful step, a restart that restores state,
and the Prometheus text the collector renders from it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

import eventspine as es
from eventspine.cli.progress import worker_text
from eventspine.connectors.topics import key_bytes, partition_for
from eventspine.log import Log, open_log
from eventspine.log.base import LogRecord, TopicInfo, TopicSpec
from eventspine.runtime.checkpoint import CheckpointPolicy
from eventspine.runtime.executor import RunOptions
from eventspine.runtime.metrics import Inspector, TaskMetrics
from eventspine.runtime.prometheus import InspectorCollector
from eventspine.runtime.worker import Worker
from eventspine.runtime.worker_metrics import RestoreProgress, WorkerMetrics
from eventspine.timeutil import MAX_TS_MS, MIN_TS_MS

pytestmark = pytest.mark.timeout(120)


# -- bookkeeping -----------------------------------------------------------------------------
def test_task_metrics_sum_counters_and_keys_and_take_the_smallest_watermark() -> None:
    tm = TaskMetrics({"src": "source", "w": "window"})
    a, b = tm.attach(0), tm.attach(1)
    a["w"].records_in, b["w"].records_in = 10, 5
    a["w"].state_keys, b["w"].state_keys = 3, 4
    a["w"].watermark_ms, b["w"].watermark_ms = 2_000, 1_000
    a["w"].latency.observe(0.001)
    b["w"].latency.observe(0.002)
    a["w"].count_side("late", 2)
    m = tm.merged("w")
    assert (m.records_in, m.state_keys, m.watermark_ms) == (15, 7, 1_000)
    assert m.latency.count == 2
    assert m.side_out == {"late": 2}
    # A task without a watermark yet does not hold the others back.
    b["w"].watermark_ms = MIN_TS_MS
    assert tm.merged("w").watermark_ms == 2_000
    # A task that moves away keeps its counts (counters never go back), not its gauges.
    tm.detach(0)
    m = tm.merged("w")
    assert (m.records_in, m.state_keys, m.watermark_ms, m.latency.count) == (15, 4, MIN_TS_MS, 2)
    # Attached again (a failed start is never detached): the old counts are kept too.
    c = tm.attach(1)
    c["w"].records_in = 1
    assert tm.merged("w").records_in == 16
    assert tm.tasks == [1]
    c["w"].watermark_ms = MAX_TS_MS
    assert tm.merged("w").watermark_ms == MAX_TS_MS
    insp = Inspector("p", tasks=tm)
    assert insp.step_names == ["src", "w"]
    assert insp.snapshot()["w"].records_in == 16


def _offsets(name: str, *bounds: tuple[int, int]) -> TopicInfo:
    from eventspine.log.base import PartitionOffsets

    return TopicInfo(
        TopicSpec(name, len(bounds), compacted=True),
        tuple(PartitionOffsets(p, s, e) for p, (s, e) in enumerate(bounds)),
    )


def test_restore_progress_counts_offsets_left_and_records_replayed() -> None:
    progress = RestoreProgress()
    topics = {"a": _offsets("a", (0, 10), (5, 105)), "b": _offsets("b", (0, 0), (0, 50))}
    progress.plan(topics, 1, ["a", "b", "missing"])
    assert (progress.expected, progress.remaining) == (150, 150)
    progress.reached("a", 5, 0)
    progress.reached("a", 65, 40)  # compaction gaps: fewer records than offsets
    assert (progress.records, progress.remaining) == (40, 90)
    progress.reached("a", 105, 30)
    progress.reached("b", 50, 50)
    assert (progress.records, progress.remaining) == (120, 0)


def test_worker_metrics_count_rebalances_restores_and_checkpoints() -> None:
    wm = WorkerMetrics()
    wm.rebalanced("assign", [0, 1, 2])
    wm.rebalanced("assign", [])  # nothing changed: not a rebalance of this worker
    wm.rebalanced("revoke", [2])
    wm.rebalanced("lost", [1])
    progress = wm.restore_started(0)
    progress.plan({"c": _offsets("c", (0, 200))}, 0, ["c"])
    progress.reached("c", 50, 50)
    snap = wm.snapshot()
    assert (snap.tasks_owned, snap.restoring, snap.restore_records) == (1, 1, 50)
    assert (snap.restore_remaining, snap.restore_fraction) == (150, 0.25)
    assert dict(snap.rebalances) == {"assign": 1, "revoke": 1, "lost": 1}
    assert dict(snap.task_moves) == {"assign": 3, "revoke": 1, "lost": 1}
    assert snap.last_rebalance_s is not None
    assert abs(snap.last_rebalance_s - time.time()) < 60
    progress.reached("c", 200, 150)
    wm.restore_ended(0)
    wm.restore_ended(0)  # idempotent
    wm.checkpointed(0.25)
    wm.checkpoint_failed()
    snap = wm.snapshot()
    assert (snap.restoring, snap.restores, snap.restore_records, snap.restore_fraction) == (
        0,
        1,
        200,
        None,
    )
    assert snap.last_restore_s is not None
    assert (snap.checkpoints, snap.checkpoint_failures, snap.last_checkpoint_s) == (1, 1, 0.25)
    assert wm.lag() == []  # no task runs


# -- a real worker ---------------------------------------------------------------------------
class Count:
    """Counts records per key (state: one entry per key); sleeps ``slow_s`` per record."""

    def __init__(self, slow_s: float) -> None:
        self.slow_s = slow_s

    def on_record(self, record: dict[str, Any], ctx: es.ProcessContext) -> None:
        st = ctx.state
        st["n"] = st.get("n", 0) + 1
        ctx.emit({"key": ctx.key, "n": st["n"]})
        if self.slow_s:
            time.sleep(self.slow_s)

    def on_timer(self, ctx: es.ProcessContext) -> None:
        """No timers."""


def _pipeline(slow_s: float) -> es.Pipeline:
    p = es.Pipeline("wm")
    p.source(
        "input",
        es.topic("in", key="key"),  # produced keyed by key (no repartition)
        timestamps=es.EventTime("ts", max_delay=timedelta(0), idle_timeout=None),
    ).key_by("by_key", "key").process("count", Count(slow_s)).sink(
        "out", es.topic("out", key="key")
    )
    return p


T0 = 1_700_000_000_000
KEYS = 10


def _fill(log: Log, start: int, n: int) -> dict[int, int]:
    """Append ``n`` records to topic ``in`` (2 partitions, keyed); return each's max ts."""
    log.create_topic(TopicSpec("in", 2))
    by_part: dict[int, list[LogRecord]] = {}
    for i in range(start, start + n):
        key = f"k{i % KEYS}"
        kb = key_bytes(key)
        assert kb is not None
        by_part.setdefault(partition_for(kb, 2), []).append(
            LogRecord(kb, json.dumps({"key": key, "ts": T0 + i}).encode(), T0 + i)
        )
    for p, recs in by_part.items():
        log.append("in", p, recs)
    return {p: recs[-1].ts_ms for p, recs in by_part.items()}


class Running:
    """A real worker running in a thread of this process."""

    def __init__(self, log: Log, slow_s: float = 0.0) -> None:
        opts = RunOptions(log=log, checkpoint=CheckpointPolicy(interval=timedelta(milliseconds=50)))
        self.worker = Worker(_pipeline(slow_s), options=opts)
        self.thread = threading.Thread(target=self.worker.run, daemon=True)
        self.thread.start()

    def wait(self, what: str, cond: Any, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            assert self.thread.is_alive(), f"the worker died before {what}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.02)

    def stop(self) -> None:
        self.worker.stop()
        self.thread.join(30)
        assert not self.thread.is_alive()


@pytest.fixture
def log(tmp_path: Path) -> Iterator[Log]:
    lg = open_log(f"sqlite:///{tmp_path / 'log.db'}")
    yield lg
    lg.close()


def _scrape(insp: Inspector) -> dict[str, float]:
    """The collector's Prometheus text, parsed: ``name{label=value,...}`` (no pipeline)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(InspectorCollector(insp))
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in fam.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()) if k != "pipeline")
            out[f"{s.name}{{{labels}}}"] = s.value
    return out


def test_a_worker_reports_lag_restores_checkpoints_and_merged_step_gauges(
    log: Log, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("eventspine.runtime.worker_metrics.LAG_REFRESH_S", 0.05)
    max_ts = _fill(log, 0, 400)
    assert max_ts[0] != max_ts[1]
    run = Running(log)
    stats, insp = run.worker.stats, run.worker.inspector
    try:
        run.wait("the output", lambda: insp.metrics("out").records_in == 400)
        run.wait("lag 0", lambda: len(stats.lag()) == 2 and stats.total_lag() == 0)
        # Each task has its own gauges: the watermark is the smaller, the keys the sum.
        assert insp.metrics("input").watermark_ms == min(max_ts.values())
        assert insp.metrics("count").state_keys == KEYS
        run.wait("a checkpoint", lambda: stats.snapshot().checkpoints >= 1)
        text = _scrape(insp)
        assert text["eventspine_state_keys{step=count}"] == KEYS
        assert text["eventspine_watermark_ms{step=input}"] == min(max_ts.values())
        assert text["eventspine_restores_total{}"] == 2
        assert text["eventspine_restore_records_total{}"] == 0  # a fresh start: no state
    finally:
        run.stop()
    # A second run restores the state and has 2,000 new records to catch up with, slowly.
    _fill(log, 400, 2000)
    run = Running(log, slow_s=0.001)
    stats, insp = run.worker.stats, run.worker.inspector
    try:
        run.wait("lag", lambda: stats.total_lag() > 0)
        assert "lag " in worker_text(insp)
        # (the lag counts records not read yet: 0 while the last batch is still processed)
        run.wait("the output", lambda: insp.metrics("out").records_in == 2000, 60)
        run.wait("lag 0 again", lambda: len(stats.lag()) == 2 and stats.total_lag() == 0)
        run.wait("a checkpoint", lambda: stats.snapshot().checkpoints >= 2)
        snap = stats.snapshot()
        assert (snap.tasks_owned, snap.tasks_running, snap.restores, snap.restoring) == (2, 2, 2, 0)
        assert snap.restore_records >= KEYS  # every key's state, replayed from the changelog
        assert insp.metrics("count").state_keys == KEYS
        text = _scrape(insp)
        for p in ("0", "1"):
            assert text[f"eventspine_consumer_lag_records{{partition={p},topic=in}}"] == 0
            position = text[f"eventspine_consumer_position{{partition={p},topic=in}}"]
            assert position == text[f"eventspine_log_end_offset{{partition={p},topic=in}}"]
        positions = [v for k, v in text.items() if k.startswith("eventspine_consumer_position")]
        assert sum(positions) == 2400
        assert text["eventspine_tasks_owned{}"] == 2
        assert text["eventspine_rebalance_tasks_total{event=assign}"] == 2
        assert text["eventspine_rebalances_total{event=revoke}"] == 0
        assert text["eventspine_restores_total{}"] == 2
        assert text["eventspine_restore_records_total{}"] == snap.restore_records
        assert text["eventspine_restoring_tasks{}"] == 0
        assert text["eventspine_restore_remaining_records{}"] == 0
        assert text["eventspine_checkpoints_total{}"] >= 2
        assert text["eventspine_checkpoint_failures_total{}"] == 0
        assert 0 <= text["eventspine_checkpoint_age_seconds{}"] < 30
        assert 0 < text["eventspine_last_checkpoint_duration_seconds{}"] < 30
        assert text["eventspine_state_keys{step=count}"] == KEYS
        assert text["eventspine_records_in_total{step=out}"] == 2000  # this run's records
        assert worker_text(insp) == ""  # no lag, no restore: nothing shown
    finally:
        run.stop()
