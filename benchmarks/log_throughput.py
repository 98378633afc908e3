"""Append and read throughput of the log backends, against plain SQLite.

Run: ``.venv/bin/python benchmarks/log_throughput.py [--records N] [--batch N] [--runs N]``

Workload (seeded): N records with an 8-byte key, a 100-byte value and an
increasing ``ts_ms``, appended to one partition in batches (one ``append``
call, i.e. one committed transaction, per batch), then read back from
offset 0 with ``max_records`` = batch size until the end, as a consumer
does. The baseline is the plain ``sqlite3`` way of storing the same
records: one row per record, ``executemany`` per batch in one transaction,
and a ``SELECT`` over all rows (building one tuple per record). Every
SQLite run uses a fresh file in WAL mode with ``synchronous=NORMAL``.
Reports the median of the runs; writes ``benchmarks/results/log_throughput.json``.
"""

from __future__ import annotations

import argparse
import json
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


def make_batches(records: int, batch: int, seed: int = 7) -> list[list[LogRecord]]:
    rng = random.Random(seed)
    values = [rng.randbytes(100) for _ in range(1024)]
    out = []
    for start in range(0, records, batch):
        out.append(
            [
                LogRecord(b"key-%04d" % (i % 10_000), values[i % 1024], 1_700_000_000_000 + i)
                for i in range(start, min(start + batch, records))
            ]
        )
    return out


def run_log(make: Callable[[Path], Log], batches: list[list[LogRecord]], where: Path) -> tuple[float, float]:
    log = make(where)
    try:
        log.create_topic(TopicSpec("bench"))
        t0 = time.perf_counter()
        for records in batches:
            log.append("bench", 0, records)
        t_append = time.perf_counter() - t0
        n = 0
        offset = 0
        size = len(batches[0])
        t0 = time.perf_counter()
        while True:
            got = log.read("bench", 0, offset, size)
            if not got:
                break
            n += len(got)
            offset = got[-1].offset + 1
        t_read = time.perf_counter() - t0
        assert n == sum(map(len, batches)), n
    finally:
        log.close()
    return t_append, t_read


def run_plain_sqlite(_make: object, batches: list[list[LogRecord]], where: Path) -> tuple[float, float]:
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
    t0 = time.perf_counter()
    for chunk in rows:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO records VALUES (?, ?, ?, ?, ?)", chunk)
        conn.execute("COMMIT")
    t_append = time.perf_counter() - t0
    t0 = time.perf_counter()
    n = 0
    for _ in conn.execute("SELECT offset, key, value, ts_ms FROM records WHERE partition = 0 ORDER BY offset"):
        n += 1
    t_read = time.perf_counter() - t0
    assert n == offset
    conn.close()
    return t_append, t_read


CASES: dict[str, tuple[Callable[..., tuple[float, float]], Callable[[Path], Log] | None]] = {
    "SqliteLog": (run_log, lambda d: SqliteLog(d / "log.db")),
    "MemoryLog": (run_log, lambda _d: MemoryLog()),
    "plain sqlite3 executemany": (run_plain_sqlite, None),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="do not write the JSON file")
    args = parser.parse_args()
    batches = make_batches(args.records, args.batch)
    results = {}
    print(f"{args.records:,} records of 100-byte values, batches of {args.batch}, median of {args.runs} runs")
    print(f"{'backend':<28}{'append rec/s':>16}{'read rec/s':>16}")
    for name, (runner, make) in CASES.items():
        appends, reads = [], []
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory() as tmp:
                t_append, t_read = runner(make, batches, Path(tmp))
            appends.append(args.records / t_append)
            reads.append(args.records / t_read)
        append_rate, read_rate = statistics.median(appends), statistics.median(reads)
        results[name] = {
            "append_records_per_s": round(append_rate),
            "read_records_per_s": round(read_rate),
            "append_runs": [round(x) for x in appends],
            "read_runs": [round(x) for x in reads],
        }
        print(f"{name:<28}{append_rate:>16,.0f}{read_rate:>16,.0f}")
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(
            json.dumps(
                {
                    "benchmark": "log_throughput",
                    "command": "python benchmarks/log_throughput.py " + " ".join(sys.argv[1:]),
                    "records": args.records,
                    "batch": args.batch,
                    "value_bytes": 100,
                    "runs": args.runs,
                    "python": platform.python_version(),
                    "sqlite": sqlite3.sqlite_version,
                    "machine": platform.machine(),
                    "results": results,
                },
                indent=2,
            )
            + "\n"
        )
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
