"""A checkpoint never commits positions past records a sink has not made durable,
and recovery never touches output files of a pipeline whose sinks changed."""

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import eventspine as es
from eventspine import failpoints
from eventspine.dataflow.ports import OpenContext
from eventspine.errors import StateError
from eventspine.log import open_log
from eventspine.records import Batch
from eventspine.runtime.checkpoint import CheckpointPolicy, read_last_meta
from eventspine.runtime.executor import Executor, RunOptions


class BufferingSink:
    """Keeps written records in a buffer until flush() makes them 'durable'."""

    columnar = False

    def __init__(self) -> None:
        self.buffer: list[Any] = []
        self.durable: list[Any] = []

    def open(self, context: OpenContext) -> "BufferingSink":
        return self

    def write(self, batch: Batch) -> None:
        self.buffer.extend(batch.rows)

    def flush(self) -> None:
        self.durable.extend(self.buffer)
        self.buffer.clear()

    def close(self) -> None:
        pass


def test_positions_never_pass_records_a_sink_has_not_flushed() -> None:
    sink = BufferingSink()
    p = es.Pipeline("flushes")
    p.source("src", es.MemorySource([{"i": i} for i in range(5000)])).map(
        "copy", lambda r: dict(r)
    ).sink("out", sink)
    opts = RunOptions(
        log="memory://flushes-test",
        handle_signals=False,
        flush_interval=timedelta(hours=1),  # never on its own: only checkpoints flush
        max_batch=256,
        checkpoint=CheckpointPolicy(records=256),
    )
    failpoints.configure("ckpt.after_commit_before_ack=raise@3")
    try:
        with pytest.raises(failpoints.FailpointError):
            Executor(p, options=opts).run()
    finally:
        failpoints.reset()
    meta = read_last_meta(open_log("memory://flushes-test"), "flushes")
    assert meta is not None
    committed = meta.positions["src"]["src/0"]
    assert committed > 0
    assert len(sink.durable) >= committed  # every record before the position is durable


def build(tmp: Path, sink_name: str, n: int) -> es.Pipeline:
    p = es.Pipeline("renamed_sink")
    (
        p.source("src", es.MemorySource([{"i": i} for i in range(n)]))
        .map("copy", lambda r: dict(r))
        .sink(sink_name, es.JsonLinesSink(str(tmp / "out.jsonl")))
    )
    return p


def test_a_renamed_file_sink_is_refused_before_its_output_is_touched(tmp_path: Path) -> None:
    log = f"sqlite://{tmp_path}/log.db"
    Executor(build(tmp_path, "out", 10), options=RunOptions(log=log, handle_signals=False)).run()
    before = (tmp_path / "out.jsonl").read_bytes()
    assert before.count(b"\n") == 10
    with pytest.raises(StateError, match=r"sink\(s\) out .* no longer has"):
        Executor(
            build(tmp_path, "renamed", 15), options=RunOptions(log=log, handle_signals=False)
        ).run()
    assert (tmp_path / "out.jsonl").read_bytes() == before
