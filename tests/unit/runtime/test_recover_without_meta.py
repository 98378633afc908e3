"""A task with committed positions but no checkpoint record resumes with its state.

An at-least-once checkpoint on Kafka commits the source positions after its state
changes are acknowledged and before its checkpoint record; a crash in between leaves
positions without a record. (So does retention deleting the records of a pipeline
stopped for longer than the checkpoints topic keeps them.) The readers then start at
the committed positions, so the state must come from the changelogs: resuming there
over an empty state would lose every state change before the positions.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

import eventspine as es
from eventspine.log import LogRecord, MemoryLog, read_all
from eventspine.log.base import TopicSpec
from eventspine.runtime.checkpoint import checkpoints_spec, names, read_last_meta
from eventspine.runtime.executor import Executor

PIPELINE = "no-meta"


def _count(record: dict[str, Any], ctx: es.ProcessContext) -> None:
    ctx.state["n"] = ctx.state.get("n", 0) + 1
    ctx.emit({"k": ctx.key, "n": ctx.state["n"]})


def _pipeline() -> es.Pipeline:
    p = es.Pipeline(PIPELINE)
    (
        p.source("in", es.topic("in", key="k"))
        .key_by("by_k", "k")
        .process("count", _count)
        .sink("out", es.topic("out", key="k"))
    )
    return p


def _append(log: MemoryLog, n: int) -> None:
    records = [json.dumps({"k": f"k{i % 3}"}).encode() for i in range(n)]
    log.append("in", 0, [LogRecord(b"k", value, i) for i, value in enumerate(records)])


def _run_once(log: MemoryLog) -> int | None:
    """Start a task (restoring), read all input, commit one checkpoint; the resumed id."""
    task = Executor(_pipeline(), options=es.RunOptions(log=log), partition=0, partitions=1)
    resumed = task.start()
    while task.iterate():
        pass
    assert task.checkpointer is not None
    task.checkpointer.checkpoint(task.watermarks())
    task.close()
    return resumed


def _counts(log: MemoryLog) -> list[tuple[str, int]]:
    rows = [json.loads(r.value or b"") for _, r in read_all(log, log.topics()["out"])]
    return sorted((row["k"], row["n"]) for row in rows)


def test_positions_without_a_checkpoint_record_resume_with_the_changelog_state(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = MemoryLog()
    log.create_topic(TopicSpec("in"))
    _append(log, 30)
    assert _run_once(log) is None
    assert log.committed(PIPELINE, "in") == {0: 30}
    # The checkpoint records are gone; the positions and the changelog stay.
    log.delete_topic(names.checkpoints(PIPELINE))
    _append(log, 30)
    with caplog.at_level(logging.WARNING, "eventspine.checkpoint"):
        assert _run_once(log) is None
    assert "has no checkpoint record but committed positions" in caplog.text
    # Every key counts on from 10, as one uninterrupted run would.
    assert _counts(log) == sorted((f"k{k}", n) for k in range(3) for n in range(1, 21))
    meta = read_last_meta(log, PIPELINE)
    assert meta is not None
    assert meta.positions["in"] == {"in/0": 60}


def test_a_fresh_start_without_positions_reads_no_changelog() -> None:
    """No record and no positions: the readers start at the beginning, over no state."""
    log = MemoryLog()
    log.create_topic(TopicSpec("in"))
    _append(log, 30)
    _run_once(log)
    for topic in (names.checkpoints(PIPELINE), "out"):
        log.delete_topic(topic)
    log.create_topic(TopicSpec("out"))
    log.delete_topic("in")  # (and every group's positions for it)
    log.create_topic(TopicSpec("in"))
    _append(log, 30)
    assert _run_once(log) is None
    # The changelog still holds n = 10 per key, but a run from the start ignores it.
    assert _counts(log) == sorted((f"k{k}", n) for k in range(3) for n in range(1, 11))


def test_the_last_checkpoint_record_outlives_compaction_and_retention() -> None:
    """The checkpoints topic is compacted: it keeps each task's last record, with no expiry."""
    spec = checkpoints_spec(PIPELINE, 2)
    assert spec.compacted
    assert spec.retention is None
    log = MemoryLog()
    log.create_topic(TopicSpec("in"))
    for _ in range(4):
        _append(log, 10)
        _run_once(log)
    log.enforce_retention()
    info = log.topics()[names.checkpoints(PIPELINE)]
    records = [r for _, r in read_all(log, info)]
    assert len(records) == 1, "compaction keeps one checkpoint record per task"
    meta = read_last_meta(log, PIPELINE)
    assert meta is not None
    assert (meta.id, meta.positions["in"]) == (4, {"in/0": 40})
