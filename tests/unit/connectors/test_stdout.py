"""StdoutSink."""

from __future__ import annotations

import json

import polars as pl
import pytest

import eventspine as es
from eventspine.connectors.stdout import StdoutSink
from eventspine.dataflow.ports import OpenContext
from eventspine.records import Batch
from eventspine.runtime.executor import run
from eventspine.timeutil import ManualClock


class Reading(es.Event):
    device: str
    value: float


def test_jsonl_prints_one_object_per_record(capsys: pytest.CaptureFixture[str]) -> None:
    w = StdoutSink().open(OpenContext("out", ManualClock()))
    w.write(
        Batch(
            [{"a": 1, "n": {"x": [1, 2]}}, Reading(device="d", value=0.5)], [0, 0], record_type=None
        )
    )
    frame = pl.DataFrame({"a": [2], "s": [{"k": "v"}], "__ts": [0], "__key": ["z"]})
    w.write(Batch.of_frame(frame))
    w.write(Batch([], []))
    w.flush()
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line) for line in lines] == [
        {"a": 1, "n": {"x": [1, 2]}},
        {"device": "d", "value": 0.5},
        {"a": 2, "s": {"k": "v"}},
    ]


def test_table_prints_a_header_once(capsys: pytest.CaptureFixture[str]) -> None:
    w = StdoutSink(format="table").open(OpenContext("out", ManualClock()))
    w.write(Batch([{"sym": "AAPL", "price": 1.25}], [0]))
    w.write(Batch([{"sym": "a-very-long-symbol-name", "price": None}], [0]))
    w.close()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["sym", "price"]
    assert set(lines[1]) == {"-", " "}
    assert lines[2].split() == ["AAPL", "1.25"]
    assert lines[3].startswith("a-very-long-s…")
    assert len(lines) == 4


def test_pipeline_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    p = es.Pipeline("show")
    p.source("in", es.MemorySource([{"n": i} for i in range(3)])).sink("out", StdoutSink())
    run(p, clock=ManualClock())
    assert capsys.readouterr().out.splitlines() == ['{"n":0}', '{"n":1}', '{"n":2}']


def test_unknown_format() -> None:
    with pytest.raises(ValueError, match="jsonl"):
        StdoutSink(format="csv")  # type: ignore[arg-type]
