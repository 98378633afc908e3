"""Standby copies of changelogs (``eventspine.runtime.standby``) on the embedded log.

A task restored from a standby copy that lags behind the changelog must get exactly
the state a full restore gets; the Kafka test of the same is in
``tests/scaleout/test_kafka_scaleout.py``.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

import eventspine as es
from eventspine.log import LogRecord, MemoryLog
from eventspine.log.base import TopicSpec
from eventspine.runtime.executor import Executor
from eventspine.runtime.standby import Standbys, WarmChangelog
from eventspine.runtime.worker import Worker


def _count(record: dict[str, Any], ctx: es.ProcessContext) -> None:
    ctx.state["n"] = ctx.state.get("n", 0) + 1
    ctx.state["sum"] = ctx.state.get("sum", 0) + record["v"]
    ctx.emit({"k": ctx.key, "n": ctx.state["n"]})


def _pipeline() -> es.Pipeline:
    p = es.Pipeline("counts")
    (
        p.source("in", es.topic("in", key="k"))  # keyed by k already: no repartition
        .key_by("by_k", "k")
        .process("count", _count)
        .sink("out", es.topic("out", key="k", partitions=2))
    )
    return p


def _produce(log: MemoryLog, start: int, n: int) -> None:
    for part in (0, 1):
        recs = [
            LogRecord(
                f"k{part}-{i % 50}".encode(),
                json.dumps({"k": f"k{part}-{i % 50}", "v": i}).encode(),
                1_700_000_000_000 + i,
            )
            for i in range(start, start + n)
        ]
        log.append("in", part, recs)


def _run(log: MemoryLog) -> None:
    options = es.RunOptions(log=log, max_wall=timedelta(seconds=0.6))
    Worker(_pipeline(), options=options).run()


def _restored_entries(log: MemoryLog, warm: dict[str, WarmChangelog] | None) -> list[Any]:
    task = Executor(_pipeline(), options=es.RunOptions(log=log), partition=0, partitions=2)
    try:
        op = next(o for o in task.plan.operators if o.stateful)
        seen: list[Any] = []
        restore = op.restore

        def spy(entries: list[tuple[Any, Any]]) -> None:
            seen.extend(entries)
            restore(entries)

        op.restore = spy  # type: ignore[method-assign]
        assert task.start(warm) is not None
        return sorted(seen, key=repr)
    finally:
        task.close()


def test_a_lagging_standby_copy_restores_the_same_state_as_the_changelog() -> None:
    log = MemoryLog()
    log.create_topic(TopicSpec("in", partitions=2))
    _produce(log, 0, 300)
    _run(log)
    standbys = Standbys(log, "counts")
    standbys.follow([0, 1])
    assert standbys.poll() > 0
    _produce(log, 300, 200)  # the changelog moves on past the copy
    _run(log)
    warm = standbys.take(0)
    assert warm is not None
    assert warm["count"].records > 0
    lag_start = warm["count"].next_offset
    assert lag_start < log.topics()["__es.counts.count.changelog"].offsets[0].end
    assert _restored_entries(log, warm) == _restored_entries(log, None)
    standbys.close()


def test_follow_drops_partitions_no_longer_wanted_and_take_stops_following() -> None:
    log = MemoryLog()
    log.create_topic(TopicSpec("in", partitions=2))
    _produce(log, 0, 100)
    _run(log)
    standbys = Standbys(log, "counts")
    standbys.follow([0, 1])
    standbys.poll()
    standbys.follow([1])
    assert set(standbys.warm) == {1}
    assert standbys.take(1) is not None
    assert standbys.take(1) is None
    _produce(log, 100, 50)
    _run(log)
    assert standbys.poll() == 0  # nothing followed any more
    standbys.close()


def test_a_worker_that_follows_before_the_changelogs_exist_picks_them_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("eventspine.runtime.standby.RELIST_S", 0.0)
    log = MemoryLog()
    log.create_topic(TopicSpec("in", partitions=2))
    standbys = Standbys(log, "counts")
    standbys.follow([0, 1])  # no task has created the changelogs yet
    assert standbys.poll() == 0
    _produce(log, 0, 100)
    _run(log)  # creates and fills them
    standbys.follow([0, 1])
    assert standbys.poll() > 0
    warm = standbys.take(1)
    assert warm is not None
    assert warm["count"].records > 0
    standbys.close()
