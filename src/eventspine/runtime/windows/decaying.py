"""Decaying aggregates: per-key ``count``/``sum``/``mean`` in which each record's weight decays.

Evaluated at time ``T``, ``count`` is ``sum(w(T - t_i))``, ``sum`` is
``sum(w(T - t_i) * x_i)`` and ``mean`` their ratio, over the key's records
with ``t_i <= T``. Records wait (``pending``) until the watermark passes
them, then are folded in event-time order, so results do not depend on
arrival order.

* Default emit (``OnClose``): one result per record, evaluated at that
  record's event time ``t`` (including every record of the key at ``t``),
  emitted once the watermark passes ``t``; event time ``t``,
  ``window_end_ms = t + 1``.
* ``EveryInterval(i)``: each time the watermark passes an epoch-aligned
  multiple ``B`` of ``i``, every key with state is evaluated at ``B``
  (``final: False``); at end of input each key is evaluated at its latest
  record (``final: True``).

``window_start_ms`` is the earliest event time that still weighs in the
result. A record later than its evaluation point but within the allowed
lateness is folded in and the key's corrected value, evaluated at
``max(t, latest folded time)``, is emitted; later records go to ``"late"``.

State layout (plain data), per key: ``ExponentialDecay`` keeps O(1) state
``[ref_ms, first_ms, weight_sum, weighted_sum_0, ...]`` relative to
``ref_ms`` (the latest folded time); a key is dropped once its weight has
decayed below ``2**-64``. ``LinearDecay``/``CustomDecay`` keep the records
within the horizon: ``[(ts_ms, seq, values), ...]``.

Checkpoint entries: one per key, valued ``(state or None, pending records
or None)``. ``fire`` (a timer per pending record, ``OnClose``) and
``evict`` are derived on restore.
"""

from __future__ import annotations

from bisect import insort
from typing import Any

from eventspine.dataflow.steps import WindowStep
from eventspine.dataflow.time import Decaying, ExponentialDecay
from eventspine.errors import DefinitionError
from eventspine.records import Batch
from eventspine.runtime.metrics import StepMetrics
from eventspine.runtime.operator import ErrorBoundary
from eventspine.runtime.windows._base import Due, Timers, WindowOperator
from eventspine.timeutil import MAX_TS_MS, Clock

__all__ = ["DecayingAggregate"]

Rec = tuple[int, int, list[float]]
_DROP_HALF_LIVES = 64


class DecayingAggregate(WindowOperator):
    """The operator for ``Decaying`` windows."""

    def __init__(
        self, step: WindowStep, metrics: StepMetrics, boundary: ErrorBoundary, clock: Clock
    ) -> None:
        super().__init__(step, metrics, boundary, clock)
        kind = step.window
        assert isinstance(kind, Decaying)
        if self.on_change or self.every_n:
            raise DefinitionError(
                f"step '{step.name}': a Decaying window emits one result per record "
                f"(emit=es.OnClose(), the default) or every interval (es.EveryInterval(...))"
            )
        self.decay = kind.decay
        self.exp_half_life = (
            kind.decay.half_life_ms if isinstance(kind.decay, ExponentialDecay) else 0
        )
        # Output plan: (name, kind, index of the value column or -1 for count).
        self.plan: list[tuple[str, str, int]] = []
        self.sources: list[int] = []  # agg index of each value column
        for j, (name, a) in enumerate(step.aggs.items()):
            if a.kind == "count":
                self.plan.append((name, "count", -1))
            else:
                self.plan.append((name, a.kind, len(self.sources)))
                self.sources.append(j)
        self.state: dict[Any, list[Any]] = {}
        self.pending: dict[Any, list[Rec]] = {}
        self.fire = Timers()
        self.evict = Timers()

    # -- records ---------------------------------------------------------------------
    def on_batch(self, batch: Batch, port: int) -> None:
        """Hold records until the watermark passes them (fold late ones at once)."""
        n = len(batch)
        if not n:
            return
        ts = batch.ts
        keys = batch.keys if batch.keys is not None else [None] * n
        cols, failed = self.aggs.columns(batch, self.boundary)
        vcols = [cols[j] for j in self.sources]
        wm = self.watermark_ms
        late_idx: list[int] = []
        due: list[Due] = []
        for i in range(n):
            if failed and i in failed:
                continue
            t, k = ts[i], keys[i]
            if t + 1 + self.lateness_ms <= wm:
                late_idx.append(i)
                continue
            try:
                values = [float(c[i]) for c in vcols]
            except (TypeError, ValueError) as exc:
                self.boundary.user_error(exc, batch, i)
                continue
            seq = self.next_seq()
            self._dirty.add(k)
            if t + 1 > wm:
                self.pending.setdefault(k, []).append((t, seq, values))
                if not self.interval_ms:
                    self.fire.add(t + 1, k)
                continue
            self._fold(k, (t, seq, values))
            if not self.interval_ms:
                at = max(t, self._ref(k))
                due.append((at, k, seq, self._row(k, at, False)))
        self.push_due(due)
        self._flush()
        self.late(batch, late_idx)
        self.metrics.state_keys = len(self.state)

    # -- time ------------------------------------------------------------------------
    def on_watermark(self, wm_ms: int) -> None:
        """Fold and evaluate what the watermark passed (per record or per interval)."""
        due: list[Due] = []
        if self.interval_ms:
            prev = self._tick
            if self.tick(wm_ms):
                self._every_boundary(prev + 1, self._tick, due)
            elif wm_ms >= MAX_TS_MS:
                self._fold_pending(MAX_TS_MS, None)
                due.extend(
                    (self._ref(k), k, 0, self._row(k, self._ref(k), True)) for k in self.state
                )
                flushed = list(self.state)
                self.state.clear()
                for k in flushed:
                    self._changed(k)
        else:
            keys: dict[Any, None] = {}
            for _t, ks in self.fire.pop_due(wm_ms):
                keys.update(dict.fromkeys(ks))
            for k in keys:
                self._fold_pending(wm_ms - 1, k, due)
        self.push_due(due)
        self._expire(wm_ms)
        self._flush()
        self.metrics.state_keys = len(self.state)

    def _every_boundary(self, first: int, last: int, due: list[Due]) -> None:
        """Evaluate at each interval boundary ``first..last`` the watermark crossed.

        Every boundary is evaluated (not just the latest), so the updates do not
        depend on how far one watermark step went, i.e. on batch sizes. While no
        key has state, boundaries before the next pending record are skipped.
        """
        iv = self.interval_ms
        i = first
        while i <= last:
            if not self.state:
                earliest = min(
                    (t for recs in self.pending.values() for t, *_ in recs), default=None
                )
                if earliest is None:
                    return
                i = max(i, -(-earliest // iv))  # first boundary at or after the earliest record
                if i > last:
                    return
            b = i * iv
            self._fold_pending(b, None)
            due.extend((b, k, 0, self._row(k, b, False)) for k in list(self.state))
            self._expire(b + 1)
            i += 1

    def _fold_pending(self, upto: int, only: Any, due: list[Due] | None = None) -> None:
        """Fold pending records with ``ts <= upto`` (of key ``only`` when ``due`` is given).

        With ``due``, evaluate after each distinct event time and queue one result per record.
        """
        keys = [only] if due is not None else list(self.pending)
        for k in keys:
            recs = self.pending.get(k)
            if not recs:
                continue
            recs.sort(key=lambda r: (r[0], r[1]))
            cut = 0
            while cut < len(recs) and recs[cut][0] <= upto:
                cut += 1
            ready, rest = recs[:cut], recs[cut:]
            if rest:
                self.pending[k] = rest
            else:
                del self.pending[k]
            self._dirty.add(k)  # folded into the state below
            j = 0
            while j < len(ready):
                t = ready[j][0]
                e = j
                while e < len(ready) and ready[e][0] == t:
                    self._fold(k, ready[e])
                    e += 1
                if due is not None:
                    row = self._row(k, t, False)
                    due.extend((t, k, r[1], dict(row)) for r in ready[j:e])
                j = e

    # -- the decayed state -----------------------------------------------------------
    def _fold(self, key: Any, rec: Rec) -> None:
        t, _seq, values = rec
        st = self.state.get(key)
        h = self.exp_half_life
        if h:
            if st is None:
                self.state[key] = [t, t, 1.0, *values]
                self.evict.add(t + _DROP_HALF_LIVES * h + self.lateness_ms, key)
                return
            ref = st[0]
            if t < st[1]:
                st[1] = t
            if t >= ref:
                f = 0.5 ** ((t - ref) / h)
                st[0] = t
                st[2] = st[2] * f + 1.0
                for m, v in enumerate(values, 3):
                    st[m] = st[m] * f + v
                self.evict.add(t + _DROP_HALF_LIVES * h + self.lateness_ms, key)
            else:
                w = 0.5 ** ((ref - t) / h)
                st[2] += w
                for m, v in enumerate(values, 3):
                    st[m] += w * v
            return
        horizon = self.decay.horizon_ms
        assert horizon is not None
        if st is None:
            st = self.state[key] = []
        insort(st, rec)
        self.evict.add(t + horizon + self.lateness_ms + 2, key)

    def _ref(self, key: Any) -> int:
        st = self.state[key]
        return int(st[0]) if self.exp_half_life else int(st[-1][0])

    def _row(self, key: Any, at: int, final: bool) -> dict[str, Any]:
        st = self.state[key]
        h = self.exp_half_life
        if h:
            f = 0.5 ** ((at - st[0]) / h) if at > st[0] else 1.0
            weight = st[2] * f
            sums = [s * f for s in st[3:]]
            start = int(st[1])
        else:
            weight, sums, start = self._weigh(st, at)
        out: dict[str, Any] = {
            self.key_field: key,
            "window_start_ms": start,
            "window_end_ms": at + 1,
        }
        for name, kind, m in self.plan:
            if kind == "count":
                out[name] = weight
            elif kind == "sum":
                out[name] = sums[m]
            else:
                out[name] = sums[m] / weight if weight else None
        if self.updates:
            out["final"] = final
        return out

    def _weigh(self, recs: list[Rec], at: int) -> tuple[float, list[float], int]:
        weight = 0.0
        sums = [0.0] * len(self.sources)
        start = at
        horizon = self.decay.horizon_ms
        assert horizon is not None
        for t, _seq, values in recs:
            if t > at:
                break
            if at - t > horizon:
                continue
            start = min(start, t)
            w = self.decay.weight(at - t)
            weight += w
            for m, v in enumerate(values):
                sums[m] += w * v
        return weight, sums, start

    def _expire(self, wm_ms: int) -> None:
        """Drop state no evaluation can need any more (see the module doc)."""
        for _t, keys in self.evict.pop_due(wm_ms):
            for k in keys:
                st = self.state.get(k)
                if st is None:
                    continue
                if self.exp_half_life:
                    if st[0] + _DROP_HALF_LIVES * self.exp_half_life + self.lateness_ms <= wm_ms:
                        del self.state[k]
                        self._changed(k)
                    continue
                horizon = self.decay.horizon_ms
                assert horizon is not None
                keep = [r for r in st if r[0] + horizon + self.lateness_ms + 2 > wm_ms]
                if len(keep) == len(st):
                    continue
                if keep:
                    self.state[k] = keep
                else:
                    del self.state[k]
                self._changed(k)

    # -- checkpoints -----------------------------------------------------------------
    def _changed(self, key: Any) -> None:
        if key in self.state or key in self.pending:
            self._dirty.add(key)
        else:
            self._gone(key)

    def _entry(self, d: Any) -> Any:
        st, pend = self.state.get(d), self.pending.get(d)
        if st is None and not pend:
            return None
        return (st, pend or None)

    def _load(self, entries: list[tuple[Any, Any]]) -> None:
        h, lateness = self.exp_half_life, self.lateness_ms
        for key, (st, pend) in entries:
            if pend:
                self.pending[key] = pend
                if not self.interval_ms:
                    for t, _seq, _values in pend:
                        self.fire.add(t + 1, key)
            if st is None:
                continue
            self.state[key] = st
            if h:
                self.evict.add(st[0] + _DROP_HALF_LIVES * h + lateness, key)
            else:
                horizon = self.decay.horizon_ms
                assert horizon is not None
                for t, _seq, _values in st:
                    self.evict.add(t + horizon + lateness + 2, key)
        self.metrics.state_keys = len(self.state)
