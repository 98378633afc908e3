"""The columnar JSON decoder never changes a value's type: it agrees with the row decoder.

Regression: polars gives a column mixing numbers and strings the text type, and
a text column of an explicit schema turns JSON numbers into text; the decoder
must notice and decode such a block as rows.
"""

import json
from pathlib import Path
from typing import Any

import pytest

import eventspine as es
from eventspine.connectors.files import JsonLinesSource
from eventspine.dataflow.ports import OpenContext


def read_all(path: Path, *, columnar: bool, schema: type | None = None) -> list[Any]:
    (reader,) = JsonLinesSource(str(path), schema=schema).open(OpenContext("s", es.ManualClock()))
    out: list[Any] = []
    while (chunk := reader.poll(1000, columnar)) is not None:
        recs = chunk.records
        out.extend(recs if isinstance(recs, list) else recs.to_dicts())
        if not len(recs) and not chunk.errors:
            break
    return out


LINES = [
    [{"k": "a", "v": 1}, {"k": "b", "v": "NaN"}, {"k": "c", "v": 2}],  # string among ints
    [{"k": "a", "v": 1}, {"k": 5, "v": 2}, {"k": "c", "v": 3}],  # number among strings
    [{"k": "a", "v": {"x": 1}}, {"k": "b", "v": "flat"}],  # object among strings
    [{"k": "a", "v": 1.5}, {"k": "b", "v": 2.5}],  # clean: stays columnar
]


@pytest.mark.parametrize("records", LINES, ids=["str-in-int", "int-in-str", "obj-in-str", "clean"])
def test_columnar_read_equals_row_read(tmp_path: Path, records: list[dict[str, Any]]) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    rows = read_all(path, columnar=False)
    assert rows == records
    cols = read_all(path, columnar=True)
    assert cols == rows
    assert [type(r["k"]) for r in cols] == [type(r["k"]) for r in records]


def test_a_text_field_of_a_schema_keeps_refusing_numbers(tmp_path: Path) -> None:
    class Rec(es.Event):
        k: str
        v: int

    path = tmp_path / "in.jsonl"
    path.write_text('{"k": "a", "v": 1}\n{"k": 7, "v": 2}\n')
    (reader,) = JsonLinesSource(str(path), schema=Rec).open(OpenContext("s", es.ManualClock()))
    chunk = reader.poll(1000, True)
    assert chunk is not None
    good = chunk.records if isinstance(chunk.records, list) else chunk.records.to_dicts()
    assert len(good) == 1
    assert [e.position for e in chunk.errors] == ["s/in.jsonl@1"]
