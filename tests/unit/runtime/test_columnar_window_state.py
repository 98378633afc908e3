"""The vectorized window survives a checkpoint cut at any batch boundary.

Straight run vs. a run cut after every batch: snapshot the changes (latest per
key, None dropped, pickled as the checkpoint does), build a fresh operator,
restore, set its watermark, continue: the outputs must be identical.
"""

import random
from datetime import timedelta
from typing import Any

import polars as pl
import pytest

import eventspine as es
from eventspine.dataflow.steps import WindowStep
from eventspine.records import KEY_COL, TS_COL, Batch
from eventspine.runtime.metrics import StepMetrics
from eventspine.runtime.operator import DeadLetters, ErrorBoundary, Operator
from eventspine.runtime.windows import make_window
from eventspine.runtime.windows.columnar import ColumnarWindow
from eventspine.serde.state import decode_state, encode_state
from eventspine.timeutil import MIN_TS_MS


class Capture(Operator):
    def __init__(self) -> None:
        super().__init__("capture", StepMetrics("capture", "sink"))
        self.rows: list[dict[str, Any]] = []

    def on_batch(self, batch: Batch, port: int) -> None:
        self.rows.extend(batch.rows)


def window_step(kind: es.Tumbling | es.Hopping) -> WindowStep:
    p = es.Pipeline("cw")
    (
        p.source("s", es.MemorySource([]), timestamps=es.EventTime("ts"))
        .key_by("k", "k")
        .window(kind)
        .aggregate("w", n=es.count(), total=es.sum("v"), hi=es.max("v"), first=es.first("v"))
        .sink("out", es.CollectSink())
    )
    step = p.steps["w"]
    assert isinstance(step, WindowStep)
    return step


def build(step: WindowStep) -> tuple[Operator, Capture]:
    metrics = StepMetrics(step.name, "window")
    boundary = ErrorBoundary(step.name, es.Fail(), DeadLetters(), metrics)
    op = make_window(step, metrics, boundary, es.ManualClock())
    assert isinstance(op, ColumnarWindow)
    cap = Capture()
    op.out.connect("main", cap, 0)
    return op, cap


def batches(seed: int) -> list[Batch]:
    rng = random.Random(seed)
    out = []
    t = 0
    for _ in range(12):
        n = rng.randint(1, 40)
        rows = []
        for _ in range(n):
            t += rng.randint(0, 300)
            rows.append(
                {
                    "v": rng.randint(0, 100),
                    TS_COL: t - rng.randint(0, 400),
                    KEY_COL: f"k{rng.randint(0, 4)}",
                }
            )
        out.append(Batch.of_frame(pl.DataFrame(rows)))
    return out


def run(step: WindowStep, data: list[Batch], cut_after: int | None) -> list[dict[str, Any]]:
    op, cap = build(step)
    saved: dict[Any, Any] = {}
    wm = MIN_TS_MS
    for i, b in enumerate(data):
        op.on_batch(b, 0)
        wm = max(wm, int(b.frame[TS_COL].max()) - 500)
        op.watermark_ms = wm
        op.on_watermark(wm)
        for k, v in op.snapshot_changes():
            if v is None:
                saved.pop(k, None)
            else:
                saved[k] = decode_state(encode_state(v, step="w"), step="w")
        if cut_after is not None and i == cut_after:
            fresh, fresh_cap = build(step)
            fresh_cap.rows = cap.rows
            fresh.restore(list(saved.items()))
            fresh.watermark_ms = wm
            op, cap = fresh, fresh_cap
    op.on_watermark((1 << 62) - 1)
    op.on_end()
    return cap.rows


@pytest.mark.parametrize(
    "kind",
    [
        es.Tumbling(timedelta(seconds=1)),
        es.Hopping(timedelta(seconds=2), timedelta(milliseconds=500)),
    ],
    ids=["tumbling", "hopping"],
)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_cut_at_every_batch_gives_the_same_output(kind: Any, seed: int) -> None:
    step = window_step(kind)
    data = batches(seed)
    straight = run(step, data, None)
    assert straight
    for cut in range(len(data)):
        assert run(step, data, cut) == straight, f"cut after batch {cut}"
