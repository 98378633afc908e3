"""Fused chains of stateless steps: map, filter, flat_map, key_by.

Consecutive stateless steps with one consumer each run as one operator. Each
stage runs over the whole batch: vectorized with polars when the batch is
columnar and the stage is an expression over named fields, otherwise as a
tight Python loop over rows. The loops have no per-record bookkeeping: when
user code raises, the loop resumes after the failing record once the step's
error policy has dealt with it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from itertools import compress, islice
from typing import TYPE_CHECKING, Any

from eventspine.dataflow.expr import Expr
from eventspine.dataflow.steps import FilterStep, FlatMapStep, KeyByStep, MapStep, Step
from eventspine.errors import StepError
from eventspine.records import KEY_COL, Batch, all_exactly, field_getter, record_fields
from eventspine.runtime.operator import ErrorBoundary, Operator, Output

if TYPE_CHECKING:
    import polars as pl

    from eventspine.runtime.metrics import StepMetrics

__all__ = ["FusedChain", "Stage", "make_stage"]

Fn = Callable[[Any], Any]
Vector = Callable[["pl.DataFrame"], "pl.DataFrame"]


class Stage:
    """One stateless step inside a fused chain."""

    __slots__ = ("boundary", "fn", "kind", "metrics", "name", "vector")

    def __init__(
        self,
        name: str,
        kind: str,
        fn: Fn,
        vector: Vector | None,
        boundary: ErrorBoundary,
        metrics: StepMetrics,
    ) -> None:
        self.name = name
        self.kind = kind
        self.fn = fn
        self.vector = vector
        self.boundary = boundary
        self.metrics = metrics

    def apply(self, batch: Batch) -> Batch:
        """Run the stage over a batch and return the resulting batch."""
        self.metrics.records_in += len(batch)
        self.metrics.batches += 1
        if self.vector is not None and batch.is_columnar:
            try:
                out = batch.with_frame(self.vector(batch.frame), batch.record_type)
            except Exception as exc:
                raise StepError(
                    self.name, "the expression", exc, partition=batch.partition
                ) from exc
        elif self.kind == "filter":
            out = self._filter(batch)
        elif self.kind == "key_by":
            out = self._key(batch)
        elif self.kind == "flat_map":
            out = self._flat_map(batch)
        else:
            out = self._map(batch)
        self.metrics.records_out += len(out)
        return out

    def _rows_with_policy(self, batch: Batch) -> tuple[list[Any], list[int]]:
        """Return ``fn(r)`` for every row that did not fail, and the failed row indices.

        ``list.extend`` keeps what was appended before an exception, so after a
        failure the loop resumes right after the failing record: user code runs
        exactly once per record, and the fast path has no per-record bookkeeping.
        """
        rows = batch.rows
        fn = self.fn
        out: list[Any] = []
        failed: list[int] = []
        start = 0
        n = len(rows)
        while start < n:
            base = len(out)
            try:
                out.extend(map(fn, islice(rows, start, None) if start else rows))
                break
            except Exception as exc:
                idx = start + (len(out) - base)
                self.boundary.user_error(exc, batch, idx)
                failed.append(idx)
                start = idx + 1
        return out, failed

    def _map(self, batch: Batch) -> Batch:
        values, failed = self._rows_with_policy(batch)
        ts, keys, offs = _drop(batch, failed)
        return batch.with_rows(values, ts, keys, offs)

    def _key(self, batch: Batch) -> Batch:
        keys, failed = self._rows_with_policy(batch)
        rows, ts, _old, offs = _drop_rows(batch, failed)
        return batch.with_rows(rows, ts, keys, offs)

    def _filter(self, batch: Batch) -> Batch:
        mask, failed = self._rows_with_policy(batch)
        rows, ts, keys, offs = _drop_rows(batch, failed)
        keep = mask if all_exactly(mask, bool) else [bool(m) for m in mask]  # truth tested once
        return batch.with_rows(
            list(compress(rows, keep)),
            list(compress(ts, keep)),
            None if keys is None else list(compress(keys, keep)),
            None if offs is None else list(compress(offs, keep)),
        )

    def _flat_map(self, batch: Batch) -> Batch:
        fn = self.fn
        rows, ts_in = batch.rows, batch.ts
        keys_in, offs_in = batch.keys, batch.offsets
        out: list[Any] = []
        ts: list[int] = []
        keys: list[Any] | None = None if keys_in is None else []
        offs: list[int] | None = None if offs_in is None else []
        for i, r in enumerate(rows):
            try:
                produced = list(fn(r))
            except Exception as exc:
                self.boundary.user_error(exc, batch, i)
                continue
            if not produced:
                continue
            n = len(produced)
            out.extend(produced)
            ts.extend([ts_in[i]] * n)
            if keys is not None and keys_in is not None:
                keys.extend([keys_in[i]] * n)
            if offs is not None and offs_in is not None:
                offs.extend([offs_in[i]] * n)
        return batch.with_rows(out, ts, keys, offs)


def _drop(batch: Batch, failed: list[int]) -> tuple[list[int], list[Any] | None, list[int] | None]:
    _rows, ts, keys, offs = _drop_rows(batch, failed, with_rows=False)
    return ts, keys, offs


def _drop_rows(
    batch: Batch, failed: list[int], *, with_rows: bool = True
) -> tuple[list[Any], list[int], list[Any] | None, list[int] | None]:
    rows = batch.rows if with_rows else []
    ts, keys, offs = batch.ts, batch.keys, batch.offsets
    if not failed:
        return rows, ts, keys, offs
    bad = set(failed)
    keep = [i not in bad for i in range(len(ts))]
    return (
        list(compress(rows, keep)) if with_rows else [],
        list(compress(ts, keep)),
        None if keys is None else list(compress(keys, keep)),
        None if offs is None else list(compress(offs, keep)),
    )


def _set_fields(exprs: dict[str, Fn]) -> Fn:
    items = list(exprs.items())
    if len(items) == 1:  # the common case, without the loop
        ((name, f),) = items

        def set_one(record: Any) -> dict[str, Any]:
            if type(record) is dict:
                return {**record, name: f(record)}
            out = dict(record_fields(record))
            out[name] = f(record)
            return out

        return set_one

    def setter(record: Any) -> dict[str, Any]:
        out = dict(record_fields(record))
        for name, f in items:
            out[name] = f(record)
        return out

    return setter


def _lazy(build: Callable[[], Vector]) -> Vector:
    """Return a vectorized stage that builds its polars expressions on first use.

    Row-only pipelines never call it, so they never import polars (about 0.15 s
    of start-up).
    """
    built: list[Vector] = []

    def run(df: pl.DataFrame) -> pl.DataFrame:
        if not built:
            built.append(build())
        return built[0](df)

    return run


def make_stage(
    step: Step,
    record_type: type | None,
    boundary: ErrorBoundary,
    metrics: StepMetrics,
) -> Stage:
    """Compile a stateless step spec into a :class:`Stage`."""
    if isinstance(step, MapStep):
        if step.fn is not None:
            return Stage(step.name, "map", step.fn, None, boundary, metrics)
        py = {k: e.to_python(record_type) for k, e in step.exprs.items()}
        exprs = step.exprs

        def set_cols() -> Vector:
            pol = {k: e.to_polars() for k, e in exprs.items()}
            return lambda df: df.with_columns(**pol)

        return Stage(step.name, "map", _set_fields(py), _lazy(set_cols), boundary, metrics)
    if isinstance(step, FilterStep):
        pred = step.predicate
        if isinstance(pred, Expr):
            expr = pred

            def keep() -> Vector:
                pe = expr.to_polars()
                return lambda df: df.filter(pe)

            fn = pred.to_python(record_type)
            return Stage(step.name, "filter", fn, _lazy(keep), boundary, metrics)
        return Stage(step.name, "filter", pred, None, boundary, metrics)
    if isinstance(step, FlatMapStep):
        return Stage(step.name, "flat_map", step.fn, None, boundary, metrics)
    if isinstance(step, KeyByStep):
        key = step.key
        if isinstance(key, str):
            key = Expr("col", key)
        if isinstance(key, Expr):
            by = key

            def add_key() -> Vector:
                ke = by.to_polars().alias(KEY_COL)
                return lambda df: df.with_columns(ke)

            fn = key.to_python(record_type)
            return Stage(step.name, "key_by", fn, _lazy(add_key), boundary, metrics)
        return Stage(step.name, "key_by", key, None, boundary, metrics)
    raise AssertionError(f"{step.kind} is not a stateless step")


def field_fn(source: str | Expr | Fn, record_type: type | None) -> Fn:
    """Return a per-record function for a field name, expression or function."""
    if isinstance(source, str):
        return field_getter(source, record_type)
    if isinstance(source, Expr):
        return source.to_python(record_type)
    return source


class FusedChain(Operator):
    """Runs a chain of stateless stages over each batch, as one operator."""

    def __init__(self, name: str, metrics: StepMetrics, stages: Iterable[Stage]) -> None:
        super().__init__(name, metrics)
        self.stages = list(stages)
        # The last stage counts the chain's records out.
        self.out = Output(name, metrics, counted_by_owner=True)

    def receive(self, batch: Batch, port: int) -> None:
        """Run the stages (each stage counts its own records, so the chain counts nothing)."""
        self.on_batch(batch, port)

    def on_batch(self, batch: Batch, port: int) -> None:
        """Run every stage in order; emit what is left."""
        for stage in self.stages:
            batch = stage.apply(batch)
            if not len(batch):
                return
        self.out.emit(batch)
