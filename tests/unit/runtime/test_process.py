"""The process operator: per-key state, event and processing timers, emit, side outputs, errors."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import eventspine as es
import eventspine.testing as est
from eventspine.dataflow.ports import Fail
from eventspine.dataflow.steps import ProcessStep
from eventspine.records import Batch
from eventspine.runtime.metrics import StepMetrics
from eventspine.runtime.operator import DeadLetters, ErrorBoundary, Operator
from eventspine.runtime.process import ProcessOperator, make_process
from eventspine.testing import Idle, ManualClock
from eventspine.timeutil import MAX_TS_MS

S = timedelta(seconds=1)


def pipeline(processor: Any, *, keyed: bool = True, on_error: Any = None) -> es.Pipeline:
    p = es.Pipeline("proc")
    src = p.source("in", es.MemorySource([]), timestamps=es.EventTime("ts"))
    stream = src.key_by("by_k", "k") if keyed else src
    out = stream.process("proc", processor, on_error=on_error)
    out.sink("out", es.CollectSink())
    out.side_output("alerts").sink("alerts", es.CollectSink())
    return p


def test_state_is_per_key() -> None:
    def count(record: dict[str, Any], ctx: es.ProcessContext) -> None:
        ctx.state["n"] = ctx.state.get("n", 0) + 1
        ctx.emit({"k": ctx.key, "n": ctx.state["n"]})

    recs = [{"k": k, "ts": i} for i, k in enumerate("abab a")]
    out = est.run(pipeline(count), inputs={"in": recs})
    assert [(r["k"], r["n"]) for r in out["out"]] == [
        ("a", 1),
        ("b", 1),
        ("a", 2),
        ("b", 2),
        (" ", 1),
        ("a", 3),
    ]
    assert out.timestamps["out"] == [0, 1, 2, 3, 4, 5]


def test_unkeyed_stream_shares_one_state() -> None:
    def total(record: dict[str, Any], ctx: es.ProcessContext) -> None:
        assert ctx.key is None
        ctx.state["sum"] = ctx.state.get("sum", 0) + record["v"]
        ctx.emit(ctx.state["sum"])

    recs = [{"k": k, "ts": 0, "v": v} for k, v in (("a", 1), ("b", 2), ("c", 3))]
    assert est.run(pipeline(total, keyed=False), inputs={"in": recs})["out"] == [1, 3, 6]


class Reminder:
    """Sets an event timer 10 s after each key's first record; emits at the timer."""

    def on_record(self, record: dict[str, Any], ctx: es.ProcessContext) -> None:
        if "first" not in ctx.state:
            ctx.state["first"] = ctx.ts_ms
            ctx.set_event_timer(ctx.ts_ms + 10_000)

    def on_timer(self, ctx: es.ProcessContext) -> None:
        ctx.emit({"k": ctx.key, "at": ctx.ts_ms, "wm": ctx.watermark_ms, "when": ctx.timestamp})


def test_event_timers_fire_in_time_order_when_the_watermark_reaches_them() -> None:
    recs = [
        {"k": "b", "ts": 5_000},
        {"k": "a", "ts": 1_000},
        {"k": "c", "ts": 3_000},
        {"k": "z", "ts": 13_000},
        {"k": "y", "ts": 30_000},
    ]
    out = est.run(pipeline(Reminder()), inputs={"in": recs}, batch_size=1)
    got = [(r["k"], r["at"]) for r in out["out"]]
    assert got == [("a", 11_000), ("c", 13_000), ("b", 15_000), ("z", 23_000), ("y", 40_000)]
    # a and c fire once the watermark reached 13 000 (the record z), before end of input.
    assert out["out"][0]["wm"] == 13_000
    assert out["out"][1]["wm"] == 13_000
    assert out["out"][0]["when"] == datetime(1970, 1, 1, 0, 0, 11, tzinfo=UTC)
    assert out.timestamps["out"] == [11_000, 13_000, 15_000, 23_000, 40_000]


def op_under_test(processor: Any) -> tuple[ProcessOperator, list[Any]]:
    step = ProcessStep("proc", (("in", "main"),), None, processor, keyed=True)
    m = StepMetrics("proc", "process")
    op = make_process(step, m, ErrorBoundary("proc", Fail(), DeadLetters(), m), ManualClock())
    got: list[Any] = []

    class Sink(Operator):
        def on_batch(self, batch: Batch, port: int) -> None:
            got.extend(zip(batch.rows, batch.ts, strict=True))

    op.out.connect("main", Sink("s", StepMetrics("s", "sink")), 0)
    return op, got


def test_timers_dedupe_delete_and_fire_before_the_watermark_moves_on() -> None:
    class P:
        def on_record(self, record: Any, ctx: es.ProcessContext) -> None:
            if record.get("cancel"):
                ctx.delete_timers()
                return
            ctx.set_event_timer(record["at"])
            ctx.set_event_timer(record["at"])  # the same timer again: fires once

        def on_timer(self, ctx: es.ProcessContext) -> None:
            ctx.emit(ctx.key)

    op, got = op_under_test(P())
    op.receive(Batch([{"at": 100}, {"at": 50}, {"at": 70}], [0, 0, 0], keys=["a", "b", "c"]), 0)
    op.receive(Batch([{"cancel": True}], [0], keys=["c"]), 0)
    op.watermark_ms = 99
    op.on_watermark(99)
    assert got == [("b", 50)]
    op.watermark_ms = 100
    op.on_watermark(100)
    assert got == [("b", 50), ("a", 100)]
    assert op.dirty_keys == {"a", "b", "c"}
    # A timer set at or before the current watermark fires right after its batch.
    op.receive(Batch([{"at": 80}], [0], keys=["d"]), 0)
    assert got[-1] == ("d", 80)


def test_end_of_input_fires_event_timers_and_stops_self_rearming_ones() -> None:
    class Heartbeat:
        def on_record(self, record: Any, ctx: es.ProcessContext) -> None:
            ctx.set_event_timer(ctx.ts_ms + 1000)
            ctx.set_event_timer(ctx.ts_ms + 3000)

        def on_timer(self, ctx: es.ProcessContext) -> None:
            ctx.emit(ctx.ts_ms)
            ctx.set_event_timer(ctx.ts_ms + 1000)  # re-arms forever

    op, got = op_under_test(Heartbeat())
    op.receive(Batch([{}], [0], keys=["a"]), 0)
    op.watermark_ms = MAX_TS_MS
    op.on_watermark(MAX_TS_MS)
    assert [t for _, t in got] == [1000, 2000, 3000]


def test_processing_timers_fire_with_the_wall_clock_but_not_at_end_of_input() -> None:
    clock = ManualClock(datetime(2024, 1, 1, tzinfo=UTC))
    start = clock.now_ms()

    class Timeout:
        def on_record(self, record: Any, ctx: es.ProcessContext) -> None:
            ctx.set_processing_timer(start + record["after_ms"])

        def on_timer(self, ctx: es.ProcessContext) -> None:
            ctx.emit({"k": ctx.key, "at": ctx.ts_ms})

    recs = [
        {"k": "a", "ts": 0, "after_ms": 5_000},
        {"k": "b", "ts": 0, "after_ms": 3_600_000},
        Idle(10 * S),
    ]
    out = est.run(pipeline(Timeout()), inputs={"in": recs}, clock=clock)
    assert out["out"] == [{"k": "a", "at": start + 5_000}]  # b's timer is an hour away


def test_processing_timer_on_the_operator_with_a_manual_clock() -> None:
    class P:
        def on_record(self, record: Any, ctx: es.ProcessContext) -> None:
            ctx.set_processing_timer(record["at"])

        def on_timer(self, ctx: es.ProcessContext) -> None:
            ctx.emit("fired")

    op, got = op_under_test(P())
    op.receive(Batch([{"at": 2000}], [0], keys=["a"]), 0)
    op.on_tick(1999)
    assert got == []
    op.on_tick(2000)
    assert got == [("fired", 2000)]
    op.on_tick(5000)
    assert len(got) == 1


def test_emit_to_side_output() -> None:
    def route(record: dict[str, Any], ctx: es.ProcessContext) -> None:
        if record["v"] > 10:
            ctx.emit_to("alerts", {"k": ctx.key, "v": record["v"]})
        else:
            ctx.emit(record["v"], ts_ms=ctx.ts_ms + 1)

    recs = [{"k": "a", "ts": 5, "v": 1}, {"k": "a", "ts": 6, "v": 50}]
    out = est.run(pipeline(route), inputs={"in": recs})
    assert out["out"] == [1]
    assert out.timestamps["out"] == [6]
    assert out["alerts"] == [{"k": "a", "v": 50}]
    assert out.timestamps["alerts"] == [6]


def fails_on_bad(record: dict[str, Any], ctx: es.ProcessContext) -> None:
    ctx.emit("partial")
    if record.get("bad"):
        raise ValueError("bad record")
    ctx.emit(record["v"])


@pytest.mark.parametrize("policy", [es.Skip(), es.DeadLetter("dlq")])
def test_errors_follow_the_policy_and_drop_partial_output(policy: Any) -> None:
    recs = [
        {"k": "a", "ts": 0, "v": 1},
        {"k": "a", "ts": 1, "bad": True},
        {"k": "a", "ts": 2, "v": 3},
    ]
    out = est.run(pipeline(fails_on_bad, on_error=policy), inputs={"in": recs})
    assert out["out"] == ["partial", 1, "partial", 3]
    m = out.inspector.metrics("proc")
    if isinstance(policy, es.Skip):
        assert m.skipped == 1
        assert out.dead_letters == []
    else:
        assert m.dead_lettered == 1
        (entry,) = out.dead_letters
        assert entry.step == "proc"
        assert entry.error_type == "ValueError"
        assert entry.record == {"k": "a", "ts": 1, "bad": True}
        assert entry.offset == 1


def test_fail_policy_stops_with_step_error() -> None:
    with pytest.raises(es.StepError, match="proc"):
        est.run(pipeline(fails_on_bad), inputs={"in": [{"k": "a", "ts": 0, "bad": True}]})


def test_failing_timer_is_dead_lettered() -> None:
    class P:
        def on_record(self, record: Any, ctx: es.ProcessContext) -> None:
            ctx.set_event_timer(ctx.ts_ms + 1)

        def on_timer(self, ctx: es.ProcessContext) -> None:
            raise RuntimeError("boom")

    out = est.run(pipeline(P(), on_error=es.DeadLetter()), inputs={"in": [{"k": "a", "ts": 0}]})
    (entry,) = out.dead_letters
    assert entry.record == {"timer_ms": 1, "key": "a"}


def test_empty_state_is_dropped_and_counted() -> None:
    def toggle(record: dict[str, Any], ctx: es.ProcessContext) -> None:
        if ctx.state.pop("on", None) is None:
            ctx.state["on"] = True

    out = est.run(pipeline(toggle), inputs={"in": [{"k": k, "ts": 0} for k in "aab"]})
    assert out.inspector.metrics("proc").state_keys == 1  # only b is still on
