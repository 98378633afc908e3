"""The vectorized window checkpoints deltas, bounded by a periodic base, and restores them exactly.

A checkpoint after a few keys changed writes those keys' partials (a delta),
not the whole state; the changelog (latest entry per key, as compaction keeps
it) never holds much more than twice the live partials; and a restore from
any base + deltas, at any batch boundary, gives the output of a straight run.
The thresholds are lowered so that short runs cross them many times.
"""

import random
from datetime import timedelta
from typing import Any

import polars as pl
import pytest

import eventspine as es
import eventspine.runtime.windows.columnar as columnar
from eventspine.dataflow.steps import WindowStep
from eventspine.errors import StateError
from eventspine.records import KEY_COL, TS_COL, Batch
from eventspine.runtime.metrics import StepMetrics
from eventspine.runtime.operator import DeadLetters, ErrorBoundary, Operator
from eventspine.runtime.windows import make_window
from eventspine.runtime.windows.columnar import ColumnarWindow
from eventspine.serde.state import decode_frame, decode_state, encode_frame, encode_state
from eventspine.timeutil import MAX_TS_MS, MIN_TS_MS

HOUR = timedelta(hours=1)


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
        .aggregate(
            "w",
            n=es.count(),
            total=es.sum("v"),
            lo=es.min("v"),
            first=es.first("v"),
            last=es.last("v"),
        )
        .sink("out", es.CollectSink())
    )
    step = p.steps["w"]
    assert isinstance(step, WindowStep)
    return step


def build(step: WindowStep) -> tuple[ColumnarWindow, Capture]:
    metrics = StepMetrics(step.name, "window")
    boundary = ErrorBoundary(step.name, es.Fail(), DeadLetters(), metrics)
    op = make_window(step, metrics, boundary, es.ManualClock())
    assert isinstance(op, ColumnarWindow)
    cap = Capture()
    op.out.connect("main", cap, 0)
    return op, cap


def frame(keys: list[str], ts: list[int], values: list[int]) -> Batch:
    return Batch.of_frame(pl.DataFrame({"v": values, TS_COL: ts, KEY_COL: keys}))


class Changelog:
    """The latest encoded entry per key, tombstones removed: what a restore reads."""

    def __init__(self) -> None:
        self.latest: dict[Any, Any] = {}
        self.written_rows: list[int] = []

    def take(self, op: ColumnarWindow) -> None:
        rows = 0
        for k, v in op.snapshot_changes():
            if v is None:
                self.latest.pop(k, None)
                continue
            self.latest[k] = decode_state(encode_state(v, step="w"), step="w")
            if "ipc" in v:
                rows += decode_frame(v["ipc"], step="w").height
        self.written_rows.append(rows)

    def rows(self) -> int:
        return sum(
            decode_frame(v["ipc"], step="w").height for v in self.latest.values() if "ipc" in v
        )


def test_a_checkpoint_after_a_few_keys_changed_writes_only_those(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    op, _cap = build(window_step(es.Tumbling(HOUR)))
    log = Changelog()
    n = 20_000
    op.on_batch(frame([f"k{i}" for i in range(n)], list(range(n)), [1] * n), 0)
    log.take(op)
    assert log.written_rows == [n]
    op.on_batch(frame(["k1", "k2", "new"], [5, 6, 7], [2, 2, 2]), 0)
    log.take(op)
    assert log.written_rows[-1] == 3
    log.take(op)  # nothing changed: only the bookkeeping entry
    assert log.written_rows[-1] == 0
    assert set(log.latest) == {("columnar_meta",), ("columnar_delta", 0), ("columnar_delta", 1)}


def test_the_changelog_stays_within_twice_the_live_state(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(columnar, "_SLACK_ROWS", 100)
    op, _cap = build(window_step(es.Tumbling(HOUR)))
    log = Changelog()
    rng = random.Random(7)
    for i in range(60):
        keys = [f"k{rng.randint(0, 2_000)}" for _ in range(400)]
        op.on_batch(frame(keys, [i * 1000] * len(keys), [1] * len(keys)), 0)
        log.take(op)
        live = op._parts[0].frame.height if len(op._parts) == 1 else None
        if live is not None:  # a base was just written: exact live rows are known
            assert log.rows() == live
        assert log.rows() <= 2 * 2_001 + 100 + 400
        assert len([k for k in log.latest if k[0] == "columnar_delta"]) <= columnar._MAX_SLOTS


def test_a_restore_drops_the_partials_of_closed_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(columnar, "_SLACK_ROWS", 1_000)  # no new base: the deltas stay
    op, _cap = build(window_step(es.Tumbling(timedelta(seconds=1))))
    log = Changelog()
    op.on_batch(frame(["a", "b", "c"], [10, 20, 30], [1, 1, 1]), 0)
    log.take(op)
    op.on_batch(frame(["a", "d"], [1010, 1020], [1, 1]), 0)
    op.watermark_ms = 1000
    op.on_watermark(1000)
    log.take(op)
    assert log.rows() == 5  # the closed second's partials are still in the changelog
    fresh, _ = build(window_step(es.Tumbling(timedelta(seconds=1))))
    fresh.restore(list(log.latest.items()))
    assert fresh.metrics.state_keys == op.metrics.state_keys == 2


def test_closed_windows_shrink_the_changelog() -> None:
    op, _cap = build(window_step(es.Tumbling(timedelta(seconds=1))))
    log = Changelog()
    n = 60_000  # above _SLACK_ROWS, so the emptied state is rewritten as an empty base
    op.on_batch(frame([f"k{i}" for i in range(n)], [10] * n, [1] * n), 0)
    log.take(op)
    assert log.rows() == n
    op.watermark_ms = 1000
    op.on_watermark(1000)  # the only window closes
    log.take(op)
    assert log.rows() == 0
    assert set(log.latest) == {("columnar_meta",)}


def run(
    step: WindowStep, data: list[Batch], cut_after: int | None, delay: int, every: int = 1
) -> list[dict[str, Any]]:
    """Run ``data``, a checkpoint after every ``every`` batches, a restart at ``cut_after``."""
    op, cap = build(step)
    log = Changelog()
    wm = MIN_TS_MS
    for i, b in enumerate(data):
        op.on_batch(b, 0)
        wm = max(wm, int(b.frame[TS_COL].max()) - delay)
        op.watermark_ms = wm
        op.on_watermark(wm)
        if i % every:
            continue
        log.take(op)
        if cut_after is not None and i == cut_after:
            fresh, fresh_cap = build(step)
            fresh_cap.rows = cap.rows
            fresh.restore(list(log.latest.items()))
            fresh.watermark_ms = wm
            op, cap = fresh, fresh_cap
    op.on_watermark(MAX_TS_MS)
    op.on_end()
    return cap.rows


def batches(seed: int) -> list[Batch]:
    rng = random.Random(seed)
    out = []
    t = 0
    for _ in range(16):
        keys, ts, values = [], [], []
        for _ in range(rng.randint(1, 60)):
            t += rng.randint(0, 120)
            keys.append(f"k{rng.randint(0, 9)}")
            late = max(0, t - rng.randint(0, 400))
            ts.append(late - late % 100)  # equal event times: first/last go by arrival
            values.append(rng.randint(0, 100))
        out.append(frame(keys, ts, values))
    return out


@pytest.mark.parametrize(
    "kind",
    [es.Tumbling(timedelta(seconds=1)), es.Hopping(timedelta(seconds=2), timedelta(seconds=0.5))],
    ids=["tumbling", "hopping"],
)
@pytest.mark.parametrize(("slack", "slots", "every"), [(0, 2, 1), (20, 3, 3), (1000, 6, 4)])
def test_a_restore_from_base_and_deltas_at_any_cut_gives_the_same_output(
    kind: Any, slack: int, slots: int, every: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checkpoints every few batches: a delta then holds several folds (closes between)."""
    monkeypatch.setattr(columnar, "_SLACK_ROWS", slack)
    monkeypatch.setattr(columnar, "_MAX_SLOTS", slots)
    step = window_step(kind)
    data = batches(1)
    straight = run(step, data, None, delay=700)
    assert straight
    for cut in range(0, len(data), every):
        assert run(step, data, cut, delay=700, every=every) == straight, f"cut after {cut}"


def test_many_restored_deltas_are_merged_beside_the_base(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(columnar, "_MAX_SLOTS", 20)
    step = window_step(es.Tumbling(HOUR))
    data = [frame([f"k{i % 5}", "z"], [i, i], [i, 1]) for i in range(15)]
    straight = run(step, data, None, delay=10)
    op, _cap = build(step)
    log = Changelog()
    for b in data:
        op.on_batch(b, 0)
        log.take(op)
    assert len(log.latest) == 16  # meta + 15 deltas
    fresh, fresh_cap = build(step)
    fresh.restore(list(log.latest.items()))
    assert len(fresh._parts) <= columnar._MAX_PARTS
    fresh.on_watermark(MAX_TS_MS)
    assert fresh_cap.rows == straight


def test_without_checkpoints_the_pending_partials_stay_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(columnar, "_SLACK_ROWS", 10)
    op, _cap = build(window_step(es.Tumbling(timedelta(seconds=1))))
    for i in range(50):
        op.on_batch(frame([f"k{j}" for j in range(30)], [i * 1000] * 30, [1] * 30), 0)
        op.watermark_ms = i * 1000
        op.on_watermark(i * 1000)  # folds the queue and closes the previous second
    assert op._pending is None  # given up: the next checkpoint writes a base
    log = Changelog()
    log.take(op)
    assert log.rows() == 30  # the one open window's partials
    assert ("columnar",) in log.latest


def test_state_written_as_a_pickled_frame_is_still_read() -> None:
    step = window_step(es.Tumbling(HOUR))
    data = [frame(["a", "b"], [1, 2], [3, 4]), frame(["a"], [3], [5])]
    straight = run(step, data, None, delay=10)
    op, _cap = build(step)
    op.on_batch(data[0], 0)
    op.snapshot_changes()
    old = {
        ("columnar_meta",): {"closed": MIN_TS_MS, "next_close": op._next_close, "schema": {}},
        ("columnar",): {"frame": op._parts[0].frame},  # the format before Arrow IPC
    }
    fresh, cap = build(step)
    fresh.restore(list(decode_state(encode_state(old, step="w"), step="w").items()))
    fresh._schema = dict(op._schema)
    fresh.on_batch(data[1], 0)
    fresh.on_watermark(MAX_TS_MS)
    assert cap.rows == straight


@pytest.mark.parametrize(
    "df",
    [
        pl.DataFrame({"a": [1, 2], "b": ["x", None], "c": [None, None], "d": [0.5, 1.5]}),
        pl.DataFrame({"a": pl.Series([], dtype=pl.Int64), "s": pl.Series([], dtype=pl.String)}),
    ],
    ids=["values", "empty"],
)
def test_frames_round_trip_through_arrow_ipc(df: pl.DataFrame) -> None:
    back = decode_frame(encode_frame(df), step="w")
    assert back.schema == df.schema
    assert back.equals(df)


def test_bytes_that_are_not_a_frame_are_a_state_error() -> None:
    with pytest.raises(StateError, match="step 'w'"):
        decode_frame(b"not arrow", step="w")


@pytest.mark.parametrize("key_type", [str, int])
def test_small_partials_merge_into_a_large_frame_by_key(key_type: type) -> None:
    """Folding few keys into a large long-window frame regroups only those keys' rows."""
    step = window_step(es.Tumbling(HOUR))
    rng = random.Random(3)
    data = [frame([key_type(i) for i in range(400)], [7] * 400, list(range(400)))]
    for j in range(12):  # more folds than _MAX_PARTS: the frames are merged on the way
        keys = [key_type(rng.randint(0, 450)) for _ in range(20)]
        data.append(frame(keys, [7 + j % 2] * 20, [rng.randint(0, 9) for _ in range(20)]))
    whole = Batch.of_frame(pl.concat([b.frame for b in data]))
    straight = run(step, [whole], None, delay=10)
    op, cap = build(step)
    for b in data:
        op.on_batch(b, 0)
        op.snapshot_changes()  # folds each batch into its own partial frame
    assert len(op._parts) < len(data)
    op.on_watermark(MAX_TS_MS)
    assert cap.rows == straight
