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

In a partitioned run a worker with several tasks sums the counters and
histograms over them (tasks that moved away included, so counters never go
back), reports ``eventspine_state_keys`` as the sum over its tasks and
``eventspine_watermark_ms`` as the smallest watermark of its tasks that have
one. Such a run also exports worker-level metrics (label ``pipeline``; ``event``
is ``assign``, ``revoke`` or ``lost``; the lag series have ``topic`` and
``partition``)::

    eventspine_tasks_owned                        gauge    tasks assigned to this worker
    eventspine_tasks_running                      gauge    tasks restored and running
    eventspine_rebalances_total                   counter  rebalances changing the tasks, by event
    eventspine_rebalance_tasks_total              counter  tasks assigned/revoked/lost, by event
    eventspine_last_rebalance_timestamp_seconds   gauge    unix time of the last such rebalance
    eventspine_restoring_tasks                    gauge    tasks restoring their state now
    eventspine_restores_total                     counter  task restores finished (or failed)
    eventspine_restore_records_total              counter  changelog records replayed
    eventspine_restore_remaining_records          gauge    changelog offsets still to replay
    eventspine_last_restore_duration_seconds      gauge    how long the last task restore took
    eventspine_checkpoints_total                  counter  checkpoints committed
    eventspine_checkpoint_failures_total          counter  checkpoints whose transaction failed
    eventspine_last_checkpoint_duration_seconds   gauge    how long the last checkpoint took
    eventspine_last_checkpoint_timestamp_seconds  gauge    unix time of the last checkpoint
    eventspine_checkpoint_age_seconds             gauge    seconds since the last checkpoint
    eventspine_consumer_lag_records               gauge    end offset minus position, per partition
    eventspine_consumer_position                  gauge    the task's next offset, per partition
    eventspine_log_end_offset                     gauge    the partition's end offset (Kafka: LSO)

The end offsets are refreshed by the worker at most every few seconds
(:data:`~eventspine.runtime.worker_metrics.LAG_REFRESH_S`), never by a scrape.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from eventspine.runtime.metrics import Histogram, Inspector, StepMetrics
from eventspine.runtime.worker_metrics import REBALANCE_EVENTS, WorkerMetrics
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
        if insp.worker is not None:
            yield from self._worker(insp.worker, pipeline)

    def _worker(self, worker: WorkerMetrics, pipeline: str) -> Iterator[Any]:
        """The worker-level families (see the module doc)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        snap = worker.snapshot()
        labels = ["pipeline"]

        def gauge(name: str, doc: str, value: float | None) -> GaugeMetricFamily:
            fam = GaugeMetricFamily(name, doc, labels=labels)
            if value is not None:
                fam.add_metric([pipeline], value)
            return fam

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            fam = CounterMetricFamily(name, doc, labels=labels)
            fam.add_metric([pipeline], value)
            return fam

        yield gauge("eventspine_tasks_owned", "Tasks assigned to this worker.", snap.tasks_owned)
        yield gauge(
            "eventspine_tasks_running", "Tasks restored and running here.", snap.tasks_running
        )
        for metric, doc, by_event in (
            (
                "eventspine_rebalances",
                "Rebalances that changed this worker's tasks.",
                snap.rebalances,
            ),
            ("eventspine_rebalance_tasks", "Tasks assigned, revoked or lost.", snap.task_moves),
        ):
            fam = CounterMetricFamily(metric, doc, labels=["pipeline", "event"])
            for event in REBALANCE_EVENTS:
                fam.add_metric([pipeline, event], by_event[event])
            yield fam
        yield gauge(
            "eventspine_last_rebalance_timestamp_seconds",
            "Unix time of the last rebalance that changed this worker's tasks.",
            snap.last_rebalance_s,
        )
        yield gauge(
            "eventspine_restoring_tasks", "Tasks restoring their state now.", snap.restoring
        )
        yield counter("eventspine_restores", "Task restores finished or failed.", snap.restores)
        yield counter(
            "eventspine_restore_records", "Changelog records replayed.", snap.restore_records
        )
        yield gauge(
            "eventspine_restore_remaining_records",
            "Changelog offsets the running restores still have to replay.",
            snap.restore_remaining,
        )
        yield gauge(
            "eventspine_last_restore_duration_seconds",
            "How long the last task restore took.",
            snap.last_restore_s,
        )
        yield counter("eventspine_checkpoints", "Checkpoints committed.", snap.checkpoints)
        yield counter(
            "eventspine_checkpoint_failures",
            "Checkpoints whose transaction failed (nothing of them committed).",
            snap.checkpoint_failures,
        )
        yield gauge(
            "eventspine_last_checkpoint_duration_seconds",
            "How long the last committed checkpoint took.",
            snap.last_checkpoint_s,
        )
        last = snap.last_checkpoint_time_s
        yield gauge(
            "eventspine_last_checkpoint_timestamp_seconds",
            "Unix time of the last committed checkpoint.",
            last,
        )
        yield gauge(
            "eventspine_checkpoint_age_seconds",
            "Seconds since the last committed checkpoint.",
            None if last is None else max(0.0, self._now() - last),
        )
        part = ["pipeline", "topic", "partition"]
        lag = GaugeMetricFamily(
            "eventspine_consumer_lag_records",
            "End offset of the source partition minus the task's position.",
            labels=part,
        )
        pos = GaugeMetricFamily(
            "eventspine_consumer_position", "The task's next offset to read.", labels=part
        )
        end = GaugeMetricFamily(
            "eventspine_log_end_offset",
            "The source partition's end offset (Kafka: last stable offset).",
            labels=part,
        )
        for p in worker.lag():
            values = [pipeline, p.topic, str(p.partition)]
            lag.add_metric(values, p.lag)
            pos.add_metric(values, p.position)
            end.add_metric(values, p.end)
        yield lag
        yield pos
        yield end


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
