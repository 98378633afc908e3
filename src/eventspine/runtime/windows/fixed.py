"""Tumbling and hopping windows: fixed ``[start, start + size)`` windows aligned to the epoch.

State layout (plain data, ready for durable snapshots):

* ``state``: ``{(key, window_start_ms): [acc_0, acc_1, ...]}``, the accumulators
  of every open or not-yet-expired window, in ``step.aggs`` order;
* ``fire``: window end -> the ``(key, start)`` entries to emit when the
  watermark reaches it; ``clean``: ``end + allowed_lateness`` -> entries to drop;
* ``counts`` (``EveryN``) and ``changed`` (``EveryInterval``) per entry.

Checkpoint entries: one per ``(key, window_start_ms)``, valued ``(accs,
count, changed)`` (accumulators encoded by ``AggSet.encode``). To keep the
per-record cost low, each accumulator list in ``state`` carries one extra
trailing item, the snapshot generation in which it was last marked dirty:
a record adds its window to the dirty set only on the window's first update
since the last snapshot. ``fire`` and
``clean`` are derived on restore: a window whose end is after the saved
watermark waits to fire, the others (already emitted, kept for lateness)
wait to be dropped at ``end + lateness``.

A window emits its result when the watermark reaches its end. With allowed
lateness it stays in ``state`` until the watermark reaches ``end +
lateness``; a late record in that period updates it and its result is
emitted again at the end of the batch (a later row for the same key and
window replaces the earlier one). Later records go to side output
``"late"``. A hopping record whose windows are partly expired is added to
the live ones and counted late only when all of them have expired.
"""

from __future__ import annotations

from typing import Any

from eventspine.dataflow.steps import WindowStep
from eventspine.dataflow.time import Hopping, Tumbling
from eventspine.errors import DefinitionError
from eventspine.records import Batch
from eventspine.runtime.metrics import StepMetrics
from eventspine.runtime.operator import ErrorBoundary
from eventspine.runtime.windows._base import Due, Timers, WindowOperator
from eventspine.timeutil import Clock, to_duration_ms

__all__ = ["FixedWindows"]

Entry = tuple[Any, int]


class FixedWindows(WindowOperator):
    """The record-at-a-time operator for ``Tumbling`` and ``Hopping`` windows."""

    _per_key = False

    def __init__(
        self, step: WindowStep, metrics: StepMetrics, boundary: ErrorBoundary, clock: Clock
    ) -> None:
        super().__init__(step, metrics, boundary, clock)
        kind = step.window
        if isinstance(kind, Tumbling):
            self.size_ms = self.hop_ms = to_duration_ms(kind.size)
        elif isinstance(kind, Hopping):
            self.size_ms = to_duration_ms(kind.size)
            self.hop_ms = to_duration_ms(kind.hop)
        else:
            raise DefinitionError(f"step '{step.name}': {kind!r} is not a fixed window")
        self.offset_ms = to_duration_ms(kind.offset)
        self.state: dict[Entry, list[Any]] = {}
        self.fire = Timers()
        self.clean = Timers()
        self.counts: dict[Entry, int] = {}
        self.changed: dict[Entry, None] = {}
        #: The current snapshot generation (see the module doc).
        self._gen = object()

    # -- records ---------------------------------------------------------------------
    def on_batch(self, batch: Batch, port: int) -> None:
        """Assign each record to its window(s) and fold it into their accumulators."""
        n = len(batch)
        if not n:
            return
        ts = batch.ts
        keys = batch.keys
        if keys is None:
            keys = [None] * n
        cols, failed = self.aggs.columns(batch, self.boundary)
        plain = [(j, add, cols[j]) for j, add in (*self.aggs.rec_adders, *self.aggs.val_adders)]
        timed = [(j, add, cols[j]) for j, add in self.aggs.ts_adders]
        refire: dict[Entry, None] = {}
        late_idx: list[int] = []
        if self.hop_ms == self.size_ms and not self.updates:
            self._tumbling(batch, ts, keys, plain, timed, failed, refire, late_idx)
        else:
            self._general(batch, ts, keys, plain, timed, failed, refire, late_idx)
        if refire:
            due: list[Due] = []
            for sk in refire:
                end = sk[1] + self.size_ms
                due.append((end - 1, sk[0], 0, self.row(sk[0], sk[1], end, self.state[sk], True)))
            self.push_due(due)
        self._flush()
        self.late(batch, late_idx)
        self.metrics.state_keys = len(self.state)

    def _tumbling(
        self,
        batch: Batch,
        ts: list[int],
        keys: list[Any],
        plain: list[tuple[int, Any, list[Any]]],
        timed: list[tuple[int, Any, list[Any]]],
        failed: set[int],
        refire: dict[Entry, None],
        late_idx: list[int],
    ) -> None:
        """The hot path: one window per record, no update bookkeeping."""
        state = self.state
        get = state.get
        create = self.aggs.create
        size = self.size_ms
        off = self.offset_ms
        lateness = self.lateness_ms
        wm = self.watermark_ms
        fire_add = self.fire.add
        dirty_add = self._dirty.add
        gen = self._gen
        for i in range(len(ts)):
            if failed and i in failed:
                continue
            t = ts[i]
            start = t - (t - off) % size
            sk = (keys[i], start)
            accs = get(sk)
            end = start + size
            if accs is None:
                if end + lateness <= wm:
                    late_idx.append(i)
                    continue
                accs = state[sk] = create()
                accs.append(None)
                if end > wm:
                    fire_add(end, sk)
                else:
                    self.clean.add(end + lateness, sk)
            if accs[-1] is not gen:
                accs[-1] = gen
                dirty_add(sk)
            try:
                for j, add, col in plain:
                    accs[j] = add(accs[j], col[i])
                for j, add, col in timed:
                    accs[j] = add(accs[j], col[i], t)
            except Exception as exc:
                self.boundary.user_error(exc, batch, i)
                continue
            if end <= wm:
                refire[sk] = None

    def _general(
        self,
        batch: Batch,
        ts: list[int],
        keys: list[Any],
        plain: list[tuple[int, Any, list[Any]]],
        timed: list[tuple[int, Any, list[Any]]],
        failed: set[int],
        refire: dict[Entry, None],
        late_idx: list[int],
    ) -> None:
        """Hopping windows and update emit modes: every window containing each record."""
        state = self.state
        size, hop, off = self.size_ms, self.hop_ms, self.offset_ms
        lateness = self.lateness_ms
        wm = self.watermark_ms
        dirty_add = self._dirty.add
        gen = self._gen
        for i in range(len(ts)):
            if failed and i in failed:
                continue
            t = ts[i]
            k = keys[i]
            start = t - (t - off) % hop
            placed = False
            while start > t - size:
                end = start + size
                sk = (k, start)
                start -= hop
                accs = state.get(sk)
                if accs is None:
                    if end + lateness <= wm:
                        continue
                    accs = state[sk] = self.aggs.create()
                    accs.append(None)
                    if end > wm:
                        self.fire.add(end, sk)
                    else:
                        self.clean.add(end + lateness, sk)
                if accs[-1] is not gen:
                    accs[-1] = gen
                    dirty_add(sk)
                try:
                    for j, add, col in plain:
                        accs[j] = add(accs[j], col[i])
                    for j, add, col in timed:
                        accs[j] = add(accs[j], col[i], t)
                except Exception as exc:
                    self.boundary.user_error(exc, batch, i)
                    placed = True
                    break
                placed = True
                if end <= wm:
                    refire[sk] = None
                elif self.updates:
                    self._updated(sk, end, accs)
            if not placed:
                late_idx.append(i)

    def _updated(self, sk: Entry, end: int, accs: list[Any]) -> None:
        if self.on_change:
            self.push(self.row(sk[0], sk[1], end, accs, False), end - 1)
        elif self.every_n:
            c = self.counts[sk] = self.counts.get(sk, 0) + 1
            if c % self.every_n == 0:
                self.push(self.row(sk[0], sk[1], end, accs, False), end - 1)
        else:
            self.changed[sk] = None

    # -- time ------------------------------------------------------------------------
    def on_watermark(self, wm_ms: int) -> None:
        """Emit the windows that ended at or before ``wm_ms``; drop expired ones."""
        state = self.state
        size = self.size_ms
        if self.tick(wm_ms) and self.changed:
            updates: list[Due] = []
            for sk in self.changed:
                end = sk[1] + size
                if end > wm_ms:
                    updates.append(
                        (end - 1, sk[0], 0, self.row(sk[0], sk[1], end, state[sk], False))
                    )
            self._dirty.update(self.changed)
            self.changed.clear()
            self.push_due(updates)
        due: list[Due] = []
        lateness = self.lateness_ms
        for end, entries in self.fire.pop_due(wm_ms):
            for sk in entries:
                due.append((end - 1, sk[0], 0, self.row(sk[0], sk[1], end, state[sk], True)))
                if lateness:
                    self.clean.add(end + lateness, sk)
                else:
                    self._drop(sk)
        self.push_due(due)
        for _t, entries in self.clean.pop_due(wm_ms):
            for sk in entries:
                self._drop(sk)
        self._flush()
        self.metrics.state_keys = len(state)

    def _drop(self, sk: Entry) -> None:
        del self.state[sk]
        if sk in self._saved:  # WindowOperator._gone, inlined: once per window
            self._dirty.add(sk)
        else:
            self._dirty.discard(sk)
        if self.updates:
            self.counts.pop(sk, None)
            self.changed.pop(sk, None)

    # -- checkpoints -----------------------------------------------------------------
    def snapshot_changes(self) -> list[tuple[Any, Any]]:
        """Return the changed ``(key, window_start_ms)`` entries (see the module doc)."""
        out = super().snapshot_changes()
        self._gen = object()  # every window counts as clean again
        return out

    def _entry(self, d: Any) -> Any:
        accs = self.state.get(d)
        if accs is None:
            return None
        return (self.aggs.encode(accs[:-1]), self.counts.get(d, 0), d in self.changed)

    def _load(self, entries: list[tuple[Any, Any]]) -> None:
        wm, size, lateness = self.watermark_ms, self.size_ms, self.lateness_ms
        for sk, (accs, count, changed) in entries:
            self.state[sk] = self.aggs.decode(accs)
            self.state[sk].append(None)
            if count:
                self.counts[sk] = count
            if changed:
                self.changed[sk] = None
            end = sk[1] + size
            if end > wm:
                self.fire.add(end, sk)
            else:
                self.clean.add(end + lateness, sk)
        self.metrics.state_keys = len(self.state)
