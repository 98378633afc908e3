"""100 records -> double -> out.jsonl (relative to the working directory)."""

from jsonl_sink import JsonlSink  # a sibling module: the file's folder is on sys.path

import eventspine as es
from eventspine.connectors.memory import MemorySource

RECORDS = [{"n": i, "ts": 1_700_000_000_000 + i} for i in range(100)]


def build() -> es.Pipeline:
    p = es.Pipeline("simple")
    (
        p.source("numbers", MemorySource(RECORDS), timestamps=es.EventTime("ts"))
        .map("double", lambda r: {"n": r["n"], "twice": r["n"] * 2})
        .sink("out", JsonlSink("out.jsonl"))
    )
    return p


pipeline = build()
not_a_pipeline = 42


def needs_args(x: int) -> es.Pipeline:
    return build()


def returns_wrong() -> int:
    return 7
