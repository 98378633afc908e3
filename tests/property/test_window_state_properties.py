"""Checkpointed window operators: crash anywhere, restore, replay, same output.

Hypothesis draws the records, the batch sizes, which batch boundaries take a
checkpoint and after which batches the process "crashes". A crash throws
the operator away, builds a fresh one from a fresh pipeline definition,
restores it from the compacted changelog (pickled with ``encode_state``),
drops the output emitted since the last checkpoint (it was never committed)
and replays the input from there, as durable mode does. The committed
output must equal an uninterrupted run's, in values and order.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import eventspine as es
from eventspine.connectors.memory import CollectSink, MemorySource
from eventspine.dataflow.steps import WindowStep
from eventspine.records import Batch
from eventspine.runtime.metrics import StepMetrics
from eventspine.runtime.operator import DeadLetters, ErrorBoundary, Operator
from eventspine.runtime.windows import make_record_window
from eventspine.serde.state import decode_state, encode_state
from eventspine.timeutil import MAX_TS_MS, MIN_TS_MS, ManualClock

MS = timedelta(milliseconds=1)
DELAY_MS = 15

KINDS = {
    "tumbling": es.Tumbling(50 * MS),
    "hopping": es.Hopping(size=50 * MS, hop=20 * MS),
    "session": es.Session(25 * MS),
}
EMITS = {
    "close": es.OnClose(),
    "change": es.OnChange(),
    "every2": es.EveryN(2),
    "interval": es.EveryInterval(10 * MS),
}


class Capture(Operator):
    def __init__(self, rows: list[Any]) -> None:
        super().__init__("capture", StepMetrics("capture", "sink"))
        self.rows = rows

    def on_batch(self, batch: Batch, port: int) -> None:
        self.rows.extend(zip(batch.ts, batch.rows, strict=True))


def make_op(kind: str, emit: str, lateness_ms: int, out: list[Any], late: list[Any]) -> Operator:
    p = es.Pipeline("prop")
    (
        p.source("src", MemorySource([]), timestamps=es.EventTime("ts"))
        .key_by("by_k", "k")
        .window(KINDS[kind], emit=EMITS[emit], allowed_lateness=lateness_ms * MS)
        .aggregate("w", n=es.count(), s=es.sum("v"), f=es.first("v"), l=es.last("v"))
        .sink("out", CollectSink())
    )
    step = p.steps["w"]
    assert isinstance(step, WindowStep)
    m = StepMetrics("w", "window")
    op = make_record_window(step, m, ErrorBoundary("w", es.Fail(), DeadLetters(), m), ManualClock())
    op.out.connect("main", Capture(out), 0)
    op.out.connect("late", Capture(late), 0)
    return op


def run(
    params: tuple[str, str, int],
    batches: list[tuple[Batch, int]],
    checkpoints: set[int],
    crashes: set[int],
) -> tuple[list[Any], list[Any], int]:
    """Return the committed main and late output, and how many entries restarts restored."""
    out: list[Any] = []
    late: list[Any] = []
    op = make_op(*params, out, late)
    log: dict[bytes, bytes] = {}
    # The last checkpoint: next batch, watermark, committed output lengths.
    ckpt = (0, MIN_TS_MS, 0, 0)
    restored = 0
    pending_crashes = set(crashes)
    i = 0
    while i < len(batches):
        batch, wm = batches[i]
        op.receive(batch, 0)
        if wm > op.watermark_ms:
            op.watermark_ms = wm
            op.on_watermark(wm)
        i += 1
        if i in checkpoints:
            for key, value in op.snapshot_changes():
                k = encode_state(key, step="w")
                if value is None:
                    log.pop(k, None)
                else:
                    log[k] = encode_state(value, step="w")
            ckpt = (i, op.watermark_ms, len(out), len(late))
        if i in pending_crashes:
            pending_crashes.discard(i)
            i, ckpt_wm, n_out, n_late = ckpt
            del out[n_out:]  # never committed
            del late[n_late:]
            op = make_op(*params, out, late)
            entries = [
                (decode_state(k, step="w"), decode_state(v, step="w")) for k, v in log.items()
            ]
            restored += len(entries)
            op.restore(entries)
            op.watermark_ms = ckpt_wm
    op.watermark_ms = MAX_TS_MS
    op.on_watermark(MAX_TS_MS)
    op.on_end()
    return out, late, restored


records = st.lists(
    st.tuples(st.sampled_from("abc"), st.integers(0, 40).map(lambda t: t * 5), st.integers(0, 9)),
    min_size=1,
    max_size=50,
)


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(sorted(KINDS)),
    emit=st.sampled_from(sorted(EMITS)),
    lateness_ms=st.sampled_from([0, 30]),
    recs=records,
    data=st.data(),
)
def test_crash_restore_replay_gives_the_uninterrupted_output(
    kind: str, emit: str, lateness_ms: int, recs: list[tuple[str, int, int]], data: Any
) -> None:
    sizes = data.draw(st.lists(st.integers(1, 8), min_size=len(recs), max_size=len(recs)))
    batches: list[tuple[Batch, int]] = []
    i, top = 0, MIN_TS_MS
    for n in sizes:
        chunk = recs[i : i + n]
        i += n
        if not chunk:
            break
        top = max(top, *(t for _k, t, _v in chunk))
        rows = [{"k": k, "ts": t, "v": v} for k, t, v in chunk]
        batches.append(
            (
                Batch(rows, [t for _k, t, _v in chunk], keys=[k for k, _t, _v in chunk]),
                top - DELAY_MS,
            )
        )
    bounds = st.sets(st.integers(1, len(batches)))
    checkpoints = data.draw(bounds, label="checkpoints")
    crashes = data.draw(bounds, label="crashes")
    params = (kind, emit, lateness_ms)
    want, want_late, _ = run(params, batches, set(), set())
    got, got_late, _restored = run(params, batches, checkpoints, crashes)
    assert got == want
    assert got_late == want_late


def test_a_crash_replays_from_the_last_checkpoint_or_the_start() -> None:
    """Before any checkpoint nothing is restored and all is replayed; after one, state is."""
    rows = [{"k": "a", "ts": 10, "v": 1}, {"k": "a", "ts": 20, "v": 2}]
    batches = [(Batch([r], [r["ts"]], keys=["a"]), r["ts"] - DELAY_MS) for r in rows]
    params = ("tumbling", "close", 0)
    want, _, _ = run(params, batches, set(), set())
    got, _, restored = run(params, batches, set(), {1})  # crash before any checkpoint
    assert restored == 0
    assert got == want
    got, _, restored = run(params, batches, {1}, {1})
    assert restored > 0
    assert got == want
    assert [row["n"] for _ts, row in want] == [2]
