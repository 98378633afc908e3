"""Per-step metrics: counters, batch sizes, latency histograms, watermarks.

Counters are plain attributes updated once per batch (never per record), so
they cost nothing measurable on the hot path. The :class:`Inspector` is the
read-only view the CLI progress line, the Prometheus endpoint and tests use.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, final

from eventspine.timeutil import MAX_TS_MS, MIN_TS_MS

__all__ = ["Histogram", "Inspector", "StepMetrics", "StepSnapshot"]

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
    """A read-only view of a running (or finished) pipeline's metrics."""

    def __init__(self, pipeline: str, steps: Mapping[str, StepMetrics]) -> None:
        self.pipeline = pipeline
        self._steps = dict(steps)
        self.started_monotonic = time.monotonic()
        self.finished = False
        self.checkpoints = 0

    @property
    def step_names(self) -> list[str]:
        """The step names in pipeline order."""
        return list(self._steps)

    def metrics(self, step: str) -> StepMetrics:
        """The live metrics object of ``step`` (read it, do not write it)."""
        return self._steps[step]

    def snapshot(self) -> dict[str, StepSnapshot]:
        """Return a consistent copy of every step's metrics."""
        out: dict[str, StepSnapshot] = {}
        for name, m in self._steps.items():
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
