"""What every record-at-a-time window operator shares.

Emit modes, result rows, the output buffer, the late side output and the
deterministic order of results live here; each window kind (``fixed``,
``session``, ``sliding``, ``count``, ``decaying``) adds its assignment and
state.

Result order (all kinds): the results released by one watermark (or one
batch) are emitted sorted by ``(event time of the result, key, arrival
sequence)``. Keys are compared with ``<``; when the keys of a step cannot
be compared with each other (e.g. ``None`` and ``str``), by
``(type name, repr)``. The order therefore never depends on hash seeds.

Checkpoints (``snapshot_changes``/``restore``): each operator keeps a set
of *dirty* state ids, added to wherever its state changes (one ``set.add``
per record) and cleared by the snapshot, which reports the current value of
each dirty id (``None`` once it is gone, and only if a value was reported
before). Ids are ``(key, window_start)`` for fixed windows and the key for
the per-key kinds, reported as ``("key", key)``. One more entry,
:data:`META` (``("__meta__",)``), holds the operator-wide values: the
watermark, the arrival sequence, the ``EveryInterval`` tick and the
aggregators' own counters (``first``/``last``). Timers (fire, clean and
eviction queues) are not saved: ``restore`` derives them from the entries
and the saved watermark, so they are exactly the ones an uninterrupted run
holds (up to timers that would have found nothing to do).
"""

from __future__ import annotations

import heapq
from typing import Any

from eventspine.dataflow.steps import WindowStep
from eventspine.dataflow.time import EveryInterval, EveryN, OnChange
from eventspine.records import Batch
from eventspine.runtime.metrics import StepMetrics
from eventspine.runtime.operator import ErrorBoundary, Operator
from eventspine.runtime.windows._aggs import AggSet
from eventspine.timeutil import MAX_TS_MS, MIN_TS_MS, Clock, to_duration_ms

__all__ = ["META", "Due", "Timers", "WindowOperator", "sort_due"]

#: The state entry of the operator-wide values (see the module doc).
META: tuple[str] = ("__meta__",)

#: A result waiting to be emitted: ``(result event time, key, sequence, row)``.
Due = tuple[int, Any, int, dict[str, Any]]


def sort_due(due: list[Due]) -> None:
    """Sort results in place by ``(event time, key, sequence)`` (see the module doc)."""
    try:
        due.sort(key=lambda d: (d[0], d[1], d[2]))
    except TypeError:
        due.sort(key=lambda d: (d[0], type(d[1]).__name__, repr(d[1]), d[2]))


class Timers:
    """Event-time timers: ``time -> [items]`` plus a heap of the distinct times.

    Adding is O(1) for a time that already has items (all the keys of one
    tumbling window share one time), O(log n) for a new time.
    """

    __slots__ = ("at", "times")

    def __init__(self) -> None:
        self.at: dict[int, list[Any]] = {}
        self.times: list[int] = []

    def add(self, time_ms: int, item: Any) -> None:
        """Schedule ``item`` at ``time_ms``."""
        items = self.at.get(time_ms)
        if items is None:
            self.at[time_ms] = [item]
            heapq.heappush(self.times, time_ms)
        else:
            items.append(item)

    def pop_due(self, wm_ms: int) -> list[tuple[int, list[Any]]]:
        """Remove and return ``(time, items)`` for every time ``<= wm_ms``, earliest first."""
        out: list[tuple[int, list[Any]]] = []
        times = self.times
        while times and times[0] <= wm_ms:
            t = heapq.heappop(times)
            out.append((t, self.at.pop(t)))
        return out


class WindowOperator(Operator):
    """Base of the window operators: emit-mode flags, result rows, output and late records.

    Subclasses implement ``on_batch`` and ``on_watermark`` and call
    :meth:`_flush` at the end of each (results are emitted as one batch).
    For checkpoints they add the id of every state entry they change to
    ``self._dirty`` and implement :meth:`_entry` (the picklable value of an
    id) and :meth:`_load` (rebuild state and timers from the entries).
    """

    stateful = True

    def __init__(
        self, step: WindowStep, metrics: StepMetrics, boundary: ErrorBoundary, clock: Clock
    ) -> None:
        super().__init__(step.name, metrics)
        self.step = step
        self.boundary = boundary
        self.clock = clock
        self.aggs = AggSet(step.aggs, None)
        self.key_field = step.key_field
        self.lateness_ms = step.allowed_lateness_ms
        emit = step.emit
        self.on_change = isinstance(emit, OnChange)
        self.every_n = emit.n if isinstance(emit, EveryN) else 0
        self.interval_ms = to_duration_ms(emit.interval) if isinstance(emit, EveryInterval) else 0
        #: Whether results carry ``final`` (every mode but OnClose).
        self.updates = self.on_change or self.every_n > 0 or self.interval_ms > 0
        self._tick = (MIN_TS_MS - 1) // self.interval_ms if self.interval_ms else 0
        self._rows: list[dict[str, Any]] = []
        self._ts: list[int] = []
        self._seq = 0
        #: Ids of the state entries changed since the last snapshot.
        self._dirty: set[Any] = set()
        #: Ids whose latest reported value is not ``None`` (tombstones only for those).
        self._saved: set[Any] = set()
        self._meta_saved: dict[str, Any] | None = None

    # -- checkpoints -----------------------------------------------------------------
    #: Whether entry ids are keys wrapped as ``("key", key)`` (else they are used as is).
    _per_key = True

    def snapshot_changes(self) -> list[tuple[Any, Any]]:
        """Return the entries changed since the previous call (see the module doc).

        Values may share objects with the live state: encode them (the
        checkpoint pickles them at once) before the next hook runs.
        """
        out: list[tuple[Any, Any]] = []
        saved = self._saved
        wrap = self._per_key
        for d in self._dirty:
            value = self._entry(d)
            if value is None:
                if d in saved:
                    saved.discard(d)
                    out.append((("key", d) if wrap else d, None))
            else:
                saved.add(d)
                out.append((("key", d) if wrap else d, value))
        self._dirty = set()
        meta = self._meta()
        if meta != self._meta_saved:
            self._meta_saved = meta
            out.append((META, meta))
        return out

    def restore(self, entries: list[tuple[Any, Any]]) -> None:
        """Rebuild the state, timers and counters from the latest value of each entry.

        The operator must be fresh (no batch handled yet). Its watermark is set
        to the saved one (the executor sets the same value).
        """
        data: list[tuple[Any, Any]] = []
        for eid, value in entries:
            if eid == META:
                self.watermark_ms = value["wm"]
                self._seq = value["seq"]
                self._tick = value["tick"]
                self.aggs.set_seqs(value["agg_seqs"])
            else:
                data.append((eid[1] if self._per_key else eid, value))
        self._load(data)
        self._saved = {d for d, _v in data}
        self._dirty = set()
        self._meta_saved = self._meta()

    def _gone(self, d: Any) -> None:
        """Note that entry ``d`` no longer exists.

        Only an entry reported before needs a tombstone; others leave the dirty
        set, so it never holds more than the live and saved entries (it is not
        drained when no checkpoints are taken).
        """
        if d in self._saved:
            self._dirty.add(d)
        else:
            self._dirty.discard(d)

    def _meta(self) -> dict[str, Any]:
        return {
            "wm": self.watermark_ms,
            "seq": self._seq,
            "tick": self._tick,
            "agg_seqs": self.aggs.seqs(),
        }

    def _entry(self, d: Any) -> Any:
        """Return the picklable value of state entry ``d``, or ``None`` if it is gone."""
        raise NotImplementedError

    def _load(self, entries: list[tuple[Any, Any]]) -> None:
        """Rebuild state and timers from ``(id, value)`` (``self.watermark_ms`` is restored)."""
        raise NotImplementedError

    # -- results -------------------------------------------------------------------
    def row(self, key: Any, start: int, end: int, accs: list[Any], final: bool) -> dict[str, Any]:
        """Return a result record (``final`` is added in update modes only)."""
        out: dict[str, Any] = {self.key_field: key, "window_start_ms": start, "window_end_ms": end}
        self.aggs.results(accs, out)
        if self.updates:
            out["final"] = final
        return out

    def push(self, row: dict[str, Any], ts_ms: int) -> None:
        """Queue a result with event time ``ts_ms`` for the next :meth:`_flush`."""
        self._rows.append(row)
        self._ts.append(ts_ms)

    def push_due(self, due: list[Due]) -> None:
        """Queue results in the deterministic order (see the module doc)."""
        sort_due(due)
        for ts_ms, _key, _seq, row in due:
            self._rows.append(row)
            self._ts.append(ts_ms)

    def next_seq(self) -> int:
        """Return an increasing arrival sequence number (ties in result order)."""
        self._seq += 1
        return self._seq

    def _flush(self) -> None:
        if self._rows:
            rows, ts = self._rows, self._ts
            self._rows, self._ts = [], []
            self.out.emit(Batch(rows, ts, partition=None, record_type=dict))

    # -- late records and ticks ----------------------------------------------------
    def late(self, batch: Batch, indices: list[int]) -> None:
        """Count records later than the allowed lateness and send them to side output ``late``."""
        self.emit_late(batch, indices)

    def tick(self, wm_ms: int) -> bool:
        """In ``EveryInterval`` mode: whether ``wm_ms`` crossed an interval boundary.

        Boundaries are aligned to the epoch, so updates come at the same event
        times whatever the batch sizes. The end-of-input watermark is no tick
        (every window then emits its final result instead).
        """
        if not self.interval_ms or wm_ms >= MAX_TS_MS:
            return False
        b = (wm_ms - 1) // self.interval_ms
        if b > self._tick:
            self._tick = b
            return True
        return False
