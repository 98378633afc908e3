"""Window operators survive a checkpoint and restore: same output, record for record.

Each case runs a record stream through a window operator straight through,
then again with a checkpoint after every batch and a "restart" at a batch
boundary: the changelog (every ``snapshot_changes`` entry pickled with
``encode_state``, latest value per key, tombstones dropped) is decoded into
a *fresh* operator built from a fresh pipeline definition (so aggregators
start with fresh counters, as in a new process), its watermark is set to the
old one, and the rest of the stream continues there. The outputs (main and
``late``, values and order) must be identical. The operators are built by
``make_record_window``, the record path of ``make_window``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import datasketches
import pytest

import eventspine as es
from eventspine.connectors.memory import CollectSink, MemorySource
from eventspine.dataflow.steps import WindowStep
from eventspine.records import Batch
from eventspine.runtime.metrics import StepMetrics
from eventspine.runtime.operator import DeadLetters, ErrorBoundary, Operator
from eventspine.runtime.windows import make_record_window
from eventspine.runtime.windows.count import CountWindows
from eventspine.runtime.windows.decaying import DecayingAggregate
from eventspine.runtime.windows.fixed import FixedWindows
from eventspine.runtime.windows.session import SessionWindows
from eventspine.runtime.windows.sliding import SlidingWindows
from eventspine.serde.state import decode_state, encode_state
from eventspine.timeutil import MAX_TS_MS, MIN_TS_MS, ManualClock

MS = timedelta(milliseconds=1)
DELAY_MS = 20  # watermark = max event time seen - DELAY_MS


class Capture(Operator):
    """Records what reaches it (rows and event times) into shared lists."""

    def __init__(self, rows: list[Any]) -> None:
        super().__init__("capture", StepMetrics("capture", "sink"))
        self.rows = rows

    def on_batch(self, batch: Batch, port: int) -> None:
        self.rows.extend(zip(batch.ts, batch.rows, strict=True))


@dataclass(frozen=True)
class Case:
    kind: Any
    emit: Any
    lateness_ms: int
    aggs: Callable[[], dict[str, Any]]

    def step(self) -> WindowStep:
        """A fresh window step (fresh aggregator instances) from a pipeline definition."""
        p = es.Pipeline("state")
        (
            p.source("src", MemorySource([]), timestamps=es.EventTime("ts"))
            .key_by("by_k", "k")
            .window(self.kind, emit=self.emit, allowed_lateness=self.lateness_ms * MS)
            .aggregate("w", **self.aggs())
            .sink("out", CollectSink())
        )
        step = p.steps["w"]
        assert isinstance(step, WindowStep)
        return step


def general_aggs() -> dict[str, Any]:
    return {
        "n": es.count(),
        "s": es.sum("v"),
        "avg": es.mean("v"),
        "lo": es.min("v"),
        "f": es.first("v"),
        "l": es.last("v"),
        "all": es.collect("v"),
        "top": es.top_k("v", 2),
        "d": es.distinct_count("v"),
        "q": es.quantiles("v", (0.5, 0.9)),
    }


def decay_aggs() -> dict[str, Any]:
    return {"n": es.count(), "s": es.sum("v"), "m": es.mean("v")}


class Harness:
    """Drives operators like the executor, with checkpoints and restarts."""

    def __init__(self, case: Case, *, check: bool = True) -> None:
        self.case = case
        self.check = check
        self.out: list[Any] = []
        self.late: list[Any] = []
        self.log: dict[bytes, bytes] = {}  # the compacted changelog
        self.op = self._fresh()
        self.restored_entries = 0
        self.states: list[dict[Any, Any]] = []  # the live state at each checkpoint (check=True)

    def _fresh(self) -> Operator:
        step = self.case.step()
        m = StepMetrics("w", "window")
        op = make_record_window(
            step, m, ErrorBoundary("w", es.Fail(), DeadLetters(), m), ManualClock()
        )
        assert op.stateful
        op.out.connect("main", Capture(self.out), 0)
        op.out.connect("late", Capture(self.late), 0)
        return op

    def checkpoint(self) -> None:
        for key, value in self.op.snapshot_changes():
            k = encode_state(key, step="w")
            if value is None:
                self.log.pop(k, None)
            else:
                self.log[k] = encode_state(value, step="w")
        if not self.check:
            return
        # The compacted changelog holds exactly the live state: nothing stale, nothing missing.
        logged = {
            decode_state(k, step="w"): canonical(decode_state(v, step="w"))
            for k, v in self.log.items()
        }
        live = live_state(self.op)
        assert logged == live
        self.states.append(live)

    def restart(self) -> None:
        old = self.op
        self.op = self._fresh()
        entries = [
            (decode_state(k, step="w"), decode_state(v, step="w")) for k, v in self.log.items()
        ]
        self.restored_entries += len(entries)
        self.op.restore(entries)
        assert self.op.watermark_ms == old.watermark_ms
        assert self.op.metrics.state_keys == old.metrics.state_keys
        self.op.watermark_ms = old.watermark_ms
        assert self.op.snapshot_changes() == []  # restore reports nothing as changed

    def feed(self, batch: Batch, wm: int) -> None:
        op = self.op
        op.receive(batch, 0)
        if wm > op.watermark_ms:
            op.watermark_ms = wm
            op.on_watermark(wm)

    def finish(self) -> None:
        self.op.watermark_ms = MAX_TS_MS
        self.op.on_watermark(MAX_TS_MS)
        self.op.on_end()


def live_state(op: Any) -> dict[Any, Any]:
    """Every entry of ``op``'s state as ``snapshot_changes`` reports it (read from its fields)."""
    if isinstance(op, FixedWindows):
        ids: Collection[Any] = op.state
    elif isinstance(op, SessionWindows):
        ids = op.sessions
    elif isinstance(op, SlidingWindows):
        ids = op.buffers
    elif isinstance(op, CountWindows):
        ids = op.windows
    else:
        assert isinstance(op, DecayingAggregate)
        ids = op.state.keys() | op.pending.keys()
    wrap = (lambda d: d) if isinstance(op, FixedWindows) else (lambda d: ("key", d))
    out = {wrap(d): op._entry(d) for d in ids}
    out[("__meta__",)] = op._meta()
    return {k: canonical(decode_state(encode_state(v, step="w"), step="w")) for k, v in out.items()}


def canonical(value: Any) -> Any:
    """``value`` with KLL sketch bytes replaced by their items.

    ``result()`` sorts a KLL sketch's buffer in place, which changes its bytes
    but not its content, so bytes are compared by content.
    """
    if isinstance(value, bytes):
        try:
            return ("kll", sorted(datasketches.kll_doubles_sketch.deserialize(value)))
        except Exception:
            return value  # an HLL sketch: its bytes are canonical
    if isinstance(value, list | tuple):
        return type(value)(canonical(v) for v in value)
    return value


def batches_of(records: list[dict[str, Any]], sizes: list[int]) -> list[tuple[Batch, int]]:
    """Cut ``records`` into batches, each with the watermark after it."""
    out: list[tuple[Batch, int]] = []
    i, top = 0, MIN_TS_MS
    for n in sizes:
        rows = records[i : i + n]
        i += n
        if not rows:
            break
        ts = [r["ts"] for r in rows]
        top = max(top, *ts)
        out.append((Batch(rows, ts, keys=[r["k"] for r in rows]), top - DELAY_MS))
    return out


def run(
    case: Case,
    batches: list[tuple[Batch, int]],
    restarts: Collection[int] = (),
    *,
    check: bool = True,
) -> tuple[Harness, list[Any], list[Any]]:
    """Checkpoint after every batch; restart after batch ``i`` for every ``i`` in ``restarts``.

    With ``check``, every checkpoint also asserts that the changelog equals the live state.
    """
    h = Harness(case, check=check)
    for i, (batch, wm) in enumerate(batches):
        h.feed(batch, wm)
        h.checkpoint()
        if i in restarts:
            h.restart()
    h.finish()
    h.checkpoint()  # the final checkpoint: whatever is left is in the changelog
    return h, h.out, h.late


def stream(seed: int, n: int = 120) -> tuple[list[dict[str, Any]], list[int]]:
    """Keys a-c, bursts and gaps, ties on event time, out-of-order and late records.

    Key ``z`` has one record, at the start, so its state expires mid-stream; key
    ``y`` has none in the last quarter.
    """
    rng = random.Random(seed)
    recs: list[dict[str, Any]] = [{"k": "z", "ts": 0, "v": 1}]
    t = 0
    for i in range(n):
        t += rng.choice([0, 1, 3, 7, 15, 45])
        ts = t - rng.choice([0, 0, 0, 5, 30, 90, 200])  # some out of order, some late
        keys = "abcy" if i < n * 3 // 4 else "abc"  # y goes quiet for the last quarter
        recs.append({"k": rng.choice(keys), "ts": max(ts, 0), "v": rng.randint(0, 9)})
    sizes = [rng.randint(1, 14) for _ in range(n)]
    return recs, sizes


FIXED = [es.Tumbling(100 * MS), es.Hopping(size=100 * MS, hop=40 * MS)]
EMITS = [es.OnClose(), es.OnChange(), es.EveryN(3), es.EveryInterval(10 * MS)]
CASES = [
    *(Case(k, e, late, general_aggs) for k in FIXED for e in EMITS for late in (0, 60)),
    *(Case(es.Session(30 * MS), e, late, general_aggs) for e in EMITS for late in (0, 60)),
    *(Case(es.Sliding(100 * MS), es.OnClose(), late, general_aggs) for late in (0, 60)),
    *(Case(es.Count(4), e, 0, general_aggs) for e in EMITS),
    *(
        Case(es.Decaying(decay), e, late, decay_aggs)
        for decay in (es.ExponentialDecay(half_life=10 * MS), es.LinearDecay(horizon=100 * MS))
        for e in (es.OnClose(), es.EveryInterval(50 * MS))
        for late in (0, 60)
    ),
]


def case_id(c: Case) -> str:
    return f"{type(c.kind).__name__}-{type(c.emit).__name__}-late{c.lateness_ms}"


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_restart_at_every_batch_boundary_gives_the_uninterrupted_output(case: Case) -> None:
    recs, sizes = stream(seed=7)
    batches = batches_of(recs, sizes)
    straight, want, want_late = run(case, batches)
    assert want, "the stream produces results"
    # One restart at each boundary, then a restart at every boundary (checking the changelog).
    restarted = 0
    for cut in [*([i] for i in range(len(batches))), range(len(batches))]:
        h, got, got_late = run(case, batches, restarts=cut, check=len(cut) > 1)
        assert got == want, f"restart after batch(es) {cut}"
        assert got_late == want_late, f"restart after batch(es) {cut}"
        if h.check:  # restarted everywhere: the state itself is the uninterrupted one
            assert h.states == straight.states
        restarted += h.restored_entries
    assert restarted > 0, "some restart had state to restore"


def test_the_stream_exercises_late_records_and_lateness_updates() -> None:
    recs, sizes = stream(seed=7)
    batches = batches_of(recs, sizes)
    case = Case(es.Tumbling(100 * MS), es.OnClose(), 60, general_aggs)
    h, out, late = run(case, batches)
    assert late, "some records are later than the allowed lateness"
    assert h.op.metrics.late == len(late)
    # Re-emissions of a window updated within the lateness: the same (key, start) twice.
    pairs = [(row["k"], row["window_start_ms"]) for _ts, row in out]
    assert len(pairs) > len(set(pairs))


def test_snapshot_reports_only_changed_entries_and_tombstones_closed_windows() -> None:
    case = Case(
        es.Tumbling(100 * MS), es.OnClose(), 0, lambda: {"n": es.count(), "l": es.last("v")}
    )
    h = Harness(case)
    rows = [{"k": "a", "ts": 10, "v": 1}, {"k": "b", "ts": 20, "v": 2}]
    h.feed(Batch(rows, [10, 20], keys=["a", "b"]), 0)
    first = dict(h.op.snapshot_changes())
    assert set(first) == {("a", 0), ("b", 0), ("__meta__",)}
    assert first[("__meta__",)]["agg_seqs"] == [2]  # the last() tie-break counter
    assert h.op.snapshot_changes() == []  # nothing changed since
    h.feed(Batch([{"k": "a", "ts": 30, "v": 3}], [30], keys=["a"]), 0)
    assert [k for k, _v in h.op.snapshot_changes()] == [("a", 0), ("__meta__",)]
    h.feed(Batch([{"k": "c", "ts": 150, "v": 4}], [150], keys=["c"]), 100)  # closes [0, 100)
    changes = dict(h.op.snapshot_changes())
    assert changes[("a", 0)] is None
    assert changes[("b", 0)] is None
    assert changes[("c", 100)] is not None
    # A window opened and closed between two snapshots leaves no tombstone.
    h.feed(Batch([{"k": "d", "ts": 160, "v": 5}], [160], keys=["d"]), 200)
    assert ("d", 100) not in dict(h.op.snapshot_changes())


def test_per_key_kinds_report_keys_as_tagged_entries() -> None:
    case = Case(es.Session(30 * MS), es.OnClose(), 0, lambda: {"n": es.count()})
    h = Harness(case)
    h.feed(Batch([{"k": "__meta__", "ts": 10}], [10], keys=["__meta__"]), 0)
    changes = dict(h.op.snapshot_changes())
    assert changes[("key", "__meta__")] == [(10, 10, [1], 1, False)]
    assert changes[("__meta__",)]["wm"] == 0


def test_sketch_accumulators_round_trip_exactly() -> None:
    """HLL and KLL sketches are saved as bytes and keep counting identically after restore."""
    rng = random.Random(3)
    recs = [{"k": "a", "ts": i // 10, "v": rng.randrange(100_000)} for i in range(3000)]
    batches = batches_of(recs, [250] * 12)
    case = Case(
        es.Tumbling(timedelta(seconds=10)),
        es.EveryInterval(50 * MS),
        0,
        lambda: {"d": es.distinct_count("v"), "q": es.quantiles("v", (0.5,), k=4096)},
    )
    _h, want, _ = run(case, batches)
    _h2, got, _ = run(case, batches, restarts=range(len(batches)))
    assert got == want
    assert want[-1][1]["d"] == pytest.approx(3000, rel=0.05)  # the sketch really counted
    agg = case.step().aggs["d"].aggregator
    sketch = agg.create()
    for v in range(500):
        agg.add(sketch, v)
    again = agg.decode(decode_state(encode_state(agg.encode(sketch), step="w"), step="w"))
    assert agg.result(again) == agg.result(sketch)


def test_first_last_tie_break_counter_survives_a_restart() -> None:
    """Ties on event time go to arrival order across a restart (the counter is saved)."""
    case = Case(
        es.Tumbling(100 * MS), es.OnClose(), 0, lambda: {"f": es.first("v"), "l": es.last("v")}
    )
    rows = [{"k": "a", "ts": 5, "v": v} for v in range(6)]
    batches = [(Batch(rows[i : i + 2], [5, 5], keys=["a", "a"]), 0) for i in range(0, 6, 2)]
    _h, want, _ = run(case, batches)
    assert [row for _ts, row in want] == [
        {"k": "a", "window_start_ms": 0, "window_end_ms": 100, "f": 0, "l": 5}
    ]
    for cut in range(3):
        assert run(case, batches, restarts=[cut])[1] == want


def test_an_interval_update_clears_the_changed_flag_in_the_snapshot() -> None:
    """EveryInterval: a session/window updated by a tick is reported unchanged afterwards."""
    for kind in (es.Session(300 * MS), es.Tumbling(1000 * MS), es.Count(10)):
        case = Case(kind, es.EveryInterval(100 * MS), 0, lambda: {"n": es.count()})
        h = Harness(case)
        h.feed(Batch([], [], keys=[]), 110)  # the tick at 100 passes
        h.feed(Batch([{"k": "a", "ts": 150}], [150], keys=["a"]), 120)
        h.checkpoint()
        (saved,) = [v for k, v in h.log.items() if decode_state(k, step="w") != ("__meta__",)]
        value = decode_state(saved, step="w")
        flag = value[0][-1] if isinstance(kind, es.Session) else value[-1]
        assert flag is True, kind  # the update waits for the next tick
        h.feed(Batch([], [], keys=[]), 210)  # the tick at 200 emits the update
        assert [row["n"] for _ts, row in h.out] == [1], kind
        h.checkpoint()  # asserts the changelog matches: changed is now False
        h.restart()
        h.feed(Batch([], [], keys=[]), 310)  # no change since: no update after the restart
        assert [row["n"] for _ts, row in h.out] == [1], kind


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_without_checkpoints_the_dirty_set_stays_within_the_live_state(case: Case) -> None:
    """A run that never snapshots (no durable log) does not accumulate closed entries."""
    recs, sizes = stream(seed=11)
    h = Harness(case, check=False)
    for batch, wm in batches_of(recs, sizes):
        h.feed(batch, wm)
        live = {d[1] if isinstance(d, tuple) and d[:1] == ("key",) else d for d in live_state(h.op)}
        assert h.op._dirty <= live
    h.finish()
    assert not h.op._dirty
