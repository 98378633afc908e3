"""What verifying a SQLite log file costs when it is opened (``check=full`` vs ``quick``).

Run: ``.venv/bin/python benchmarks/log_open_check.py [--runs N]``

Two logs of 100-byte values on 4 partitions: *large batches* (2,000 appends of 1,000
records, 233 MB) and *small batches* (100,000 appends of 5 records, 64 MB: many rows,
so a large index). Each is closed, then opened ``--runs`` times with each ``check``
setting (``SqliteLog(path, check=...)``, which runs SQLite's ``integrity_check`` or
``quick_check`` before anything is trusted). Prints the median open time per setting.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from eventspine.log import LogRecord, SqliteLog, TopicSpec
from eventspine.log.sqlite_file import Check

LAYOUTS = {"large batches": (2_000, 1_000), "small batches": (100_000, 5)}
CHECKS: tuple[Check, ...] = ("full", "quick", "none")


def build(path: Path, appends: int, batch: int) -> None:
    """Write ``appends`` batches of ``batch`` 100-byte records to a new log at ``path``."""
    value = b"x" * 100
    with SqliteLog(path) as log:
        log.create_topic(TopicSpec("t", 4))
        for i in range(appends):
            log.append("t", i % 4, [LogRecord(b"k", value, i) for _ in range(batch)])


def open_seconds(path: Path, check: Check) -> float:
    """Seconds to open (and verify) the log at ``path``."""
    t0 = time.perf_counter()
    log = SqliteLog(path, check=check)
    elapsed = time.perf_counter() - t0
    log.close()
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name, (appends, batch) in LAYOUTS.items():
            path = Path(tmp) / f"{name.replace(' ', '_')}.db"
            build(path, appends, batch)
            size = path.stat().st_size / 1e6
            medians = {
                check: statistics.median(open_seconds(path, check) for _ in range(args.runs))
                for check in CHECKS
            }
            cells = ", ".join(f"check={c}: {s:.3f} s" for c, s in medians.items())
            print(f"{name} ({appends:,} appends of {batch:,}, {size:.0f} MB): {cells}")


if __name__ == "__main__":
    main()
