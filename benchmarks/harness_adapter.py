"""eventspine's adapter for the shared anchor benchmark (``bench/adapters/common.py`` contract).

    python benchmarks/harness_adapter.py --workload w1|w2|w3|w4 [--input PATH[,PATH2]]
        --output OUT [--source file|memory] [--workers N] [--variant NAME]

Prints one JSON line (the last line of stdout) and writes the workload's
canonical CSV columns to ``OUT``. The bench folder (for ``common.py`` and
``datagen.py``) is ``$EVENTSPINE_BENCH_DIR``, else the current directory when it
holds ``adapters/common.py`` (``run_anchors.py`` runs adapters with its own
folder as cwd), else ``benchmarks/.work/bench`` beside this file.

Workloads use the public API only:

* W1: ``JsonLinesSource`` -> ``filter(value > 0.5)`` -> ``map(value = value * 2)``
  -> a sink that counts and sums every record it receives.
* W2: ``key_by("key")`` -> ``window(Tumbling(1 s))`` -> ``aggregate(count, sum, mean)``.
* W3: the same with ``Hopping(size=10 s, hop=1 s)``.
* W4: ``orders.interval_join(payments, within=5 s)``; the sink writes
  ``key, order_ts, payment_ts``.

Every source uses ``EventTime("ts", max_delay=1 s)``. Variants: ``""`` or
``throughput`` (the default here: a 200 ms latency budget per micro-batch, so
batches grow to amortize the per-batch cost of the vectorized steps on a
replay) and ``latency`` (the runtime's defaults: a 20 ms budget). The variant
used is echoed in the JSON line.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))


def _bench_dir() -> str:
    env = os.environ.get("EVENTSPINE_BENCH_DIR")
    if env:
        return env
    if os.path.exists(os.path.join(os.getcwd(), "adapters", "common.py")):
        return os.getcwd()
    return os.path.join(HERE, ".work", "bench")


sys.path.insert(0, os.path.join(_bench_dir(), "adapters"))
import common  # noqa: E402

import eventspine as es  # noqa: E402
from eventspine.runtime.executor import RunOptions, run  # noqa: E402

try:
    from eventspine import CsvSink, JsonLinesSource  # type: ignore[attr-defined]
except ImportError:  # not re-exported yet
    from eventspine.connectors.files import CsvSink, JsonLinesSource

DELAY = timedelta(seconds=1)


class SumSink:
    """Counts and sums field ``value`` of every record written (W1's honest total)."""

    columnar = True

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0

    def open(self, context: Any) -> SumSink:
        return self

    def write(self, batch: Any) -> None:
        if batch.is_columnar:
            col = batch.frame.get_column("value")
            self.count += col.len()
            self.total += float(col.sum())
        else:
            self.count += len(batch)
            self.total += sum(r["value"] for r in batch.rows)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class PairsSink:
    """Writes ``key,order_ts,payment_ts`` for each joined pair (from frames or rows)."""

    columnar = True

    def __init__(self, path: str) -> None:
        self.path = path
        self.n = 0

    def open(self, context: Any) -> PairsSink:
        self._f = open(self.path, "w")  # noqa: SIM115  (closed in close())
        self._f.write("key,order_ts,payment_ts\n")
        return self

    def write(self, batch: Any) -> None:
        import polars as pl

        self.n += len(batch)
        if batch.is_columnar:
            batch.frame.select(
                pl.col("key"),
                pl.col("left").struct.field("ts").alias("order_ts"),
                pl.col("right").struct.field("ts").alias("payment_ts"),
            ).write_csv(self._f, include_header=False)
        else:
            self._f.writelines(
                f"{r['key']},{r['left']['ts']},{r['right']['ts']}\n" for r in batch.rows
            )

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def _source(a: Any, stream: str, path: str | None, events: dict[str, list[Any]] | None) -> Any:
    if a.source == "memory":
        assert events is not None
        return es.MemorySource(events[stream])
    return JsonLinesSource(path)


def build(a: Any, events: dict[str, list[Any]] | None) -> tuple[es.Pipeline, Any]:
    """Return the workload's pipeline and the sink holding its result."""
    p = es.Pipeline("bench_" + a.workload)
    et = es.EventTime("ts", max_delay=DELAY)
    paths = common.inputs(a)
    if a.workload == "w1":
        sink = SumSink()
        (
            p.source("events", _source(a, "events", paths[0], events), timestamps=et)
            .filter("keep", es.col("value") > 0.5)
            .map("double", value=es.col("value") * 2)
            .sink("total", sink)
        )
        return p, sink
    if a.workload in ("w2", "w3"):
        kind = (
            es.Tumbling(timedelta(seconds=1))
            if a.workload == "w2"
            else es.Hopping(timedelta(seconds=10), timedelta(seconds=1))
        )
        out = CsvSink(a.output, columns=common.OUTPUT_COLUMNS[a.workload])
        (
            p.source("events", _source(a, "events", paths[0], events), timestamps=et)
            .key_by("by_key", "key")
            .window(kind)
            .aggregate("agg", count=es.count(), sum=es.sum("value"), mean=es.mean("value"))
            .map("columns", window_start=es.col("window_start_ms"))
            .sink("out", out)
        )
        return p, out
    orders = p.source("orders", _source(a, "orders", paths[0], events), timestamps=et)
    pays = p.source(
        "payments",
        _source(a, "payments", paths[-1], events),
        timestamps=es.EventTime("ts", max_delay=DELAY),
    )
    pairs = PairsSink(a.output)
    (
        orders.key_by("order_key", "key")
        .interval_join("j", pays.key_by("payment_key", "key"), within=timedelta(seconds=5))
        .sink("out", pairs)
    )
    return p, pairs


def options(variant: str) -> RunOptions:
    """The run options of a variant (see the module doc)."""
    if variant == "latency":
        return RunOptions(handle_signals=False)
    return RunOptions(latency_budget=timedelta(milliseconds=200), handle_signals=False)


def main() -> None:
    a = common.parse_args()
    events = common.memory_streams(a.workload) if a.source == "memory" else None
    with common.Timer() as t:
        pipeline, sink = build(a, events)
        run(pipeline, options=options(a.variant))
        if a.workload == "w1":
            common.write_w1(a.output, sink.count, sink.total)
    outputs = sink.count if a.workload == "w1" else getattr(sink, "n", None)
    variant = a.variant or "throughput"
    common.emit(
        a, "eventspine", "eventspine " + es.__version__, t.s, outputs=outputs, variant=variant
    )


if __name__ == "__main__":
    main()
