"""A map step that fails on the record n == 7."""

from jsonl_sink import JsonlSink

import eventspine as es
from eventspine.connectors.memory import MemorySource


def check(r: dict) -> dict:
    if r["n"] == 7:
        raise ValueError("seven is not allowed")
    return r


pipeline = es.Pipeline("failing")
(
    pipeline.source("numbers", MemorySource([{"n": i} for i in range(20)]))
    .map("check_seven", check)
    .sink("out", JsonlSink("out.jsonl"))
)
