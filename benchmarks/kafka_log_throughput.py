"""Append and read throughput of ``KafkaLog`` on a local Apache Kafka broker.

Run: ``.venv/bin/python benchmarks/kafka_log_throughput.py [--records N] [--batch N] [--runs N]``
(``--bootstrap host:port`` uses a running broker instead of starting one).

Starts a single-node broker with ``tools/kafka/kafkactl up`` (own directory
and ports, ``KAFKACTL_FAST_START=0``: the JIT at full optimization, as for
load tests) and stops it with ``kafkactl down`` at the end, also on errors.

Workload (seeded): N records with an 8-byte key, a 100-byte value and an
increasing ``ts_ms``, to one partition of a fresh topic per run:

* ``append``: ``log.append`` per batch (idempotent producer, ``acks=all``,
  one flush per call: each call returns only when its batch is acknowledged);
* ``txn append``: one ``log.transaction()`` per batch (produce, commit, wait
  until the last stable offset passed it: a checkpoint per batch);
* ``read``: ``log.read(max_records=batch)`` from offset 0 to the end, as a
  consumer does, on a fresh log (no client cache).

Reports the median of the runs as records per second of wall time and per
second of CPU time of this process (the broker's CPU is not counted; on the
shared 2-core machine the broker competes with the client). Writes
``benchmarks/results/kafka_log_throughput.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from eventspine.log import LogRecord, TopicSpec
from eventspine.log.kafka import KafkaLog

REPO = Path(__file__).resolve().parent.parent
KAFKACTL = REPO / "tools" / "kafka" / "kafkactl"
RESULTS = Path(__file__).parent / "results" / "kafka_log_throughput.json"


@contextmanager
def broker(bootstrap: str | None) -> Iterator[str]:
    """Yield a bootstrap address: the given one, or a broker started (and stopped) here."""
    if bootstrap:
        yield bootstrap
        return
    run_dir = tempfile.mkdtemp(prefix="eventspine-kafka-bench-")
    env = {
        **os.environ,
        "KAFKACTL_PYTHON": sys.executable,
        "KAFKACTL_PORT_BASE": "9592",
        "KAFKACTL_FAST_START": "0",
    }
    up = [str(KAFKACTL), "up", "--dir", run_dir, "--owner-pid", str(os.getpid())]
    started = time.perf_counter()
    proc = subprocess.run(up, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"kafkactl up failed:\n{proc.stderr}")
    print(f"broker up in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    try:
        yield proc.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run([str(KAFKACTL), "down", "--dir", run_dir], env=env, check=False)


def workload(n: int, seed: int = 7) -> list[LogRecord]:
    rng = random.Random(seed)
    return [
        LogRecord(rng.randbytes(8), rng.randbytes(100), 1_700_000_000_000 + i) for i in range(n)
    ]


def open_log(bootstrap: str) -> KafkaLog:
    return KafkaLog(
        bootstrap, transaction_timeout=timedelta(seconds=60), request_timeout=timedelta(seconds=30)
    )


def timed(fn: Callable[[], int]) -> tuple[float, float, int]:
    wall, cpu = time.perf_counter(), time.process_time()
    count = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, count


def one_run(bootstrap: str, records: list[LogRecord], batch: int) -> dict[str, tuple[float, float]]:
    batches = [records[i : i + batch] for i in range(0, len(records), batch)]
    topic, txn_topic = (f"bench-{uuid.uuid4().hex[:8]}-{k}" for k in ("plain", "txn"))
    results: dict[str, tuple[float, float]] = {}
    with open_log(bootstrap) as log:
        log.create_topic(TopicSpec(topic))
        log.create_topic(TopicSpec(txn_topic))
        log.append(topic, 0, records[:1])  # connect and warm up outside the timing
        with log.transaction() as txn:
            txn.append(txn_topic, 0, records[:1])

        def append() -> int:
            for b in batches:
                log.append(topic, 0, b)
            return len(records)

        def txn_append() -> int:
            for b in batches:
                with log.transaction() as txn:
                    txn.append(txn_topic, 0, b)
            return len(records)

        for name, fn in (("append", append), ("txn append", txn_append)):
            wall, cpu, count = timed(fn)
            results[name] = (count / wall, count / cpu)
    with open_log(bootstrap) as log:

        def read() -> int:
            offset, count = 0, 0
            end = log.topics()[topic].offsets[0].end
            while offset < end:
                got = log.read(topic, 0, offset, batch)
                count += len(got)
                offset = got[-1].offset + 1
            assert count == len(records) + 1, count
            return count

        wall, cpu, count = timed(read)
        results["read"] = (count / wall, count / cpu)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--bootstrap", help="use this broker instead of starting one")
    args = parser.parse_args()
    records = workload(args.records)
    with broker(args.bootstrap) as bootstrap:
        runs = [one_run(bootstrap, records, args.batch) for _ in range(args.runs)]
    summary = {
        name: {
            "records_per_s_wall": statistics.median(r[name][0] for r in runs),
            "records_per_s_cpu": statistics.median(r[name][1] for r in runs),
        }
        for name in runs[0]
    }
    print(f"KafkaLog, {args.records} records of 100 B, batches of {args.batch}, {args.runs} runs")
    print(f"{'operation':<12} {'records/s (wall)':>18} {'records/s (client CPU)':>24}")
    for name, row in summary.items():
        print(f"{name:<12} {row['records_per_s_wall']:>18,.0f} {row['records_per_s_cpu']:>24,.0f}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "records": args.records,
                "batch": args.batch,
                "value_bytes": 100,
                "runs": args.runs,
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "load_average_at_end": os.getloadavg(),
                "results": summary,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
