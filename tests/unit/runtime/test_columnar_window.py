"""The vectorized window equals the record-path window (and a plain-Python oracle).

Each case drives the operators directly with a script of batches and
watermarks (rows or columnar frames, late records included), then the
end-of-input flush, and compares the main output (order included) and the
``"late"`` side output.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eventspine as es
from eventspine.dataflow.steps import WindowStep
from eventspine.errors import StepError
from eventspine.records import KEY_COL, TS_COL, Batch
from eventspine.runtime.metrics import StepMetrics
from eventspine.runtime.operator import DeadLetters, ErrorBoundary, Operator
from eventspine.runtime.windows import make_record_window, make_window
from eventspine.runtime.windows.columnar import ColumnarWindow, supports
from eventspine.timeutil import MAX_TS_MS, ManualClock

AGGS = {
    "n": es.count(),
    "total": es.sum("v"),
    "avg": es.mean("v"),
    "lo": es.min("v"),
    "hi": es.max("v"),
    "first_v": es.first("tag"),
    "last_v": es.last("tag"),
}


class _Collect(Operator):
    def __init__(self) -> None:
        super().__init__("collect", StepMetrics("collect", "sink"))
        self.rows: list[dict[str, Any]] = []
        self.ts: list[int] = []

    def on_batch(self, batch: Batch, port: int) -> None:
        self.rows.extend(batch.rows)
        self.ts.extend(batch.ts)


def _step(kind: es.Tumbling | es.Hopping, aggs: dict[str, es.Agg[Any]] = AGGS) -> WindowStep:
    return WindowStep("w", (("k", "main"),), None, kind, aggs, es.OnClose(), 0, "key")


def _drive(op: Operator, script: list[Any]) -> tuple[list[dict[str, Any]], list[int], list[Any]]:
    main, late = _Collect(), _Collect()
    op.out.connect("main", main, 0)
    op.out.connect("late", late, 0)
    for kind, value in script:
        if kind == "wm":
            op.watermark_ms = value
            op.on_watermark(value)
        else:
            op.receive(value, 0)
    op.watermark_ms = MAX_TS_MS
    op.on_watermark(MAX_TS_MS)
    op.on_end()
    return main.rows, main.ts, late.rows


def _batch(records: list[tuple[Any, int, Any, str]], columnar: bool) -> Batch:
    rows = [{"k": k, "ts": t, "v": v, "tag": tag} for k, t, v, tag in records]
    b = Batch(rows, [t for _, t, _, _ in records], keys=[k for k, _, _, _ in records])
    if columnar:
        return Batch.of_frame(b.frame)
    return b


def _oracle(step: WindowStep, script: list[Any]) -> tuple[list[dict[str, Any]], list[Any]]:
    """The window semantics spelled out record by record, in plain Python."""
    w = step.window
    size = int(w.size.total_seconds() * 1000)
    hop = int(w.hop.total_seconds() * 1000) if isinstance(w, es.Hopping) else size
    wm = -(1 << 62)
    open_: dict[tuple[Any, int], list[tuple[int, Any, str]]] = {}
    out: list[dict[str, Any]] = []
    late: list[Any] = []

    def close(upto: int) -> None:
        ready = sorted((s + size, k, s) for (k, s) in open_ if s + size <= upto)
        for end, k, s in ready:
            recs = open_.pop((k, s))
            vs = [v for _, v, _ in recs]
            first = min(range(len(recs)), key=lambda i: (recs[i][0], i))
            last = max(range(len(recs)), key=lambda i: (recs[i][0], i))
            out.append(
                {"key": k, "window_start_ms": s, "window_end_ms": end, "n": len(recs),
                 "total": sum(vs), "avg": sum(vs) / len(vs), "lo": min(vs), "hi": max(vs),
                 "first_v": recs[first][2], "last_v": recs[last][2]}
            )  # fmt: skip

    for kind, value in [*script, ("wm", MAX_TS_MS)]:
        if kind == "wm":
            wm = max(wm, value)
            close(wm)
            continue
        for row, k, t in zip(value.rows, value.keys, value.ts, strict=True):
            starts = list(range((t // hop) * hop, t - size, -hop))
            live = [s for s in starts if s + size > wm]
            if not live:
                late.append(row)
            for s in live:
                open_.setdefault((k, s), []).append((t, row["v"], row["tag"]))
    return out, late


def _same(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.keys() == w.keys()
        for name, value in w.items():
            if isinstance(value, float):
                assert math.isclose(g[name], value, rel_tol=1e-9, abs_tol=1e-9), (name, g, w)
            else:
                assert g[name] == value, (name, g, w)


def _columnar(step: WindowStep) -> ColumnarWindow:
    m = StepMetrics("w", "window")
    return ColumnarWindow(step, m, ErrorBoundary("w", es.Fail(), DeadLetters(), m), ManualClock())


def _record_path(step: WindowStep) -> Operator:
    """The record-path operator ``make_window`` falls back to."""
    m = StepMetrics("w", "window")
    return make_record_window(
        step, m, ErrorBoundary("w", es.Fail(), DeadLetters(), m), ManualClock()
    )


keys = st.sampled_from(["a", "b", "c", "d"]) | st.integers(0, 3).map(lambda i: f"k{i}")
record = st.tuples(
    keys,
    st.integers(0, 60),  # ts
    st.integers(-5, 5) | st.floats(-10, 10, allow_nan=False),
    st.sampled_from(["x", "y", "z"]),
)


@st.composite
def scripts(draw: st.DrawFn) -> list[Any]:
    """Batches of records interleaved with rising watermarks (so some records are late)."""
    script: list[Any] = []
    wm = -5
    for _ in range(draw(st.integers(1, 6))):
        recs = draw(st.lists(record, min_size=1, max_size=12))
        script.append(("batch", _batch(recs, columnar=draw(st.booleans()))))
        if draw(st.booleans()):
            wm += draw(st.integers(0, 20))
            script.append(("wm", wm))
    return script


KINDS = [
    es.Tumbling(timedelta(milliseconds=10)),
    es.Hopping(timedelta(milliseconds=10), timedelta(milliseconds=5)),
    es.Hopping(timedelta(milliseconds=12), timedelta(milliseconds=8)),  # pane = 4 ms
    es.Hopping(timedelta(milliseconds=10), timedelta(milliseconds=10)),
]


@pytest.mark.parametrize("kind", KINDS, ids=repr)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=scripts())
def test_columnar_equals_record_semantics(kind: Any, script: list[Any]) -> None:
    step = _step(kind)
    got, got_ts, got_late = _drive(_columnar(step), script)
    want, want_late = _oracle(step, script)
    _same(got, want)
    assert got_ts == [r["window_end_ms"] - 1 for r in want]
    assert got_late == want_late
    rec_out, rec_ts, rec_late = _drive(_record_path(step), script)
    _same(got, rec_out)
    assert got_ts == rec_ts
    assert got_late == rec_late


def test_late_records_are_counted_and_sent_aside() -> None:
    step = _step(es.Tumbling(timedelta(milliseconds=10)))
    op = _columnar(step)
    late_batch = _batch([("a", 3, 1, "x"), ("a", 25, 2, "y")], columnar=True)
    script = [("batch", _batch([("a", 1, 1, "x")], False)), ("wm", 12), ("batch", late_batch)]
    out, _, late = _drive(op, script)
    assert [(r["window_start_ms"], r["n"]) for r in out] == [(0, 1), (20, 1)]
    assert late == [{"k": "a", "ts": 3, "v": 1, "tag": "x"}]
    assert op.metrics.late == 1
    assert op.metrics.state_keys == 0


def test_hopping_results_are_sorted_by_window_end_then_key() -> None:
    step = _step(es.Hopping(timedelta(seconds=10), timedelta(seconds=1)), {"n": es.count()})
    recs = [("b", 500, 1, "x"), ("a", 1500, 1, "x"), ("b", 1600, 1, "x")]
    out, ts, _ = _drive(_columnar(step), [("batch", _batch(recs, False)), ("wm", 10_000)])
    ends_keys = [(r["window_end_ms"], r["key"]) for r in out]
    assert ends_keys == sorted(ends_keys)
    assert out[0] == {"key": "b", "window_start_ms": -9000, "window_end_ms": 1000, "n": 1}
    assert ts[0] == 999
    assert out[1:3] == [
        {"key": "a", "window_start_ms": -8000, "window_end_ms": 2000, "n": 1},
        {"key": "b", "window_start_ms": -8000, "window_end_ms": 2000, "n": 2},
    ]
    # 10 windows contain the first record, 10 the two in [1000, 2000).
    assert sum(r["n"] for r in out) == 30


def test_unsupported_keys_hand_over_to_the_record_path() -> None:
    step = _step(es.Tumbling(timedelta(milliseconds=10)), {"n": es.count()})
    taken: list[Batch] = []

    class Fake(Operator):
        def on_batch(self, batch: Batch, port: int) -> None:
            taken.append(batch)

    m = StepMetrics("w", "window")
    op = ColumnarWindow(
        step, m, ErrorBoundary("w", es.Fail(), DeadLetters(), m), ManualClock(),
        record_path=lambda: Fake("w", m),
    )  # fmt: skip
    tuple_keys = Batch([{"v": 1}], [1], keys=[("a", 1)])
    op.on_batch(tuple_keys, 0)
    op.on_batch(_batch([("a", 2, 1, "x")], False), 0)
    assert len(taken) == 2


def test_mixed_key_types_after_state_is_open_fail_clearly() -> None:
    op = _columnar(_step(es.Tumbling(timedelta(milliseconds=10)), {"n": es.count()}))
    op.on_batch(_batch([("a", 2, 1, "x")], False), 0)
    with pytest.raises(StepError, match="keys of type"):
        op.on_batch(Batch([{"v": 1}, {"v": 2}], [3, 4], keys=[1, "a"]), 0)


def test_int_keys_from_frames() -> None:
    step = _step(es.Tumbling(timedelta(milliseconds=10)), {"n": es.count(), "s": es.sum("v")})
    frame = pl.DataFrame({"v": [1, 2, 3], TS_COL: [1, 2, 15], KEY_COL: [7, 7, 8]})
    out, _, _ = _drive(_columnar(step), [("batch", Batch.of_frame(frame))])
    assert out == [
        {"key": 7, "window_start_ms": 0, "window_end_ms": 10, "n": 2, "s": 3},
        {"key": 8, "window_start_ms": 10, "window_end_ms": 20, "n": 1, "s": 3},
    ]


def test_supports() -> None:
    assert supports(_step(es.Tumbling(timedelta(seconds=1))))
    assert supports(_step(es.Hopping(timedelta(seconds=10), timedelta(seconds=1))))
    assert not supports(_step(es.Sliding(timedelta(seconds=1))))  # type: ignore[arg-type]
    assert not supports(_step(es.Tumbling(timedelta(seconds=1)), {"q": es.quantiles("v")}))
    assert not supports(_step(es.Tumbling(timedelta(seconds=1)), {"s": es.sum(lambda r: r)}))
    lateness = WindowStep(
        "w", (("k", "main"),), None, es.Tumbling(timedelta(seconds=1)), AGGS, es.OnClose(), 5, "key"
    )
    assert not supports(lateness)


def test_make_window_picks_the_columnar_operator() -> None:
    m = StepMetrics("w", "window")
    boundary = ErrorBoundary("w", es.Fail(), DeadLetters(), m)
    step = _step(es.Tumbling(timedelta(seconds=1)))
    assert isinstance(make_window(step, m, boundary, ManualClock()), ColumnarWindow)


def test_pipeline_runs_the_columnar_window_end_to_end() -> None:
    p = es.Pipeline("p")
    src = p.source("s", es.MemorySource([]), timestamps=es.EventTime("ts"))
    agg = (
        src.key_by("k", "key")
        .window(es.Hopping(timedelta(seconds=2), timedelta(seconds=1)))
        .aggregate("w", n=es.count(), total=es.sum("v"))
    )
    agg.sink("out", es.CollectSink())
    agg.side_output("late").sink("late", es.CollectSink())
    events = [
        {"key": "a", "ts": 500, "v": 1.0},
        {"key": "a", "ts": 1500, "v": 2.0},
        {"key": "b", "ts": 5000, "v": 3.0},
        {"key": "a", "ts": 100, "v": 9.0},  # the watermark is 5000 by now: late
    ]
    out = es.testing.run(p, inputs={"s": events}, batch_size=1)
    assert [(r["key"], r["window_start_ms"], r["n"], r["total"]) for r in out["out"]] == [
        ("a", -1000, 1, 1.0),
        ("a", 0, 2, 3.0),
        ("a", 1000, 1, 2.0),
        ("b", 4000, 1, 3.0),
        ("b", 5000, 1, 3.0),
    ]
    assert out["late"] == [{"key": "a", "ts": 100, "v": 9.0}]
