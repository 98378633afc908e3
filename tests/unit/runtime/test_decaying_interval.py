"""Decaying windows with EveryInterval: updates do not depend on batch sizes.

Regression: one watermark step that crossed several interval boundaries used
to evaluate only the last one, so the rows emitted depended on batching.
"""

from datetime import timedelta

import eventspine as es


def build() -> es.Pipeline:
    p = es.Pipeline("decay_every")
    (
        p.source("s", es.MemorySource([]), timestamps=es.EventTime("ts"))
        .key_by("k", "k")
        .window(
            es.Decaying(es.ExponentialDecay(half_life=timedelta(seconds=2))),
            emit=es.EveryInterval(timedelta(seconds=1)),
        )
        .aggregate("avg", avg=es.mean("v"), n=es.count())
        .sink("out", es.CollectSink())
    )
    return p


RECORDS = [{"k": "a" if i % 3 else "b", "ts": i * 370, "v": float(i % 7)} for i in range(60)]


def test_every_boundary_is_evaluated_whatever_the_batch_size() -> None:
    one = es.testing.run(build(), inputs={"s": RECORDS}, batch_size=1)["out"]
    big = es.testing.run(build(), inputs={"s": RECORDS}, batch_size=1000)["out"]
    assert one == big
    updates = [r for r in one if not r["final"] and r["k"] == "a"]
    # Key "a" has data from 370 ms; one update per whole second up to the last watermark.
    starts = [r["window_end_ms"] for r in updates]
    assert starts == sorted(starts)
    assert len(updates) >= 20
