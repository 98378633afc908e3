"""Aggregations: what ``WindowedStream.aggregate(name, out_field=agg, ...)`` computes.

Built-ins over named fields (``count``, ``sum``, ``mean``, ``min``, ``max``,
``first``, ``last``) also declare a vectorized kernel, so the runtime can
compute them over large columnar batches. Sketches (``distinct_count`` with
HyperLogLog, ``quantiles`` with KLL, from Apache DataSketches) and ``top_k``
are mergeable, so they work in every window kind, including sessions.

A custom aggregation implements the four-method :class:`Aggregator` protocol
and is wrapped with :func:`agg`.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, final

from eventspine.dataflow.expr import Expr
from eventspine.errors import DefinitionError

__all__ = [
    "Agg",
    "Aggregator",
    "agg",
    "collect",
    "count",
    "distinct_count",
    "first",
    "last",
    "max_",
    "mean",
    "min_",
    "quantiles",
    "sum_",
    "top_k",
]

A = TypeVar("A")
V_contra = TypeVar("V_contra", contravariant=True)
R_co = TypeVar("R_co", covariant=True)


class Aggregator(Protocol[A, V_contra, R_co]):
    """A mergeable aggregation: ``create``, ``add``, ``merge``, ``result``.

    ``add`` may mutate and return the accumulator. ``merge`` combines two
    accumulators (used by session windows when sessions merge, and by hopping
    windows built from panes) and must be associative: the result may not
    depend on how records were grouped. ``result`` must not mutate.

    Checkpoints pickle accumulators. Optional methods: ``encode(acc) -> bytes``
    and ``decode(data) -> acc`` for accumulators pickle cannot handle (the
    sketches use them); ``get_seq() -> int`` and ``set_seq(n)`` for a counter
    the aggregator keeps outside its accumulators (``first``/``last``).
    """

    def create(self) -> A:
        """Return a new, empty accumulator."""
        ...

    def add(self, acc: A, value: V_contra) -> A:
        """Add one value; return the (possibly same) accumulator."""
        ...

    def merge(self, a: A, b: A) -> A:
        """Return the combination of two accumulators."""
        ...

    def result(self, acc: A) -> R_co:
        """Return the output value of the accumulator."""
        ...


@final
@dataclass(frozen=True)
class Agg(Generic[A]):
    """One aggregation bound to its input (a field name, an expression, or none for ``count``).

    Attributes:
        kind: the built-in's name (``"count"``, ``"sum"``...) or ``"custom"``.
        source: the field name or expression the values come from (``None`` for ``count``).
        aggregator: the implementation.
        vector: the name of the vectorized kernel, or ``None`` when there is none.
        uses_ts: whether ``add`` needs the event time (``first``/``last``).
    """

    kind: str
    source: str | Expr | Callable[[Any], Any] | None
    aggregator: Aggregator[A, Any, Any]
    vector: str | None = None
    uses_ts: bool = False

    @property
    def field(self) -> str | None:
        """The source field name when the input is a plain field, else ``None``."""
        if isinstance(self.source, str):
            return self.source
        if isinstance(self.source, Expr):
            return self.source.field_name
        return None


class _Count:
    def create(self) -> int:
        return 0

    def add(self, acc: int, value: Any) -> int:
        return acc + 1

    def merge(self, a: int, b: int) -> int:
        return a + b

    def result(self, acc: int) -> int:
        return acc


class _Sum:
    def create(self) -> float:
        return 0

    def add(self, acc: float, value: float) -> float:
        return acc + value

    def merge(self, a: float, b: float) -> float:
        return a + b

    def result(self, acc: float) -> float:
        return acc


class _Mean:
    def create(self) -> list[float]:
        return [0, 0.0]

    def add(self, acc: list[float], value: float) -> list[float]:
        acc[0] += 1
        acc[1] += value
        return acc

    def merge(self, a: list[float], b: list[float]) -> list[float]:
        return [a[0] + b[0], a[1] + b[1]]

    def result(self, acc: list[float]) -> float | None:
        return acc[1] / acc[0] if acc[0] else None


class _Extreme:
    def __init__(self, pick: Callable[[Any, Any], Any]) -> None:
        self._pick = pick

    def create(self) -> Any:
        return None

    def add(self, acc: Any, value: Any) -> Any:
        if value is None:
            return acc
        return value if acc is None else self._pick(acc, value)

    def merge(self, a: Any, b: Any) -> Any:
        if a is None:
            return b
        return a if b is None else self._pick(a, b)

    def result(self, acc: Any) -> Any:
        return acc


class _ByTime:
    """``first``/``last`` by event time; the accumulator is ``(ts, seq, value)``.

    Ties on event time go to the earlier (first) or later (last) arrival. The
    arrival counter is per aggregator; checkpoints save it with ``get_seq`` and
    restore it with ``set_seq`` so ties break the same way after a restart.
    """

    def __init__(self, latest: bool) -> None:
        self._latest = latest
        self._seq = 0

    def get_seq(self) -> int:
        """Return the arrival counter (the last sequence number handed out)."""
        return self._seq

    def set_seq(self, seq: int) -> None:
        """Continue numbering after ``seq`` (never moves the counter backwards)."""
        if seq > self._seq:
            self._seq = seq

    def create(self) -> tuple[int, int, Any] | None:
        return None

    def add(self, acc: tuple[int, int, Any] | None, value: Any) -> tuple[int, int, Any] | None:
        # Without a timestamp, arrival order decides (used by custom callers).
        return self.add_ts(acc, value, 0)

    def add_ts(
        self, acc: tuple[int, int, Any] | None, value: Any, ts_ms: int
    ) -> tuple[int, int, Any]:
        self._seq += 1
        cand = (ts_ms, self._seq, value)
        if acc is None:
            return cand
        if self._latest:
            return cand if (ts_ms, self._seq) >= acc[:2] else acc
        return cand if (ts_ms, self._seq) < acc[:2] else acc

    def merge(
        self, a: tuple[int, int, Any] | None, b: tuple[int, int, Any] | None
    ) -> tuple[int, int, Any] | None:
        if a is None:
            return b
        if b is None:
            return a
        if self._latest:
            return a if a[:2] >= b[:2] else b
        return a if a[:2] <= b[:2] else b

    def result(self, acc: tuple[int, int, Any] | None) -> Any:
        return None if acc is None else acc[2]


class _Collect:
    def create(self) -> list[Any]:
        return []

    def add(self, acc: list[Any], value: Any) -> list[Any]:
        acc.append(value)
        return acc

    def merge(self, a: list[Any], b: list[Any]) -> list[Any]:
        return a + b

    def result(self, acc: list[Any]) -> list[Any]:
        return list(acc)


class _DistinctCount:
    """HyperLogLog (Apache DataSketches) distinct count; relative error about 1.6 % at lg_k=12."""

    def __init__(self, lg_k: int) -> None:
        self._lg_k = lg_k

    def create(self) -> Any:
        import datasketches

        return datasketches.hll_sketch(self._lg_k)

    def add(self, acc: Any, value: Any) -> Any:
        acc.update(value if isinstance(value, int | float | str) else repr(value))
        return acc

    def merge(self, a: Any, b: Any) -> Any:
        import datasketches

        union = datasketches.hll_union(self._lg_k)
        union.update(a)
        union.update(b)
        return union.get_result()

    def result(self, acc: Any) -> int:
        estimate: float = acc.get_estimate()
        return round(estimate)

    def encode(self, acc: Any) -> bytes:
        """Return the sketch as bytes (sketches cannot be pickled; checkpoints use this)."""
        data: bytes = acc.serialize_updatable()
        return data

    def decode(self, data: bytes) -> Any:
        """Return the sketch :meth:`encode` returned the bytes of."""
        import datasketches

        return datasketches.hll_sketch.deserialize(data)


class _Quantiles:
    """KLL quantiles sketch (Apache DataSketches) of float values."""

    def __init__(self, qs: tuple[float, ...], k: int) -> None:
        self._qs = qs
        self._k = k

    def create(self) -> Any:
        import datasketches

        return datasketches.kll_doubles_sketch(self._k)

    def add(self, acc: Any, value: Any) -> Any:
        acc.update(float(value))
        return acc

    def merge(self, a: Any, b: Any) -> Any:
        import datasketches

        out = datasketches.kll_doubles_sketch(self._k)
        out.merge(a)
        out.merge(b)
        return out

    def result(self, acc: Any) -> dict[str, float | None]:
        if acc.is_empty():
            return {_q_name(q): None for q in self._qs}
        return {_q_name(q): float(acc.get_quantile(q)) for q in self._qs}

    def encode(self, acc: Any) -> bytes:
        """Return the sketch as bytes (sketches cannot be pickled; checkpoints use this)."""
        data: bytes = acc.serialize()
        return data

    def decode(self, data: bytes) -> Any:
        """Return the sketch :meth:`encode` returned the bytes of."""
        import datasketches

        return datasketches.kll_doubles_sketch.deserialize(data)


def _q_name(q: float) -> str:
    return "p" + (f"{q * 100:g}").replace(".", "_")


class _TopK:
    """The ``k`` most frequent values (exact counts per window), as ``[(value, count), ...]``."""

    def __init__(self, k: int) -> None:
        self._k = k

    def create(self) -> Counter[Any]:
        return Counter()

    def add(self, acc: Counter[Any], value: Any) -> Counter[Any]:
        acc[value] += 1
        return acc

    def merge(self, a: Counter[Any], b: Counter[Any]) -> Counter[Any]:
        return a + b

    def result(self, acc: Counter[Any]) -> list[tuple[Any, int]]:
        return heapq.nsmallest(self._k, acc.items(), key=lambda kv: (-kv[1], repr(kv[0])))


def _need_source(kind: str, source: Any) -> None:
    if source is None or (isinstance(source, str) and not source):
        raise DefinitionError(
            f"{kind}() needs a field name, an es.col(...) expression or a function"
        )


def count() -> Agg[int]:
    """Count the records."""
    return Agg("count", None, _Count(), vector="count")


def sum_(source: str | Expr | Callable[[Any], Any]) -> Agg[float]:
    """Sum a field (exported as ``es.sum``)."""
    _need_source("sum", source)
    return Agg("sum", source, _Sum(), vector="sum")


def mean(source: str | Expr | Callable[[Any], Any]) -> Agg[list[float]]:
    """Average a field."""
    _need_source("mean", source)
    return Agg("mean", source, _Mean(), vector="mean")


def min_(source: str | Expr | Callable[[Any], Any]) -> Agg[Any]:
    """The smallest value of a field (exported as ``es.min``); ``None`` values are ignored."""
    _need_source("min", source)
    return Agg("min", source, _Extreme(min), vector="min")


def max_(source: str | Expr | Callable[[Any], Any]) -> Agg[Any]:
    """The largest value of a field (exported as ``es.max``); ``None`` values are ignored."""
    _need_source("max", source)
    return Agg("max", source, _Extreme(max), vector="max")


def first(source: str | Expr | Callable[[Any], Any]) -> Agg[Any]:
    """The value of the record with the earliest event time (ties: first to arrive)."""
    _need_source("first", source)
    return Agg("first", source, _ByTime(latest=False), vector="first", uses_ts=True)


def last(source: str | Expr | Callable[[Any], Any]) -> Agg[Any]:
    """The value of the record with the latest event time (ties: last to arrive)."""
    _need_source("last", source)
    return Agg("last", source, _ByTime(latest=True), vector="last", uses_ts=True)


def collect(source: str | Expr | Callable[[Any], Any]) -> Agg[list[Any]]:
    """All values, in arrival order."""
    _need_source("collect", source)
    return Agg("collect", source, _Collect())


def distinct_count(source: str | Expr | Callable[[Any], Any], *, lg_k: int = 12) -> Agg[Any]:
    """Approximate number of distinct values (HyperLogLog; ~1.6 % error at ``lg_k=12``)."""
    _need_source("distinct_count", source)
    if not 4 <= lg_k <= 21:
        raise DefinitionError(f"distinct_count lg_k must be between 4 and 21, not {lg_k}")
    return Agg("distinct_count", source, _DistinctCount(lg_k))


def quantiles(
    source: str | Expr | Callable[[Any], Any],
    qs: Sequence[float] = (0.5, 0.9, 0.99),
    *,
    k: int = 200,
) -> Agg[Any]:
    """Approximate quantiles (KLL sketch), as ``{"p50": ..., "p90": ..., "p99": ...}``."""
    _need_source("quantiles", source)
    qt = tuple(float(q) for q in qs)
    if not qt or any(not 0.0 <= q <= 1.0 for q in qt):
        raise DefinitionError(f"quantiles qs must be numbers between 0 and 1, not {qs!r}")
    return Agg("quantiles", source, _Quantiles(qt, k))


def top_k(source: str | Expr | Callable[[Any], Any], k: int = 10) -> Agg[Any]:
    """The ``k`` most frequent values with their counts, most frequent first."""
    _need_source("top_k", source)
    if k < 1:
        raise DefinitionError(f"top_k k must be at least 1, not {k}")
    return Agg("top_k", source, _TopK(k))


def agg(
    aggregator: Aggregator[Any, Any, Any],
    source: str | Expr | Callable[[Any], Any] | None = None,
) -> Agg[Any]:
    """Wrap a custom :class:`Aggregator`; ``source=None`` passes the whole record to ``add``."""
    for method in ("create", "add", "merge", "result"):
        if not callable(getattr(aggregator, method, None)):
            raise DefinitionError(
                f"a custom aggregator needs a {method}() method (create, add, merge, result); "
                f"{type(aggregator).__name__} has none"
            )
    return Agg("custom", source, aggregator)
