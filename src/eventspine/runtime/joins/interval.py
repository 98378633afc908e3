"""The interval join: pairs with equal keys where ``lower <= right.ts - left.ts <= upper``.

Semantics (both bounds inclusive; input port 0 is the left stream, 1 the right):

* Each side is buffered per key. When a record arrives it is joined with the
  buffered records of the other side that are within the bound, so every pair
  is emitted exactly once, when the later of its two records arrives. A pair's
  event time is ``max(left.ts, right.ts)``.
* Eviction follows the operator watermark ``wm`` (the minimum of both inputs):
  a left record can no longer match once ``wm > left.ts + upper``, a right
  record once ``wm > right.ts - lower``. ``how="left"``/``"right"``/``"outer"``
  emit their unmatched records (``None`` on the other side, event time the
  record's own) when they are evicted; at end of input (``MAX_TS_MS``)
  everything is evicted.
* A record is *late* when it arrives with ``ts < wm``: partners it could have
  matched may already be evicted, so it would give an incomplete answer. Late
  records are counted in ``metrics.late`` and sent, unjoined, to the side
  output ``"late"``. Every record that is not late sees all of its partners.
  (``ts < wm`` is exactly the condition under which the eviction rule above
  may have removed a partner; it is also Flink's rule.)
* Output order is deterministic: pairs in arrival order of the newer record,
  each record's partners in ``(ts, arrival)`` order; unmatched records, at
  each watermark, in ``(ts, side, arrival)`` order.

Two paths compute the same pairs. The record path keeps per-key lists sorted
by ``(ts, arrival)``. The vectorized path (:mod:`._columnar`) is used while
both inputs arrive as columnar batches of dicts, ``how="inner"`` and there is
no ``combine``; it keeps each side as a polars frame and emits columnar
batches with the key column and ``left``/``right`` struct columns (which read
back as the same dicts the record path emits). If a row batch arrives, or
frames cannot be combined (mismatched key types), the buffers move to the
record path for the rest of the run.

Checkpoints (``snapshot_changes``/``restore``): the record path reports, per
changed ``(side, key)``, ``("buf", side, key) -> [(ts, seq, record, matched), ...]``
(``None`` once the key's buffer is gone); the eviction heaps are rebuilt from
the buffers on restore (each buffered record has exactly one heap entry). The
vectorized path reports each changed side whole, ``("columnar", side) -> IPC
bytes`` (see :mod:`._columnar`). ``("__meta__",) -> {"seq", "columnar"}``
holds the arrival counter and which path is in use.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left
from typing import TYPE_CHECKING, Any

from eventspine.records import Batch
from eventspine.runtime.joins._columnar import ColumnarBuffers
from eventspine.runtime.operator import ErrorBoundary, Operator

if TYPE_CHECKING:
    from eventspine.dataflow.steps import IntervalJoinStep
    from eventspine.runtime.metrics import StepMetrics

__all__ = ["IntervalJoinOperator"]

#: The state entry of the operator-wide values.
META: tuple[str] = ("__meta__",)

# A buffered record: [ts, seq, record, matched]. Lists compare by (ts, seq) because
# seq is unique, so per-key lists can be kept sorted with bisect/insort.
Entry = list[Any]


class IntervalJoinOperator(Operator):
    """Joins two keyed streams within an event-time interval (see the module docstring)."""

    def __init__(self, step: IntervalJoinStep, metrics: StepMetrics, boundary: ErrorBoundary):
        super().__init__(step.name, metrics)
        self.step = step
        self.boundary = boundary
        self.lower = step.lower_ms
        self.upper = step.upper_ms
        self.key_field = step.key_field
        self.emit_unmatched = (
            step.how in ("left", "outer"),
            step.how in ("right", "outer"),
        )
        # Per side: key -> entries sorted by (ts, seq); heap of (deadline, seq, key).
        self.buffers: tuple[dict[Any, list[Entry]], dict[Any, list[Entry]]] = ({}, {})
        self.heaps: tuple[list[tuple[int, int, Any]], list[tuple[int, int, Any]]] = ([], [])
        # A side's record is evicted once wm > ts + keep[side].
        self.keep = (self.upper, -self.lower)
        self.seq = 0
        vectorizable = step.how == "inner" and step.combine is None
        self.columnar: ColumnarBuffers | None = (
            ColumnarBuffers(self.lower, self.upper, self.key_field) if vectorizable else None
        )
        #: Tells the planner columnar input is welcome (used when the join reads a source).
        self.prefers_columnar = vectorizable
        self._dirty: set[tuple[int, Any]] = set()  # (side, key) changed since the snapshot
        self._saved: set[tuple[int, Any]] = set()  # (side, key) last reported not None
        self._col_saved = False  # columnar entries were reported
        self._meta_saved = self._meta()

    # -- input ------------------------------------------------------------------------
    def on_batch(self, batch: Batch, port: int) -> None:
        """Join the batch's records with the other side's buffer, then buffer them."""
        col = self.columnar
        if col is not None:
            if batch.is_columnar and batch.record_type is dict:
                late = col.push(batch.frame, port, self.watermark_ms)
                if late is not False:
                    if late is not None:
                        self.metrics.late += late.height
                        self.out.emit_side("late", batch.with_frame(late, batch.record_type))
                    return
            self._leave_columnar()
        self._push_rows(batch, port)

    def _leave_columnar(self) -> None:
        """Move the columnar buffers into the record path's buffers, for good."""
        col = self.columnar
        if col is None:
            return
        self._flush_columnar()
        self.columnar = None
        for side, keys, ts, records in col.drain():
            for k, t, r in zip(keys, ts, records, strict=True):
                self._buffer(side, k, [t, self._next_seq(), r, False])

    def _flush_columnar(self) -> None:
        """Join the queued columnar batches and emit their pairs."""
        assert self.columnar is not None
        if self.columnar.has_pending:
            pairs = self.columnar.flush()
            if pairs is not None:
                self.out.emit(Batch.of_frame(pairs))

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def _buffer(self, side: int, key: Any, entry: Entry) -> None:
        self._dirty.add((side, key))
        lst = self.buffers[side].get(key)
        if lst is None:
            self.buffers[side][key] = [entry]
        elif lst[-1][0] <= entry[0]:
            lst.append(entry)  # in order: the common case
        else:
            lst.insert(bisect_left(lst, entry), entry)
        heapq.heappush(self.heaps[side], (entry[0] + self.keep[side], entry[1], key))

    def _push_rows(self, batch: Batch, port: int) -> None:
        rows, ts, keys = batch.rows, batch.ts, batch.keys
        if keys is None:
            raise AssertionError(f"join '{self.name}' received records without keys")
        wm = self.watermark_ms
        other = self.buffers[1 - port]
        # The other side's record o matches when lo <= o.ts - t <= hi.
        lo, hi = (self.lower, self.upper) if port == 0 else (-self.upper, -self.lower)
        out_rows: list[Any] = []
        out_ts: list[int] = []
        out_keys: list[Any] = []
        late: list[int] = []
        key_field = self.key_field
        combine = self.step.combine
        seq = self.seq
        for i, rec in enumerate(rows):
            t = ts[i]
            if t < wm:
                late.append(i)
                continue
            k = keys[i]
            seq += 1
            entry: Entry = [t, seq, rec, False]
            partners = other.get(k)
            if partners:
                start = bisect_left(partners, [t + lo])
                stop = bisect_left(partners, [t + hi + 1])
                if start < stop:
                    entry[3] = True
                    self._dirty.add((1 - port, k))  # partners' matched flags
                    for p in partners[start:stop]:
                        p[3] = True
                        left, right = (rec, p[2]) if port == 0 else (p[2], rec)
                        try:
                            value = (
                                {key_field: k, "left": left, "right": right}
                                if combine is None
                                else combine(left, right)
                            )
                        except Exception as exc:
                            self.boundary.user_error(exc, batch, i)
                            continue
                        out_rows.append(value)
                        out_ts.append(t if t > p[0] else p[0])
                        out_keys.append(k)
            self._buffer(port, k, entry)
        self.seq = seq
        if late:
            self.emit_late(batch, late)
        if out_rows:
            self.out.emit(Batch(out_rows, out_ts, keys=out_keys, record_type=None))
        self.metrics.state_keys = len(self.buffers[0]) + len(self.buffers[1])

    # -- time ---------------------------------------------------------------------------
    def on_watermark(self, wm_ms: int) -> None:
        """Evict records that can no longer match; emit the unmatched ones of outer sides."""
        if self.columnar is not None:
            self._flush_columnar()  # queued rows arrived before this watermark
            self.columnar.evict(wm_ms)
            self.metrics.state_keys = self.columnar.state_keys
            return
        unmatched: list[tuple[int, int, int, Any, Any]] = []  # (ts, side, seq, key, record)
        for side in (0, 1):
            heap = self.heaps[side]
            if not heap or heap[0][0] >= wm_ms:
                continue
            touched: dict[Any, None] = {}
            while heap and heap[0][0] < wm_ms:
                touched[heapq.heappop(heap)[2]] = None
            buf = self.buffers[side]
            # Evicted entries are a prefix: deadline = ts + keep[side] is monotone in ts.
            bound = [wm_ms - self.keep[side]]
            emit = self.emit_unmatched[side]
            for k in touched:
                lst = buf.get(k)
                if lst is None:
                    continue
                self._dirty.add((side, k))
                cut = bisect_left(lst, bound)
                if emit:
                    unmatched.extend((e[0], side, e[1], k, e[2]) for e in lst[:cut] if not e[3])
                if cut == len(lst):
                    del buf[k]
                else:
                    del lst[:cut]
        if unmatched:
            unmatched.sort(key=lambda u: (u[0], u[1], u[2]))
            self._emit_unmatched(unmatched)
        self.metrics.state_keys = len(self.buffers[0]) + len(self.buffers[1])

    def on_tick(self, now_ms: int) -> None:
        """Join queued columnar batches even when the watermark did not move."""
        if self.columnar is not None:
            self._flush_columnar()

    def _emit_unmatched(self, unmatched: list[tuple[int, int, int, Any, Any]]) -> None:
        combine = self.step.combine
        key_field = self.key_field
        rows: list[Any] = []
        ts: list[int] = []
        keys: list[Any] = []
        for t, side, _seq, k, rec in unmatched:
            left, right = (rec, None) if side == 0 else (None, rec)
            try:
                value = (
                    {key_field: k, "left": left, "right": right}
                    if combine is None
                    else combine(left, right)
                )
            except Exception as exc:
                self.boundary.user_error(exc, Batch([rec], [t], keys=[k], record_type=None), 0)
                continue
            rows.append(value)
            ts.append(t)
            keys.append(k)
        if rows:
            self.out.emit(Batch(rows, ts, keys=keys, record_type=None))

    @property
    def buffered(self) -> int:
        """How many records both sides hold (for tests and the inspector)."""
        if self.columnar is not None:
            return self.columnar.buffered
        return sum(len(v) for side in self.buffers for v in side.values())

    # -- checkpoints ------------------------------------------------------------------
    stateful = True

    def snapshot_changes(self) -> list[tuple[Any, Any]]:
        """Return the entries changed since the last call (see the module docstring).

        Values share the buffered records: the checkpoint encodes them at once.
        """
        out: list[tuple[Any, Any]] = []
        col = self.columnar
        if col is not None:
            for side in (0, 1):
                if col.changed[side]:
                    out.append((("columnar", side), col.snapshot_side(side)))
                    self._col_saved = True
        elif self._col_saved:
            out.extend((("columnar", side), None) for side in (0, 1))
            self._col_saved = False
        saved = self._saved
        for side, key in self._dirty:
            lst = self.buffers[side].get(key)
            if lst:
                saved.add((side, key))
                out.append((("buf", side, key), [tuple(e) for e in lst]))
            elif (side, key) in saved:
                saved.discard((side, key))
                out.append((("buf", side, key), None))
        self._dirty = set()
        meta = self._meta()
        if meta != self._meta_saved:
            self._meta_saved = meta
            out.append((META, meta))
        return out

    def _meta(self) -> dict[str, Any]:
        return {"seq": self.seq, "columnar": self.columnar is not None}

    def restore(self, entries: list[tuple[Any, Any]]) -> None:
        """Rebuild buffers, heaps, the vectorized path's frames and the counter (fresh operator)."""
        for eid, value in entries:
            if eid == META:
                self.seq = value["seq"]
                if not value["columnar"]:
                    self.columnar = None
            elif eid[0] == "columnar":
                if self.columnar is not None:
                    self.columnar.load_side(eid[1], value)
                    self._col_saved = True
            else:
                _, side, key = eid
                lst = [list(e) for e in value]
                self.buffers[side][key] = lst
                self.heaps[side].extend((e[0] + self.keep[side], e[1], key) for e in lst)
                self._saved.add((side, key))
        for heap in self.heaps:
            heapq.heapify(heap)
        self._dirty = set()
        self._meta_saved = self._meta()
        self.metrics.state_keys = len(self.buffers[0]) + len(self.buffers[1])
