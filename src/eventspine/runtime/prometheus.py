"""Prometheus export of a pipeline's metrics, read from its :class:`Inspector` on each scrape.

The collector holds no copies: every scrape reads the live step metrics, so
the numbers are as fresh as the scrape. ``prometheus_client`` is imported
inside the functions only, so ``import eventspine`` stays light.

Metrics (labels ``pipeline`` and ``step``)::

    eventspine_records_in_total        counter    records that entered the step
    eventspine_records_out_total       counter    records the step emitted on its main output
    eventspine_skipped_total           counter    records dropped by an es.Skip() policy
    eventspine_dead_letters_total      counter    records set aside by an es.DeadLetter() policy
    eventspine_late_records_total      counter    records that arrived after their windows closed
    eventspine_batches_total           counter    micro-batches processed
    eventspine_watermark_ms            gauge      the step's watermark (epoch ms; absent if none)
    eventspine_watermark_lag_seconds   gauge      wall clock now minus the watermark
    eventspine_state_keys              gauge      keys held in the step's state
    eventspine_batch_latency_seconds   histogram  processing time of one batch
    eventspine_batch_size              histogram  records per batch
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from eventspine.runtime.metrics import Histogram, Inspector, StepMetrics
from eventspine.timeutil import MAX_TS_MS, MIN_TS_MS

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

__all__ = ["InspectorCollector", "MetricsServer", "serve_metrics"]

_LABELS = ["pipeline", "step"]

_COUNTERS: tuple[tuple[str, str, Callable[[StepMetrics], int]], ...] = (
    ("eventspine_records_in", "Records that entered the step.", lambda m: m.records_in),
    ("eventspine_records_out", "Records emitted on the main output.", lambda m: m.records_out),
    ("eventspine_skipped", "Records dropped by an es.Skip() policy.", lambda m: m.skipped),
    ("eventspine_dead_letters", "Records dead-lettered.", lambda m: m.dead_lettered),
    ("eventspine_late_records", "Records after their windows closed.", lambda m: m.late),
    ("eventspine_batches", "Micro-batches processed by the step.", lambda m: m.batches),
)


class InspectorCollector:
    """A Prometheus collector (``collect()`` protocol) over one pipeline's :class:`Inspector`.

    Args:
        inspector: the pipeline's metrics view.
        now: wall-clock seconds (for the watermark lag); ``time.time`` by default.
    """

    def __init__(self, inspector: Inspector, now: Callable[[], float] = time.time) -> None:
        self.inspector = inspector
        self._now = now

    def collect(self) -> Iterator[Any]:
        """Yield one metric family per exported metric (called by the registry on each scrape)."""
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        insp = self.inspector
        steps = [(name, insp.metrics(name)) for name in insp.step_names]
        pipeline = insp.pipeline
        for metric, doc, get in _COUNTERS:
            fam = CounterMetricFamily(metric, doc, labels=_LABELS)
            for name, m in steps:
                fam.add_metric([pipeline, name], get(m))
            yield fam

        wm = GaugeMetricFamily(
            "eventspine_watermark_ms", "The step's event-time watermark (epoch ms).", labels=_LABELS
        )
        lag = GaugeMetricFamily(
            "eventspine_watermark_lag_seconds",
            "Wall clock now minus the step's watermark.",
            labels=_LABELS,
        )
        now_s = self._now()
        for name, m in steps:
            w = m.watermark_ms
            if w in (MIN_TS_MS, MAX_TS_MS):
                continue  # no watermark yet, or input ended: nothing meaningful to export
            wm.add_metric([pipeline, name], w)
            lag.add_metric([pipeline, name], now_s - w / 1000)
        yield wm
        yield lag

        keys = GaugeMetricFamily(
            "eventspine_state_keys", "Keys held in the step's state.", labels=_LABELS
        )
        for name, m in steps:
            keys.add_metric([pipeline, name], m.state_keys)
        yield keys

        lat = HistogramMetricFamily(
            "eventspine_batch_latency_seconds",
            "Processing time of one micro-batch.",
            labels=_LABELS,
        )
        size = HistogramMetricFamily(
            "eventspine_batch_size", "Records per micro-batch.", labels=_LABELS
        )
        for name, m in steps:
            buckets, total = _cumulative(m.latency)
            lat.add_metric([pipeline, name], buckets, total)
            buckets, total = _cumulative(m.batch_sizes)
            size.add_metric([pipeline, name], buckets, total)
        yield lat
        yield size


def _cumulative(h: Histogram) -> tuple[list[tuple[str, float]], float]:
    """Prometheus buckets ``[(le, cumulative count)..., ("+Inf", count)]`` and the sum."""
    counts = list(h.counts)  # a copy: the runtime may observe while we read
    out: list[tuple[str, float]] = []
    seen = 0
    for bound, c in zip(h.bounds, counts, strict=False):
        seen += c
        out.append((repr(float(bound)), seen))
    out.append(("+Inf", sum(counts)))
    return out, h.sum


class MetricsServer:
    """A running HTTP metrics endpoint; :meth:`close` stops it.

    Attributes:
        port: the port it listens on; ``url``: the address to scrape.
    """

    def __init__(self, server: Any, thread: Any, host: str, port: int) -> None:
        self._server = server
        self._thread = thread
        self.port = port
        self.url = f"http://{host}:{port}/metrics"

    def close(self) -> None:
        """Stop serving and release the port (idempotent)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None


def serve_metrics(inspector: Inspector, port: int, host: str = "127.0.0.1") -> MetricsServer:
    """Serve ``inspector``'s metrics at ``http://host:port/metrics`` from a daemon thread.

    Only this pipeline's metrics are served (a private registry, not the global one).

    Raises:
        OSError: the port cannot be bound (e.g. it is in use).
    """
    from prometheus_client import start_http_server
    from prometheus_client.registry import CollectorRegistry

    registry: CollectorRegistry = CollectorRegistry(auto_describe=False)
    registry.register(InspectorCollector(inspector))
    server, thread = start_http_server(port, addr=host, registry=registry)
    return MetricsServer(server, thread, host, server.server_address[1])
