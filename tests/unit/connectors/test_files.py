"""JsonLinesSource/CsvSource and JsonLinesSink/CsvSink."""

from __future__ import annotations

import json
import logging
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
import polars as pl
import pytest

import eventspine as es
from eventspine.connectors.files import CsvSink, CsvSource, JsonLinesSink, JsonLinesSource
from eventspine.dataflow.ports import Chunk, OpenContext
from eventspine.errors import DecodeError, SourceError
from eventspine.records import Batch
from eventspine.runtime.executor import run
from eventspine.timeutil import ManualClock


class Tick(es.Event):
    symbol: str
    price: float
    ts: int


def ctx(step: str = "src", worker: int = 0, workers: int = 1) -> OpenContext:
    return OpenContext(step, ManualClock(), worker=worker, workers=workers)


def reader(source: Any, **kw: Any) -> Any:
    (r,) = source.open(ctx(**kw))
    return r


def drain(r: Any, batch: int = 1000, columnar: bool = False) -> tuple[list[Any], list[DecodeError]]:
    recs: list[Any] = []
    errs: list[DecodeError] = []
    while (c := r.poll(batch, columnar)) is not None:
        recs.extend(c.records.to_dicts() if isinstance(c.records, pl.DataFrame) else c.records)
        errs.extend(c.errors)
    return recs, errs


TICKS = [{"symbol": f"S{i % 3}", "price": 100.0 + i / 4, "ts": 1_000 + i} for i in range(50)]


def write_lines(path: Path, lines: list[bytes], newline_at_end: bool = True) -> Path:
    path.write_bytes(b"\n".join(lines) + (b"\n" if newline_at_end else b""))
    return path


def jsonl(path: Path, rows: list[dict[str, Any]], newline_at_end: bool = True) -> Path:
    return write_lines(path, [json.dumps(r).encode() for r in rows], newline_at_end)


# -- round trips ---------------------------------------------------------------------


def test_jsonl_round_trip_rows_and_columnar_are_identical(tmp_path: Path) -> None:
    out = tmp_path / "deep" / "dir" / "out.jsonl"
    w = JsonLinesSink(out).open(ctx())
    w.write(Batch(TICKS[:20], [0] * 20))
    frame = pl.DataFrame(TICKS[20:]).with_columns(pl.lit(0).alias("__ts"), pl.lit(1).alias("__off"))
    w.write(Batch.of_frame(frame))
    w.flush()
    w.close()
    assert b"__ts" not in out.read_bytes()
    for schema in (None, Tick):
        for batch in (1, 7, 1000):
            rows, e1 = drain(reader(JsonLinesSource(out, schema=schema)), batch)
            cols, e2 = drain(reader(JsonLinesSource(out, schema=schema)), batch, columnar=True)
            got = [msgspec.structs.asdict(r) for r in rows] if schema else rows
            assert got == TICKS
            assert cols == TICKS
            assert not e1
            assert not e2


def test_columnar_chunks_are_frames_and_typed_rows_are_events(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "t.jsonl", TICKS)
    c = reader(JsonLinesSource(path, schema=Tick)).poll(10, True)
    assert isinstance(c.records, pl.DataFrame)
    assert c.records.schema == pl.Schema({"symbol": pl.String, "price": pl.Float64, "ts": pl.Int64})
    assert (c.first_offset, c.next_offset, c.offsets) == (0, 10, None)
    r = reader(JsonLinesSource(path, schema=Tick)).poll(10, False)
    assert r.records[0] == Tick(symbol="S0", price=100.0, ts=1000)


def test_sink_writes_struct_columns_as_nested_objects(tmp_path: Path) -> None:
    out = tmp_path / "s.jsonl"
    frame = pl.DataFrame({"k": ["a"], "agg": [{"n": 2, "mean": 1.5}], "__ts": [5], "__key": ["a"]})
    w = JsonLinesSink(out).open(ctx())
    w.write(Batch.of_frame(frame))
    w.close()
    assert json.loads(out.read_text()) == {"k": "a", "agg": {"n": 2, "mean": 1.5}}


def test_sink_overwrites_and_writes_typed_rows(tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    out.write_text("old\n")
    w = JsonLinesSink(out).open(ctx())
    w.write(Batch([Tick(symbol="A", price=1.5, ts=3)], [3], record_type=Tick))
    w.close()
    assert out.read_text() == '{"symbol":"A","price":1.5,"ts":3}\n'


def test_csv_sink_round_trip_rows_and_frames(tmp_path: Path) -> None:
    out = tmp_path / "o.csv"
    w = CsvSink(out).open(ctx())
    w.write(Batch(TICKS[:5], [0] * 5))
    w.write(Batch.of_frame(pl.DataFrame(TICKS[5:]).with_columns(pl.lit(0).alias("__ts"))))
    w.close()
    lines = out.read_text().splitlines()
    assert lines[0] == "symbol,price,ts"
    assert len(lines) == 51
    rows, errs = drain(reader(CsvSource(out, schema=Tick)))
    assert [msgspec.structs.asdict(r) for r in rows] == TICKS
    cols, _ = drain(reader(CsvSource(out, schema=Tick)), columnar=True)
    assert cols == TICKS
    assert not errs


def test_csv_sink_columns_nested_and_missing_values(tmp_path: Path) -> None:
    out = tmp_path / "o.csv"
    w = CsvSink(out, columns=["k", "s", "l", "gone", "b"]).open(ctx())
    frame = pl.DataFrame({"k": ["a"], "s": [{"x": 1}], "l": [[1, 2]], "b": [True], "__ts": [0]})
    w.write(Batch.of_frame(frame))
    w.write(Batch([{"k": "b", "s": {"x": 2}, "l": [3], "b": False}], [0]))
    w.close()
    assert out.read_text().splitlines() == [
        "k,s,l,gone,b",
        'a,"{""x"":1}","[1,2]",,true',
        'b,"{""x"":2}",[3],,false',
    ]


# -- partitions and offsets --------------------------------------------------------------


def test_glob_gives_one_partition_per_file_sorted(tmp_path: Path) -> None:
    for name, part in (("b.jsonl", TICKS[10:20]), ("a.jsonl", TICKS[:10]), ("c.jsonl", TICKS[20:])):
        jsonl(tmp_path / name, part)
    readers = JsonLinesSource(tmp_path / "*.jsonl").open(ctx("in"))
    assert [r.partition for r in readers] == ["in/a.jsonl", "in/b.jsonl", "in/c.jsonl"]
    assert [drain(r)[0] for r in readers] == [TICKS[:10], TICKS[10:20], TICKS[20:]]
    second = JsonLinesSource(tmp_path / "*.jsonl").open(ctx("in", worker=1, workers=2))
    assert [r.partition for r in second] == ["in/b.jsonl"]
    with pytest.raises(SourceError, match="no file matches"):
        JsonLinesSource(tmp_path / "*.csv").open(ctx())
    with pytest.raises(SourceError, match="does not exist"):
        JsonLinesSource(tmp_path / "missing.jsonl").open(ctx())


@pytest.mark.parametrize("newline_at_end", [True, False])
@pytest.mark.parametrize("columnar", [True, False])
def test_seek_resumes_exactly_after_a_committed_chunk(
    tmp_path: Path, newline_at_end: bool, columnar: bool
) -> None:
    lines = [json.dumps(t).encode() for t in TICKS]
    lines[5] = b""  # an empty line uses up a line number
    path = write_lines(tmp_path / "t.jsonl", lines, newline_at_end)
    expected = [t for i, t in enumerate(TICKS) if i != 5]
    for size in (1, 3, 17, 49, 50):
        r = reader(JsonLinesSource(path))
        first = r.poll(size, columnar)
        assert first is not None
        got = first.records.to_dicts() if isinstance(first.records, pl.DataFrame) else first.records
        r2 = reader(JsonLinesSource(path))
        r2.seek(first.next_offset)
        rest, _ = drain(r2, 4, columnar)
        assert got + rest == expected, size
    r = reader(JsonLinesSource(path))
    r.seek(50)
    assert r.poll(10, columnar) is None


def test_offsets_are_line_numbers_and_empty_lines_are_skipped(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "t.jsonl", [b'{"a":1}', b"", b"  \r", b'{"a":2}'])
    c = reader(JsonLinesSource(path)).poll(10, False)
    assert c.records == [{"a": 1}, {"a": 2}]
    assert (c.first_offset, c.offsets, c.next_offset, c.errors) == (0, [0, 3], 4, [])
    c = reader(JsonLinesSource(path)).poll(10, True)
    assert c.records == [{"a": 1}, {"a": 2}]
    assert c.offsets == [0, 3]


def test_csv_seek_after_header(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("a,b\n1,x\n2,y\n3,z\n")
    r = reader(CsvSource(path))
    c = r.poll(2, False)
    assert c.records == [{"a": "1", "b": "x"}, {"a": "2", "b": "y"}]
    assert (c.first_offset, c.next_offset) == (1, 3)
    r2 = reader(CsvSource(path))
    r2.seek(c.next_offset)
    assert drain(r2, columnar=True)[0] == [{"a": "3", "b": "z"}]


# -- tail mode ---------------------------------------------------------------------------


def test_tail_follows_appends_and_waits_for_partial_lines(tmp_path: Path) -> None:
    path = tmp_path / "live.jsonl"
    r = reader(JsonLinesSource(path, tail=True))
    assert r.poll(10, False) == Chunk([], 0, 0)  # the file does not exist yet
    path.write_bytes(b'{"n":0}\n{"n":1}\n{"n":')
    c = r.poll(10, False)
    assert c.records == [{"n": 0}, {"n": 1}]
    assert r.poll(10, True).records == []  # the partial line is held back
    with path.open("ab") as f:
        f.write(b'2}\n{"n":3}\n')
    c = r.poll(10, True)
    assert c.records.to_dicts() == [{"n": 2}, {"n": 3}]
    assert (c.first_offset, c.next_offset) == (2, 4)
    assert r.poll(10, False).records == []


def test_tail_reopens_after_truncation_and_rotation(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "live.jsonl"
    path.write_bytes(b'{"n":0}\n{"n":1}\n')
    r = reader(JsonLinesSource(path, tail=True))
    assert drain_once(r) == [{"n": 0}, {"n": 1}]
    path.write_bytes(b'{"n":9}\n')  # truncated and rewritten
    with caplog.at_level(logging.WARNING):
        assert drain_once(r) == []
        assert drain_once(r) == [{"n": 9}]
    assert "truncated or replaced" in caplog.text
    with path.open("ab") as f:
        f.write(b'{"n":')  # a partial line, then rotation
    assert drain_once(r) == []
    os.rename(path, tmp_path / "live.jsonl.1")
    path.write_bytes(b'{"n":100}\n')
    c = r.poll(10, False)
    assert c.records == []
    assert [e.raw for e in c.errors] == [b'{"n":']  # the unfinished line is not lost
    assert drain_once(r) == [{"n": 100}]


def drain_once(r: Any) -> list[Any]:
    c = r.poll(100, False)
    assert c is not None
    return list(c.records)


# -- bad input ---------------------------------------------------------------------------

BAD = {
    "invalid json": b'{"a": 1,',
    "invalid utf-8": b'{"a": "\xff\xfe"}',
    "not an object": b"[1, 2, 3]",
    "deeply nested": b'{"a":' * 3000 + b"1" + b"}" * 3000,
    "trailing garbage": b'{"a": 1} x',
}


@pytest.mark.parametrize("columnar", [False, True])
@pytest.mark.parametrize("kind", sorted(BAD))
def test_each_bad_line_is_a_decode_error_and_good_lines_are_kept(
    tmp_path: Path, kind: str, columnar: bool
) -> None:
    bad = BAD[kind]
    path = write_lines(tmp_path / "in.jsonl", [b'{"a": 0}', b'{"a": 1}', bad, b'{"a": 3}'])
    c = reader(JsonLinesSource(path), step="st").poll(100, columnar)
    assert c.records == [{"a": 0}, {"a": 1}, {"a": 3}]
    assert c.offsets == [0, 1, 3]
    assert c.next_offset == 4
    (err,) = c.errors
    assert isinstance(err, DecodeError)
    assert err.position == "st/in.jsonl@2"
    assert err.raw == bad
    assert "st/in.jsonl@2" in str(err)


def test_bad_input_messages_say_what_is_wrong(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "in.jsonl", [BAD[k] for k in sorted(BAD)])
    _, errs = drain(reader(JsonLinesSource(path)))
    messages = dict(zip(sorted(BAD), [str(e) for e in errs], strict=True))
    assert "nested too deeply" in messages["deeply nested"]
    assert "invalid UTF-8" in messages["invalid utf-8"]
    assert "not a JSON object" in messages["not an object"]
    assert "invalid JSON" in messages["invalid json"]


def test_columnar_block_falls_back_to_rows_on_one_bad_line(tmp_path: Path) -> None:
    lines = [json.dumps(t).encode() for t in TICKS]
    lines[30] = b'{"symbol": "S0", "price": "oops", "ts": 5}'
    path = write_lines(tmp_path / "t.jsonl", lines)
    r = reader(JsonLinesSource(path, schema=Tick))
    first = r.poll(20, True)
    assert isinstance(first.records, pl.DataFrame)  # a clean block stays columnar
    second = r.poll(20, True)
    assert isinstance(second.records, list)
    assert len(second.records) == 19
    assert second.offsets == [*range(20, 30), *range(31, 40)]
    (err,) = second.errors
    assert err.position == "src/t.jsonl@30"
    assert "`$.price`" in str(err)
    assert "Tick" in str(err)
    third = r.poll(20, True)
    assert isinstance(third.records, pl.DataFrame)


@pytest.mark.parametrize("columnar", [False, True])
def test_schema_errors_name_the_field(tmp_path: Path, columnar: bool) -> None:
    path = write_lines(
        tmp_path / "t.jsonl",
        [
            b'{"symbol": "A", "price": 1.0, "ts": 1}',
            b'{"symbol": "A", "price": 1.0, "ts": "late"}',
            b'{"symbol": "A", "price": null, "ts": 3}',
            b'{"symbol": "A", "ts": 4}',
        ],
    )
    recs, errs = drain(reader(JsonLinesSource(path, schema=Tick)), columnar=columnar)
    assert len(recs) == 1
    assert ["`$.ts`" in str(errs[0]), "`$.price`" in str(errs[1]), "`price`" in str(errs[2])] == [
        True,
        True,
        True,
    ]


def test_dict_columnar_keeps_inferred_columns_and_falls_back_for_new_fields(
    tmp_path: Path,
) -> None:
    rows = [{"a": i, "b": "x"} for i in range(10)] + [{"a": 10, "b": "y", "c": 1.5}]
    path = jsonl(tmp_path / "t.jsonl", rows)
    r = reader(JsonLinesSource(path))
    first = r.poll(10, True)
    assert isinstance(first.records, pl.DataFrame)
    second = r.poll(10, True)
    assert second.records == [{"a": 10, "b": "y", "c": 1.5}]  # rows: nothing is dropped


def test_other_encodings_are_transcoded(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "t.jsonl", ['{"name": "café"}'.encode("latin-1")])
    for columnar in (False, True):
        recs, _ = drain(reader(JsonLinesSource(path, encoding="latin-1")), columnar=columnar)
        assert recs == [{"name": "café"}]


# -- CSV ---------------------------------------------------------------------------------


@pytest.mark.parametrize("columnar", [False, True])
def test_csv_with_and_without_header(tmp_path: Path, columnar: bool) -> None:
    with_header = tmp_path / "h.csv"
    with_header.write_text("symbol;price;ts\nA;1.5;10\n\nB;2;11\n")
    recs, errs = drain(reader(CsvSource(with_header, delimiter=";")), columnar=columnar)
    assert recs == [
        {"symbol": "A", "price": "1.5", "ts": "10"},
        {"symbol": "B", "price": "2", "ts": "11"},
    ]
    no_header = tmp_path / "n.csv"
    no_header.write_text("A,1.5,10\nB,2,11\n")
    recs, _ = drain(reader(CsvSource(no_header, header=False)), columnar=columnar)
    assert recs == [
        {"column_1": "A", "column_2": "1.5", "column_3": "10"},
        {"column_1": "B", "column_2": "2", "column_3": "11"},
    ]
    recs, _ = drain(reader(CsvSource(no_header, header=False, schema=Tick)), columnar=columnar)
    got = recs if columnar else [msgspec.structs.asdict(r) for r in recs]
    assert got == [
        {"symbol": "A", "price": 1.5, "ts": 10},
        {"symbol": "B", "price": 2.0, "ts": 11},
    ]
    assert not errs


@pytest.mark.parametrize("columnar", [False, True])
def test_csv_bad_lines(tmp_path: Path, columnar: bool) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(b'symbol,price,ts\nA,1,1\nB,2\nC,x,3\nD,"4,5\n\xff,1,1\nE,5,5\n')
    recs, errs = drain(reader(CsvSource(path, schema=Tick)), columnar=columnar)
    got = [r if isinstance(r, dict) else msgspec.structs.asdict(r) for r in recs]
    assert got == [
        {"symbol": "A", "price": 1.0, "ts": 1},
        {"symbol": "E", "price": 5.0, "ts": 5},
    ]
    assert [e.position for e in errs] == [f"src/t.csv@{i}" for i in (2, 3, 4, 5)]
    assert "expected 3 fields, found 2" in str(errs[0])
    assert "`$.price`" in str(errs[1])
    assert errs[3].raw == b"\xff,1,1"


# -- end to end --------------------------------------------------------------------------


def test_file_to_file_pipeline(tmp_path: Path) -> None:
    src = jsonl(tmp_path / "in.jsonl", TICKS)
    out = tmp_path / "out" / "big.jsonl"
    p = es.Pipeline("files")
    (
        p.source("ticks", JsonLinesSource(src, schema=Tick))
        .filter("big", lambda t: t.price >= 110.0)
        .sink("out", JsonLinesSink(out))
    )
    run(p, clock=ManualClock())
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert got == [t for t in TICKS if t["price"] >= 110.0]


def test_windowed_pipeline_from_file_matches_a_plain_python_count(tmp_path: Path) -> None:
    rows = [{"k": f"k{i % 7}", "ts": i * 13, "v": i * 0.5} for i in range(5_000)]
    src = jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "bars.jsonl"
    p = es.Pipeline("bars")
    (
        p.source("in", JsonLinesSource(src), timestamps=es.EventTime("ts"))
        .key_by("by_k", "k")
        .window(es.Tumbling(timedelta(seconds=10)))
        .aggregate("bars", n=es.count(), total=es.sum("v"))
        .sink("out", JsonLinesSink(out))
    )
    run(p, clock=ManualClock())
    got = {
        (r["k"], r["window_start_ms"]): r["n"]
        for r in map(json.loads, out.read_text().splitlines())
    }
    want: dict[tuple[str, int], int] = {}
    for r in rows:
        key = (r["k"], r["ts"] // 10_000 * 10_000)
        want[key] = want.get(key, 0) + 1
    assert got == want
