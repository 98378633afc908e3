"""An unbounded source emitting about 500 records/s forever -> tag -> out.jsonl."""

from __future__ import annotations

import time
from typing import Any

from jsonl_sink import JsonlSink

import eventspine as es
from eventspine.dataflow.ports import Chunk

RATE = 500  # records per second


class Ticker:
    """Yields {"n": i, "ts": wall ms} at RATE per second, forever."""

    record_type = dict
    bounded = False

    def open(self, context: Any) -> list[_Reader]:
        return [_Reader(context.step + "/0")]


class _Reader:
    def __init__(self, partition: str) -> None:
        self.partition = partition
        self.start = time.monotonic()
        self.n = 0

    def poll(self, max_records: int, columnar: bool) -> Chunk:
        due = int((time.monotonic() - self.start) * RATE)
        k = max(0, min(due - self.n, max_records))
        now = int(time.time() * 1000)
        first = self.n
        records = [{"n": first + i, "ts": now} for i in range(k)]
        self.n += k
        return Chunk(records, first, self.n)

    def seek(self, offset: int) -> None:
        self.n = offset

    def close(self) -> None:
        pass


pipeline = es.Pipeline("endless")
(
    pipeline.source("ticks", Ticker(), timestamps=es.EventTime("ts"))
    .map("tag", lambda r: {**r, "even": r["n"] % 2 == 0})
    .sink("out", JsonlSink("out.jsonl"))
)
