"""Window operators (the record-at-a-time path), through ``es.testing.run``.

Every test here forces the record path (the vectorized operator is tested
against it in ``test_columnar_window.py``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

import eventspine as es
import eventspine.testing
from eventspine.connectors.memory import CollectSink, MemorySource
from eventspine.runtime.windows import columnar

MS = timedelta(milliseconds=1)
S = timedelta(seconds=1)


@pytest.fixture(autouse=True)
def record_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``make_window`` build the record-at-a-time operator for every step."""
    monkeypatch.setattr(columnar, "supports", lambda step: False)


def r(k: str, ts: int, v: float = 1.0) -> dict[str, Any]:
    return {"k": k, "ts": ts, "v": v}


def pipeline(
    kind: es.dataflow.time.WindowKind,
    *,
    emit: Any = None,
    lateness: timedelta = timedelta(0),
    event_time: es.EventTime | None = None,
    **aggs: Any,
) -> es.Pipeline:
    p = es.Pipeline("windows")
    w = (
        p.source("src", MemorySource([]), timestamps=event_time or es.EventTime("ts"))
        .key_by("by_k", "k")
        .window(kind, emit=emit, allowed_lateness=lateness)
        .aggregate("w", **(aggs or {"n": es.count(), "total": es.sum("v")}))
    )
    w.sink("out", CollectSink())
    w.side_output("late").sink("late", CollectSink())
    return p


def brief(rows: list[dict[str, Any]], *fields: str) -> list[tuple[Any, ...]]:
    return [
        tuple(row[f] for f in ("k", "window_start_ms", "window_end_ms", *fields)) for row in rows
    ]


def test_tumbling_windows_per_key_closed_in_end_then_key_order() -> None:
    recs = [r("b", 10, 2), r("a", 0, 1), r("a", 999, 3), r("a", 1000, 5), r("b", 2500, 7)]
    out = es.testing.run(pipeline(es.Tumbling(S)), {"src": recs})
    assert brief(out["out"], "n", "total") == [
        ("a", 0, 1000, 2, 4.0),
        ("b", 0, 1000, 1, 2.0),
        ("a", 1000, 2000, 1, 5.0),
        ("b", 2000, 3000, 1, 7.0),
    ]
    assert out.timestamps["out"] == [999, 999, 1999, 2999]
    assert out.inspector.snapshot()["w"].state_keys == 0


def test_tumbling_offset_shifts_the_grid() -> None:
    out = es.testing.run(
        pipeline(es.Tumbling(S, offset=250 * MS)), {"src": [r("a", 100), r("a", 300)]}
    )
    assert brief(out["out"], "n") == [("a", -750, 250, 1), ("a", 250, 1250, 1)]


def test_hopping_record_lands_in_size_over_hop_windows() -> None:
    out = es.testing.run(pipeline(es.Hopping(3 * S, S)), {"src": [r("a", 1500)]})
    assert brief(out["out"], "n") == [
        ("a", -1000, 2000, 1),
        ("a", 0, 3000, 1),
        ("a", 1000, 4000, 1),
    ]


def test_session_merges_when_a_record_bridges_two_sessions() -> None:
    recs = [r("a", 0, 1), r("a", 2000, 2), r("b", 500, 9), r("a", 1000, 4), r("a", 9000, 8)]
    p = pipeline(es.Session(1500 * MS), event_time=es.EventTime("ts", max_delay=5 * S))
    out = es.testing.run(p, {"src": recs}, batch_size=1)
    # 0 and 2000 are two sessions until 1000 arrives (1000 < 0 + 1500, 2000 < 1000 + 1500).
    assert brief(out["out"], "n", "total") == [
        ("b", 500, 2000, 1, 9.0),
        ("a", 0, 3500, 3, 7.0),
        ("a", 9000, 10500, 1, 8.0),
    ]


def test_sliding_one_window_per_record() -> None:
    recs = [r("a", 0, 1), r("a", 400, 2), r("a", 1000, 4), r("a", 1000, 8), r("a", 1500, 16)]
    out = es.testing.run(pipeline(es.Sliding(S)), {"src": recs})
    totals = [(row["window_end_ms"] - 1, row["total"]) for row in out["out"]]
    # (t - 1 s, t]: at 1000 the record at 0 has left, both records at 1000 count.
    assert totals == [(0, 1.0), (400, 3.0), (1000, 14.0), (1000, 14.0), (1500, 28.0)]
    assert out.timestamps["out"] == [0, 400, 1000, 1000, 1500]


def test_count_windows_in_arrival_order_with_partial_flush_at_end() -> None:
    recs = [r("a", 500, 1), r("a", 100, 2), r("b", 7, 4), r("a", 300, 8), r("a", 900, 16)]
    out = es.testing.run(pipeline(es.Count(3)), {"src": recs})
    assert brief(out["out"], "n", "total") == [
        ("a", 100, 501, 3, 11.0),
        ("b", 7, 8, 1, 4.0),
        ("a", 900, 901, 1, 16.0),
    ]
    assert out.timestamps["out"] == [500, 7, 900]


def test_decaying_exponential_one_result_per_record_in_event_time_order() -> None:
    recs = [r("a", 2000, 4), r("a", 0, 2), r("a", 1000, 1)]
    kind = es.Decaying(es.ExponentialDecay(half_life=S))
    p = pipeline(
        kind,
        event_time=es.EventTime("ts", max_delay=5 * S),
        n=es.count(),
        s=es.sum("v"),
        m=es.mean("v"),
    )
    out = es.testing.run(p, {"src": recs})
    got = [(row["window_end_ms"] - 1, row["n"], row["s"]) for row in out["out"]]
    assert got == [
        (0, pytest.approx(1.0), pytest.approx(2.0)),
        (1000, pytest.approx(1.5), pytest.approx(2.0)),
        (2000, pytest.approx(1.75), pytest.approx(5.0)),
    ]
    assert out["out"][2]["m"] == pytest.approx(5.0 / 1.75)


def test_decaying_linear_forgets_records_beyond_the_horizon() -> None:
    kind = es.Decaying(es.LinearDecay(horizon=2 * S))
    out = es.testing.run(
        pipeline(kind, n=es.count()), {"src": [r("a", 0), r("a", 1000), r("a", 2500)]}
    )
    # At 2500: the record at 0 is 2.5 s old (weight 0), the one at 1000 weighs 1 - 1.5 / 2.
    assert [row["n"] for row in out["out"]] == [
        pytest.approx(1.0),
        pytest.approx(1.5),
        pytest.approx(1.25),
    ]


def test_decaying_every_interval_evaluates_at_aligned_watermark_ticks() -> None:
    kind = es.Decaying(es.ExponentialDecay(half_life=S))
    p = pipeline(kind, emit=es.EveryInterval(S), n=es.count())
    out = es.testing.run(p, {"src": [r("a", 0), r("a", 1500), r("a", 3200)]}, batch_size=1)
    got = [(row["window_end_ms"] - 1, round(row["n"], 6), row["final"]) for row in out["out"]]
    # Ticks at 1000 (watermark 1500) and 3000 (watermark 3200), then the final value at the
    # last record.
    assert got[-1] == (3200, round(1 + 0.5**1.7 + 0.5**3.2, 6), True)
    assert (1000, 0.5, False) in got
    assert (3000, round(0.5**3 + 0.5**1.5, 6), False) in got


def test_on_change_emits_every_update_then_the_final_result() -> None:
    out = es.testing.run(
        pipeline(es.Tumbling(S), emit=es.OnChange()), {"src": [r("a", 0), r("a", 10), r("a", 1200)]}
    )
    assert [(row["window_start_ms"], row["n"], row["final"]) for row in out["out"]] == [
        (0, 1, False),
        (0, 2, False),
        (1000, 1, False),
        (0, 2, True),
        (1000, 1, True),
    ]


def test_every_n_emits_each_n_records_of_a_window() -> None:
    recs = [r("a", t) for t in (0, 1, 2, 3, 4)]
    out = es.testing.run(pipeline(es.Tumbling(S), emit=es.EveryN(2)), {"src": recs})
    assert [(row["n"], row["final"]) for row in out["out"]] == [(2, False), (4, False), (5, True)]


def test_every_interval_updates_when_the_watermark_crosses_a_boundary() -> None:
    recs = [r("a", 0), r("a", 300), r("a", 600), r("a", 900)]
    out = es.testing.run(
        pipeline(es.Tumbling(S), emit=es.EveryInterval(500 * MS)), {"src": recs}, batch_size=1
    )
    # Watermarks 0, 300, 600, 900: boundaries crossed at 0 (from -inf), 300 (> 0) and 600 (> 500).
    assert [(row["n"], row["final"]) for row in out["out"]] == [
        (1, False),
        (2, False),
        (3, False),
        (4, True),
    ]


def test_allowed_lateness_updates_and_re_emits_then_sends_later_records_aside() -> None:
    recs = [r("a", 0), r("a", 1500), r("a", 200), r("a", 2600), r("a", 300)]
    p = pipeline(es.Tumbling(S), lateness=S)
    out = es.testing.run(p, {"src": recs}, batch_size=1)
    # 200 arrives at watermark 1500 < 1000 + 1 s: [0, 1000) is corrected (n=2 replaces n=1).
    # 300 arrives at watermark 2600 >= 2000: too late.
    assert brief(out["out"], "n") == [
        ("a", 0, 1000, 1),
        ("a", 0, 1000, 2),
        ("a", 1000, 2000, 1),
        ("a", 2000, 3000, 1),
    ]
    assert out["late"] == [r("a", 300)]
    assert out.inspector.snapshot()["w"].late == 1


@pytest.mark.parametrize(
    "kind",
    [
        es.Tumbling(S),
        es.Hopping(2 * S, S),
        es.Session(500 * MS),
        es.Sliding(S),
        es.Decaying(es.LinearDecay(S)),
    ],
    ids=repr,
)
def test_late_records_are_counted_and_sent_to_the_side_output(kind: Any) -> None:
    recs = [r("a", 100), r("a", 5000), r("b", 200, 3.0), r("a", 5001)]
    aggs = {"n": es.count()}
    out = es.testing.run(pipeline(kind, **aggs), {"src": recs}, batch_size=1)
    assert out["late"] == [r("b", 200, 3.0)]
    assert out.inspector.snapshot()["w"].late == 1
    assert all(row["k"] == "a" for row in out["out"])


def test_end_of_input_flushes_every_open_window() -> None:
    p = pipeline(es.Tumbling(S), event_time=es.EventTime("ts", max_delay=timedelta(days=1)))
    out = es.testing.run(p, {"src": [r("a", 0), r("b", 50_000)]}, batch_size=1)
    assert brief(out["out"], "n") == [("a", 0, 1000, 1), ("b", 50_000, 51_000, 1)]


def test_idle_input_closes_a_window_while_the_stream_is_quiet() -> None:
    p = pipeline(es.Tumbling(S), event_time=es.EventTime("ts", idle_timeout=S), n=es.count())
    recs = [r("a", 100), r("a", 500), es.testing.Idle(5 * S), r("a", 600), r("a", 7000)]
    out = es.testing.run(p, {"src": recs})
    # [0, 1000) closed during the silence: the record at 600 that follows it is late.
    assert brief(out["out"], "n") == [("a", 0, 1000, 2), ("a", 7000, 8000, 1)]
    assert out["late"] == [r("a", 600)]


def test_several_partitions_give_the_single_partition_result() -> None:
    recs = [r(k, t, float(t)) for t in range(0, 4000, 70) for k in ("a", "b", "c")]
    one = es.testing.run(pipeline(es.Tumbling(S)), {"src": recs})
    three = es.testing.run(pipeline(es.Tumbling(S)), {"src": recs}, partitions={"src": 3})
    assert three["out"] == one["out"]
    assert len(one["out"]) == 12


def test_first_last_collect_and_a_custom_aggregator_of_whole_records() -> None:
    class Keys:
        def create(self) -> set[int]:
            return set()

        def add(self, acc: set[int], record: dict[str, Any]) -> set[int]:
            acc.add(record["ts"])
            return acc

        def merge(self, a: set[int], b: set[int]) -> set[int]:
            return a | b

        def result(self, acc: set[int]) -> list[int]:
            return sorted(acc)

    recs = [r("a", 300, 3), r("a", 100, 1), r("a", 200, 2)]
    aggs = {"f": es.first("v"), "l": es.last("v"), "c": es.collect("v"), "ts": es.agg(Keys())}
    out = es.testing.run(pipeline(es.Session(S), **aggs), {"src": recs})
    assert out["out"] == [
        {
            "k": "a",
            "window_start_ms": 100,
            "window_end_ms": 1300,
            "f": 1,
            "l": 3,
            "c": [3, 1, 2],
            "ts": [100, 200, 300],
        }
    ]


def test_a_failing_user_aggregator_follows_the_error_policy() -> None:
    class Fussy:
        def create(self) -> int:
            return 0

        def add(self, acc: int, value: float) -> int:
            if value < 0:
                raise ValueError("negative")
            return acc + 1

        def merge(self, a: int, b: int) -> int:
            return a + b

        def result(self, acc: int) -> int:
            return acc

    p = pipeline(es.Tumbling(S), n=es.agg(Fussy(), "v"))
    skip = es.Pipeline("windows", on_error=es.Skip())
    for step in p.steps.values():
        skip._add(step)
    out = es.testing.run(skip, {"src": [r("a", 0, 1), r("a", 1, -1), r("a", 2, 1)]})
    assert brief(out["out"], "n") == [("a", 0, 1000, 2)]
    assert out.inspector.snapshot()["w"].skipped == 1
    with pytest.raises(es.StepError):
        es.testing.run(p, {"src": [r("a", 1, -1)]})


def test_update_modes_a_sliding_window_cannot_honour_are_refused() -> None:
    with pytest.raises(es.DefinitionError, match="Sliding"):
        es.testing.run(pipeline(es.Sliding(S), emit=es.OnChange()), {"src": []})
