"""Smoke proof of exactly-once: kill -9 the real CLI five times, restart, compare with an oracle.

The pipeline (``pipelines/oracle.py``) reads a seeded input of K keys x S
sequence numbers (about 1 % of records dropped, so the sequence check fires),
keeps per-key running count/sum/min/max in a ``process`` step and counts
records per key in tumbling 10 s windows, into two JSON Lines files. The run
is ``eventspine run ... --checkpoint-interval-ms 50`` in a subprocess, killed
with SIGKILL at random moments (mostly just after it published a checkpoint's
output, sometimes at any moment, including during start-up and recovery),
restarted until it exits 0. Both files must then equal what a pure-Python
oracle computes, record for record and in order.

The window step runs on each of its two operators: the record-at-a-time one
(forced by a 1 ms allowed lateness, which changes nothing for this input) and
the vectorized one (which checkpoints its partial aggregates). Both must equal
the oracle.

Replay a failure with ``RELIABILITY_SEED=<seed>`` (the seed is in the message).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

if sys.platform == "win32":  # pragma: no cover
    pytest.skip("SIGKILL is POSIX", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]
CLI = ROOT / ".venv" / "bin" / "eventspine"
PIPELINE = Path(__file__).parent / "pipelines" / "oracle.py"
K, S = 50, 200
KILLS = 5
WINDOW_MS = 10_000
T0 = 1_700_000_000_000


def make_input(seed: int) -> list[dict[str, Any]]:
    """Records in file order: by seq, keys shuffled within a seq (within max_delay)."""
    rnd = random.Random(seed)
    out: list[dict[str, Any]] = []
    for seq in range(1, S + 1):
        group = [
            {
                "key": f"k{k:02d}",
                "seq": seq,
                "value": rnd.randint(-1000, 1000),
                "ts": T0 + seq * 250 + (k % 5) * 10,
            }
            for k in range(K)
            if rnd.random() >= 0.01
        ]
        rnd.shuffle(group)
        out.extend(group)
    return out


def oracle(records: list[dict[str, Any]]) -> tuple[list[Any], list[Any]]:
    """The expected contents of stats.jsonl and counts.jsonl."""
    stats: list[dict[str, Any]] = []
    state: dict[str, dict[str, int]] = {}
    counts: dict[tuple[str, int], int] = {}
    for r in records:
        key, seq, v = r["key"], r["seq"], r["value"]
        st = state.setdefault(key, {"last": 0, "count": 0, "sum": 0, "min": v, "max": v})
        if seq - st["last"] != 1:
            stats.append({"key": key, "alert": "seq_gap", "last": st["last"], "seq": seq})
        st["last"] = seq
        st["count"] += 1
        st["sum"] += v
        st["min"] = min(st["min"], v)
        st["max"] = max(st["max"], v)
        stats.append({"key": key, "seq": seq, **{f: st[f] for f in ("count", "sum", "min", "max")}})
        start = r["ts"] - r["ts"] % WINDOW_MS
        counts[(key, start)] = counts.get((key, start), 0) + 1
    windows = [
        {"key": k, "window_start_ms": s, "window_end_ms": s + WINDOW_MS, "n": n}
        for (k, s), n in sorted(counts.items(), key=lambda kv: (kv[0][1], kv[0][0]))
    ]
    return stats, windows


def read_jsonl(path: Path) -> list[Any]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


@pytest.mark.parametrize("window_path", ["record", "vectorized"])
def test_kill9_five_times_then_output_equals_the_oracle(tmp_path: Path, window_path: str) -> None:
    seed = int(os.environ.get("RELIABILITY_SEED") or random.randrange(1 << 31))
    rnd = random.Random(seed)
    records = make_input(seed)
    (tmp_path / "input.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    stats_path, counts_path = tmp_path / "stats.jsonl", tmp_path / "counts.jsonl"
    state = tmp_path / "state"
    cmd = [str(CLI), "run", f"{PIPELINE}:pipeline", "--state-dir", str(state)]
    cmd += ["--checkpoint-interval-ms", "50", "--quiet"]
    env = {**os.environ, "ORACLE_DIR": str(tmp_path), "ORACLE_SLOW_EVERY": "10"}
    env["ORACLE_WINDOW_PATH"] = window_path
    history: list[str] = []
    kills = 0
    published = 0  # the stats file's size when the previous run was killed
    deadline = time.monotonic() + 50
    while True:
        assert time.monotonic() < deadline, f"seed={seed}: too slow; runs: {history}"
        log = tmp_path / f"run{len(history)}.log"
        with open(log, "wb") as err:
            proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=err, stderr=err)
            killed = False
            if kills < KILLS:
                killed = kill_at_random(proc, rnd, stats_path, published)
            rc = proc.wait(timeout=60)
        if killed:
            kills += 1
            published = size(stats_path)
            history.append(f"killed at {published} bytes")
            continue
        history.append(f"exit {rc}")
        assert rc == 0, f"seed={seed}: exit {rc}; runs: {history}\n{log.read_text()[-3000:]}"
        break
    expected_stats, expected_counts = oracle(records)
    got_stats, got_counts = read_jsonl(stats_path), read_jsonl(counts_path)
    where = f"seed={seed} (replay: RELIABILITY_SEED={seed}); runs: {history}"
    assert kills == KILLS, where
    assert any("alert" in r for r in expected_stats)
    assert len(got_stats) == len(expected_stats), where
    assert got_stats == expected_stats, where
    assert got_counts == expected_counts, where
    assert not list(tmp_path.glob("*.staging")), where


def kill_at_random(
    proc: subprocess.Popen[bytes], rnd: random.Random, stats: Path, published: int
) -> bool:
    """SIGKILL ``proc`` at a random moment; return whether it was killed (it may have ended)."""
    if rnd.random() < 0.25:
        time.sleep(rnd.uniform(0.05, 1.2))  # anywhere: start-up, recovery, processing
    else:
        while proc.poll() is None and size(stats) <= published:
            time.sleep(0.005)  # until this run published a checkpoint of its own
        time.sleep(rnd.uniform(0, 0.25))
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True
