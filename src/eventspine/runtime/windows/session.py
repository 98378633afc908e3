"""Session windows: per-key bursts of activity separated by at least ``gap`` of silence.

A record at ``t`` opens the session ``[t, t + gap)``; sessions of a key that
overlap are merged as records arrive (accumulators combined with the
aggregator's ``merge``, in order of session start), so the sessions do not
depend on arrival order as long as no record is late. A session
``[first_ts, last_ts + gap)`` closes when the watermark reaches
``last_ts + gap``.

State layout (plain data): ``sessions``: ``{key: [session, ...]}`` where a
session is the list ``[start_ms, last_ts_ms, accs, alive, fired, n_records,
changed]``; plus two heaps of ``(time, seq, key, session)`` timers (close at
``last + gap``, drop at ``last + gap + allowed_lateness``), validated lazily
when popped because sessions grow and merge.

Checkpoint entries: one per key, valued ``[(start_ms, last_ts_ms, accs,
n_records, changed), ...]`` (its live sessions). ``fired`` and the timers
are derived on restore: a session whose end ``last + gap`` is after the
saved watermark waits to fire, the others (emitted, kept for lateness) wait
to be dropped.

Lateness: a record is late when it opens no live session and merges with
none that is still kept (``t + gap + lateness <= watermark``). A record that
extends or merges a session that already emitted re-emits it: the merged
session's row supersedes the earlier rows of the sessions it absorbed.
"""

from __future__ import annotations

import heapq
from typing import Any

from eventspine.dataflow.steps import WindowStep
from eventspine.dataflow.time import Session
from eventspine.records import Batch
from eventspine.runtime.metrics import StepMetrics
from eventspine.runtime.operator import ErrorBoundary
from eventspine.runtime.windows._base import Due, WindowOperator
from eventspine.timeutil import Clock, to_duration_ms

__all__ = ["SessionWindows"]

START, LAST, ACCS, ALIVE, FIRED, COUNT, CHANGED = range(7)
Timer = tuple[int, int, Any, list[Any]]


class SessionWindows(WindowOperator):
    """The record-at-a-time operator for ``Session`` windows."""

    def __init__(
        self, step: WindowStep, metrics: StepMetrics, boundary: ErrorBoundary, clock: Clock
    ) -> None:
        super().__init__(step, metrics, boundary, clock)
        assert isinstance(step.window, Session)
        self.gap_ms = to_duration_ms(step.window.gap)
        self.sessions: dict[Any, list[list[Any]]] = {}
        self.fire: list[Timer] = []
        self.clean: list[Timer] = []
        self.open_count = 0

    def on_batch(self, batch: Batch, port: int) -> None:
        """Add each record to its key's session, merging sessions it bridges."""
        n = len(batch)
        if not n:
            return
        ts = batch.ts
        keys = batch.keys if batch.keys is not None else [None] * n
        cols, failed = self.aggs.columns(batch, self.boundary)
        gap = self.gap_ms
        wm = self.watermark_ms
        late_idx: list[int] = []
        refire: dict[int, tuple[Any, list[Any]]] = {}
        dirty_add = self._dirty.add
        for i in range(n):
            if failed and i in failed:
                continue
            t, k = ts[i], keys[i]
            lst = self.sessions.get(k)
            hits = [s for s in lst if s[START] < t + gap and t < s[LAST] + gap] if lst else []
            if not hits and t + gap + self.lateness_ms <= wm:
                late_idx.append(i)
                continue
            old_end = hits[0][LAST] + gap if len(hits) == 1 else None
            dirty_add(k)
            try:
                if len(hits) == 1:
                    s = hits[0]
                    self._fold(s[ACCS], cols, i, t)
                else:
                    accs = self.aggs.create()
                    self._fold(accs, cols, i, t)
                    s = self._merge(k, hits, accs, t)
            except Exception as exc:
                self.boundary.user_error(exc, batch, i)
                continue
            if t < s[START]:
                s[START] = t
            if t > s[LAST]:
                s[LAST] = t
            s[COUNT] += 1
            self._schedule(k, s, old_end, wm, refire)
        if refire:
            due: list[Due] = []
            for k, s in refire.values():
                if s[ALIVE]:
                    due.append(self._due(k, s, True))
            self.push_due(due)
        self._flush()
        self.late(batch, late_idx)
        self.metrics.state_keys = self.open_count

    def _fold(self, accs: list[Any], cols: list[list[Any]], i: int, t: int) -> None:
        self.aggs.add(accs, [c[i] for c in cols], t)

    def _merge(self, key: Any, hits: list[list[Any]], accs: list[Any], t: int) -> list[Any]:
        """Return one session made of ``hits`` (may be empty) and a new record's ``accs``."""
        if not hits:
            s = [t, t, accs, True, False, 0, False]
            self.sessions.setdefault(key, []).append(s)
            self.open_count += 1
            return s
        hits.sort(key=lambda h: (h[START], h[LAST]))
        target = hits[0]
        for h in hits[1:]:
            target[ACCS] = self.aggs.merge(target[ACCS], h[ACCS])
            target[LAST] = max(target[LAST], h[LAST])
            target[COUNT] += h[COUNT]
            target[FIRED] = target[FIRED] and h[FIRED]
            h[ALIVE] = False
            self._unlist(key, h)
            self.open_count -= 1
        target[ACCS] = self.aggs.merge(target[ACCS], accs)
        return target

    def _schedule(
        self,
        key: Any,
        s: list[Any],
        old_end: int | None,
        wm: int,
        refire: dict[int, tuple[Any, list[Any]]],
    ) -> None:
        """Set the timers of a session that changed; queue updates and re-emissions."""
        end = s[LAST] + self.gap_ms
        if end > wm:
            if s[FIRED] or end != old_end:
                s[FIRED] = False
                heapq.heappush(self.fire, (end, self.next_seq(), key, s))
            if self.updates:
                self._updated(key, s)
        else:
            s[FIRED] = True
            refire[id(s)] = (key, s)
            heapq.heappush(self.clean, (end + self.lateness_ms, self.next_seq(), key, s))

    def _updated(self, key: Any, s: list[Any]) -> None:
        if self.on_change or (self.every_n and s[COUNT] % self.every_n == 0):
            ts_ms, _k, _q, row = self._due(key, s, False)
            self.push(row, ts_ms)
        else:
            s[CHANGED] = True

    def _due(self, key: Any, s: list[Any], final: bool) -> Due:
        end = s[LAST] + self.gap_ms
        return (end - 1, key, s[START], self.row(key, s[START], end, s[ACCS], final))

    def on_watermark(self, wm_ms: int) -> None:
        """Emit sessions whose end the watermark reached; drop those past the lateness."""
        gap = self.gap_ms
        if self.tick(wm_ms):
            updates: list[Due] = []
            for k, lst in self.sessions.items():
                for s in lst:
                    if s[CHANGED] and not s[FIRED] and s[LAST] + gap > wm_ms:
                        s[CHANGED] = False
                        self._dirty.add(k)
                        updates.append(self._due(k, s, False))
            self.push_due(updates)
        due: list[Due] = []
        fire = self.fire
        while fire and fire[0][0] <= wm_ms:
            end, _seq, k, s = heapq.heappop(fire)
            if not s[ALIVE] or s[FIRED] or s[LAST] + gap != end:
                continue
            s[FIRED] = True
            due.append(self._due(k, s, True))
            if self.lateness_ms:
                heapq.heappush(self.clean, (end + self.lateness_ms, self.next_seq(), k, s))
            else:
                self._remove(k, s)
        self.push_due(due)
        clean = self.clean
        while clean and clean[0][0] <= wm_ms:
            at, _seq, k, s = heapq.heappop(clean)
            if s[ALIVE] and s[FIRED] and s[LAST] + gap + self.lateness_ms == at:
                self._remove(k, s)
        self._flush()
        self.metrics.state_keys = self.open_count

    def _remove(self, key: Any, s: list[Any]) -> None:
        s[ALIVE] = False
        self._unlist(key, s)
        self.open_count -= 1
        if key in self.sessions:
            self._dirty.add(key)
        else:
            self._gone(key)

    def _unlist(self, key: Any, s: list[Any]) -> None:
        lst = [x for x in self.sessions[key] if x is not s]
        if lst:
            self.sessions[key] = lst
        else:
            del self.sessions[key]

    # -- checkpoints -----------------------------------------------------------------
    def _entry(self, d: Any) -> Any:
        lst = self.sessions.get(d)
        if not lst:
            return None
        enc = self.aggs.encode
        return [(s[START], s[LAST], enc(s[ACCS]), s[COUNT], s[CHANGED]) for s in lst]

    def _load(self, entries: list[tuple[Any, Any]]) -> None:
        wm, gap, lateness = self.watermark_ms, self.gap_ms, self.lateness_ms
        seq = 0  # negative timer sequences: unique, and apart from next_seq()'s
        for key, saved in entries:
            lst: list[list[Any]] = []
            for start, last, accs, count, changed in saved:
                end = last + gap
                fired = end <= wm
                s = [start, last, self.aggs.decode(accs), True, fired, count, changed]
                lst.append(s)
                seq -= 1
                if fired:
                    heapq.heappush(self.clean, (end + lateness, seq, key, s))
                else:
                    heapq.heappush(self.fire, (end, seq, key, s))
            self.sessions[key] = lst
            self.open_count += len(lst)
        self.metrics.state_keys = self.open_count
