"""A checkpoint whose transaction was aborted can be written again, unchanged.

The worker does so after a commit refused during a rebalance
(``Worker._commit``): the second write must append exactly what the first one
would have, so the committed output and state equal those of one clean commit.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

import eventspine as es
from eventspine.log import LogRecord, MemoryLog, read_all
from eventspine.log.base import TopicSpec
from eventspine.runtime.checkpoint import read_last_meta
from eventspine.runtime.executor import Executor


def _count(record: dict[str, Any], ctx: es.ProcessContext) -> None:
    ctx.state["n"] = ctx.state.get("n", 0) + 1
    ctx.emit({"k": ctx.key, "n": ctx.state["n"]})


def _pipeline() -> es.Pipeline:
    p = es.Pipeline("rewrite")
    (
        p.source("in", es.topic("in"))
        .key_by("by_k", "k")
        .process("count", _count)
        .sink("out", es.topic("out", key="k"))
    )
    return p


def _task(log: MemoryLog) -> Executor:
    task = Executor(_pipeline(), options=es.RunOptions(log=log), partition=0, partitions=1)
    task.start()
    while task.iterate():
        pass
    return task


class _Boom(Exception):
    pass


@pytest.mark.parametrize("aborts", [0, 1])
def test_an_aborted_checkpoint_written_again_commits_it_once(aborts: int) -> None:
    log = MemoryLog()
    log.create_topic(TopicSpec("in"))
    log.append(
        "in",
        0,
        [LogRecord(b"a", json.dumps({"k": f"k{i % 3}"}).encode(), i) for i in range(30)],
    )
    task = _task(log)
    ckpt = task.checkpointer
    assert ckpt is not None
    pending = ckpt.prepare(task.watermarks())

    def failed_commit() -> None:
        with log.transaction() as txn:
            ckpt.write(txn, pending)
            raise _Boom  # the commit fails: the transaction is rolled back

    for _ in range(aborts):
        with pytest.raises(_Boom):
            failed_commit()
    with log.transaction() as txn:
        ckpt.write(txn, pending)
    ckpt.committed(pending)
    task.close()

    outputs = [json.loads(r.value or b"") for _, r in read_all(log, log.topics()["out"])]
    assert sorted((o["k"], o["n"]) for o in outputs) == sorted(
        (f"k{k}", n) for k in range(3) for n in range(1, 11)
    )
    meta = read_last_meta(log, "rewrite")
    assert meta is not None
    assert meta.id == pending.id
    assert meta.positions["in"]
    # The state went to the changelog once: a restored task continues the counts.
    log.append("in", 0, [LogRecord(b"a", json.dumps({"k": "k0"}).encode(), 99)])
    again = _task(log)
    assert again.checkpointer is not None
    again.checkpointer.checkpoint(again.watermarks())
    again.close()
    last = [json.loads(r.value or b"") for _, r in read_all(log, log.topics()["out"])][-1]
    assert last == {"k": "k0", "n": 11}
