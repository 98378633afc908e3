"""The as-of join: each stream record meets the table value of its key valid at its event time.

Semantics (input port 0 is the stream, 1 the table):

* A stream record with event time ``t`` is joined with the latest table record
  of its key with ``ts <= t`` (among equal ``ts``, the last to arrive).
* It is emitted only once the operator watermark ``wm`` (the minimum of both
  inputs) has passed ``t`` (``wm > t``: no table record at or before ``t`` can
  still arrive on time), so results do not depend on how the two inputs
  interleave. Its result keeps the event time ``t``.
* ``how="inner"`` emits nothing for a stream record with no table value at
  ``t``; ``how="left"`` emits it joined with ``None``.
* Records of either side arriving with ``ts < wm`` are late (a stream record's
  answer may already be compacted away; a table record would change answers
  already given): counted in ``metrics.late`` and sent to side output
  ``"late"``.
* Each key's table history is kept sorted by ``(ts, arrival)``; at each
  watermark, entries before the latest one at or before ``wm`` are dropped.
* Results are emitted in ``(t, arrival)`` order of the stream records.

Results are ``combine(stream_record, table_record)``, by default
``{key_field: key, "left": stream_record, "right": table_record}``.

Checkpoints (``snapshot_changes``/``restore``): per changed key,
``("table", key) -> [(ts, seq, record), ...]`` (its history) and
``("pending", key) -> [(ts, seq, record), ...]`` (its stream records waiting
for the watermark), ``None`` once empty; ``("__meta__",) -> {"seq": n}`` holds
the arrival counter. The pending heap is rebuilt from the per-key lists.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left
from typing import TYPE_CHECKING, Any

from eventspine.records import Batch
from eventspine.runtime.operator import ErrorBoundary, Operator

if TYPE_CHECKING:
    from eventspine.dataflow.steps import AsofJoinStep
    from eventspine.runtime.metrics import StepMetrics

__all__ = ["AsofJoinOperator"]

#: The state entry of the operator-wide values.
META: tuple[str] = ("__meta__",)


class AsofJoinOperator(Operator):
    """Joins a stream with a versioned table by key and event time (see the module docstring)."""

    def __init__(self, step: AsofJoinStep, metrics: StepMetrics, boundary: ErrorBoundary):
        super().__init__(step.name, metrics)
        self.step = step
        self.boundary = boundary
        self.key_field = step.key_field
        self.inner = step.how == "inner"
        # key -> [[ts, seq, record], ...] sorted (seq is unique, so lists compare by (ts, seq)).
        self.tables: dict[Any, list[list[Any]]] = {}
        self.compactable: set[Any] = set()  # keys whose history has more than one entry
        self.pending: list[tuple[int, int, Any, Any]] = []  # heap of (ts, seq, key, record)
        # The same pending records by key, each list sorted by (ts, seq) (for snapshots).
        self.pending_by_key: dict[Any, list[tuple[int, int, Any]]] = {}
        self.seq = 0
        self._dirty: set[tuple[str, Any]] = set()  # ("table" | "pending", key)
        self._saved: set[tuple[str, Any]] = set()
        self._meta_saved = 0

    def on_batch(self, batch: Batch, port: int) -> None:
        """Queue stream records (port 0) or add table versions (port 1)."""
        rows, ts, keys = batch.rows, batch.ts, batch.keys
        if keys is None:
            raise AssertionError(f"join '{self.name}' received records without keys")
        wm = self.watermark_ms
        late: list[int] = []
        seq = self.seq
        pending = self.pending
        tables = self.tables
        for i, rec in enumerate(rows):
            t = ts[i]
            if t < wm:
                late.append(i)
                continue
            seq += 1
            k = keys[i]
            if port == 0:
                heapq.heappush(pending, (t, seq, k, rec))
                mine = self.pending_by_key.get(k)
                if mine is None:
                    self.pending_by_key[k] = [(t, seq, rec)]
                elif mine[-1][0] <= t:
                    mine.append((t, seq, rec))
                else:
                    mine.insert(bisect_left(mine, (t, seq)), (t, seq, rec))
                self._dirty.add(("pending", k))
                continue
            self._dirty.add(("table", k))
            entry = [t, seq, rec]
            hist = tables.get(k)
            if hist is None:
                tables[k] = [entry]
                continue
            if hist[-1][0] <= t:
                hist.append(entry)
            else:
                hist.insert(bisect_left(hist, entry), entry)
            self.compactable.add(k)
        self.seq = seq
        if late:
            self.emit_late(batch, late)
        self.metrics.state_keys = len(tables)

    def on_watermark(self, wm_ms: int) -> None:
        """Emit the stream records whose time the watermark has passed; compact histories."""
        pending = self.pending
        combine = self.step.combine
        key_field = self.key_field
        rows: list[Any] = []
        out_ts: list[int] = []
        out_keys: list[Any] = []
        while pending and pending[0][0] < wm_ms:
            t, _seq, k, rec = heapq.heappop(pending)
            self._pop_pending(k)
            hist = self.tables.get(k)
            value = None
            if hist is not None:
                idx = bisect_left(hist, [t + 1]) - 1
                if idx >= 0:
                    value = hist[idx][2]
            if value is None and self.inner:
                continue
            try:
                result = (
                    {key_field: k, "left": rec, "right": value}
                    if combine is None
                    else combine(rec, value)
                )
            except Exception as exc:
                self.boundary.user_error(exc, Batch([rec], [t], keys=[k], record_type=None), 0)
                continue
            rows.append(result)
            out_ts.append(t)
            out_keys.append(k)
        if rows:
            self.out.emit(Batch(rows, out_ts, keys=out_keys, record_type=None))
        self._compact(wm_ms)

    def _compact(self, wm_ms: int) -> None:
        """Keep, per key, the latest version at or before ``wm_ms`` and every later one."""
        done: list[Any] = []
        bound = [wm_ms + 1]
        for k in self.compactable:
            hist = self.tables[k]
            idx = bisect_left(hist, bound) - 1
            if idx > 0:
                del hist[:idx]
                self._dirty.add(("table", k))
            if len(hist) <= 1:
                done.append(k)
        for k in done:
            self.compactable.discard(k)

    def _pop_pending(self, key: Any) -> None:
        """Forget the first pending record of ``key`` (the one the heap just gave)."""
        mine = self.pending_by_key[key]
        del mine[0]
        if not mine:
            del self.pending_by_key[key]
        self._dirty.add(("pending", key))

    # -- checkpoints ------------------------------------------------------------------
    stateful = True

    def snapshot_changes(self) -> list[tuple[Any, Any]]:
        """Return the per-key entries changed since the last call, and the counter.

        Values share the buffered records: the checkpoint encodes them at once.
        """
        out: list[tuple[Any, Any]] = []
        saved = self._saved
        for kind, key in self._dirty:
            if kind == "table":
                hist = self.tables.get(key)
                value = None if not hist else [tuple(e) for e in hist]
            else:
                value = self.pending_by_key.get(key)
                value = None if not value else list(value)
            if value is not None:
                saved.add((kind, key))
                out.append(((kind, key), value))
            elif (kind, key) in saved:
                saved.discard((kind, key))
                out.append(((kind, key), None))
        self._dirty = set()
        if self.seq != self._meta_saved:
            self._meta_saved = self.seq
            out.append((META, {"seq": self.seq}))
        return out

    def restore(self, entries: list[tuple[Any, Any]]) -> None:
        """Rebuild histories, pending records and the counter (on a fresh operator)."""
        for eid, value in entries:
            if eid == META:
                self.seq = self._meta_saved = value["seq"]
                continue
            kind, key = eid
            if kind == "table":
                self.tables[key] = [list(e) for e in value]
                if len(value) > 1:
                    self.compactable.add(key)
            else:
                self.pending_by_key[key] = [tuple(e) for e in value]
                self.pending.extend((t, seq, key, rec) for t, seq, rec in value)
            self._saved.add((kind, key))
        heapq.heapify(self.pending)
        self._dirty = set()
        self.metrics.state_keys = len(self.tables)
