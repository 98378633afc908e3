"""Interval and as-of joins: results, bounds, eviction timing, late records, both paths."""

from datetime import timedelta
from typing import Any

import polars as pl
import pytest

import eventspine as es
import eventspine.testing as est
from eventspine.dataflow.ports import Fail
from eventspine.dataflow.steps import AsofJoinStep, IntervalJoinStep
from eventspine.records import Batch
from eventspine.runtime.joins import make_asof_join, make_interval_join
from eventspine.runtime.metrics import StepMetrics
from eventspine.runtime.operator import DeadLetters, ErrorBoundary, Operator
from eventspine.timeutil import MAX_TS_MS, SystemClock

S = timedelta(seconds=1)


# -- helpers -------------------------------------------------------------------------


def join_pipeline(
    how: str = "inner",
    *,
    within: timedelta | None = 5 * S,
    between: Any = None,
    combine: Any = None,
) -> es.Pipeline:
    p = es.Pipeline("joins")
    et = es.EventTime("ts", max_delay=timedelta(0))
    left = p.source("orders", es.MemorySource([]), timestamps=et).key_by("ok", "k")
    right = p.source("payments", es.MemorySource([]), timestamps=et).key_by("pk", "k")
    j = left.interval_join(
        "join",
        right,
        within=None if between else within,
        between=between,
        how=how,  # type: ignore[arg-type]
        combine=combine,
    )
    j.sink("out", es.CollectSink())
    j.side_output("late").sink("late", es.CollectSink())
    return p


def pairs(records: list[dict[str, Any]]) -> list[tuple[Any, Any, Any]]:
    def ts(r: Any) -> Any:
        return None if r is None else r["ts"]

    return sorted(((r["k"], ts(r["left"]), ts(r["right"])) for r in records), key=repr)


class Collect(Operator):
    """Keeps every batch it receives, with the port name it came from."""

    def __init__(self) -> None:
        super().__init__("collect", StepMetrics("collect", "sink"))
        self.got: list[tuple[int, Any, int]] = []

    def on_batch(self, batch: Batch, port: int) -> None:
        self.got.extend(zip([port] * len(batch), batch.rows, batch.ts, strict=True))


def interval_op(how: str, lower: int, upper: int) -> tuple[Operator, Collect]:
    step = IntervalJoinStep(
        "join", (("a", "main"), ("b", "main")), None, lower, upper, how, None, "k"
    )
    m = StepMetrics("join", "interval_join")
    op = make_interval_join(step, m, ErrorBoundary("join", Fail(), DeadLetters(), m), SystemClock())
    sink = Collect()
    op.out.connect("main", sink, 0)
    op.out.connect("late", sink, 1)
    return op, sink


def rows(port_key_ts: list[tuple[str, int]]) -> Batch:
    return Batch(
        [{"k": k, "ts": t} for k, t in port_key_ts],
        [t for _, t in port_key_ts],
        keys=[k for k, _ in port_key_ts],
    )


def advance(op: Operator, wm: int) -> None:
    op.watermark_ms = wm
    op.on_watermark(wm)


# -- interval join -------------------------------------------------------------------


def test_inner_join_pairs_every_match_once_with_max_event_time() -> None:
    out = est.run(
        join_pipeline(),
        inputs={
            "orders": [{"k": "a", "ts": 1000}, {"k": "b", "ts": 2000}, {"k": "a", "ts": 20_000}],
            "payments": [{"k": "a", "ts": 3000}, {"k": "a", "ts": 5000}, {"k": "c", "ts": 2000}],
        },
    )
    assert pairs(out["out"]) == sorted([("a", 1000, 3000), ("a", 1000, 5000)], key=repr)
    assert sorted(out.timestamps["out"]) == [3000, 5000]
    assert out["out"][0]["left"] == {"k": "a", "ts": 1000}


def test_bounds_are_inclusive_and_asymmetric() -> None:
    p = join_pipeline(between=(-1 * S, 2 * S))
    out = est.run(
        p,
        inputs={
            "orders": [{"k": "a", "ts": 10_000}],
            "payments": [{"k": "a", "ts": t} for t in (8_999, 9_000, 12_000, 12_001)],
        },
    )
    assert pairs(out["out"]) == sorted([("a", 10_000, 9_000), ("a", 10_000, 12_000)], key=repr)


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("inner", [("a", 1000, 2000)]),
        ("left", [("a", 1000, 2000), ("b", 1000, None)]),
        ("right", [("a", 1000, 2000), ("c", None, 1000)]),
        ("outer", [("a", 1000, 2000), ("b", 1000, None), ("c", None, 1000)]),
    ],
)
def test_join_types(how: str, expected: list[Any]) -> None:
    out = est.run(
        join_pipeline(how),
        inputs={
            "orders": [{"k": "a", "ts": 1000}, {"k": "b", "ts": 1000}],
            "payments": [{"k": "a", "ts": 2000}, {"k": "c", "ts": 1000}],
        },
    )
    assert pairs(out["out"]) == sorted(expected, key=repr)


def test_combine_shapes_results() -> None:
    p = join_pipeline("left", combine=lambda o, r: {"o": o["ts"], "p": r and r["ts"]})
    out = est.run(
        p,
        inputs={
            "orders": [{"k": "a", "ts": 0}, {"k": "z", "ts": 0}],
            "payments": [{"k": "a", "ts": 10}],
        },
    )
    assert sorted(out["out"], key=repr) == [{"o": 0, "p": 10}, {"o": 0, "p": None}]


def test_unmatched_left_is_emitted_when_the_watermark_passes_ts_plus_upper() -> None:
    op, sink = interval_op("outer", -1000, 2000)
    op.receive(rows([("a", 10_000)]), 0)
    advance(op, 12_000)  # 10_000 + upper: a right record at 12_000 could still match
    assert sink.got == []
    op.receive(rows([("a", 12_000)]), 1)
    assert [r["right"]["ts"] for _, r, _ in sink.got] == [12_000]
    advance(op, 12_001)
    # The left record is evicted (matched: nothing more); the right one stays until
    # wm > 12_000 - lower = 13_000.
    assert len(sink.got) == 1
    op.receive(rows([("b", 12_500)]), 0)
    advance(op, 13_000)
    assert len(sink.got) == 1
    advance(op, 13_001)
    assert len(sink.got) == 1  # the right record was matched: not emitted again
    advance(op, 14_501)
    assert sink.got[-1] == (0, {"k": "b", "left": {"k": "b", "ts": 12_500}, "right": None}, 12_500)
    assert op.buffered == 0  # type: ignore[attr-defined]


def test_unmatched_right_is_emitted_when_the_watermark_passes_ts_minus_lower() -> None:
    op, sink = interval_op("right", -1000, 2000)
    op.receive(rows([("a", 5000)]), 1)
    advance(op, 6000)
    assert sink.got == []
    advance(op, 6001)
    assert sink.got == [(0, {"k": "a", "left": None, "right": {"k": "a", "ts": 5000}}, 5000)]


def test_end_of_input_evicts_everything_in_time_order() -> None:
    op, sink = interval_op("outer", 0, 0)
    op.receive(rows([("b", 30), ("a", 10)]), 0)
    op.receive(rows([("c", 20)]), 1)
    advance(op, MAX_TS_MS)
    assert [t for _, _, t in sink.got] == [10, 20, 30]
    assert op.buffered == 0  # type: ignore[attr-defined]


def test_late_records_go_to_the_side_output_unjoined() -> None:
    op, sink = interval_op("outer", -5000, 5000)
    op.receive(rows([("a", 10_000)]), 1)
    advance(op, 9_000)
    op.receive(rows([("a", 8_999), ("a", 9_000)]), 0)  # 8_999 < wm: late
    assert [(port, r["ts"]) for port, r, _ in sink.got if port == 1] == [(1, 8_999)]
    assert [r["left"]["ts"] for port, r, _ in sink.got if port == 0] == [9_000]
    assert op.metrics.late == 1


def test_late_records_in_a_pipeline() -> None:
    out = est.run(
        join_pipeline("outer"),
        inputs={
            "orders": [{"k": "a", "ts": 10_000}, {"k": "a", "ts": 1_000}],
            "payments": [{"k": "a", "ts": 10_000}],
        },
        batch_size=1,
    )
    assert out["late"] == [{"k": "a", "ts": 1_000}]
    assert pairs(out["out"]) == [("a", 10_000, 10_000)]
    assert out.inspector.metrics("join").late == 1


def columnar(key_ts: list[tuple[str, int]]) -> Batch:
    return Batch.of_frame(
        pl.DataFrame(
            {
                "k": [k for k, _ in key_ts],
                "ts": [t for _, t in key_ts],
                "__ts": [t for _, t in key_ts],
                "__key": [k for k, _ in key_ts],
            }
        )
    )


def test_vectorized_path_emits_columnar_struct_results() -> None:
    op, sink = interval_op("inner", -1000, 1000)
    op.receive(columnar([("a", 1000), ("b", 1000)]), 0)
    op.receive(columnar([("a", 2000), ("a", 2001), ("b", 0)]), 1)
    op.on_tick(0)
    got = sorted((r["k"], r["left"]["ts"], r["right"]["ts"], t) for _, r, t in sink.got)
    assert got == [("a", 1000, 2000, 2000), ("b", 1000, 0, 1000)]
    assert op.columnar is not None  # type: ignore[attr-defined]


def test_vectorized_late_rows_and_eviction() -> None:
    op, sink = interval_op("inner", -1000, 1000)
    op.receive(columnar([("a", 1000)]), 0)
    advance(op, 2001)  # the left record can no longer match
    assert op.buffered == 0  # type: ignore[attr-defined]
    op.receive(columnar([("a", 2000), ("a", 2500)]), 1)
    op.on_tick(0)
    assert [(port, r["ts"]) for port, r, _ in sink.got] == [(1, 2000)]
    assert op.metrics.late == 1


def test_row_batch_moves_columnar_buffers_to_the_record_path() -> None:
    op, sink = interval_op("inner", -1000, 1000)
    op.receive(columnar([("a", 1000)]), 0)
    op.receive(rows([("a", 1500), ("b", 1500)]), 1)
    assert op.columnar is None  # type: ignore[attr-defined]
    assert [(r["left"]["ts"], r["right"]["ts"]) for _, r, _ in sink.got] == [(1000, 1500)]
    op.receive(columnar([("b", 2000)]), 0)
    assert [(r["left"]["ts"], r["right"]["ts"]) for _, r, _ in sink.got][-1] == (2000, 1500)


# -- as-of join ----------------------------------------------------------------------


def asof_pipeline(how: str) -> es.Pipeline:
    p = es.Pipeline("asof")
    et = es.EventTime("ts", max_delay=timedelta(0))
    trades = p.source("trades", es.MemorySource([]), timestamps=et).key_by("tk", "k")
    quotes = p.source("quotes", es.MemorySource([]), timestamps=et).key_by("qk", "k")
    j = trades.asof_join("asof", quotes, how=how)  # type: ignore[arg-type]
    j.sink("out", es.CollectSink())
    j.side_output("late").sink("late", es.CollectSink())
    return p


def values(out: list[dict[str, Any]]) -> list[tuple[Any, int, Any]]:
    return [(r["k"], r["left"]["ts"], r["right"] and r["right"]["v"]) for r in out]


QUOTES = [
    {"k": "a", "ts": 1000, "v": 1},
    {"k": "a", "ts": 4000, "v": 2},
    {"k": "a", "ts": 6000, "v": 3},
]


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("inner", [("a", 4000, 2), ("a", 5000, 2)]),
        ("left", [("b", 500, None), ("a", 4000, 2), ("a", 5000, 2)]),
    ],
)
def test_asof_join_picks_latest_value_at_or_before(how: str, expected: list[Any]) -> None:
    trades = [{"k": "b", "ts": 500}, {"k": "a", "ts": 4000}, {"k": "a", "ts": 5000}]
    out = est.run(asof_pipeline(how), inputs={"trades": trades, "quotes": QUOTES})
    assert values(out["out"]) == expected
    assert out.timestamps["out"] == [e[1] for e in expected]


def test_asof_waits_for_the_table_watermark() -> None:
    # The trade at 5000 arrives first, before the quote at 4000: the answer is still v=2.
    out = est.run(
        asof_pipeline("left"),
        inputs={"trades": [{"k": "a", "ts": 5000}], "quotes": QUOTES},
        batch_size=1,
    )
    assert values(out["out"]) == [("a", 5000, 2)]


def test_asof_operator_emits_only_after_the_watermark_passes() -> None:
    step = AsofJoinStep("asof", (("a", "main"), ("b", "main")), None, None, "k", "inner")
    m = StepMetrics("asof", "asof_join")
    op = make_asof_join(step, m, ErrorBoundary("asof", Fail(), DeadLetters(), m), SystemClock())
    sink = Collect()
    op.out.connect("main", sink, 0)
    op.out.connect("late", sink, 1)
    op.receive(rows([("a", 100)]), 0)
    op.receive(Batch([{"k": "a", "v": 1}], [50], keys=["a"]), 1)
    advance(op, 100)
    assert sink.got == []
    op.receive(Batch([{"k": "a", "v": 2}], [100], keys=["a"]), 1)
    advance(op, 101)
    assert [r["right"]["v"] for _, r, _ in sink.got] == [2]
    op.receive(Batch([{"k": "a", "v": 3}], [60], keys=["a"]), 1)  # late table row
    assert sink.got[-1][0] == 1
    assert m.late == 1
    # History before the latest version at or before the watermark is compacted.
    assert len(op.tables["a"]) == 1  # type: ignore[attr-defined]
