"""Count windows: every ``size`` records of a key, in arrival order.

A window is emitted as soon as its ``size``-th record arrives (in record
order within the batch); a partial window is emitted when the input ends
(watermark ``MAX_TS_MS``), ordered by ``(event time, key)``. Its
``window_start_ms``/``window_end_ms`` are the smallest event time and the
largest event time + 1 of its records, so its result has the event time of
its latest record. Count windows do not depend on the watermark, so no
record is ever late (``allowed_lateness`` has no effect). With several
source partitions, "arrival order" is the order the operator receives
records, which depends on how partitions interleave.

State layout (plain data): ``windows``: ``{key: [accs, n_records, min_ts_ms,
max_ts_ms, changed]}``, the one open window of each key. Checkpoint entries:
one per key, valued ``(accs, n_records, min_ts_ms, max_ts_ms, changed)``.
"""

from __future__ import annotations

from typing import Any

from eventspine.dataflow.steps import WindowStep
from eventspine.dataflow.time import Count
from eventspine.records import Batch
from eventspine.runtime.metrics import StepMetrics
from eventspine.runtime.operator import ErrorBoundary
from eventspine.runtime.windows._base import Due, WindowOperator
from eventspine.timeutil import MAX_TS_MS, Clock

__all__ = ["CountWindows"]

ACCS, N, MIN_TS, MAX_TS, CHANGED = range(5)


class CountWindows(WindowOperator):
    """The operator for ``Count`` windows."""

    def __init__(
        self, step: WindowStep, metrics: StepMetrics, boundary: ErrorBoundary, clock: Clock
    ) -> None:
        super().__init__(step, metrics, boundary, clock)
        assert isinstance(step.window, Count)
        self.size = step.window.size
        self.windows: dict[Any, list[Any]] = {}

    def on_batch(self, batch: Batch, port: int) -> None:
        """Fold each record into its key's open window; emit the windows that fill up."""
        n = len(batch)
        if not n:
            return
        ts = batch.ts
        keys = batch.keys if batch.keys is not None else [None] * n
        cols, failed = self.aggs.columns(batch, self.boundary)
        windows = self.windows
        dirty_add = self._dirty.add
        for i in range(n):
            if failed and i in failed:
                continue
            t, k = ts[i], keys[i]
            dirty_add(k)
            w = windows.get(k)
            fresh = w is None
            if w is None:
                w = [self.aggs.create(), 0, t, t, False]
            try:
                self.aggs.add(w[ACCS], [c[i] for c in cols], t)
            except Exception as exc:
                self.boundary.user_error(exc, batch, i)
                continue
            if fresh:
                windows[k] = w
            w[N] += 1
            if t < w[MIN_TS]:
                w[MIN_TS] = t
            if t > w[MAX_TS]:
                w[MAX_TS] = t
            if w[N] == self.size:
                del windows[k]
                self._gone(k)
                self.push(self.row(k, w[MIN_TS], w[MAX_TS] + 1, w[ACCS], True), w[MAX_TS])
            elif self.on_change or (self.every_n and w[N] % self.every_n == 0):
                self.push(self.row(k, w[MIN_TS], w[MAX_TS] + 1, w[ACCS], False), w[MAX_TS])
            elif self.interval_ms:
                w[CHANGED] = True
        self._flush()
        self.metrics.state_keys = len(windows)

    def on_watermark(self, wm_ms: int) -> None:
        """Emit interval updates; at end of input, emit every partial window."""
        if self.tick(wm_ms):
            self.push_due(self._due(final=False, only_changed=True))
        if wm_ms >= MAX_TS_MS and self.windows:
            self.push_due(self._due(final=True, only_changed=False))
            for k in self.windows:
                self._gone(k)
            self.windows.clear()
        self._flush()
        self.metrics.state_keys = len(self.windows)

    def _due(self, *, final: bool, only_changed: bool) -> list[Due]:
        due: list[Due] = []
        for k, w in self.windows.items():
            if only_changed and not w[CHANGED]:
                continue
            if w[CHANGED]:
                w[CHANGED] = False
                self._dirty.add(k)
            row = self.row(k, w[MIN_TS], w[MAX_TS] + 1, w[ACCS], final)
            due.append((w[MAX_TS], k, 0, row))
        return due

    # -- checkpoints -----------------------------------------------------------------
    def _entry(self, d: Any) -> Any:
        w = self.windows.get(d)
        if w is None:
            return None
        return (self.aggs.encode(w[ACCS]), w[N], w[MIN_TS], w[MAX_TS], w[CHANGED])

    def _load(self, entries: list[tuple[Any, Any]]) -> None:
        for key, (accs, n, min_ts, max_ts, changed) in entries:
            self.windows[key] = [self.aggs.decode(accs), n, min_ts, max_ts, changed]
        self.metrics.state_keys = len(self.windows)
