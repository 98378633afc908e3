"""Interval join invariants: equal to a nested-loop reference; the vectorized path equals the record path."""

from collections import Counter
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eventspine as es
import eventspine.testing as est
from eventspine.runtime.executor import Executor, RunOptions
from eventspine.runtime.joins import IntervalJoinOperator

MS = timedelta(milliseconds=1)


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    """Random sides, bounds, an arrival order within ``delay`` of event time, and batch size."""
    # Small ranges, so that pairs on the exact bounds are common.
    lower = draw(st.integers(-20, 20))
    upper = lower + draw(st.integers(0, 30))
    n_keys = draw(st.integers(1, 3))
    delay = draw(st.integers(0, 20))

    def side(name: str) -> list[dict[str, Any]]:
        events = draw(
            st.lists(st.tuples(st.integers(0, n_keys - 1), st.integers(0, 60)), max_size=30)
        )
        jitter = draw(st.lists(st.integers(0, delay), min_size=len(events), max_size=len(events)))
        recs = [{"k": f"k{k}", "ts": ts, "id": f"{name}{i}"} for i, (k, ts) in enumerate(events)]
        # Arrive in order of ts + jitter: then ts >= (largest ts seen so far) - delay always.
        order = sorted(range(len(recs)), key=lambda i: (recs[i]["ts"] + jitter[i], i))
        return [recs[i] for i in order]

    return {
        "lower": lower,
        "upper": upper,
        "delay": delay,
        "left": side("l"),
        "right": side("r"),
        "batch": draw(st.integers(1, 8)),
        "partitions": draw(st.integers(1, 2)),
        "how": draw(st.sampled_from(["inner", "left", "right", "outer"])),
    }


def pipeline(sc: dict[str, Any], *, how: str, declared_delay: int) -> es.Pipeline:
    p = es.Pipeline("prop")
    et = es.EventTime("ts", max_delay=declared_delay * MS)
    left = p.source("left", es.MemorySource(sc["left"]), timestamps=et).key_by("lk", "k")
    right = p.source("right", es.MemorySource(sc["right"]), timestamps=et).key_by("rk", "k")
    j = left.interval_join(
        "join",
        right,
        between=(sc["lower"] * MS, sc["upper"] * MS),
        how=how,  # type: ignore[arg-type]
    )
    j.sink("out", es.CollectSink())
    j.side_output("late").sink("late", es.CollectSink())
    return p


def ident(r: dict[str, Any] | None) -> str | None:
    return None if r is None else r["id"]


def result_set(records: list[dict[str, Any]]) -> Counter[tuple[Any, ...]]:
    return Counter((r["k"], ident(r["left"]), ident(r["right"])) for r in records)


def reference(sc: dict[str, Any], how: str) -> Counter[tuple[Any, ...]]:
    out: Counter[tuple[Any, ...]] = Counter()
    matched: set[str] = set()
    for lf in sc["left"]:
        for r in sc["right"]:
            if lf["k"] == r["k"] and sc["lower"] <= r["ts"] - lf["ts"] <= sc["upper"]:
                out[(lf["k"], lf["id"], r["id"])] += 1
                matched |= {lf["id"], r["id"]}
    if how in ("left", "outer"):
        out.update((x["k"], x["id"], None) for x in sc["left"] if x["id"] not in matched)
    if how in ("right", "outer"):
        out.update((r["k"], None, r["id"]) for r in sc["right"] if r["id"] not in matched)
    return out


PROFILE = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROFILE
@given(scenarios())
def test_interval_join_equals_nested_loop_reference(sc: dict[str, Any]) -> None:
    how = sc["how"]
    out = est.run(
        pipeline(sc, how=how, declared_delay=sc["delay"]),
        inputs={"left": sc["left"], "right": sc["right"]},
        batch_size=sc["batch"],
        partitions={"left": sc["partitions"], "right": sc["partitions"]},
    )
    assert out["late"] == []
    assert result_set(out["out"]) == reference(sc, how)
    for rec, ts in zip(out["out"], out.timestamps["out"], strict=True):
        assert ts == max(x["ts"] for x in (rec["left"], rec["right"]) if x is not None)


def run_columnar(sc: dict[str, Any], declared_delay: int) -> tuple[Any, Any, bool]:
    ex = Executor(
        pipeline(sc, how="inner", declared_delay=declared_delay),
        options=RunOptions(min_batch=sc["batch"], max_batch=sc["batch"], handle_signals=False),
    )
    ex.run()
    (op,) = [o for o in ex.plan.operators if isinstance(o, IntervalJoinOperator)]
    sinks = {s.name: s.writer for s in ex.plan.sinks}
    out = sinks["out"]._sink.records  # type: ignore[attr-defined]
    late = sinks["late"]._sink.records  # type: ignore[attr-defined]
    return out, late, op.columnar is not None


@PROFILE
@given(scenarios(), st.integers(0, 20))
def test_vectorized_path_equals_record_path(sc: dict[str, Any], declared_delay: int) -> None:
    # A declared delay below the real one makes some records late: both paths must agree.
    rec = est.run(
        pipeline(sc, how="inner", declared_delay=declared_delay),
        inputs={"left": sc["left"], "right": sc["right"]},
        batch_size=sc["batch"],
    )
    out, late, stayed_columnar = run_columnar(sc, declared_delay)
    assert stayed_columnar or not (sc["left"] and sc["right"])
    assert result_set(out) == result_set(rec["out"])
    assert Counter(r["id"] for r in late) == Counter(r["id"] for r in rec["late"])
    if declared_delay >= sc["delay"]:
        assert result_set(out) == reference(sc, "inner")
