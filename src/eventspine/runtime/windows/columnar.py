"""Vectorized tumbling and hopping windows over columnar micro-batches (the fast path).

The state of the operator is a list of polars frames of *partial aggregates*,
one row per ``(key, pane)``, where a pane is ``gcd(size, hop)`` long (a
tumbling window is one pane). Each batch costs one ``group_by`` over the
batch; the watermark closes windows by combining panes:

* **on a batch**: compute each record's pane; records whose every window has
  already closed (``ts < first start whose window ends after the watermark``)
  are late: counted in ``metrics.late`` and sent, as the original records, to
  the side output ``"late"``. The rest are grouped by ``(key, pane)`` into
  partials (count, sums, minima, maxima, and the first/last value by event time:
  ties go to the earlier/later arrival, since groups keep arrival order).
* **on a watermark** that passes the end of the earliest open window: the
  partials are combined per ``(key, pane)``; for hopping windows each pane is
  exploded into the windows that contain it; windows ending in
  ``(previous watermark, watermark]`` are emitted, sorted by
  ``(window_end_ms, key)`` ascending; panes whose last window has closed are
  dropped.

Results are one columnar :class:`~eventspine.records.Batch` per close with the
columns ``{key_field}``, ``window_start_ms``, ``window_end_ms``, one column per
aggregation (``mean = sum / count``) and ``__ts = window_end_ms - 1``.

Batches that arrive as rows are converted here, with a type check stricter
than polars' own (polars would turn ``[1, "a"]`` into strings). When a batch's
keys or values do not fit a polars column (tuples, mixed types, ``None`` in a
sum...) and no window state is open yet, the operator hands the rest of the
stream to the record-path operator that ``make_window`` passes in as
``record_path``; the results are the same, only slower. If that happens while
columnar state is open, the operator stops with a :class:`StepError`, since
half a window cannot move between the two representations.

Checkpoints (``snapshot_changes``/``restore``) keep the partials in the changelog
as a **base** frame (key ``("columnar",)``) plus up to ``_MAX_SLOTS`` **delta**
frames (keys ``("columnar_delta", i)``): the partials folded since the previous
checkpoint. Partials merge, so the state is the merge of the base and the deltas
in slot order (arrival order is kept, so first/last break ties as before),
without the panes whose last window ended at or before the saved watermark. A
checkpoint writes only its delta, unless the changelog would then hold more than
twice the live rows (or ``_MAX_SLOTS`` deltas): it then writes the merged
partials as the new base and tombstones the deltas, in the same checkpoint. So a
checkpoint after a few keys changed writes a few rows, and a restore reads at
most about three times the live state. Frames are stored as Arrow IPC
(:func:`~eventspine.serde.state.encode_frame`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from eventspine.dataflow.steps import WindowStep
from eventspine.dataflow.time import Hopping, OnClose, Tumbling
from eventspine.errors import StepError
from eventspine.records import KEY_COL, TS_COL, Batch, field_getter
from eventspine.runtime.operator import ErrorBoundary, Operator
from eventspine.serde.state import decode_frame, encode_frame
from eventspine.timeutil import MAX_TS_MS, MIN_TS_MS, Clock, to_duration_ms

if TYPE_CHECKING:
    import polars as pl

    from eventspine.runtime.metrics import StepMetrics

__all__ = ["ColumnarWindow", "supports"]

VECTOR_KERNELS = frozenset({"count", "sum", "mean", "min", "max", "first", "last"})
_PANE = "__pane"
_WS = "__ws"
_N = "__n"
_FTS = "__fts"
_LTS = "__lts"
# Merge the partial frames once this many have piled up.
_MAX_PARTS = 8
# Aggregate queued records once this many wait for a close (a stalled watermark).
_MAX_RAW_ROWS = 1_000_000
_NEVER = MAX_TS_MS + 1
# Checkpoints: at most this many delta frames in the changelog beside the base.
_MAX_SLOTS = 16
# Rows the changelog may hold beyond twice the live rows before a new base is written.
_SLACK_ROWS = 50_000
_BASE = ("columnar",)
_META = ("columnar_meta",)
_DELTA = "columnar_delta"


def supports(step: WindowStep) -> bool:
    """Return whether :class:`ColumnarWindow` implements ``step``.

    True for tumbling and hopping windows emitted on close, without allowed
    lateness, whose aggregations all have a vector kernel over a plain field
    (``count`` needs no field).
    """
    if not isinstance(step.window, (Tumbling, Hopping)):
        return False
    if not isinstance(step.emit, OnClose) or step.allowed_lateness_ms != 0:
        return False
    for a in step.aggs.values():
        if a.vector not in VECTOR_KERNELS or a.kind != a.vector:
            return False
        if a.vector != "count" and a.field is None:
            return False
    return True


class _Geometry:
    """Window arithmetic on the epoch-aligned grid (all values in ms)."""

    __slots__ = ("hop", "offset", "pane", "size")

    def __init__(self, step: WindowStep) -> None:
        w = step.window
        if isinstance(w, Tumbling):
            self.size = self.hop = to_duration_ms(w.size)
        else:
            assert isinstance(w, Hopping)
            self.size = to_duration_ms(w.size)
            self.hop = to_duration_ms(w.hop)
        self.offset = to_duration_ms(w.offset)
        self.pane = math.gcd(self.size, self.hop)

    @property
    def tumbling(self) -> bool:
        return self.size == self.hop

    def first_live_start(self, wm: int) -> int:
        """The earliest window start whose window ends after ``wm``.

        A record with ``ts`` below it is late: every window it belongs to has closed.
        """
        return ((wm - self.size - self.offset) // self.hop + 1) * self.hop + self.offset

    def end_after(self, wm: int) -> int:
        """The smallest window end strictly after ``wm``."""
        return self.first_live_start(wm) + self.size

    def pane_at(self, ts: int) -> int:
        """The start of the pane holding ``ts``."""
        return ((ts - self.offset) // self.pane) * self.pane + self.offset

    def last_start_of(self, pane: int) -> int:
        """The start of the latest window containing the pane that starts at ``pane``."""
        return ((pane - self.offset) // self.hop) * self.hop + self.offset

    def first_start_of(self, pane: int) -> int:
        """The start of the earliest window containing the pane that starts at ``pane``."""
        return ((pane - self.size - self.offset) // self.hop + 1) * self.hop + self.offset

    def pane_of(self, ts: pl.Expr) -> pl.Expr:
        return ((ts - self.offset) // self.pane) * self.pane + self.offset

    def last_start(self, pane: pl.Expr) -> pl.Expr:
        return ((pane - self.offset) // self.hop) * self.hop + self.offset

    def first_start(self, pane: pl.Expr) -> pl.Expr:
        return ((pane - self.size - self.offset) // self.hop + 1) * self.hop + self.offset


class _Layout:
    """Which partial columns the aggregations need, and how to build and combine them."""

    def __init__(self, step: WindowStep) -> None:
        import polars as pl

        self.fields: dict[str, set[str]] = {}  # field -> kernels reading it
        for a in step.aggs.values():
            if a.vector != "count":
                assert a.field is not None
                self.fields.setdefault(a.field, set()).add(str(a.vector))
        self.uses_first = any("first" in k for k in self.fields.values())
        self.uses_last = any("last" in k for k in self.fields.values())
        col, ts = pl.col, pl.col(TS_COL)
        part: list[pl.Expr] = [pl.len().cast(pl.Int64).alias(_N)]
        comb: list[pl.Expr] = [col(_N).sum().alias(_N)]
        for f, kinds in self.fields.items():
            if kinds & {"sum", "mean"}:
                part.append(col(f).sum().alias("s:" + f))
                comb.append(col("s:" + f).sum().alias("s:" + f))
            for k, short in (("min", "mn:"), ("max", "mx:")):
                if k in kinds:
                    part.append(getattr(col(f), k)().alias(short + f))
                    comb.append(getattr(col(short + f), k)().alias(short + f))
            # Groups keep arrival order, so among the records at the earliest (latest)
            # event time the first (last) one is the earliest (latest) arrival.
            # (``reverse().get(reverse().arg_max())`` gives wrong answers in polars 2.1
            # group_by on some group layouts, hence the filter.)
            if "first" in kinds:
                part.append(col(f).filter(ts == ts.min()).first().alias("fv:" + f))
                fts = col(_FTS)
                comb.append(col("fv:" + f).filter(fts == fts.min()).first().alias("fv:" + f))
            if "last" in kinds:
                part.append(col(f).filter(ts == ts.max()).last().alias("lv:" + f))
                lts = col(_LTS)
                comb.append(col("lv:" + f).filter(lts == lts.max()).last().alias("lv:" + f))
        if self.uses_first:
            part.append(ts.min().alias(_FTS))
            comb.append(col(_FTS).min().alias(_FTS))
        if self.uses_last:
            part.append(ts.max().alias(_LTS))
            comb.append(col(_LTS).max().alias(_LTS))
        self.partial = part
        self.combine = comb
        self.results: list[pl.Expr] = []
        for out, a in step.aggs.items():
            f = a.field or ""
            expr = {
                "count": col(_N),
                "sum": col("s:" + f),
                "mean": col("s:" + f) / col(_N),
                "min": col("mn:" + f),
                "max": col("mx:" + f),
                "first": col("fv:" + f),
                "last": col("lv:" + f),
            }[str(a.vector)]
            self.results.append(expr.alias(out))


class ColumnarWindow(Operator):
    """Tumbling/hopping windows with ``OnClose`` emission, computed with polars.

    Args:
        step: the window step (``supports(step)`` must be true).
        metrics: the step's metrics (``late`` and ``state_keys`` are kept here).
        boundary: the step's error boundary (unused by the kernels, kept for the contract).
        clock: the run's clock (unused: windows move with event time only).
        record_path: builds the record-path operator for the same step; used when a
            batch cannot be represented as polars columns (see the module doc).
    """

    prefers_columnar = True

    def __init__(
        self,
        step: WindowStep,
        metrics: StepMetrics,
        boundary: ErrorBoundary,
        clock: Clock,
        record_path: Callable[[], Operator] | None = None,
    ) -> None:
        if not supports(step):
            raise ValueError(f"step '{step.name}': the columnar window cannot run {step.signature}")
        super().__init__(step.name, metrics)
        self.step = step
        self.boundary = boundary
        self._geo = _Geometry(step)
        self._layout = _Layout(step)
        self._record_path = record_path
        self._delegate: Operator | None = None
        self._raw: list[pl.DataFrame] = []  # on-time records since the last close
        self._raw_rows = 0
        # Partial frames (unique (key, pane) rows within each) with their smallest pane.
        self._parts: list[_Part] = []
        self._closed = MIN_TS_MS  # every window ending at or before this has been emitted
        self._next_close = _NEVER  # the earliest end of an open window holding data
        self._schema: dict[str, Any] = {}  # dtypes of the key and fields seen so far
        # Checkpoints (see the module doc): partials folded since the last snapshot
        # (``None``: too many to keep, the next snapshot writes a base), the rows the
        # changelog holds (base and deltas), its delta slots in use, whether it has a base.
        self._pending: list[pl.DataFrame] | None = []
        self._pending_rows = 0
        self._log_rows = 0
        self._slots = 0
        self._has_base = False

    # -- operator hooks ------------------------------------------------------------------
    def on_batch(self, batch: Batch, port: int) -> None:
        """Send late records to the side output; queue the others until the next close."""
        if self._delegate is not None:
            self._delegate.on_batch(batch, port)
            return
        if not len(batch):
            return
        frame = self._prepare(batch)
        if isinstance(frame, str):
            self._fall_back(frame, batch, port)
            return
        import polars as pl

        geo = self._geo
        live_from = geo.first_live_start(self._closed)
        ts = frame.get_column(TS_COL)
        ts_min = ts.min()
        if self._closed > MIN_TS_MS and ts_min < live_from:  # type: ignore[operator]
            on_time = ts >= live_from
            self._emit_late(batch, ~on_time)
            frame = frame.filter(on_time)
            if not frame.height:
                return
            ts_min = frame.get_column(TS_COL).min()
        self._raw.append(frame.with_columns(geo.pane_of(pl.col(TS_COL)).alias(_PANE)))
        self._raw_rows += frame.height
        # The earliest window end this batch adds that is still open.
        first_end = geo.first_start_of(geo.pane_at(int(ts_min))) + geo.size  # type: ignore[arg-type]
        self._next_close = min(self._next_close, max(first_end, geo.end_after(self._closed)))
        if self._raw_rows > _MAX_RAW_ROWS:  # the watermark is stalled: bound the memory
            self._fold_raw()
        self._count_state()

    def on_watermark(self, wm_ms: int) -> None:
        """Emit every window ending in ``(previous watermark, wm_ms]``; forget finished panes."""
        if self._delegate is not None:
            self._delegate.watermark_ms = wm_ms
            self._delegate.on_watermark(wm_ms)
            return
        prev = self._closed
        self._closed = max(prev, wm_ms)
        if wm_ms < self._next_close:
            return
        self._close(prev, wm_ms)

    def on_end(self) -> None:
        """Pass end of input to the record path if it took over (windows flush on MAX_TS_MS)."""
        if self._delegate is not None:
            self._delegate.on_end()

    # -- checkpoints ---------------------------------------------------------------------
    stateful = True

    def snapshot_changes(self) -> list[tuple[Any, Any]]:
        """Return the partials folded since the last snapshot, and the close bookkeeping.

        Queued records are folded into partial aggregates first, as the next close
        would do anyway (float sums may differ in the last bits from an uninterrupted
        run, as with any change of batch boundaries). The partials are written as a
        delta, or as a new base with the deltas tombstoned (see the module doc); an
        idle operator writes only the small bookkeeping entry (what has been closed,
        the schema). If the record path took over, its entries are returned under a
        ``"delegate"`` prefix and the columnar entries are tombstoned.
        """
        if self._delegate is not None:
            changes = self._delegate.snapshot_changes()
            gone: list[tuple[Any, Any]] = [(_BASE, None), (_META, None)]
            gone += [((_DELTA, i), None) for i in range(self._slots)]
            self._slots = 0
            return [(("delegate", k), v) for k, v in changes] + gone
        self._fold_raw()
        meta = {
            "closed": self._closed,
            "next_close": self._next_close,
            "schema": dict(self._schema),
        }
        out: list[tuple[Any, Any]] = [(_META, meta)]
        pending, self._pending, self._pending_rows = self._pending, [], 0
        delta = None
        if pending:  # merged: a part must hold one row per (key, pane)
            delta = self._alive(self._merge(pending), self._closed)
        rows = 0 if delta is None else delta.height
        # Each part is unique per (key, pane): the largest is a lower bound of the live rows.
        live = max((p.frame.height for p in self._parts), default=0)
        if (
            pending is None
            or self._slots >= _MAX_SLOTS
            or self._log_rows + rows > 2 * live + _SLACK_ROWS
        ):
            if len(self._parts) > 1:
                self._parts = [_Part.of(self._merge([p.frame for p in self._parts]))]
            base = self._parts[0].frame if self._parts else None
            if base is not None or self._has_base:
                value = None if base is None else {"ipc": encode_frame(base)}
                out.append((_BASE, value))
            out += [((_DELTA, i), None) for i in range(self._slots)]
            self._log_rows = 0 if base is None else base.height
            self._has_base = base is not None
            self._slots = 0
        elif delta is not None and rows:
            out.append(((_DELTA, self._slots), {"ipc": encode_frame(delta)}))
            self._slots += 1
            self._log_rows += rows
        return out

    def restore(self, entries: list[tuple[Any, Any]]) -> None:
        """Rebuild the open partials (or the record path's state) from a checkpoint."""
        delegated = [(k[1], v) for k, v in entries if k[0] == "delegate"]
        if delegated:
            if self._record_path is None:
                raise AssertionError("record-path state without a record path to restore it")
            self._delegate = self._record_path()
            self._delegate.out = self.out
            self._delegate.restore(delegated)
            return
        base: pl.DataFrame | None = None
        deltas: dict[int, pl.DataFrame | None] = {}
        for key, state in entries:
            if key == _META:
                self._closed = state["closed"]
                self._next_close = state["next_close"]
                self._schema = dict(state["schema"])
            elif key == _BASE:
                base = self._frame_of(state)
            elif key[0] == _DELTA:
                deltas[key[1]] = self._frame_of(state)
        frames = [f for f in (base, *(deltas[i] for i in sorted(deltas))) if f is not None]
        self._log_rows = sum(f.height for f in frames)
        self._has_base = base is not None
        self._slots = max(deltas, default=-1) + 1
        self._pending, self._pending_rows = [], 0
        alive = [f for f in (self._alive(f, self._closed) for f in frames) if f.height]
        if len(alive) > _MAX_PARTS:
            alive = [alive[0], self._merge(alive[1:])]
        self._parts = [_Part.of(f) for f in alive]
        self._count_state()

    def _frame_of(self, state: dict[str, Any]) -> pl.DataFrame | None:
        if "ipc" in state:
            return decode_frame(state["ipc"], step=self.name)
        frame: pl.DataFrame | None = state["frame"]  # a pickled frame (before Arrow IPC state)
        return frame

    def _alive(self, frame: pl.DataFrame, closed: int) -> pl.DataFrame:
        """The rows of ``frame`` whose pane still has a window ending after ``closed``."""
        import polars as pl

        if closed == MIN_TS_MS:
            return frame
        geo = self._geo
        return frame.filter(geo.last_start(pl.col(_PANE)) + geo.size > closed)

    # -- internals ---------------------------------------------------------------------
    def _fold_raw(self) -> None:
        """Aggregate the queued records into one partial frame (one group_by per close)."""
        import polars as pl

        if not self._raw:
            return
        raw = self._raw[0] if len(self._raw) == 1 else pl.concat(self._raw, how="vertical_relaxed")
        self._raw = []
        self._raw_rows = 0
        part = raw.group_by([KEY_COL, _PANE]).agg(self._layout.partial)
        self._parts.append(_Part.of(part))
        if self._pending is not None:
            # Bounded without checkpoints too: past half the live rows, the next
            # snapshot writes a base instead.
            self._pending.append(part)
            self._pending_rows += part.height
            if self._pending_rows > sum(p.frame.height for p in self._parts) // 2 + _SLACK_ROWS:
                self._pending, self._pending_rows = None, 0
        if len(self._parts) > _MAX_PARTS:
            self._parts = [_Part.of(self._merge([p.frame for p in self._parts]))]

    def _merge(self, frames: list[pl.DataFrame]) -> pl.DataFrame:
        """Merge partial frames into one row per (key, pane).

        Each frame alone is unique; only the rows of the largest frame whose panes
        fall in the others' pane range can have duplicates, so only those are
        grouped again (typically a small tail: the panes of the previous batch).
        When the others are small beside it (a long window: every row shares the
        pane), only its rows with the others' keys are grouped again.
        """
        import polars as pl

        if len(frames) == 1:
            return frames[0]
        i = max(range(len(frames)), key=lambda j: frames[j].height)
        big = frames[i]
        others = [f for j, f in enumerate(frames) if j != i]
        panes = pl.concat([f.get_column(_PANE) for f in others])
        overlap = pl.col(_PANE).is_between(panes.min(), panes.max())
        if 4 * sum(f.height for f in others) < big.height:
            dtype = big.schema[KEY_COL]
            keys = pl.concat([f.get_column(KEY_COL).cast(dtype, strict=False) for f in others])
            overlap = overlap & pl.col(KEY_COL).is_in(keys.unique().implode(), nulls_equal=True)
        mask = big.select(overlap).to_series()
        # Arrival order is kept: first/last break event-time ties by it.
        mixed = pl.concat(
            [big.filter(mask) if j == i else f for j, f in enumerate(frames)],
            how="vertical_relaxed",
        )
        merged = mixed.group_by([KEY_COL, _PANE]).agg(self._layout.combine)
        return pl.concat([merged, big.filter(~mask)], how="vertical_relaxed")

    def _close(self, prev: int, wm: int) -> None:
        import polars as pl

        geo = self._geo
        self._fold_raw()
        pane = pl.col(_PANE)
        # Windows closing now end in (prev, wm]: their starts are in [lo, hi].
        lo = geo.first_live_start(prev)
        hi = geo.first_live_start(wm) - geo.hop
        # Panes holding data of those windows: first_start(pane) <= hi, last_start(pane) >= lo.
        due = (geo.first_start(pane) <= hi) & (geo.last_start(pane) >= lo)
        ready = [p.frame.filter(due) for p in self._parts if geo.first_start_of(p.min_pane) <= hi]
        ready = [f for f in ready if f.height]
        wins: pl.DataFrame | None = None
        if ready and geo.tumbling:
            wins = self._merge(ready).rename({_PANE: _WS})
        elif ready:
            first = pl.max_horizontal(geo.first_start(pane), pl.lit(lo))
            last = pl.min_horizontal(geo.last_start(pane), pl.lit(hi))
            wins = (
                pl.concat(ready, how="vertical_relaxed")
                .with_columns(pl.int_ranges(first, last + 1, geo.hop).alias(_WS))
                .explode(_WS)
                .drop(_PANE)
                .group_by([KEY_COL, _WS])
                .agg(self._layout.combine)
            )
        if wins is not None and wins.height:
            end = pl.col(_WS) + geo.size
            out = wins.select(
                pl.col(KEY_COL).alias(self.step.key_field),
                pl.col(_WS).alias("window_start_ms"),
                end.alias("window_end_ms"),
                *self._layout.results,
                (end - 1).alias(TS_COL),
            ).sort(["window_end_ms", self.step.key_field])
            self.out.emit(Batch.of_frame(out))
        # Forget panes whose last window has closed.
        alive = geo.last_start(pane) + geo.size > wm
        parts: list[_Part] = []
        for p in self._parts:
            if geo.last_start_of(p.min_pane) + geo.size > wm:
                parts.append(p)
                continue
            f = p.frame.filter(alive)
            if f.height:
                parts.append(_Part.of(f))
        self._parts = parts
        after = geo.end_after(wm)
        self._next_close = min(
            (max(geo.first_start_of(p.min_pane) + geo.size, after) for p in parts),
            default=_NEVER,
        )
        self._count_state()

    def _count_state(self) -> None:
        # Exact when one partial frame is left; an upper bound otherwise (frames may
        # share (key, pane) rows) or while records are queued.
        self.metrics.state_keys = sum(p.frame.height for p in self._parts) + self._raw_rows

    def _emit_late(self, batch: Batch, late: pl.Series) -> None:
        if batch.is_columnar:
            self.metrics.late += int(late.sum())
            self.out.emit_side(
                "late", batch.with_frame(batch.frame.filter(late), batch.record_type)
            )
            return
        self.emit_late(batch, [i for i, bad in enumerate(late.to_list()) if bad])

    def _fall_back(self, reason: str, batch: Batch, port: int) -> None:
        """Hand the stream to the record path, or fail if columnar state is open."""
        if self._parts or self._raw or self._record_path is None:
            position = batch.position(0)
            raise StepError(
                self.name,
                "the vectorized window",
                TypeError(
                    f"{reason}; the vectorized window needs str or int keys and one value type "
                    f"per field"
                    + (" (columnar windows were already open)" if self._record_path else "")
                ),
                partition=position[0],
                offset=position[1],
            )
        delegate = self._record_path()
        delegate.out = self.out
        if self._closed > MIN_TS_MS:
            delegate.watermark_ms = self._closed
            delegate.on_watermark(self._closed)
        self._delegate = delegate
        delegate.on_batch(batch, port)

    def _prepare(self, batch: Batch) -> pl.DataFrame | str:
        """Return ``__key``, ``__ts`` and the aggregated fields as a frame, or why it cannot be."""
        if batch.is_columnar:
            frame = _columns_of(batch.frame, self._layout.fields)
        else:
            frame = _rows_to_frame(batch, self._layout.fields)
        if isinstance(frame, str):
            return frame
        # Concatenating partials casts to a common type: fine between numbers, wrong
        # between e.g. int and str keys, so such a change of type is refused.
        for name, dtype in frame.schema.items():
            seen = self._schema.get(name)
            if seen is None or str(seen) == "Null":
                self._schema[name] = dtype
            elif (
                dtype != seen
                and str(dtype) != "Null"
                and not (dtype.is_numeric() and seen.is_numeric())
            ):
                what = "keys" if name == KEY_COL else f"field '{name}'"
                return f"{what} changed type from {seen} to {dtype}"
        return frame


_NUMERIC = frozenset({int, float})


class _Part:
    """A frame of partial aggregates (one row per (key, pane)) and its smallest pane."""

    __slots__ = ("frame", "min_pane")

    def __init__(self, frame: pl.DataFrame, min_pane: int) -> None:
        self.frame = frame
        self.min_pane = min_pane

    @classmethod
    def of(cls, frame: pl.DataFrame) -> _Part:
        return cls(frame, int(frame.get_column(_PANE).min()))  # type: ignore[arg-type]


def _columns_of(frame: pl.DataFrame, fields: dict[str, set[str]]) -> pl.DataFrame | str:
    import polars as pl

    if KEY_COL not in frame.columns:
        return "the records are not keyed"
    key = frame.schema[KEY_COL]
    if not (key.is_integer() or key == pl.String):
        return f"keys of type {key} are not supported"
    for f, kinds in fields.items():
        if f not in frame.columns:
            return f"field '{f}' is missing"
        dt = frame.schema[f]
        if kinds & {"sum", "mean"}:
            if not dt.is_numeric() or frame.get_column(f).null_count():
                return f"field '{f}' is not a number in every record"
        elif not (dt.is_numeric() or dt in (pl.String, pl.Boolean, pl.Null)):
            return f"field '{f}' has values of type {dt}"
    return frame.select(KEY_COL, TS_COL, *fields)


def _rows_to_frame(batch: Batch, fields: dict[str, set[str]]) -> pl.DataFrame | str:
    import polars as pl

    keys = batch.keys
    if keys is None:
        return "the records are not keyed"
    key_types = set(map(type, keys))
    if len(key_types) != 1 or not key_types <= {str, int}:
        return f"keys of type {', '.join(sorted(t.__name__ for t in key_types))}"
    try:
        data: dict[str, pl.Series] = {
            KEY_COL: pl.Series(KEY_COL, keys, dtype=pl.String if str in key_types else pl.Int64),
            TS_COL: pl.Series(TS_COL, batch.ts, dtype=pl.Int64),
        }
    except (OverflowError, TypeError, ValueError, pl.exceptions.PolarsError) as exc:
        return f"keys do not fit a column ({exc})"
    rows = batch.rows
    for f, kinds in fields.items():
        try:
            values = list(map(field_getter(f, batch.record_type), rows))
        except (KeyError, AttributeError, TypeError):
            return f"field '{f}' is missing in some records"
        types = set(map(type, values))
        present = types - {type(None)}
        if kinds & {"sum", "mean"}:
            ok = bool(types) and types <= _NUMERIC
        else:
            ok = present <= _NUMERIC or present in ({str}, {bool})
        if not ok:
            return f"field '{f}' has values of type {', '.join(sorted(t.__name__ for t in types))}"
        dtype = (
            pl.Float64
            if float in present
            else pl.Int64
            if int in present
            else pl.String
            if str in present
            else pl.Boolean
            if bool in present
            else pl.Null
        )
        try:
            data[f] = pl.Series(f, values, dtype=dtype)
        except (OverflowError, TypeError, ValueError, pl.exceptions.PolarsError) as exc:
            return f"field '{f}' does not fit a {dtype} column ({exc})"
    try:
        return pl.DataFrame(data)
    except pl.exceptions.PolarsError as exc:
        return f"the records do not fit columns ({exc})"
