"""Watermarks never go back, whatever the partitions, disorder, batch sizes and idle gaps."""

from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

import eventspine as es


def build(delay_ms: int, idle_ms: int) -> es.Pipeline:
    p = es.Pipeline("wm")

    def record_watermark(record: dict[str, int], ctx: es.ProcessContext) -> None:
        ctx.emit({"wm": ctx.watermark_ms, "ts": record["ts"]})

    (
        p.source(
            "s",
            es.MemorySource([]),
            timestamps=es.EventTime(
                "ts",
                max_delay=timedelta(milliseconds=delay_ms),
                idle_timeout=timedelta(milliseconds=idle_ms),
            ),
        )
        .key_by("k", "k")
        .process("observe", record_watermark)
        .sink("out", es.CollectSink())
    )
    return p


items = st.lists(
    st.one_of(
        st.builds(lambda k, t: {"k": k, "ts": t}, st.sampled_from("abc"), st.integers(0, 60_000)),
        st.builds(lambda ms: es.testing.Idle(timedelta(milliseconds=ms)), st.integers(1, 20_000)),
    ),
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(
    items=items,
    delay_ms=st.integers(0, 5_000),
    idle_ms=st.integers(1, 10_000),
    partitions=st.integers(1, 3),
    batch=st.sampled_from([1, 3, 1000]),
)
def test_watermark_seen_by_a_step_never_goes_back(
    items: list[object], delay_ms: int, idle_ms: int, partitions: int, batch: int
) -> None:
    out = es.testing.run(
        build(delay_ms, idle_ms),
        inputs={"s": items},
        partitions={"s": partitions},
        batch_size=batch,
    )["out"]
    marks = [r["wm"] for r in out]
    assert marks == sorted(marks)
    # A process step sees every record, on time or not: nothing is dropped on the way.
    records = [i for i in items if isinstance(i, dict)]
    assert len(out) == len(records)
