"""W2 two ways: throughput from the in-memory source, and peak memory from the file.

    .venv/bin/python benchmarks/w2_memory.py [--reps 3]

Each run is a fresh process of ``harness_adapter.py`` (so imports and data
loading are outside ``pipeline_s``, as in the harness). The memory-source run
reports events/s (target >= 2,000,000); the file-source run's peak RSS of the
process is sampled every 20 ms with psutil (target < 300 MB). Both outputs are
checked against the harness reference with ``check.py``. Needs the harness
copy and data made by ``run_bench.py`` (``benchmarks/.work/bench``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.environ.get("EVENTSPINE_BENCH_DIR", os.path.join(HERE, ".work", "bench"))


def one(source: str) -> dict[str, Any]:
    """Run W2 once from ``source``; return the adapter's line plus peak RSS and the check."""
    out = os.path.join(BENCH, ".work", "out", f"es_w2_{source}.csv")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    cmd = [sys.executable, os.path.join(HERE, "harness_adapter.py"), "--workload", "w2"]
    cmd += ["--source", source, "--output", out]
    env = dict(os.environ, EVENTSPINE_BENCH_DIR=BENCH)
    proc = subprocess.Popen(cmd, cwd=BENCH, env=env, stdout=subprocess.PIPE, text=True)
    ps = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            peak = max(peak, ps.memory_info().rss)
        except psutil.Error:
            break
        time.sleep(0.02)
    stdout = proc.communicate()[0]
    if proc.returncode:
        raise SystemExit(f"adapter failed ({proc.returncode}): {' '.join(cmd)}")
    rec = json.loads(stdout.strip().splitlines()[-1])
    rec["peak_rss_mb"] = round(peak / 2**20, 1)
    check = subprocess.run(
        [sys.executable, "check.py", "--workload", "w2", "--output", out],
        cwd=BENCH,
        capture_output=True,
        text=True,
        check=False,
    )
    rec["correct"] = '"pass": true' in check.stdout
    return rec


def main() -> None:
    """Run both measurements ``--reps`` times and print the medians as JSON."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    report: dict[str, Any] = {}
    for source in ("memory", "file"):
        runs = [one(source) for _ in range(a.reps)]
        report[source] = {
            "events_per_s": statistics.median(r["events_per_s"] for r in runs),
            "pipeline_s": statistics.median(r["pipeline_s"] for r in runs),
            "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs),
            "correct": all(r["correct"] for r in runs),
            "runs": [
                {k: r[k] for k in ("events_per_s", "pipeline_s", "peak_rss_mb")} for r in runs
            ],
        }
    report["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
