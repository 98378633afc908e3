"""GeneratorSource and reference_table."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pytest

import eventspine as es
from eventspine.connectors.generator import KINDS, GeneratorSource, reference_table
from eventspine.dataflow.ports import OpenContext
from eventspine.runtime.executor import run
from eventspine.timeutil import ManualClock


def drain(src: GeneratorSource, batch: int, columnar: bool = False, clock: Any = None) -> list[Any]:
    out: list[Any] = []
    for r in src.open(OpenContext("gen", clock or ManualClock())):
        while (c := r.poll(batch, columnar)) is not None:
            out.extend(c.records.to_dicts() if isinstance(c.records, pl.DataFrame) else c.records)
    return out


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_same_seed_same_records_whatever_the_batch_sizes(kind: str) -> None:
    src = GeneratorSource(kind, count=20_000, seed=7, partitions=2)
    ref = drain(src, 20_000)
    assert len(ref) == 20_000
    assert drain(src, 333) == ref
    assert drain(src, 5_000, columnar=True) == ref
    assert drain(GeneratorSource(kind, count=20_000, seed=7, partitions=2), 1_000) == ref
    assert drain(GeneratorSource(kind, count=20_000, seed=8, partitions=2), 1_000) != ref


def test_seek_resumes_the_same_stream() -> None:
    src = GeneratorSource("ticks", count=50_000, seed=3)
    ref = drain(src, 50_000)
    (r,) = src.open(OpenContext("gen", ManualClock()))
    r.seek(33_333)
    rest: list[Any] = []
    while (c := r.poll(10_000, False)) is not None:
        if not rest:
            assert c.first_offset == 33_333
        rest.extend(c.records)
    assert rest == ref[33_333:]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_kinds_have_their_documented_fields(kind: str) -> None:
    start = datetime(2024, 5, 1, tzinfo=UTC)
    recs = drain(GeneratorSource(kind, count=2_000, start=start, rate=1000.0), 500, clock=Clocked())
    assert all(tuple(r) == KINDS[kind] for r in recs)
    t0 = int(start.timestamp() * 1000)
    assert [r["ts"] for r in recs[:3]] == [t0, t0 + 1, t0 + 2]
    if kind == "ticks":
        assert {type(r["symbol"]) for r in recs} == {str}
        assert len({r["symbol"] for r in recs}) == 8
        assert all(r["price"] > 0 and r["size"] >= 1 for r in recs)
    elif kind == "iot":
        assert {r["status"] for r in recs} <= {"ok", "fault"}
        ok = [r["temperature"] for r in recs if r["status"] == "ok"]
        assert min(ok) > 10
        assert max(ok) < 35
    else:
        assert len({r["payment_id"] for r in recs}) == 2_000
        assert all(r["amount"] > 0 for r in recs)


class Clocked(ManualClock):
    """A clock that moves 1 s per reading, so a paced source always has records due."""

    def now_ms(self) -> int:
        self.advance(timedelta(seconds=1))
        return super().now_ms()


def test_rare_events_exist_in_a_large_stream() -> None:
    ticks = drain(GeneratorSource("ticks", count=100_000, keys=1), 100_000, columnar=True)
    prices = [t["price"] for t in ticks]
    jumps = [abs(b / a - 1) for a, b in itertools.pairwise(prices)]
    assert sum(j > 0.025 for j in jumps) > 50  # spikes (each gives a jump up and back)
    iot = drain(GeneratorSource("iot", count=50_000), 50_000, columnar=True)
    faults = [r for r in iot if r["status"] == "fault"]
    assert faults
    assert all(r["temperature"] in (-40.0, 125.0) for r in faults)
    pays = drain(GeneratorSource("payments", count=50_000), 50_000)
    home = {r["account"]: r["home_country"] for r in reference_table("payments")}
    odd = [
        p
        for p in pays
        if p["country"] not in {"US", "GB", "DE", "FR", "NL", "ES", "IT", "SE", "PL", "IE"}
    ]
    assert 0.002 < len(odd) / len(pays) < 0.01
    assert all(p["country"] != home[p["account"]] for p in odd)


def test_rate_is_paced_on_the_run_clock_without_sleeping() -> None:
    clock = ManualClock()
    src = GeneratorSource("iot", rate=100.0, count=1_000, partitions=2)
    readers = src.open(OpenContext("gen", clock))
    got = [r.poll(1_000, False) for r in readers]
    assert [len(c.records) for c in got] == [1, 1]  # record 0 is due at once
    clock.advance(timedelta(seconds=1))
    got = [r.poll(1_000, False) for r in readers]
    assert [len(c.records) for c in got] == [50, 50]  # 100/s over two partitions
    assert [r.poll(1_000, False).records for r in readers] == [[], []]
    clock.advance(timedelta(milliseconds=25))
    assert [len(r.poll(1_000, True).records) for r in readers] == [1, 1]
    ts = [rec["ts"] for rec in got[0].records]
    assert ts[1] - ts[0] == 20  # 1000 ms * 2 partitions / 100 per s


def test_keys_are_partitioned_and_disorder_is_bounded() -> None:
    src = GeneratorSource(
        "ticks", count=4_000, partitions=2, keys=4, disorder=timedelta(milliseconds=50)
    )
    parts = []
    for r in src.open(OpenContext("gen", ManualClock())):
        recs = r.poll(10_000, False).records
        parts.append({x["symbol"] for x in recs})
        ts = [x["ts"] for x in recs]
        assert any(b < a for a, b in itertools.pairwise(ts))
        assert max(a - b for a, b in itertools.pairwise(ts)) <= 51
    assert parts[0].isdisjoint(parts[1])
    assert len(parts[0] | parts[1]) == 4


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown kind"):
        GeneratorSource("weather")
    with pytest.raises(ValueError, match="partitions"):
        GeneratorSource("ticks", keys=2, partitions=3)
    with pytest.raises(ValueError, match="rate"):
        GeneratorSource("ticks", rate=0)


def test_reference_table_versions() -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    table = reference_table("ticks", 1, start=start, versions=3, every=timedelta(minutes=1))
    assert len(table) == 24
    assert tuple(table[0]) == ("symbol", "sector", "lot_size", "valid_from_ts")
    t0 = int(start.timestamp() * 1000)
    assert sorted({r["valid_from_ts"] for r in table}) == [
        t0 - 86_400_000,
        t0 + 60_000,
        t0 + 120_000,
    ]
    assert table == reference_table("ticks", 1, start=start, versions=3, every=timedelta(minutes=1))
    assert {r["symbol"] for r in table} == {
        r["symbol"] for r in drain(GeneratorSource("ticks", count=500), 500)
    }


def test_generated_ticks_through_a_windowed_pipeline() -> None:
    sink = es.CollectSink()
    p = es.Pipeline("gen")
    (
        p.source("ticks", GeneratorSource("ticks", count=200_000), timestamps=es.EventTime("ts"))
        .key_by("by_symbol", "symbol")
        .window(es.Tumbling(timedelta(seconds=10)))
        .aggregate("bars", n=es.count())
        .sink("out", sink)
    )
    run(p, clock=ManualClock())
    assert sum(r["n"] for r in sink.records) == 200_000
