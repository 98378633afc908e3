"""Which ``key_by`` steps a partitioned run re-keys through an internal topic."""

from __future__ import annotations

from datetime import timedelta

import eventspine as es
from eventspine.dataflow.steps import SinkStep, SourceStep
from eventspine.runtime.repartition import RepartitionSink, RepartitionSource, repartition


def _count(record: object, ctx: es.ProcessContext) -> None:
    ctx.emit(record)


def test_a_key_by_before_keyed_state_is_cut_into_a_topic() -> None:
    p = es.Pipeline("views")
    by_page = p.source("clicks", es.topic("clicks")).key_by("by_page", "page")
    by_page.process("count", _count).sink("out", es.topic("out"))
    by_page.window(es.Tumbling(timedelta(seconds=10))).aggregate("w", n=es.count()).sink(
        "w_out", es.topic("w_out")
    )
    cut = repartition(p, 4)
    steps = cut.steps
    out, src = steps["by_page.repartition.out"], steps["by_page.repartition"]
    assert isinstance(out, SinkStep)
    assert isinstance(out.sink, RepartitionSink)
    assert out.inputs == (("by_page", "main"),)
    assert isinstance(src, SourceStep)
    assert isinstance(src.source, RepartitionSource)
    assert src.source.topic == "__es.views.by_page.repartition"
    assert src.source.partitions == 4
    assert steps["count"].inputs == steps["w"].inputs == (("by_page.repartition", "main"),)
    cut.validate()
    assert repartition(p, 1) is p  # one partition: every key is in the one task


def test_no_cut_before_stateless_steps_or_after_a_declared_key() -> None:
    stateless = es.Pipeline("a")
    stateless.source("clicks", es.topic("clicks")).key_by("by_page", "page").sink(
        "out", es.topic("out", key="page")
    )
    assert repartition(stateless, 4) is stateless
    declared = es.Pipeline("b")
    declared.source("clicks", es.topic("clicks", key="user")).filter(
        "real", lambda c: c["user"] != "bot"
    ).key_by("by_user", "user").process("count", _count).sink("out", es.topic("out"))
    assert repartition(declared, 4) is declared
    other = es.Pipeline("c")
    other.source("clicks", es.topic("clicks", key="user")).key_by("by_page", "page").process(
        "count", _count
    ).sink("out", es.topic("out"))
    assert "by_page.repartition" in repartition(other, 4).steps
