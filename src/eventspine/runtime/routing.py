"""Operators that route records without keeping window state: split, union, enrich, sink."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from eventspine.dataflow.expr import Expr
from eventspine.dataflow.ports import SinkWriter
from eventspine.dataflow.steps import EnrichStep, SplitStep
from eventspine.records import Batch, record_fields
from eventspine.runtime.operator import ErrorBoundary, Operator
from eventspine.runtime.stateless import field_fn

if TYPE_CHECKING:
    from eventspine.runtime.metrics import StepMetrics
    from eventspine.timeutil import Clock

__all__ = ["EnrichOperator", "SinkOperator", "SplitOperator"]


class SplitOperator(Operator):
    """Sends each record to the first branch whose predicate holds, else to ``default``."""

    def __init__(
        self,
        step: SplitStep,
        metrics: StepMetrics,
        boundary: ErrorBoundary,
        record_type: type | None,
    ) -> None:
        super().__init__(step.name, metrics)
        self.boundary = boundary
        self.branches: list[tuple[str, Callable[[Any], Any]]] = [
            (b, p.to_python(record_type) if isinstance(p, Expr) else p)
            for b, p in step.branches.items()
        ]

    def on_batch(self, batch: Batch, port: int) -> None:
        """Partition the batch by branch and emit each part to its side output."""
        rows = batch.rows
        names = [b for b, _ in self.branches] + ["default"]
        parts: dict[str, list[int]] = {b: [] for b in names}
        for i, r in enumerate(rows):
            try:
                target = "default"
                for b, pred in self.branches:
                    if pred(r):
                        target = b
                        break
            except Exception as exc:
                self.boundary.user_error(exc, batch, i)
                continue
            parts[target].append(i)
        for b, idx in parts.items():
            if idx:
                self.out.emit_side(b, batch.take(idx))


class EnrichOperator(Operator):
    """Calls a lookup function per record with a TTL cache keyed by the lookup key.

    The cache is bounded (least recently used entries are evicted first) and
    its TTL is measured on the monotonic clock, so wall-clock jumps do not
    expire or keep entries wrongly.
    """

    def __init__(
        self,
        step: EnrichStep,
        metrics: StepMetrics,
        boundary: ErrorBoundary,
        record_type: type | None,
        clock: Clock,
    ) -> None:
        super().__init__(step.name, metrics)
        self.step = step
        self.boundary = boundary
        self.key_fn = field_fn(step.key, record_type)
        self.clock = clock
        self.cache: OrderedDict[Any, tuple[float, Any]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def _lookup(self, key: Any) -> Any:
        now = self.clock.monotonic()
        hit = self.cache.get(key)
        ttl_s = self.step.ttl_ms / 1000
        if hit is not None and now - hit[0] < ttl_s:
            self.cache.move_to_end(key)
            self.hits += 1
            return hit[1]
        self.misses += 1
        value = self.step.lookup(key)
        self.cache[key] = (now, value)
        self.cache.move_to_end(key)
        while len(self.cache) > self.step.max_entries:
            self.cache.popitem(last=False)
        return value

    def on_batch(self, batch: Batch, port: int) -> None:
        """Enrich each record and emit the batch."""
        into = self.step.into
        out: list[Any] = []
        keep: list[int] = []
        for i, r in enumerate(batch.rows):
            try:
                value = self._lookup(self.key_fn(r))
                rec = dict(record_fields(r))
                if into is not None:
                    rec[into] = value
                elif value is not None:
                    rec.update(record_fields(value))
            except Exception as exc:
                self.boundary.user_error(exc, batch, i)
                continue
            out.append(rec)
            keep.append(i)
        ts, keys, offs = batch.ts, batch.keys, batch.offsets
        self.out.emit(
            batch.with_rows(
                out,
                [ts[i] for i in keep],
                None if keys is None else [keys[i] for i in keep],
                None if offs is None else [offs[i] for i in keep],
            )
        )


class SinkOperator(Operator):
    """Hands batches to a sink writer and flushes it on a wall-clock interval and at the end."""

    def __init__(self, name: str, metrics: StepMetrics, writer: SinkWriter, flush_s: float) -> None:
        super().__init__(name, metrics)
        self.writer = writer
        self.flush_s = flush_s
        self._last_flush = time.monotonic()
        self._dirty = False

    def on_batch(self, batch: Batch, port: int) -> None:
        """Write the batch."""
        self.writer.write(batch)
        self.metrics.records_out += len(batch)
        self._dirty = True

    def on_watermark(self, wm_ms: int) -> None:
        """Tell a writer that wants it (the repartition writer) how far event time is."""
        tell = getattr(self.writer, "on_watermark", None)
        if tell is not None:
            tell(wm_ms)

    def on_tick(self, now_ms: int) -> None:
        """Flush when the flush interval has passed."""
        if self._dirty and time.monotonic() - self._last_flush >= self.flush_s:
            self.flush()

    def flush(self) -> None:
        """Flush the writer now."""
        self.writer.flush()
        self._dirty = False
        self._last_flush = time.monotonic()

    def close(self) -> None:
        """Flush and close the writer."""
        self.writer.close()
