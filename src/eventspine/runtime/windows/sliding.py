"""Sliding windows: one window per record, the key's records with ``ts`` in ``(t - size, t]``.

The window of a record at ``t`` is ``[t - size + 1, t + 1)`` in the common
``[start, end)`` form: it closes, like every window, when the watermark
reaches its end ``t + 1`` (so a record at exactly the watermark is still on
time), and its result has event time ``t``. Records of one key with the same
``t`` get equal results (each window includes every record at ``t``).

State layout (plain data): ``buffers``: ``{key: [(ts_ms, seq, inputs), ...]}``
sorted by ``(ts_ms, seq)``, where ``inputs`` holds each aggregation's input;
``fire``: ``t + 1`` -> ``[(key, seq), ...]`` results to emit; ``evict``:
``t + size + lateness`` -> keys whose buffer can be trimmed (a record is
kept while a window that contains it can still be emitted or corrected).

Checkpoint entries: one per key, valued its buffer. ``fire`` (the records
after the saved watermark), ``pending`` and ``evict`` (one timer per
buffered record) are derived on restore.

Each result folds the records of its window afresh (``O(records per
window)``): any mergeable aggregation works, none needs to be invertible.
A late record within the allowed lateness emits its own result and
re-emits the already emitted results of the same key whose windows contain
it. Only ``OnClose`` is supported (a sliding window is complete when it
closes; update modes would emit one row per record and per change).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from operator import itemgetter
from typing import Any

from eventspine.dataflow.steps import WindowStep
from eventspine.dataflow.time import Sliding
from eventspine.errors import DefinitionError
from eventspine.records import Batch
from eventspine.runtime.metrics import StepMetrics
from eventspine.runtime.operator import ErrorBoundary
from eventspine.runtime.windows._base import Due, Timers, WindowOperator
from eventspine.timeutil import Clock, to_duration_ms

__all__ = ["SlidingWindows"]

_TS = itemgetter(0)


class SlidingWindows(WindowOperator):
    """The record-at-a-time operator for ``Sliding`` windows."""

    def __init__(
        self, step: WindowStep, metrics: StepMetrics, boundary: ErrorBoundary, clock: Clock
    ) -> None:
        super().__init__(step, metrics, boundary, clock)
        assert isinstance(step.window, Sliding)
        if self.updates:
            raise DefinitionError(
                f"step '{step.name}': a Sliding window emits one result per record when it "
                f"closes; use emit=es.OnClose() (the default)"
            )
        self.size_ms = to_duration_ms(step.window.size)
        self.buffers: dict[Any, list[tuple[int, int, list[Any]]]] = {}
        self.fire = Timers()
        self.evict = Timers()
        self.pending = 0

    def on_batch(self, batch: Batch, port: int) -> None:
        """Buffer each record; schedule its result for when the watermark passes it."""
        n = len(batch)
        if not n:
            return
        ts = batch.ts
        keys = batch.keys if batch.keys is not None else [None] * n
        cols, failed = self.aggs.columns(batch, self.boundary)
        wm = self.watermark_ms
        lateness = self.lateness_ms
        late_idx: list[int] = []
        corrections: list[tuple[Any, int]] = []
        for i in range(n):
            if failed and i in failed:
                continue
            t, k = ts[i], keys[i]
            if t + 1 + lateness <= wm:
                late_idx.append(i)
                continue
            inputs = [c[i] for c in cols]
            try:
                self.aggs.add(self.aggs.create(), inputs, t)  # surface user errors now
            except Exception as exc:
                self.boundary.user_error(exc, batch, i)
                continue
            seq = self.next_seq()
            buf = self.buffers.get(k)
            if buf is None:
                buf = self.buffers[k] = []
            if not buf or buf[-1][0] <= t:
                buf.append((t, seq, inputs))
            else:
                insort(buf, (t, seq, inputs))
            self._dirty.add(k)
            self.evict.add(t + self.size_ms + lateness, k)
            if t + 1 > wm:
                self.fire.add(t + 1, (k, seq))
                self.pending += 1
            else:
                corrections.append((k, t))
        if corrections:
            self._correct(corrections, wm)
        self._flush()
        self.late(batch, late_idx)
        self.metrics.state_keys = self.pending

    def _result(self, key: Any, t: int) -> dict[str, Any]:
        buf = self.buffers[key]
        lo = bisect_left(buf, t - self.size_ms + 1, key=_TS)
        hi = bisect_right(buf, t, key=_TS)
        accs = self.aggs.create()
        add = self.aggs.add
        for ts_ms, _seq, inputs in buf[lo:hi]:
            add(accs, inputs, ts_ms)
        return self.row(key, t - self.size_ms + 1, t + 1, accs, True)

    def _correct(self, late: list[tuple[Any, int]], wm: int) -> None:
        """Emit the results of records within the lateness, and of emitted windows they change."""
        due: list[Due] = []
        seen: set[tuple[Any, int]] = set()
        for k, x in late:
            buf = self.buffers[k]
            lo = bisect_left(buf, x, key=_TS)
            hi = bisect_right(buf, min(x + self.size_ms - 1, wm - 1), key=_TS)
            for t, seq, _inputs in buf[lo:hi]:
                if (k, seq) in seen:
                    continue
                seen.add((k, seq))
                due.append((t, k, seq, self._result(k, t)))
        self.push_due(due)

    def on_watermark(self, wm_ms: int) -> None:
        """Emit the results of records the watermark passed; trim buffers."""
        due: list[Due] = []
        for end, items in self.fire.pop_due(wm_ms):
            t = end - 1
            by_key: dict[Any, list[int]] = {}
            for k, seq in items:
                by_key.setdefault(k, []).append(seq)
            for k, seqs in by_key.items():
                row = self._result(k, t)
                due.extend((t, k, seq, dict(row)) for seq in seqs)
            self.pending -= len(items)
        self.push_due(due)
        horizon = wm_ms - self.size_ms - self.lateness_ms
        for _t, keys in self.evict.pop_due(wm_ms):
            for k in keys:
                buf = self.buffers.get(k)
                if buf is None:
                    continue
                cut = bisect_right(buf, horizon, key=_TS)
                if cut == len(buf):
                    del self.buffers[k]
                    self._gone(k)
                elif cut:
                    del buf[:cut]
                    self._dirty.add(k)
        self._flush()
        self.metrics.state_keys = self.pending

    # -- checkpoints -----------------------------------------------------------------
    def _entry(self, d: Any) -> Any:
        return self.buffers.get(d)

    def _load(self, entries: list[tuple[Any, Any]]) -> None:
        wm, keep = self.watermark_ms, self.size_ms + self.lateness_ms
        for key, buf in entries:
            self.buffers[key] = buf
            for t, seq, _inputs in buf:
                self.evict.add(t + keep, key)
                if t + 1 > wm:
                    self.fire.add(t + 1, (key, seq))
                    self.pending += 1
        self.metrics.state_keys = self.pending
