"""Append and read throughput of the log backends, against plain SQLite.

Run: ``.venv/bin/python benchmarks/log_throughput.py [--records N] [--batch N] [--runs N]``

Workload (seeded): N records with an 8-byte key, a 100-byte value and an
increasing ``ts_ms``, appended to one partition in batches (one ``append``
call, i.e. one committed transaction, per batch), then read back from
offset 0 with ``max_records`` = batch size until the end, as a consumer
does. The baseline is the plain ``sqlite3`` way of storing the same
records: one row per record, ``executemany`` per batch in one transaction,
and a ``SELECT`` over all rows (one tuple per record). Every SQLite run uses
a fresh file in WAL mode with ``synchronous=NORMAL``.

Reports the median of the runs, as records per second of wall time and per
second of CPU time of the process (all its threads, so SqliteLog's
checkpoint thread is counted): on a shared machine the CPU figure is the
steadier one. Writes ``benchmarks/results/log_throughput.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from eventspine.log import Log, LogRecord, MemoryLog, SqliteLog, TopicSpec

RESULTS = Path(__file__).parent / "results" / "log_throughput.json"


class Timer:
    """Wall time and CPU time (all threads of this process) of a block."""

    def __enter__(self) -> Timer:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


Timings = tuple[Timer, Timer]


def make_batches(records: int, batch: int, seed: int = 7) -> list[list[LogRecord]]:
    rng = random.Random(seed)
    values = [rng.randbytes(100) for _ in range(1024)]
    return [
        [
            LogRecord(b"key-%04d" % (i % 10_000), values[i % 1024], 1_700_000_000_000 + i)
            for i in range(start, min(start + batch, records))
        ]
        for start in range(0, records, batch)
    ]


def run_log(make: Callable[[Path], Log], batches: list[list[LogRecord]], where: Path) -> Timings:
    log = make(where)
    try:
        log.create_topic(TopicSpec("bench"))
        with Timer() as t_append:
            for records in batches:
                log.append("bench", 0, records)
        n = 0
        offset = 0
        with Timer() as t_read:
            while True:
                got = log.read("bench", 0, offset, len(batches[0]))
                if not got:
                    break
                n += len(got)
                offset = got[-1].offset + 1
        assert n == sum(map(len, batches)), n
    finally:
        log.close()
    return t_append, t_read


def run_plain_sqlite(batches: list[list[LogRecord]], where: Path) -> Timings:
    conn = sqlite3.connect(where / "plain.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(
        "CREATE TABLE records (partition INTEGER, offset INTEGER, key BLOB, value BLOB, "
        "ts_ms INTEGER, PRIMARY KEY (partition, offset))"
    )
    rows = []
    offset = 0
    for records in batches:
        rows.append([(0, offset + i, r.key, r.value, r.ts_ms) for i, r in enumerate(records)])
        offset += len(records)
    with Timer() as t_append:
        for chunk in rows:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT INTO records VALUES (?, ?, ?, ?, ?)", chunk)
            conn.execute("COMMIT")
    n = 0
    with Timer() as t_read:
        for _ in conn.execute(
            "SELECT offset, key, value, ts_ms FROM records WHERE partition = 0 ORDER BY offset"
        ):
            n += 1
    assert n == offset
    conn.close()
    return t_append, t_read


CASES: dict[str, Callable[[list[list[LogRecord]], Path], Timings]] = {
    "SqliteLog": lambda b, d: run_log(lambda d: SqliteLog(d / "log.db"), b, d),
    "MemoryLog": lambda b, d: run_log(lambda _d: MemoryLog(), b, d),
    "plain sqlite3 executemany": run_plain_sqlite,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="do not write the JSON file")
    args = parser.parse_args()
    batches = make_batches(args.records, args.batch)
    load_before = os.getloadavg()[0]
    print(
        f"{args.records:,} records, 100-byte values, batches of {args.batch}, median of {args.runs}"
    )
    print(f"load average before: {load_before:.2f} on {os.cpu_count()} CPUs")
    print("records/s per second of wall time and per second of process CPU time")
    print(f"{'backend':<28}{'append wall':>14}{'append cpu':>14}{'read wall':>14}{'read cpu':>14}")
    results = {}
    for name, runner in CASES.items():
        runs: dict[str, list[float]] = {
            k: [] for k in ("append_wall", "append_cpu", "read_wall", "read_cpu")
        }
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory() as tmp:
                t_append, t_read = runner(batches, Path(tmp))
            runs["append_wall"].append(args.records / t_append.wall)
            runs["append_cpu"].append(args.records / t_append.cpu)
            runs["read_wall"].append(args.records / t_read.wall)
            runs["read_cpu"].append(args.records / t_read.cpu)
        medians = {k: statistics.median(v) for k, v in runs.items()}
        results[name] = {
            **{f"{k}_records_per_s": round(v) for k, v in medians.items()},
            "runs": {k: [round(x) for x in v] for k, v in runs.items()},
        }
        print(
            f"{name:<28}{medians['append_wall']:>14,.0f}{medians['append_cpu']:>14,.0f}"
            f"{medians['read_wall']:>14,.0f}{medians['read_cpu']:>14,.0f}"
        )
    load_after = os.getloadavg()[0]
    print(f"load average after: {load_after:.2f}")
    if args.no_write:
        return
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "log_throughput",
        "command": " ".join(["python", "benchmarks/log_throughput.py", *sys.argv[1:]]),
        "records": args.records,
        "batch": args.batch,
        "value_bytes": 100,
        "runs": args.runs,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_before": round(load_before, 2),
        "load_average_after": round(load_after, 2),
        "results": results,
    }
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
