"""The ``process`` operator: a user processor with per-key state, timers, emit and side outputs.

Contract (see :class:`~eventspine.dataflow.ports.Processor`):

* ``on_record(record, ctx)`` runs once per record, in arrival order, with
  ``ctx.key`` the record's key (``None`` on an unkeyed stream: all records then
  share one state) and ``ctx.ts_ms`` its event time.
* ``ctx.state`` is the key's dict. It is created on first access; a key whose
  dict is empty after a call is dropped. Every key whose state was touched is
  added to ``dirty_keys`` (for delta checkpoints).
* Event-time timers (``ctx.set_event_timer(at_ms)``) fire once the operator
  watermark is ``>= at_ms``, in ``(at_ms, registration)`` order, before the
  watermark reaches downstream steps (so what they emit is on time there).
  A timer already due when it is set (``at_ms <= watermark``) fires right after
  the batch that set it. One timer per ``(key, at_ms)``: setting it again is a no-op.
* Processing-time timers (``ctx.set_processing_timer(at_ms)``, wall-clock epoch
  ms) fire on the first loop tick with ``now_ms >= at_ms``.
* ``ctx.delete_timers()`` cancels all of the key's pending timers (both kinds).
* While a timer fires, ``ctx.ts_ms`` is the timer's time and ``ctx.emit``
  defaults to it as event time; give ``ts_ms=`` to choose another.
* At end of input the watermark becomes ``MAX_TS_MS``: every pending event-time
  timer fires, and so do timers set while they fire, up to the latest time that
  was pending when the input ended (so a timer that re-arms itself forever ends).
  Processing-time timers do **not** fire at end of input: the wall clock has
  not reached them, and a bounded run must not wait for it; they stay pending.
* A processor that raises is handled by the step's error policy
  (``Fail``/``Skip``/``DeadLetter``); records emitted by the failed call are
  discarded, changes it made to ``ctx.state`` are kept. A failing timer is
  reported with the record ``{"timer_ms": at_ms, "key": key}``.

State layout: ``states`` is ``{key: dict}``; timers are heaps of
``(at_ms, seq, key)`` plus ``{key: {at_ms: seq}}`` of live timers (a heap entry
whose ``(at_ms, seq)`` is not live was deleted, or replaced by a later
registration, and is skipped). ``seq`` counts registrations, so timers of equal
time fire in the order their live registration was made.

Checkpoints (``snapshot_changes``/``restore``): every key whose state or timers
changed is in ``dirty_keys``; the snapshot reports, per dirty key,
``("key", key) -> (state dict or None, {at: seq} event timers or None,
{at: seq} processing timers or None)``, or ``None`` once the key has nothing
left (only if a value was reported before). One operator-wide entry
``("__meta__",) -> {"seq": n}`` holds the registration counter. ``restore``
rebuilds the heaps from the live timers, so a restored operator fires exactly
the timers, in exactly the order, of an uninterrupted one. State values must be
picklable (the checkpoint raises :class:`~eventspine.errors.StateError` naming
the step otherwise).
"""

from __future__ import annotations

import heapq
from collections.abc import MutableMapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from eventspine.records import Batch
from eventspine.runtime.operator import ErrorBoundary, Operator
from eventspine.timeutil import MAX_TS_MS, MIN_TS_MS, from_ms

if TYPE_CHECKING:
    from eventspine.dataflow.ports import Processor
    from eventspine.dataflow.steps import ProcessStep
    from eventspine.runtime.metrics import StepMetrics
    from eventspine.timeutil import Clock

__all__ = ["ProcessOperator", "make_process"]

_EVENT, _PROC = 0, 1

#: The state entry of the operator-wide values.
META: tuple[str] = ("__meta__",)


def make_process(
    step: ProcessStep, metrics: StepMetrics, boundary: ErrorBoundary, clock: Clock
) -> ProcessOperator:
    """Compile a process step (processing-time timers follow the executor's ticks)."""
    return ProcessOperator(step, metrics, boundary)


class _Context:
    """The ``ProcessContext`` handed to the processor; one instance, re-pointed per call."""

    __slots__ = ("_op", "key", "ts_ms", "watermark_ms")

    def __init__(self, op: ProcessOperator) -> None:
        self._op = op
        self.key: Any = None
        self.ts_ms = MIN_TS_MS
        self.watermark_ms = MIN_TS_MS

    @property
    def state(self) -> MutableMapping[str, Any]:
        """This key's state dict (created on first access; assigning replaces it)."""
        op = self._op
        key = self.key
        op.dirty_keys.add(key)
        st = op.states.get(key)
        if st is None:
            st = op.states[key] = {}
        return st

    @state.setter
    def state(self, value: MutableMapping[str, Any]) -> None:
        self._op.dirty_keys.add(self.key)
        self._op.states[self.key] = dict(value)

    @property
    def timestamp(self) -> datetime:
        """The event time (or the firing timer's time) as an aware UTC datetime."""
        return from_ms(self.ts_ms)

    def emit(self, record: Any, *, ts_ms: int | None = None) -> None:
        """Send a record downstream (event time defaults to ``ts_ms``)."""
        op = self._op
        out = op.main
        out[0].append(record)
        out[1].append(self.ts_ms if ts_ms is None else ts_ms)
        out[2].append(op.cur_offset)

    def emit_to(self, side: str, record: Any) -> None:
        """Send a record to side output ``side`` (event time ``ts_ms``)."""
        op = self._op
        out = op.sides.get(side)
        if out is None:
            out = op.sides[side] = ([], [], [])
        out[0].append(record)
        out[1].append(self.ts_ms)
        out[2].append(op.cur_offset)

    def set_event_timer(self, at_ms: int) -> None:
        """Call ``on_timer`` for this key once the watermark reaches ``at_ms``."""
        self._op.add_timer(_EVENT, self.key, int(at_ms))

    def set_processing_timer(self, at_ms: int) -> None:
        """Call ``on_timer`` for this key once the wall clock reaches ``at_ms``."""
        self._op.add_timer(_PROC, self.key, int(at_ms))

    def delete_timers(self) -> None:
        """Cancel this key's pending timers (event and processing time)."""
        op = self._op
        for kind in (_EVENT, _PROC):
            if op.timer_sets[kind].pop(self.key, None):
                op.dirty_keys.add(self.key)


class ProcessOperator(Operator):
    """Runs a :class:`~eventspine.dataflow.ports.Processor` (see the module docstring)."""

    def __init__(self, step: ProcessStep, metrics: StepMetrics, boundary: ErrorBoundary) -> None:
        super().__init__(step.name, metrics)
        self.processor: Processor = step.processor
        self.keyed = step.keyed
        self.boundary = boundary
        self.states: dict[Any, dict[str, Any]] = {}
        #: Keys whose state or timers changed since the last checkpoint.
        self.dirty_keys: set[Any] = set()
        # Per kind (event, processing): heap of (at_ms, seq, key) and key -> {at_ms: seq}.
        self.timer_heaps: tuple[list[tuple[int, int, Any]], list[tuple[int, int, Any]]] = ([], [])
        self.timer_sets: tuple[dict[Any, dict[int, int]], dict[Any, dict[int, int]]] = ({}, {})
        self.seq = 0
        self._saved: set[Any] = set()  # keys whose last reported entry was not None
        self._meta_saved = 0
        self.ctx = _Context(self)
        # Emitted records, their event times and the offsets of the input records that
        # produced them (-1: made by a timer), so errors downstream name a position.
        self.main: tuple[list[Any], list[int], list[int]] = ([], [], [])
        self.sides: dict[str, tuple[list[Any], list[int], list[int]]] = {}
        self.cur_offset = -1
        self.cur_partition: str | None = None

    # -- timers -----------------------------------------------------------------------
    def add_timer(self, kind: int, key: Any, at_ms: int) -> None:
        """Register a timer (idempotent per ``(kind, key, at_ms)``)."""
        live = self.timer_sets[kind].setdefault(key, {})
        if at_ms in live:
            return
        self.seq += 1
        live[at_ms] = self.seq
        heapq.heappush(self.timer_heaps[kind], (at_ms, self.seq, key))
        self.dirty_keys.add(key)

    def _fire(self, kind: int, until_ms: int) -> None:
        """Fire the live timers of ``kind`` with ``at_ms <= until_ms`` in order."""
        heap = self.timer_heaps[kind]
        sets = self.timer_sets[kind]
        ctx = self.ctx
        on_timer = self.processor.on_timer
        while heap and heap[0][0] <= until_ms:
            at, seq, key = heapq.heappop(heap)
            live = sets.get(key)
            if live is None or live.get(at) != seq:
                continue  # deleted (or deleted and set again: that entry fires)
            del live[at]
            if not live:
                del sets[key]
            self.dirty_keys.add(key)
            ctx.key = key
            ctx.ts_ms = at
            ctx.watermark_ms = self.watermark_ms
            self.cur_offset = -1
            mark = (len(self.main[0]), {s: len(v[0]) for s, v in self.sides.items()})
            try:
                on_timer(ctx)
            except Exception as exc:
                self._rollback(mark)
                probe = Batch([{"timer_ms": at, "key": key}], [at], keys=[key], record_type=None)
                self.boundary.user_error(exc, probe, 0)
            self._drop_if_empty(key)

    def on_watermark(self, wm_ms: int) -> None:
        """Fire due event-time timers (at end of input, see the module docstring)."""
        until = wm_ms
        sets = self.timer_sets[_EVENT]
        if wm_ms >= MAX_TS_MS and sets:
            until = max(max(live) for live in sets.values())
        self._fire(_EVENT, until)
        self._flush()

    def on_tick(self, now_ms: int) -> None:
        """Fire due processing-time timers."""
        heap = self.timer_heaps[_PROC]
        if heap and heap[0][0] <= now_ms:
            self._fire(_PROC, now_ms)
            self._flush()

    # -- records --------------------------------------------------------------------
    def on_batch(self, batch: Batch, port: int) -> None:
        """Call ``on_record`` for each record, then fire timers already due."""
        rows, ts = batch.rows, batch.ts
        keys = batch.keys if self.keyed else None
        ctx = self.ctx
        ctx.watermark_ms = self.watermark_ms
        on_record = self.processor.on_record
        main = self.main
        sides = self.sides
        states = self.states
        offsets = batch.offsets
        self.cur_partition = batch.partition
        for i, rec in enumerate(rows):
            key = keys[i] if keys is not None else None
            ctx.key = key
            ctx.ts_ms = ts[i]
            self.cur_offset = offsets[i] if offsets is not None else -1
            mark = (len(main[0]), {s: len(v[0]) for s, v in sides.items()} if sides else None)
            try:
                on_record(rec, ctx)
            except Exception as exc:
                self._rollback(mark)
                self.boundary.user_error(exc, batch, i)
            st = states.get(key)
            if st is not None and not st:
                del states[key]
        heap = self.timer_heaps[_EVENT]
        if heap and heap[0][0] <= self.watermark_ms and self.watermark_ms > MIN_TS_MS:
            self._fire(_EVENT, self.watermark_ms)
        self._flush()

    # -- output ---------------------------------------------------------------------
    def _rollback(self, mark: tuple[int, dict[str, int] | None]) -> None:
        """Forget what a failed call emitted."""
        n_main, n_sides = mark
        for column in self.main:
            del column[n_main:]
        for side, columns in self.sides.items():
            n = (n_sides or {}).get(side, 0)
            for column in columns:
                del column[n:]

    def _drop_if_empty(self, key: Any) -> None:
        st = self.states.get(key)
        if st is not None and not st:
            del self.states[key]

    def _flush(self) -> None:
        """Emit what the calls since the last flush produced."""
        part = self.cur_partition
        recs, ts, offs = self.main
        if recs:
            self.main = ([], [], [])
            self.out.emit(Batch(recs, ts, offsets=offs, partition=part, record_type=None))
        for side, (srecs, sts, soffs) in self.sides.items():
            if srecs:
                self.sides[side] = ([], [], [])
                self.out.emit_side(
                    side, Batch(srecs, sts, offsets=soffs, partition=part, record_type=None)
                )
        self.metrics.state_keys = len(self.states)

    # -- checkpoints ----------------------------------------------------------------
    stateful = True

    def snapshot_changes(self) -> list[tuple[Any, Any]]:
        """Return the per-key entries changed since the last call, and the counter.

        Values share the live state dicts: the checkpoint encodes them at once.
        """
        out: list[tuple[Any, Any]] = []
        saved = self._saved
        ev, pr = self.timer_sets
        for key in self.dirty_keys:
            value = (self.states.get(key) or None, ev.get(key) or None, pr.get(key) or None)
            if value == (None, None, None):
                if key in saved:
                    saved.discard(key)
                    out.append((("key", key), None))
            else:
                saved.add(key)
                out.append((("key", key), value))
        self.dirty_keys = set()
        if self.seq != self._meta_saved:
            self._meta_saved = self.seq
            out.append((META, {"seq": self.seq}))
        return out

    def restore(self, entries: list[tuple[Any, Any]]) -> None:
        """Rebuild state dicts, timers and the counter (on a fresh operator).

        The state dicts of ``entries`` (freshly decoded, owned by no one else) are
        kept as they are, not copied.
        """
        states, saved = self.states, self._saved
        for eid, value in entries:
            if eid == META:
                self.seq = self._meta_saved = value["seq"]
                continue
            key = eid[1]
            state, *timers = value
            if state:
                # A decoded state is a fresh dict: no copy (166k keys: ~0.1 s of a restore).
                states[key] = state if type(state) is dict else dict(state)
            for kind, live in enumerate(timers):
                if live:
                    self.timer_sets[kind][key] = dict(live)
                    self.timer_heaps[kind].extend((at, seq, key) for at, seq in live.items())
            saved.add(key)
        for heap in self.timer_heaps:
            heapq.heapify(heap)
        self.dirty_keys = set()
        self.metrics.state_keys = len(self.states)
