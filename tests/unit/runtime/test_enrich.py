"""Lookup enrichment: TTL cache on the monotonic clock, bounded size, error policy."""

from datetime import timedelta
from typing import Any

import eventspine as es
import eventspine.testing as est
from eventspine.dataflow.ports import Fail
from eventspine.dataflow.steps import EnrichStep
from eventspine.records import Batch
from eventspine.runtime.metrics import StepMetrics
from eventspine.runtime.operator import DeadLetters, ErrorBoundary, Operator
from eventspine.runtime.routing import EnrichOperator
from eventspine.testing import ManualClock


class Lookup:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, user: str) -> dict[str, Any]:
        self.calls.append(user)
        return {"tier": f"{user}-tier{len(self.calls)}"}


def make(
    lookup: Lookup, *, ttl_ms: int = 10_000, max_entries: int = 100
) -> tuple[EnrichOperator, list[Any], ManualClock]:
    clock = ManualClock()
    step = EnrichStep("enrich", (("in", "main"),), None, lookup, "user", None, ttl_ms, max_entries)
    m = StepMetrics("enrich", "enrich")
    op = EnrichOperator(
        step, m, ErrorBoundary("enrich", Fail(), DeadLetters(), m, lookup), dict, clock
    )
    got: list[Any] = []

    class Sink(Operator):
        def on_batch(self, batch: Batch, port: int) -> None:
            got.extend(batch.rows)

    op.out.connect("main", Sink("s", StepMetrics("s", "sink")), 0)
    return op, got, clock


def push(op: EnrichOperator, *users: str) -> None:
    op.receive(Batch([{"user": u} for u in users], [0] * len(users)), 0)


def test_answers_are_cached_until_the_ttl_expires() -> None:
    lookup = Lookup()
    op, got, clock = make(lookup)
    push(op, "u1", "u1", "u2")
    assert lookup.calls == ["u1", "u2"]
    assert got[1] == {"user": "u1", "tier": "u1-tier1"}
    clock.advance(timedelta(milliseconds=9_999))
    push(op, "u1")
    assert lookup.calls == ["u1", "u2"]
    clock.advance(timedelta(milliseconds=1))
    push(op, "u1")
    assert lookup.calls == ["u1", "u2", "u1"]
    assert got[-1] == {"user": "u1", "tier": "u1-tier3"}
    assert (op.hits, op.misses) == (2, 3)


def test_cache_is_bounded_least_recently_used_first() -> None:
    lookup = Lookup()
    op, _got, _clock = make(lookup, max_entries=2)
    push(op, "a", "b", "a", "c")  # c evicts b (a was used more recently)
    assert len(op.cache) == 2
    push(op, "a")
    assert lookup.calls == ["a", "b", "c"]
    push(op, "b")
    assert lookup.calls == ["a", "b", "c", "b"]


def test_enrich_in_a_pipeline_with_into_and_skip() -> None:
    def lookup(user: str) -> str:
        if user == "bad":
            raise KeyError(user)
        return user.upper()

    p = es.Pipeline("enrich")
    (
        p.source("in", es.MemorySource([]))
        .enrich("names", lookup, key="user", into="name", on_error=es.Skip())
        .sink("out", es.CollectSink())
    )
    out = est.run(p, inputs={"in": [{"user": "ann"}, {"user": "bad"}, {"user": "bob"}]})
    assert out["out"] == [{"user": "ann", "name": "ANN"}, {"user": "bob", "name": "BOB"}]
    assert out.inspector.metrics("names").skipped == 1
