"""Invariants of event-time windows, checked with hypothesis against brute-force references.

Unless a test says otherwise the source's ``max_delay`` covers the whole
input, so no record is late and the results must not depend on arrival
order or batch sizes. ``path`` runs each property through the public
``make_window`` ("auto": the vectorized operator where it applies) and
through the record-at-a-time operator alone ("record").
"""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eventspine as es
import eventspine.testing
from eventspine.connectors.memory import CollectSink, MemorySource
from eventspine.runtime.windows import columnar

MS = timedelta(milliseconds=1)
SPAN_MS = 6000
NO_LATE = es.EventTime("ts", max_delay=timedelta(milliseconds=SPAN_MS + 1))

SETTINGS = settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

records = st.lists(
    st.tuples(st.sampled_from("abc"), st.integers(0, SPAN_MS), st.integers(-50, 50)),
    min_size=1,
    max_size=40,
).map(lambda rs: [{"k": k, "ts": t, "v": v} for k, t, v in rs])


@pytest.fixture(params=["auto", "record"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "record":
        monkeypatch.setattr(columnar, "supports", lambda step: False)
    return str(request.param)


def run(
    kind: Any,
    recs: list[dict[str, Any]],
    *,
    event_time: es.EventTime = NO_LATE,
    emit: Any = None,
    **kw: Any,
) -> Any:
    p = es.Pipeline("props")
    w = (
        p.source("src", MemorySource([]), timestamps=event_time)
        .key_by("by_k", "k")
        .window(kind, emit=emit)
        .aggregate("w", n=es.count(), s=es.sum("v"))
    )
    w.sink("out", CollectSink())
    w.side_output("late").sink("late", CollectSink())
    return es.testing.run(p, {"src": recs}, **kw)


def results(out: Any) -> list[tuple[Any, int, int, int, float]]:
    return sorted(
        (r["k"], r["window_start_ms"], r["window_end_ms"], r["n"], r["s"]) for r in out["out"]
    )


def fixed_reference(
    recs: list[dict[str, Any]], size: int, hop: int
) -> list[tuple[Any, int, int, int, float]]:
    """Every window ``[s, s + size)`` with ``s`` a multiple of ``hop``, by brute force."""
    acc: dict[tuple[str, int], list[float]] = defaultdict(lambda: [0, 0])
    for r in recs:
        for s in range(-(size // hop + 1) * hop, SPAN_MS + 1, hop):
            if s <= r["ts"] < s + size:
                acc[r["k"], s][0] += 1
                acc[r["k"], s][1] += r["v"]
    return sorted((k, s, s + size, n, v) for (k, s), (n, v) in acc.items())


@SETTINGS
@given(recs=records, size=st.sampled_from([1, 7, 500, 1000]))
def test_tumbling_windows_match_brute_force(
    path: str, recs: list[dict[str, Any]], size: int
) -> None:
    assert results(run(es.Tumbling(size * MS), recs)) == fixed_reference(recs, size, size)


@SETTINGS
@given(recs=records, shape=st.sampled_from([(1000, 250), (900, 300), (10, 10), (700, 200)]))
def test_hopping_windows_match_brute_force(
    path: str, recs: list[dict[str, Any]], shape: tuple[int, int]
) -> None:
    size, hop = shape
    assert results(run(es.Hopping(size * MS, hop * MS), recs)) == fixed_reference(recs, size, hop)


@SETTINGS
@given(recs=records, size=st.sampled_from([1, 300, 1000]))
def test_sliding_windows_match_brute_force(
    path: str, recs: list[dict[str, Any]], size: int
) -> None:
    expected = []
    for r in recs:
        t = r["ts"]
        inside = [q for q in recs if q["k"] == r["k"] and t - size < q["ts"] <= t]
        expected.append((r["k"], t - size + 1, t + 1, len(inside), sum(q["v"] for q in inside)))
    assert results(run(es.Sliding(size * MS), recs)) == sorted(expected)


def sessions_reference(
    recs: list[dict[str, Any]], gap: int
) -> list[tuple[Any, int, int, int, float]]:
    out = []
    by_key: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in recs:
        by_key[r["k"]].append(r)
    for k, rs in by_key.items():
        rs.sort(key=lambda r: r["ts"])
        cur = [rs[0]]
        for r in rs[1:]:
            if r["ts"] < cur[-1]["ts"] + gap:
                cur.append(r)
            else:
                out.append(
                    (k, cur[0]["ts"], cur[-1]["ts"] + gap, len(cur), sum(q["v"] for q in cur))
                )
                cur = [r]
        out.append((k, cur[0]["ts"], cur[-1]["ts"] + gap, len(cur), sum(q["v"] for q in cur)))
    return sorted(out)


@SETTINGS
@given(data=st.data(), recs=records, gap=st.sampled_from([1, 200, 1000]))
def test_sessions_do_not_depend_on_arrival_order(
    path: str, data: st.DataObject, recs: list[dict[str, Any]], gap: int
) -> None:
    shuffled = data.draw(st.permutations(recs))
    kind = es.Session(gap * MS)
    expected = sessions_reference(recs, gap)
    assert results(run(kind, recs, batch_size=1)) == expected
    assert results(run(kind, shuffled, batch_size=1)) == expected


@SETTINGS
@given(
    recs=st.lists(
        st.tuples(st.integers(0, SPAN_MS), st.floats(0.001, 1000.0)), min_size=1, max_size=30
    ),
    half_life=st.sampled_from([1, 250, 1000]),
)
def test_exponential_decay_matches_its_closed_form(
    path: str, recs: list[tuple[int, float]], half_life: int
) -> None:
    rows = [{"k": "a", "ts": t, "v": x} for t, x in recs]
    out = run(es.Decaying(es.ExponentialDecay(half_life * MS)), rows, batch_size=3)
    got = out["out"]
    assert len(got) == len(rows)
    assert [g["window_end_ms"] - 1 for g in got] == sorted(t for t, _ in recs)
    for g in got:
        at = g["window_end_ms"] - 1
        weights = [(0.5 ** ((at - t) / half_life), x) for t, x in recs if t <= at]
        assert g["n"] == pytest.approx(sum(w for w, _ in weights), rel=1e-9)
        assert g["s"] == pytest.approx(sum(w * x for w, x in weights), rel=1e-9)


@SETTINGS
@given(
    recs=records,
    delay=st.integers(0, 2000),
    partitions=st.integers(1, 3),
    batch=st.integers(1, 8),
)
def test_on_close_results_come_in_watermark_order(
    path: str, recs: list[dict[str, Any]], delay: int, partitions: int, batch: int
) -> None:
    """OnClose results are released by a watermark that never goes back.

    Each watermark releases the windows ending at or before it, in end order; a
    later (never smaller) watermark only releases later ends, so the ends on the
    output never decrease, however late records and partitions interleave.
    """
    out = run(
        es.Tumbling(500 * MS),
        recs,
        event_time=es.EventTime("ts", max_delay=delay * MS),
        partitions={"src": partitions},
        batch_size=batch,
    )
    ends = [r["window_end_ms"] for r in out["out"]]
    assert ends == sorted(ends)
    # Nothing vanishes: every record is in a result or on the late side output.
    assert sum(r["n"] for r in out["out"]) + len(out["late"]) == len(recs)


KINDS = [
    es.Tumbling(1000 * MS),
    es.Hopping(1000 * MS, 250 * MS),
    es.Session(300 * MS),
    es.Sliding(400 * MS),
    es.Count(3),
    es.Decaying(es.LinearDecay(1000 * MS)),
]


@SETTINGS
@given(recs=records, kind=st.sampled_from(KINDS), batch=st.integers(1, 5))
def test_results_do_not_depend_on_batch_size(
    path: str, recs: list[dict[str, Any]], kind: Any, batch: int
) -> None:
    one = run(kind, recs, batch_size=1)
    other = run(kind, recs, batch_size=batch)
    assert other["out"] == one["out"]
    assert other.timestamps["out"] == one.timestamps["out"]
    assert run(kind, recs)["out"] == one["out"]
