"""Per-step metrics: counters, batch sizes, latency histograms, watermarks.

Counters are plain attributes updated once per batch (never per record), so
they cost nothing measurable on the hot path. The :class:`Inspector` is the
read-only view the CLI progress line, the Prometheus endpoint and tests use.

A worker running several tasks (see :mod:`eventspine.runtime.worker`) gives
each task its own step metrics (:class:`TaskMetrics`), so that one task's
gauges never overwrite another's; the inspector reads them merged: counters
and histograms summed (tasks that moved away included), ``state_keys`` summed
over the live tasks, the watermark the smallest over the live tasks that have
one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, final

from eventspine.timeutil import MAX_TS_MS, MIN_TS_MS

if TYPE_CHECKING:
    from eventspine.runtime.worker_metrics import WorkerMetrics

__all__ = ["Histogram", "Inspector", "StepMetrics", "StepSnapshot", "TaskMetrics"]

# Bucket upper bounds in seconds for latency histograms (Prometheus-style, cumulative).
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
SIZE_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144)


@final
class Histogram:
    """A fixed-bucket histogram (cumulative export, like Prometheus)."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Add one observation."""
        i = 0
        bounds = self.bounds
        n = len(bounds)
        while i < n and value > bounds[i]:
            i += 1
        self.counts[i] += 1
        self.count += 1
        self.sum += value

    def quantile(self, q: float) -> float:
        """Return an upper bound of quantile ``q`` (the bucket bound it falls in)."""
        if not self.count:
            return 0.0
        target = q * self.count
        seen = 0
        for i, c in enumerate(self.counts):
            seen += c
            if seen >= target:
                return self.bounds[i] if i < len(self.bounds) else float("inf")
        return float("inf")

    def add(self, other: Histogram) -> None:
        """Add ``other``'s observations (same bounds) to this histogram."""
        for i, c in enumerate(list(other.counts)):
            self.counts[i] += c
        self.count += other.count
        self.sum += other.sum


@final
class StepMetrics:
    """The live metrics of one step (updated by the runtime)."""

    __slots__ = (
        "batch_sizes",
        "batches",
        "dead_lettered",
        "kind",
        "late",
        "latency",
        "name",
        "records_in",
        "records_out",
        "side_out",
        "skipped",
        "state_keys",
        "watermark_ms",
    )

    def __init__(self, name: str, kind: str) -> None:
        self.name = name
        self.kind = kind
        self.records_in = 0
        self.records_out = 0
        self.batches = 0
        self.skipped = 0
        self.dead_lettered = 0
        self.late = 0
        self.state_keys = 0
        self.watermark_ms = MIN_TS_MS
        self.side_out: dict[str, int] = {}
        self.batch_sizes = Histogram(SIZE_BUCKETS)
        self.latency = Histogram(LATENCY_BUCKETS)

    @staticmethod
    def timer() -> float:
        """Return a start time for :meth:`observe_latency`."""
        return time.perf_counter()

    def observe_latency(self, t0: float) -> None:
        """Record the processing time of one batch that started at ``t0``."""
        self.latency.observe(time.perf_counter() - t0)

    def count_side(self, port: str, n: int) -> None:
        """Count records sent to side output ``port``."""
        self.side_out[port] = self.side_out.get(port, 0) + n

    def add_counts(self, other: StepMetrics) -> None:
        """Add ``other``'s counters and histograms to this one's (not the gauges)."""
        self.records_in += other.records_in
        self.records_out += other.records_out
        self.batches += other.batches
        self.skipped += other.skipped
        self.dead_lettered += other.dead_lettered
        self.late += other.late
        for port, n in list(other.side_out.items()):
            self.count_side(port, n)
        self.batch_sizes.add(other.batch_sizes)
        self.latency.add(other.latency)


@final
class TaskMetrics:
    """The step metrics of the tasks one worker runs, read as one (see the module doc).

    The worker calls :meth:`attach` when it builds a task (the task's operators then
    write their own metrics) and :meth:`detach` when it drops it; the inspector reads
    :meth:`merged` from other threads (the Prometheus endpoint, the progress line).

    Args:
        kinds: the kind of every step, by step name, in pipeline order.
    """

    def __init__(self, kinds: Mapping[str, str]) -> None:
        self.kinds = dict(kinds)
        # The counters of tasks dropped earlier, so that totals never go back.
        self._retired = {n: StepMetrics(n, k) for n, k in self.kinds.items()}
        self._tasks: dict[int, dict[str, StepMetrics]] = {}
        self._lock = threading.Lock()

    def attach(self, task: int) -> dict[str, StepMetrics]:
        """Return fresh step metrics for ``task`` and count them from now on."""
        steps = {n: StepMetrics(n, k) for n, k in self.kinds.items()}
        with self._lock:
            old = self._tasks.pop(task, None)  # a start that failed, never detached
            if old is not None:
                self._retire(old)
            self._tasks[task] = steps
        return steps

    def detach(self, task: int) -> None:
        """Stop counting ``task`` live: keep its counters, forget its gauges (idempotent)."""
        with self._lock:
            steps = self._tasks.pop(task, None)
            if steps is not None:
                self._retire(steps)

    def _retire(self, steps: Mapping[str, StepMetrics]) -> None:
        for name, m in steps.items():
            self._retired[name].add_counts(m)

    @property
    def tasks(self) -> list[int]:
        """The tasks counted live."""
        with self._lock:
            return sorted(self._tasks)

    def merged(self, step: str) -> StepMetrics:
        """A new :class:`StepMetrics` of ``step`` over every task (see the module doc)."""
        with self._lock:
            out = StepMetrics(step, self.kinds[step])
            out.add_counts(self._retired[step])
            live = [steps[step] for steps in self._tasks.values()]
            for m in live:
                out.add_counts(m)
        out.state_keys = sum(m.state_keys for m in live)
        out.watermark_ms = min_watermark(m.watermark_ms for m in live)
        return out


def min_watermark(marks: Iterable[int]) -> int:
    """The smallest watermark of those that exist (``MIN_TS_MS``: none exists).

    A task without a watermark yet (its partitions had no data) does not hold the
    others back; ``MAX_TS_MS`` (input ended) only if every task's input ended.
    """
    known = [w for w in marks if w != MIN_TS_MS]
    return min(known) if known else MIN_TS_MS


@dataclass(frozen=True)
class StepSnapshot:
    """A copy of one step's metrics at one moment."""

    name: str
    kind: str
    records_in: int
    records_out: int
    batches: int
    skipped: int
    dead_lettered: int
    late: int
    state_keys: int
    watermark_ms: int | None
    side_out: Mapping[str, int]
    latency_p50_s: float
    latency_p99_s: float


@final
class Inspector:
    """A read-only view of a running (or finished) pipeline's metrics.

    Args:
        pipeline: the pipeline name.
        steps: the live metrics of every step (a single-process run).
        tasks: instead, the per-task metrics of a worker (read merged).
        worker: the worker-level metrics (tasks, rebalances, restores, checkpoints,
            consumer lag) of a partitioned run; ``None`` otherwise.
    """

    def __init__(
        self,
        pipeline: str,
        steps: Mapping[str, StepMetrics] | None = None,
        *,
        tasks: TaskMetrics | None = None,
        worker: WorkerMetrics | None = None,
    ) -> None:
        self.pipeline = pipeline
        self._steps = dict(steps or {})
        self._tasks = tasks
        self.worker = worker
        self.started_monotonic = time.monotonic()
        self.finished = False
        self.checkpoints = 0

    @property
    def step_names(self) -> list[str]:
        """The step names in pipeline order."""
        return list(self._tasks.kinds if self._tasks is not None else self._steps)

    def metrics(self, step: str) -> StepMetrics:
        """The metrics of ``step``: the live object, or a merged copy over a worker's tasks.

        Read it, do not write it; call again for fresh values.
        """
        if self._tasks is not None:
            return self._tasks.merged(step)
        return self._steps[step]

    def snapshot(self) -> dict[str, StepSnapshot]:
        """Return a consistent copy of every step's metrics."""
        out: dict[str, StepSnapshot] = {}
        for name in self.step_names:
            m = self.metrics(name)
            wm = m.watermark_ms
            out[name] = StepSnapshot(
                name,
                m.kind,
                m.records_in,
                m.records_out,
                m.batches,
                m.skipped,
                m.dead_lettered,
                m.late,
                m.state_keys,
                None if wm in (MIN_TS_MS, MAX_TS_MS) else wm,
                dict(m.side_out),
                m.latency.quantile(0.5),
                m.latency.quantile(0.99),
            )
        return out

    def totals(self) -> dict[str, Any]:
        """Return run-wide totals: records read, written, skipped, dead-lettered, late."""
        snap = self.snapshot()
        return {
            "read": sum(s.records_out for s in snap.values() if s.kind == "source"),
            "written": sum(s.records_in for s in snap.values() if s.kind == "sink"),
            "skipped": sum(s.skipped for s in snap.values()),
            "dead_lettered": sum(s.dead_lettered for s in snap.values()),
            "late": sum(s.late for s in snap.values()),
            "elapsed_s": time.monotonic() - self.started_monotonic,
        }
