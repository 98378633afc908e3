"""End-to-end latency of a W1-shaped pipeline under an open-loop offered load.

    .venv/bin/python benchmarks/latency.py [--rate 50000] [--seconds 20] [--json OUT]

An in-process generator source offers ``--rate`` events/s on a fixed schedule:
event ``i`` is due at ``t0 + i / rate``. Each poll returns every event whose
time has come (all of them when the pipeline fell behind), and every event
carries its *scheduled* time, so a stall shows up as latency of every event
queued behind it (coordinated-omission safe: the generator never waits for the
pipeline). The pipeline is W1's: ``filter(value > 0.5)`` -> ``map(value * 2)``
-> a sink that records ``now - scheduled`` of every record it receives into an
HDR histogram (1 us .. 60 s, 3 significant digits). Events scheduled in the
first ``--warmup`` seconds (default 1 s: imports, first allocations) are not
recorded; polars is imported before the clock starts. Reported: p50, p99,
p99.9, max (ms), offered and achieved rates. Target: p99 <= 10 ms at 50,000
events/s. The run uses the runtime's default options (20 ms latency budget).
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import timedelta
from typing import Any

import numpy as np
import polars as pl
from hdrh.histogram import HdrHistogram

import eventspine as es
from eventspine.dataflow.ports import Chunk, OpenContext
from eventspine.runtime.executor import RunOptions, run

T_EPOCH_MS = 1_700_000_000_000


class ScheduledSource:
    """Offers ``rate`` events/s for ``seconds``, each stamped with its scheduled time."""

    record_type = dict
    bounded = True

    def __init__(self, rate: int, seconds: float, seed: int = 7) -> None:
        self.rate = rate
        self.total = int(rate * seconds)
        self.seed = seed

    def open(self, context: OpenContext) -> list[_Reader]:
        return [_Reader(context.step + "/0", self)]


class _Reader:
    def __init__(self, partition: str, src: ScheduledSource) -> None:
        self.partition = partition
        self._src = src
        self._rng = np.random.default_rng(src.seed)
        self._next = 0
        self._t0_ns: int | None = None

    def poll(self, max_records: int, columnar: bool) -> Chunk | None:
        src = self._src
        now = time.perf_counter_ns()
        if self._t0_ns is None:
            self._t0_ns = now
        if self._next >= src.total:
            return None
        due = min(src.total, (now - self._t0_ns) * src.rate // 1_000_000_000 + 1)
        n = min(due - self._next, max_records)
        first = self._next
        if n <= 0:
            return Chunk([], first, first)
        idx = np.arange(first, first + n, dtype=np.int64)
        sched_ns = self._t0_ns + idx * 1_000_000_000 // src.rate
        cols = {
            "key": (idx % 10_000).astype(str).tolist() if not columnar else None,
            "ts": T_EPOCH_MS + (sched_ns - self._t0_ns) // 1_000_000,
            "value": self._rng.random(n),
            "sched_ns": sched_ns,
        }
        self._next += n
        if columnar:
            frame = pl.DataFrame(
                {
                    "key": idx % 10_000,
                    "ts": cols["ts"],
                    "value": cols["value"],
                    "sched_ns": sched_ns,
                }
            )
            return Chunk(frame, first, first + n)
        rows = [
            {"key": k, "ts": int(t), "value": float(v), "sched_ns": int(s)}
            for k, t, v, s in zip(cols["key"], cols["ts"], cols["value"], sched_ns, strict=True)
        ]
        return Chunk(rows, first, first + n)

    def seek(self, offset: int) -> None:
        self._next = offset

    def close(self) -> None:
        pass


class LatencySink:
    """Records ``now - scheduled`` of every record it is given (microseconds)."""

    columnar = True

    def __init__(self, warmup_s: float) -> None:
        self.warmup_ns = int(warmup_s * 1e9)
        self.start_ns: int | None = None
        self.hist = HdrHistogram(1, 60_000_000, 3)
        self.count = 0
        self.first_ns: int | None = None
        self.last_ns = 0

    def open(self, context: OpenContext) -> LatencySink:
        return self

    def write(self, batch: Any) -> None:
        now = time.perf_counter_ns()
        if batch.is_columnar:
            sched = batch.frame.get_column("sched_ns").to_numpy()
        else:
            sched = np.fromiter((r["sched_ns"] for r in batch.rows), dtype=np.int64)
        if self.start_ns is None:
            self.start_ns = int(sched.min()) if len(sched) else now
        sched = sched[sched >= self.start_ns + self.warmup_ns]
        lat_us = np.maximum((now - sched) // 1000, 1)
        values, counts = np.unique(lat_us, return_counts=True)
        for v, c in zip(values.tolist(), counts.tolist(), strict=True):
            self.hist.record_value(v, c)
        self.count += len(sched)
        self.first_ns = self.first_ns or now
        self.last_ns = now

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def measure(rate: int, seconds: float, warmup_s: float = 1.0) -> dict[str, Any]:
    """Run the pipeline once and return the latency report."""
    sink = LatencySink(warmup_s)
    src = ScheduledSource(rate, seconds)
    p = es.Pipeline("latency")
    (
        p.source("gen", src, timestamps=es.EventTime("ts", max_delay=timedelta(seconds=1)))
        .filter("keep", es.col("value") > 0.5)
        .map("double", value=es.col("value") * 2)
        .sink("lat", sink)
    )
    t0 = time.perf_counter()
    run(p, options=RunOptions(handle_signals=False))
    elapsed = time.perf_counter() - t0
    h = sink.hist
    return {
        "offered_rate": rate,
        "offered_events": src.total,
        "achieved_rate": round(src.total / elapsed, 1),
        "elapsed_s": round(elapsed, 3),
        "records_measured": sink.count,
        "warmup_s": warmup_s,
        "p50_ms": h.get_value_at_percentile(50) / 1000,
        "p99_ms": h.get_value_at_percentile(99) / 1000,
        "p99_9_ms": h.get_value_at_percentile(99.9) / 1000,
        "max_ms": h.get_max_value() / 1000,
    }


def main() -> None:
    """Parse arguments, measure, print one JSON object (and write it with ``--json``)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rate", type=int, default=50_000)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    report = measure(a.rate, a.seconds, a.warmup)
    print(json.dumps(report))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
