"""Joins and process survive a checkpoint and restore: cut anywhere, same output as no cut.

Each scenario is a list of events (batches on a port, watermarks, ticks). It runs
straight through, then once per event boundary: a snapshot is taken after every
event (as periodic checkpoints would), and at the cut the snapshots so far are
reduced to the latest value per entry (``None`` dropped), pickled, and restored
into a fresh operator that continues with the rest of the events.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

import eventspine as es
from eventspine.dataflow.pipeline import _as_processor
from eventspine.dataflow.ports import Fail
from eventspine.dataflow.steps import AsofJoinStep, IntervalJoinStep, ProcessStep
from eventspine.errors import StateError
from eventspine.records import Batch
from eventspine.runtime.joins import make_asof_join, make_interval_join
from eventspine.runtime.metrics import StepMetrics
from eventspine.runtime.operator import DeadLetters, ErrorBoundary, Operator
from eventspine.runtime.process import make_process
from eventspine.serde.state import decode_state, encode_state
from eventspine.timeutil import MAX_TS_MS, ManualClock

Event = tuple[Any, ...]  # ("batch", port, Batch) | ("wm", ms) | ("tick", now_ms)


class Collect(Operator):
    def __init__(self, got: list[Any], port: str) -> None:
        super().__init__("collect", StepMetrics("collect", "sink"))
        self.got = got
        self.port = port

    def on_batch(self, batch: Batch, port: int) -> None:
        self.got.extend((self.port, r, t) for r, t in zip(batch.rows, batch.ts, strict=True))


def wire(op: Operator, got: list[Any]) -> Operator:
    op.out.connect("main", Collect(got, "main"), 0)
    op.out.connect("late", Collect(got, "late"), 0)
    return op


def apply(op: Operator, ev: Event) -> None:
    if ev[0] == "batch":
        op.receive(ev[2], ev[1])
    elif ev[0] == "wm":
        op.watermark_ms = ev[1]
        op.on_watermark(ev[1])
    else:
        op.on_tick(ev[1])


def finish(op: Operator) -> None:
    op.watermark_ms = MAX_TS_MS
    op.on_watermark(MAX_TS_MS)
    op.on_end()


def straight(make: Callable[[], Operator], events: list[Event]) -> list[Any]:
    got: list[Any] = []
    op = wire(make(), got)
    for ev in events:
        apply(op, ev)
    finish(op)
    return got


def with_cut(make: Callable[[], Operator], events: list[Event], cut: int) -> list[Any]:
    got: list[Any] = []
    op = wire(make(), got)
    log: dict[bytes, bytes | None] = {}  # a compacted changelog, as the checkpoint writes
    for ev in events[:cut]:
        apply(op, ev)
        for k, v in op.snapshot_changes():
            log[encode_state(k, step="s")] = None if v is None else encode_state(v, step="s")
    entries = [
        (decode_state(k, step="s"), decode_state(v, step="s"))
        for k, v in log.items()
        if v is not None
    ]
    fresh = wire(make(), got)
    fresh.restore(entries)
    fresh.watermark_ms = op.watermark_ms
    assert fresh.snapshot_changes() == []  # nothing new after a restore
    for ev in events[cut:]:
        apply(fresh, ev)
    finish(fresh)
    return got


def check_every_cut(make: Callable[[], Operator], events: list[Event]) -> None:
    expected = straight(make, events)
    assert any(port == "main" for port, _r, _t in expected)
    for cut in range(len(events) + 1):
        assert with_cut(make, events, cut) == expected, f"cut after event {cut}"


def boundary(name: str) -> tuple[StepMetrics, ErrorBoundary]:
    m = StepMetrics(name, "x")
    return m, ErrorBoundary(name, Fail(), DeadLetters(), m)


# -- interval join ---------------------------------------------------------------------


def interval(how: str) -> Callable[[], Operator]:
    def make() -> Operator:
        step = IntervalJoinStep(
            "j", (("a", "main"), ("b", "main")), None, -300, 500, how, None, "k"
        )
        m, b = boundary("j")
        return make_interval_join(step, m, b, ManualClock())

    return make


def join_events(seed: int, *, columnar: bool, row_batch_at: int | None = None) -> list[Event]:
    rnd = random.Random(seed)
    events: list[Event] = []
    wm = 0
    for i in range(14):
        port = rnd.randint(0, 1)
        keys = [rnd.choice("abcd") for _ in range(rnd.randint(1, 4))]
        ts = [max(0, wm + rnd.randint(-200, 900)) for _ in keys]  # some are late
        rows = [
            {"k": k, "ts": t, "v": rnd.randint(0, 99), "p": port}
            for k, t in zip(keys, ts, strict=True)
        ]
        b = Batch(rows, ts, keys=keys)
        if columnar and i != row_batch_at:
            b = Batch.of_frame(b.frame)
        events.append(("batch", port, b))
        if rnd.random() < 0.4:
            events.append(("tick", 0))
        if rnd.random() < 0.5:
            wm += rnd.randint(0, 600)
            events.append(("wm", wm))
    return events


@pytest.mark.parametrize("how", ["inner", "left", "outer"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_interval_join_record_path_restores_at_every_cut(how: str, seed: int) -> None:
    check_every_cut(interval(how), join_events(seed, columnar=False))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_interval_join_columnar_path_restores_at_every_cut(seed: int) -> None:
    make = interval("inner")
    events = join_events(seed, columnar=True)
    op = wire(make(), [])
    for ev in events:
        apply(op, ev)
    assert op.columnar is not None  # type: ignore[attr-defined]  # stayed vectorized
    check_every_cut(make, events)


def test_interval_join_restores_after_leaving_the_columnar_path() -> None:
    make = interval("inner")
    events = join_events(4, columnar=True, row_batch_at=7)
    op = wire(make(), [])
    for ev in events:
        apply(op, ev)
    assert op.columnar is None  # type: ignore[attr-defined]
    check_every_cut(make, events)


# -- as-of join ---------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["inner", "left"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_asof_join_restores_at_every_cut(how: str, seed: int) -> None:
    def make() -> Operator:
        step = AsofJoinStep("asof", (("a", "main"), ("b", "main")), None, None, "k", how)
        m, b = boundary("asof")
        return make_asof_join(step, m, b, ManualClock())

    check_every_cut(make, join_events(seed, columnar=False))


# -- process --------------------------------------------------------------------------------


class Tracker:
    """Per-key running count/sum, an event timer per record and a processing timer."""

    def on_record(self, record: dict[str, Any], ctx: es.ProcessContext) -> None:
        st = ctx.state
        st["n"] = st.get("n", 0) + 1
        st["sum"] = st.get("sum", 0) + record["v"]
        if record["v"] % 7 == 0:
            ctx.delete_timers()
            ctx.emit({"k": ctx.key, "cancelled": st["n"]})
            return
        ctx.set_event_timer(ctx.ts_ms + 200 * (record["v"] % 3))
        ctx.set_processing_timer(1000 + 100 * (record["v"] % 5))
        if record["v"] % 11 == 0:
            ctx.state.clear()  # the key's state is dropped (timers stay)

    def on_timer(self, ctx: es.ProcessContext) -> None:
        st = ctx.state
        st["fired"] = st.get("fired", 0) + 1
        ctx.emit({"k": ctx.key, "at": ctx.ts_ms, "n": st.get("n"), "fired": st["fired"]})
        if st["fired"] % 4 == 1:
            ctx.set_event_timer(ctx.ts_ms + 50)  # re-arm


def process_events(seed: int) -> list[Event]:
    rnd = random.Random(seed)
    events: list[Event] = []
    wm, now = 0, 900
    for _ in range(14):
        keys = [rnd.choice("abcd") for _ in range(rnd.randint(1, 4))]
        ts = [wm + rnd.randint(0, 800) for _ in keys]
        rows = [{"v": rnd.randint(0, 99)} for _ in keys]
        events.append(("batch", 0, Batch(rows, ts, keys=keys)))
        if rnd.random() < 0.5:
            now += rnd.randint(0, 200)
            events.append(("tick", now))
        if rnd.random() < 0.5:
            wm += rnd.randint(0, 500)
            events.append(("wm", wm))
    return events


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_process_state_and_both_timer_kinds_restore_at_every_cut(seed: int) -> None:
    def make() -> Operator:
        step = ProcessStep("proc", (("in", "main"),), None, Tracker(), keyed=True)
        m, b = boundary("proc")
        return make_process(step, m, b, ManualClock())

    events = process_events(seed)
    got = straight(make, events)
    assert any("at" in r and r["at"] >= 1000 and p == "main" for p, r, _t in got)
    check_every_cut(make, events)


def test_process_state_that_cannot_be_pickled_fails_the_checkpoint_clearly() -> None:
    def keep_a_lambda(record: Any, ctx: es.ProcessContext) -> None:
        ctx.state["fn"] = lambda: record

    step = ProcessStep(
        "proc", (("in", "main"),), None, _as_processor("proc", keep_a_lambda), keyed=True
    )
    m, b = boundary("proc")
    op = make_process(step, m, b, ManualClock())
    op.receive(Batch([{"v": 1}], [0], keys=["a"]), 0)
    [(key, value)] = [c for c in op.snapshot_changes() if c[0] != ("__meta__",)]
    assert key == ("key", "a")
    with pytest.raises(StateError, match=r"step 'proc'.*cannot be saved"):
        encode_state(value, step="proc")


def test_process_snapshot_reports_only_changes_and_tombstones() -> None:
    def count(record: Any, ctx: es.ProcessContext) -> None:
        if record.get("drop"):
            ctx.state.clear()
        else:
            ctx.state["n"] = ctx.state.get("n", 0) + 1

    step = ProcessStep("proc", (("in", "main"),), None, _as_processor("proc", count), keyed=True)
    m, b = boundary("proc")
    op = make_process(step, m, b, ManualClock())
    op.receive(Batch([{}, {}], [0, 0], keys=["a", "b"]), 0)
    assert sorted(op.snapshot_changes(), key=repr) == [
        (("key", "a"), ({"n": 1}, None, None)),
        (("key", "b"), ({"n": 1}, None, None)),
    ]
    assert op.snapshot_changes() == []
    op.receive(Batch([{"drop": True}, {"drop": True}], [0, 0], keys=["a", "c"]), 0)
    assert op.snapshot_changes() == [(("key", "a"), None)]  # "c" was never saved
