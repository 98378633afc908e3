"""The aggregations of one window step, compiled for the record-at-a-time path.

An :class:`AggSet` holds, per aggregation, how to read its input and how to
fold it. Inputs are read a batch at a time, one column per aggregation
(``list(map(getter, rows))`` runs the getter loop in C for field names), so
the per-record loops of the window operators only index lists and call
``add``. The accumulators of one window are a plain ``list`` in the order
of ``step.aggs``: easy to snapshot, cheap to index. For checkpoints,
:meth:`AggSet.encode`/:meth:`AggSet.decode` turn accumulators pickle cannot
handle (sketches) into bytes and back, and :meth:`AggSet.seqs` /
:meth:`AggSet.set_seqs` save the counters aggregators keep outside their
accumulators (the ``first``/``last`` tie-break sequence).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from operator import itemgetter
from typing import Any

from eventspine.dataflow.aggregations import Agg
from eventspine.records import Batch
from eventspine.runtime.operator import ErrorBoundary
from eventspine.runtime.stateless import field_fn

__all__ = ["AggSet"]

_IMMUTABLE = (int, float, str, bytes, tuple, frozenset, type(None))


class AggSet:
    """The compiled aggregations of a window step.

    Attributes:
        names: the output field names, in ``step.aggs`` order.
        rec_adders: ``(index, add)`` for aggregations fed the whole record
            (``count`` and custom aggregations with ``source=None``).
        val_adders: ``(index, add)`` for aggregations fed a field value.
        ts_adders: ``(index, add_ts)`` for aggregations that need the event time.
    """

    __slots__ = (
        "_aggs",
        "_codecs",
        "_counters",
        "_creates",
        "_fast",
        "_getters",
        "_merges",
        "_mutable",
        "_proto",
        "_results",
        "names",
        "rec_adders",
        "ts_adders",
        "val_adders",
    )

    def __init__(self, aggs: Mapping[str, Agg[Any]], record_type: type | None) -> None:
        self.names = list(aggs)
        self._aggs = list(aggs.values())
        self._getters: list[Callable[[Any], Any] | None] = []
        # For dict rows: a plain itemgetter per field name (the generic getter checks types).
        self._fast: list[Callable[[Any], Any] | None] = [
            itemgetter(a.source) if isinstance(a.source, str) else None for a in aggs.values()
        ]
        rec: list[tuple[int, Callable[[Any, Any], Any]]] = []
        val: list[tuple[int, Callable[[Any, Any], Any]]] = []
        tsa: list[tuple[int, Callable[[Any, Any, int], Any]]] = []
        for j, a in enumerate(self._aggs):
            agg = a.aggregator
            if a.source is None:
                self._getters.append(None)
                if a.uses_ts:
                    tsa.append((j, agg.add_ts))  # type: ignore[attr-defined]  # uses_ts promises add_ts
                else:
                    rec.append((j, agg.add))
                continue
            self._getters.append(field_fn(a.source, record_type))
            if a.uses_ts:
                tsa.append((j, agg.add_ts))  # type: ignore[attr-defined]  # uses_ts promises add_ts
            else:
                val.append((j, agg.add))
        self.rec_adders = tuple(rec)
        self.val_adders = tuple(val)
        self.ts_adders = tuple(tsa)
        self._creates = tuple(a.aggregator.create for a in self._aggs)
        # Immutable empty accumulators (0, None...) are copied from a prototype; only
        # mutable ones (lists, sketches) are created per window.
        self._proto = [c() for c in self._creates]
        self._mutable = tuple(
            (j, c)
            for j, (c, acc) in enumerate(zip(self._creates, self._proto, strict=True))
            if not isinstance(acc, _IMMUTABLE)
        )
        self._merges = tuple(a.aggregator.merge for a in self._aggs)
        self._results = tuple(a.aggregator.result for a in self._aggs)
        self._codecs: tuple[tuple[int, Callable[[Any], Any], Callable[[Any], Any]], ...] = tuple(
            (j, a.aggregator.encode, a.aggregator.decode)  # type: ignore[attr-defined]
            for j, a in enumerate(self._aggs)
            if callable(getattr(a.aggregator, "encode", None))
            and callable(getattr(a.aggregator, "decode", None))
        )
        self._counters: tuple[Any, ...] = tuple(
            a.aggregator
            for a in self._aggs
            if callable(getattr(a.aggregator, "get_seq", None))
            and callable(getattr(a.aggregator, "set_seq", None))
        )

    def create(self) -> list[Any]:
        """Return the empty accumulators of one window."""
        accs = self._proto.copy()
        for j, c in self._mutable:
            accs[j] = c()
        return accs

    def columns(self, batch: Batch, boundary: ErrorBoundary) -> tuple[list[list[Any]], set[int]]:
        """Read every aggregation's input over the batch; return the columns and failed rows.

        Column ``j`` holds the input of aggregation ``j`` for every row (the row
        itself for aggregations fed the whole record). A getter that raises is
        retried record by record so that only the failing records are handed to
        the error boundary (which raises under ``Fail``) and returned as failed.
        Field names are first read with ``itemgetter`` (dict rows); any failure
        (e.g. typed events) falls back to the generic getter.
        """
        rows = batch.rows
        cols: list[list[Any]] = []
        failed: set[int] = set()
        for g, fast in zip(self._getters, self._fast, strict=True):
            if g is None:
                cols.append(rows)
                continue
            try:
                cols.append(list(map(fast or g, rows)))
            except Exception:
                col: list[Any] = []
                for i, r in enumerate(rows):
                    try:
                        col.append(g(r))
                    except Exception as exc:
                        boundary.user_error(exc, batch, i)
                        failed.add(i)
                        col.append(None)
                cols.append(col)
        return cols, failed

    def add(self, accs: list[Any], values: tuple[Any, ...] | list[Any], ts_ms: int) -> None:
        """Fold one record's inputs (``values[j]`` for aggregation ``j``) into ``accs``."""
        for j, add in self.rec_adders:
            accs[j] = add(accs[j], values[j])
        for j, add in self.val_adders:
            accs[j] = add(accs[j], values[j])
        for j, add_ts in self.ts_adders:
            accs[j] = add_ts(accs[j], values[j], ts_ms)

    def encode(self, accs: list[Any]) -> list[Any]:
        """Return ``accs`` in a picklable form (sketches as bytes).

        Without sketches this is ``accs`` itself (no copy): pickle the result
        before the accumulators change again.
        """
        if not self._codecs:
            return accs
        out = accs.copy()
        for j, enc, _dec in self._codecs:
            out[j] = enc(accs[j])
        return out

    def decode(self, data: list[Any]) -> list[Any]:
        """Return the accumulators :meth:`encode` was given (``data`` may be reused)."""
        for j, _enc, dec in self._codecs:
            data[j] = dec(data[j])
        return data

    def seqs(self) -> list[int]:
        """Return the counters of the aggregators that keep one (``get_seq``), in step order."""
        return [a.get_seq() for a in self._counters]

    def set_seqs(self, seqs: list[int]) -> None:
        """Restore counters saved by :meth:`seqs`."""
        for a, n in zip(self._counters, seqs, strict=True):
            a.set_seq(n)

    def merge(self, a: list[Any], b: list[Any]) -> list[Any]:
        """Return the accumulators combining windows ``a`` and ``b`` (``a`` came first)."""
        return [m(x, y) for m, x, y in zip(self._merges, a, b, strict=True)]

    def results(self, accs: list[Any], out: dict[str, Any]) -> dict[str, Any]:
        """Write each aggregation's result into ``out`` (by output name) and return it.

        ``accs`` may carry extra trailing items (an operator's bookkeeping); they are ignored.
        """
        for name, res, acc in zip(self.names, self._results, accs, strict=False):
            out[name] = res(acc)
        return out
