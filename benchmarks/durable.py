"""The durable mode's costs: exactly-once overhead on W2, and recovery time with 1 M keys.

    .venv/bin/python benchmarks/durable.py [--reps 3] [--keys 1000000] [--age-s 55]
        [--part all|overhead|recovery]

1. Overhead: W2 (the harness adapter's pipeline: JSONL file source, ``key_by``,
   tumbling 1 s, count/sum/mean, CSV file sink, 200 ms latency budget) run in a
   fresh process (a) without a log and (b) with ``log="sqlite:///<tmp>/log.db"``
   and a checkpoint every second; ``--reps`` of each, alternating a/b; medians.
   events/s = input events / (build + run) seconds, as in the harness. The (b)
   runs report how many checkpoints they took and their median duration
   (``Executor.checkpointer.durations_s``). Outputs of (a) and (b) must be
   byte-identical (sha256), and the first (a) output is checked against the
   harness reference with ``check.py``.
2. Recovery: a pipeline holding ``--keys`` distinct keys in one tumbling 1 h
   window (a tailed JSONL file written here, so the run never ends and no window
   closes) runs as a real ``eventspine run`` process with
   ``--checkpoint-interval-ms 1000``. Once a checkpoint holding every key has
   committed (``read_last_meta(...).records_read``), the process is killed with
   SIGKILL, a few marker records are appended to the file, and the process is
   restarted: the figure is the time from ``Popen`` until a checkpoint that
   includes the markers has committed (interpreter start, imports, recovery,
   reading the markers, and the checkpoint itself; the first checkpoint cannot
   come earlier than 1 s after the executor is built). Repeated ``--reps`` times
   (kill -9 again each time; the poller opens the log with ``check=none`` so it
   does not compete for the CPU with an SQLite quick_check). Then ``Checkpointer.recover()`` is timed in
   process on the same state (the precise figure), ``--reps`` times, and profiled
   once with cProfile. State size: changelog records and the database size.

Every figure carries ``os.getloadavg()`` at the time it was taken (2 shared cores:
compare same-run figures only). Results: a table on stdout and
``benchmarks/results/durable_<date>.json``.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import json
import os
import pstats
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BENCH = os.environ.get("EVENTSPINE_BENCH_DIR", os.path.join(HERE, ".work", "bench"))
W2_DATA = os.path.join(BENCH, ".work", "data", "w2_events.jsonl")
W2_COLUMNS = ["key", "window_start", "count", "sum", "mean"]
EVENTSPINE = os.path.join(os.path.dirname(sys.executable), "eventspine")
RECOVERY_PIPELINE = "durable_recovery"
HOUR_MS = 3_600_000
MARKERS = 1000
N_W2 = 2_000_000  # PARAMS.json of the harness data: w2 = 2,000,000 events

# The recovery pipeline, written beside its data; EVENTS and OUT come from the environment.
PIPELINE_FILE = """\
import os
from datetime import timedelta

import eventspine as es
from eventspine.connectors.file_sinks import JsonLinesSink
from eventspine.connectors.files import JsonLinesSource

pipeline = es.Pipeline("durable_recovery")
(
    pipeline.source(
        "events",
        JsonLinesSource(os.environ["DURABLE_EVENTS"], tail=True),
        timestamps=es.EventTime("ts", max_delay=timedelta(seconds=1)),
    )
    .key_by("by_key", "key")
    .window(es.Tumbling(timedelta(hours=1)))
    .aggregate("agg", count=es.count(), sum=es.sum("value"), mean=es.mean("value"))
    .sink("out", JsonLinesSink(os.environ["DURABLE_OUT"]))
)
"""


def load() -> list[float]:
    """The 1, 5 and 15 minute load averages, rounded."""
    return [round(x, 2) for x in os.getloadavg()]


def sha256(path: str) -> str:
    """The hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# -- 1. exactly-once overhead ------------------------------------------------------------
def w2_child(log_url: str | None, out: str) -> None:
    """Run W2 once in this process and print one JSON line (called in a fresh process)."""
    import eventspine as es
    from eventspine.connectors.file_sinks import CsvSink
    from eventspine.connectors.files import JsonLinesSource
    from eventspine.runtime.checkpoint import CheckpointPolicy
    from eventspine.runtime.executor import Executor, RunOptions

    t0 = time.perf_counter()
    c0 = time.process_time()
    p = es.Pipeline("bench_w2")
    (
        p.source(
            "events",
            JsonLinesSource(W2_DATA),
            timestamps=es.EventTime("ts", max_delay=timedelta(seconds=1)),
        )
        .key_by("by_key", "key")
        .window(es.Tumbling(timedelta(seconds=1)))
        .aggregate("agg", count=es.count(), sum=es.sum("value"), mean=es.mean("value"))
        .map("columns", window_start=es.col("window_start_ms"))
        .sink("out", CsvSink(out, columns=W2_COLUMNS))
    )
    opts = RunOptions(
        latency_budget=timedelta(milliseconds=200),
        handle_signals=False,
        log=log_url,
        checkpoint=CheckpointPolicy(interval=timedelta(seconds=1)),
    )
    ex = Executor(p, options=opts)
    result = ex.run()
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - c0
    durations = [] if ex.checkpointer is None else list(ex.checkpointer.durations_s)
    print(
        json.dumps(
            {
                "pipeline_s": elapsed,
                "cpu_s": cpu,
                "checkpoints": len(durations),
                "ckpt_durations_s": durations,
                "stopped": result.stopped,
            }
        )
    )


def w2_once(durable: bool, work: str, tag: str) -> dict[str, Any]:
    """Run W2 in a fresh process; return its figures, the output hash and the load."""
    out = os.path.join(work, f"w2_{tag}.csv")
    state = os.path.join(work, f"state_{tag}")
    shutil.rmtree(state, ignore_errors=True)
    os.makedirs(state)
    cmd = [sys.executable, os.path.abspath(__file__), "--child-w2", "--out", out]
    if durable:
        cmd += ["--log", f"sqlite:///{state}/log.db"]
    before = load()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT)
    if proc.returncode:
        raise SystemExit(f"W2 run failed ({proc.returncode}):\n{proc.stderr}")
    rec: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    rec["events_per_s"] = N_W2 / rec["pipeline_s"]
    rec["sha256"] = sha256(out)
    rec["out"] = out
    rec["load_before"] = before
    rec["load_after"] = load()
    if durable:
        db = os.path.join(state, "log.db")
        rec["db_bytes"] = sum(
            os.path.getsize(db + s) for s in ("", "-wal") if os.path.exists(db + s)
        )
    return rec


def same_w2(a: str, b: str) -> tuple[bool, int]:
    """Whether two W2 outputs hold the same rows, floats within 1e-9; and how many differ in bits.

    The columnar window path folds float sums per micro-batch, and batch sizes
    adapt to wall time, so sums may differ in the last bits between any two runs
    (documented); keys, windows and counts must be identical.
    """
    differ = 0
    with open(a) as fa, open(b) as fb:
        for la, lb in zip(fa, fb, strict=True):
            if la == lb:
                continue
            differ += 1
            xa, xb = la.rstrip("\n").split(","), lb.rstrip("\n").split(",")
            if xa[:3] != xb[:3]:
                return False, differ
            for u, v in zip(xa[3:], xb[3:], strict=True):
                if abs(float(u) - float(v)) > 1e-9 * max(1.0, abs(float(u))):
                    return False, differ
    return True, differ


def check_w2(out: str) -> bool:
    """Whether ``out`` matches the harness reference (``check.py``)."""
    proc = subprocess.run(
        [sys.executable, "check.py", "--workload", "w2", "--output", out],
        cwd=BENCH,
        capture_output=True,
        text=True,
        check=False,
    )
    return '"pass": true' in proc.stdout


def overhead(reps: int, work: str) -> dict[str, Any]:
    """Measure W2 without and with the durable log, alternating; return the report."""
    plain: list[dict[str, Any]] = []
    durable: list[dict[str, Any]] = []
    for i in range(reps):
        plain.append(w2_once(False, work, f"plain{i}"))
        durable.append(w2_once(True, work, f"durable{i}"))
        for r in (plain[-1], durable[-1]):
            r["equal"], r["bits_differ"] = same_w2(plain[0]["out"], r["out"])
        print(
            f"  rep {i + 1}: plain {plain[-1]['events_per_s'] / 1e3:.0f}k/s, durable "
            f"{durable[-1]['events_per_s'] / 1e3:.0f}k/s ({durable[-1]['checkpoints']} ckpts), "
            f"cpu {plain[-1]['cpu_s']:.2f} / {durable[-1]['cpu_s']:.2f} s, "
            f"load {durable[-1]['load_after']}",
            file=sys.stderr,
        )
    a = statistics.median(r["events_per_s"] for r in plain)
    b = statistics.median(r["events_per_s"] for r in durable)
    ckpt_all = [d for r in durable for d in r["ckpt_durations_s"]]
    return {
        "events": N_W2,
        "plain_events_per_s": a,
        "durable_events_per_s": b,
        "overhead_pct": (a / b - 1) * 100,  # extra time per event, relative to plain
        "throughput_loss_pct": (1 - b / a) * 100,
        # CPU seconds (all threads) are less sensitive to the other tenants than wall time.
        "plain_cpu_s": statistics.median(r["cpu_s"] for r in plain),
        "durable_cpu_s": statistics.median(r["cpu_s"] for r in durable),
        "cpu_overhead_pct": (
            statistics.median(r["cpu_s"] for r in durable)
            / statistics.median(r["cpu_s"] for r in plain)
            - 1
        )
        * 100,
        "checkpoints_median": statistics.median(r["checkpoints"] for r in durable),
        "ckpt_median_s": statistics.median(ckpt_all) if ckpt_all else None,
        "ckpt_max_s": max(ckpt_all) if ckpt_all else None,
        "outputs_identical_bytes": len({r["sha256"] for r in plain + durable}) == 1,
        "outputs_equal": all(r["equal"] for r in plain[1:] + durable),
        "rows_differing_in_last_bits": [r["bits_differ"] for r in plain[1:] + durable],
        "reference_check": check_w2(plain[0]["out"]),
        "plain_runs": [_strip(r) for r in plain],
        "durable_runs": [_strip(r) for r in durable],
    }


def _strip(r: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in r.items() if k not in ("out", "sha256", "events")}


# -- 2. recovery time --------------------------------------------------------------------
def write_keys(path: str, keys: int) -> int:
    """Write ``keys`` records with distinct keys, all in one 1 h window; return the t0 (ms)."""
    t0 = 1_700_000_000_000 // HOUR_MS * HOUR_MS
    with open(path, "w") as f:
        step = 200_000
        for lo in range(0, keys, step):
            f.write(
                "".join(
                    f'{{"key":"k{i:07d}","ts":{t0 + i // 1000},"value":{i % 100}}}\n'
                    for i in range(lo, min(lo + step, keys))
                )
            )
    return t0


def append_markers(path: str, t0: int, n: int, round_: int) -> None:
    """Append ``n`` records for existing keys (still inside the open window)."""
    with open(path, "a") as f:
        f.write(
            "".join(
                f'{{"key":"k{i:07d}","ts":{t0 + 2_000_000 + round_},"value":1}}\n' for i in range(n)
            )
        )


def meta_of(url: str) -> Any:
    """The last committed checkpoint meta of the recovery pipeline (or ``None``).

    The log is opened with ``check=none``: this poller runs every 20 ms beside the
    measured process, and an SQLite ``quick_check`` of the whole file each time
    would take a CPU core away from it (2 shared cores).
    """
    from eventspine.log import open_log
    from eventspine.runtime.checkpoint import read_last_meta

    log = open_log(f"{url}?check=none")
    try:
        return read_last_meta(log, RECOVERY_PIPELINE)
    finally:
        log.close()


def wait_for(url: str, pred: Any, proc: subprocess.Popen[bytes], limit_s: float) -> Any:
    """Poll the last checkpoint every 20 ms until ``pred(meta)``; return the meta."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the pipeline process exited with {proc.returncode} (see err.txt)")
        try:
            meta = meta_of(url)
        except Exception:  # the file may be mid-creation
            meta = None
        if meta is not None and pred(meta):
            return meta
        time.sleep(0.02)
    raise SystemExit(f"no matching checkpoint within {limit_s:.0f} s")


def start(
    work: str, state: str, env: dict[str, str], interval_ms: int = 1000
) -> subprocess.Popen[bytes]:
    """Start ``eventspine run`` on the recovery pipeline."""
    cmd = [EVENTSPINE, "run", os.path.join(work, "pipe.py") + ":pipeline", "--state-dir", state]
    cmd += ["--checkpoint-interval-ms", str(interval_ms), "--quiet"]
    with open(os.path.join(work, "err.txt"), "ab") as err:
        return subprocess.Popen(cmd, env=env, cwd=work, stderr=err)


def kill9(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process we started and reap it."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def state_size(url: str, db: str) -> dict[str, Any]:
    """Live changelog records and bytes (read-only SQL on the log's tables), and file sizes.

    Compaction leaves offset gaps and SQLite does not shrink its file, so the live
    figures come from the ``batches`` table, not from offsets or the file size.
    """
    import sqlite3

    from eventspine.runtime.checkpoint import names

    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute(
            "SELECT t.name, count(*), sum(b.record_count), sum(b.size) FROM batches b "
            "JOIN topics t USING (topic_id) WHERE t.name LIKE ? GROUP BY t.name",
            (names.prefix(RECOVERY_PIPELINE) + "%.changelog",),
        ).fetchall()
    finally:
        con.close()
    sizes = {s or "db": os.path.getsize(db + s) for s in ("", "-wal") if os.path.exists(db + s)}
    return {
        "changelog_records": sum(r[2] for r in rows),
        "changelog_batches": sum(r[1] for r in rows),
        "changelog_mb": round(sum(r[3] for r in rows) / 2**20, 1),
        "file_bytes": sizes,
        "mb": round(sum(sizes.values()) / 2**20, 1),
    }


def restart(
    work: str, state: str, env: dict[str, str], interval_ms: int, prev: int, total: int
) -> tuple[dict[str, Any], Any]:
    """Start the pipeline on saved state; time it until a checkpoint holds ``total`` records."""
    url = f"sqlite:///{os.path.join(state, 'log.db')}"
    began = time.monotonic()
    proc = start(work, state, env, interval_ms)
    meta = wait_for(url, lambda m: m.id > prev and m.records_read >= total, proc, 300)
    took = time.monotonic() - began
    kill9(proc)
    row = {"restart_to_new_checkpoint_s": took, "from_checkpoint": prev, "load": load()}
    print(
        f"  restart (ckpt {interval_ms} ms) from {prev}: {took:.2f} s, load {load()}",
        file=sys.stderr,
    )
    return row, meta


def recovery(reps: int, keys: int, age_s: float, work: str) -> dict[str, Any]:
    """Fill a 1 h window with ``keys`` keys, kill -9, restart; return the report."""
    events = os.path.join(work, "keys.jsonl")
    state = os.path.join(work, "state")
    db = os.path.join(state, "log.db")
    url = f"sqlite:///{db}"
    with open(os.path.join(work, "pipe.py"), "w") as f:
        f.write(PIPELINE_FILE)
    t0 = write_keys(events, keys)
    env = dict(os.environ, DURABLE_EVENTS=events, DURABLE_OUT=os.path.join(work, "out.jsonl"))
    report: dict[str, Any] = {"keys": keys}
    began = time.monotonic()
    proc = start(work, state, env)
    meta = wait_for(url, lambda m: m.records_read >= keys, proc, 600)
    report["first_full_checkpoint_s"] = time.monotonic() - began
    report["first_full_checkpoint_load"] = load()
    kill9(proc)
    report["state"] = state_size(url, db)
    total = keys
    for interval_ms in (1000, 100):
        rows = []
        for _i in range(reps):
            append_markers(events, t0, MARKERS, len(rows) + interval_ms)
            total += MARKERS
            row, meta = restart(work, state, env, interval_ms, meta.id, total)
            rows.append(row)
        report[f"process_restarts_{interval_ms}ms"] = rows
        report[f"process_restart_median_s_{interval_ms}ms"] = statistics.median(
            r["restart_to_new_checkpoint_s"] for r in rows
        )
    report["state_before_recover"] = state_size(url, db)
    report["in_process"] = recover_in_process(reps, url, env, work)
    if age_s > 0:
        report["aged"] = aged(reps, age_s, work, state, env, meta.id, total)
    return report


def aged(
    reps: int, age_s: float, work: str, state: str, env: dict[str, str], prev: int, total: int
) -> dict[str, Any]:
    """Let the pipeline run idle for ``age_s`` (under the 60 s compaction), then recover."""
    import psutil

    db = os.path.join(state, "log.db")
    url = f"sqlite:///{db}"
    proc = start(work, state, env)
    wait_for(url, lambda m: m.id > prev, proc, 300)
    cpu0 = psutil.Process(proc.pid).cpu_times()
    t0 = time.monotonic()
    time.sleep(age_s)
    cpu1 = psutil.Process(proc.pid).cpu_times()
    idle_s = time.monotonic() - t0
    meta = meta_of(url)
    kill9(proc)
    out: dict[str, Any] = {
        "ran_s": age_s,
        "checkpoints_while_idle": meta.id - prev,
        "idle_cpu_share": (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / idle_s,
        "load": load(),
        "state": state_size(url, db),
    }
    print(
        f"  aged {age_s:.0f} s: {out['state']}, idle CPU {out['idle_cpu_share']:.0%}",
        file=sys.stderr,
    )
    out["in_process"] = recover_in_process(reps, url, env, work, profile=False)
    row, _meta = restart(work, state, env, 1000, meta.id, total)
    out["process_restart"] = row
    # The compaction a run does every 60 s (in its loop, at a checkpoint), on this state.
    from eventspine.log import open_log

    log = open_log(url)
    try:
        c0 = time.perf_counter()
        log.enforce_retention()
        out["compaction_s"] = time.perf_counter() - c0
    finally:
        log.close()
    out["compaction_load"] = load()
    out["state_compacted"] = state_size(url, db)
    out["compacted_in_process"] = recover_in_process(1, url, env, work, profile=False)
    print(f"  compaction {out['compaction_s']:.2f} s -> {out['state_compacted']}", file=sys.stderr)
    return out


def recover_in_process(
    reps: int, url: str, env: dict[str, str], work: str, profile: bool = True
) -> dict[str, Any]:
    """Time ``Checkpointer.recover()`` (and the executor build) on the saved state.

    With ``profile``, one more run is profiled and followed by one timed
    checkpoint that rewrites the whole restored state (the vectorized window's new
    base; a busy run writes one every few checkpoints, deltas in between).
    """
    import runpy

    from eventspine.runtime.checkpoint import CheckpointPolicy
    from eventspine.runtime.executor import Executor, RunOptions
    from eventspine.runtime.windows.columnar import ColumnarWindow

    os.environ.update(env)
    pipeline = runpy.run_path(os.path.join(work, "pipe.py"))["pipeline"]
    runs: list[dict[str, Any]] = []
    out: dict[str, Any] = {}
    for i in range(reps + (1 if profile else 0)):
        b0 = time.perf_counter()
        opts = RunOptions(log=url, handle_signals=False, checkpoint=CheckpointPolicy())
        ex = Executor(pipeline, options=opts)
        b1 = time.perf_counter()
        ckpt = ex.checkpointer
        assert ckpt is not None
        prof = cProfile.Profile() if i == reps else None
        r0 = time.perf_counter()
        if prof is not None:
            prof.enable()
        resumed = ckpt.recover()
        if prof is not None:
            prof.disable()
        r1 = time.perf_counter()
        keys = sum(op.metrics.state_keys for op in ex.plan.operators if op.stateful)
        if prof is None:
            runs.append(
                {
                    "build_s": b1 - b0,
                    "recover_s": r1 - r0,
                    "resumed_from": resumed,
                    "state_keys": keys,
                    "load": load(),
                }
            )
            print(f"  recover() {r1 - r0:.3f} s ({keys} keys), load {load()}", file=sys.stderr)
        else:
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(14)
            out["recover_profile"] = buf.getvalue()
            # A restored window writes only what changes; make it write its whole state
            # as a new base (what a busy run does every few checkpoints): the worst case.
            for op in ex.plan.operators:
                if isinstance(op, ColumnarWindow):
                    op._pending = None
            prof = cProfile.Profile()
            c0 = time.perf_counter()
            prof.enable()
            ckpt.checkpoint(ckpt.restored_watermarks())
            prof.disable()
            out["full_state_checkpoint_s"] = time.perf_counter() - c0
            out["full_state_checkpoint_load"] = load()
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(14)
            out["checkpoint_profile"] = buf.getvalue()
            print(
                f"  one checkpoint of the whole state: {out['full_state_checkpoint_s']:.3f} s",
                file=sys.stderr,
            )
        ex.close()
    out["runs"] = runs
    out["recover_median_s"] = statistics.median(r["recover_s"] for r in runs)
    out["build_median_s"] = statistics.median(r["build_s"] for r in runs)
    return out


# -- main --------------------------------------------------------------------------------
def main() -> None:
    """Parse the options, run the parts, print the table, write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--age-s", type=float, default=55.0, help="idle run before the aged recovery")
    ap.add_argument("--part", choices=("all", "overhead", "recovery"), default="all")
    ap.add_argument("--child-w2", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--log", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child_w2:
        w2_child(a.log, a.out)
        return
    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([".venv/bin/python", "benchmarks/durable.py", *sys.argv[1:]]),
        "cpus": os.cpu_count(),
        "load_start": load(),
    }
    with tempfile.TemporaryDirectory(prefix="es_durable_") as work:
        if a.part in ("all", "overhead"):
            print("overhead (W2, file source, CSV sink):", file=sys.stderr)
            report["overhead"] = overhead(a.reps, work)
        if a.part in ("all", "recovery"):
            print(f"recovery ({a.keys} keys):", file=sys.stderr)
            rdir = os.path.join(work, "recovery")
            os.makedirs(rdir)
            report["recovery"] = recovery(a.reps, a.keys, a.age_s, rdir)
    report["load_end"] = load()
    print_table(report)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    path = os.path.join(HERE, "results", f"durable_{datetime.now(UTC):%Y-%m-%d}.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=1)
    print(f"wrote {os.path.relpath(path, ROOT)}")


def print_table(r: dict[str, Any]) -> None:
    """Print the figures as a Markdown table."""

    def row(name: str, value: str, target: str = "", at: Any = "") -> None:
        print(f"| {name} | {value} | {target} | {at} |")

    print(f"\nDurable mode ({r['date']}, {r['cpus']} cores, load {r['load_start']} -> ", end="")
    print(f"{r['load_end']})\n\n| figure | value | target | load (1/5/15 min) |\n|---|---|---|---|")
    o = r.get("overhead")
    if o:
        lo = o["durable_runs"][-1]["load_after"]
        row("W2 no log", f"{o['plain_events_per_s'] / 1e3:.0f}k events/s", "", lo)
        row("W2 sqlite log, checkpoint 1 s", f"{o['durable_events_per_s'] / 1e3:.0f}k events/s")
        row(
            "exactly-once overhead, wall time",
            f"{o['overhead_pct']:.1f} % ({o['throughput_loss_pct']:.1f} % throughput)",
            "<= 15 %",
            lo,
        )
        row(
            "CPU seconds, no log / log",
            f"{o['plain_cpu_s']:.2f} / {o['durable_cpu_s']:.2f} ({o['cpu_overhead_pct']:+.1f} %)",
            "<= 15 %",
            lo,
        )
        if o["ckpt_median_s"] is not None:
            row(
                "checkpoints per run; median / max duration",
                f"{o['checkpoints_median']:.0f}; {o['ckpt_median_s'] * 1e3:.1f} / "
                f"{o['ckpt_max_s'] * 1e3:.1f} ms",
            )
        row(
            "outputs equal to run a1 / reference check.py",
            f"{o['outputs_equal']} / {o['reference_check']} (rows differing in float "
            f"last bits: {o['rows_differing_in_last_bits']})",
            "True",
        )
    rc = r.get("recovery")
    if not rc:
        return

    def size(st: dict[str, Any]) -> str:
        return f"{st['changelog_records']} records ({st['changelog_mb']} MB), file {st['mb']} MB"

    keys = f"{rc['keys']:,} keys"
    row(
        f"{keys}: first checkpoint holding all",
        f"{rc['first_full_checkpoint_s']:.1f} s after start",
    )
    row(f"{keys}: changelog after it", size(rc["state"]))
    for ms in (1000, 100):
        row(
            f"restart -> new checkpoint (process, --checkpoint-interval-ms {ms})",
            f"{rc[f'process_restart_median_s_{ms}ms']:.2f} s",
            "< 5 s",
            rc[f"process_restarts_{ms}ms"][-1]["load"],
        )
    ip = rc["in_process"]
    row(
        f"Checkpointer.recover() in process ({size(rc['state_before_recover'])})",
        f"{ip['recover_median_s']:.2f} s (+ executor build {ip['build_median_s']:.2f} s)",
        "< 5 s",
        ip["runs"][-1]["load"],
    )
    if "full_state_checkpoint_s" in ip:
        row(
            "one checkpoint of the whole state",
            f"{ip['full_state_checkpoint_s']:.2f} s",
            "",
            ip["full_state_checkpoint_load"],
        )
    ag = rc.get("aged")
    if not ag:
        return
    row(
        f"idle {ag['ran_s']:.0f} s: checkpoints / CPU share",
        f"{ag['checkpoints_while_idle']} / {ag['idle_cpu_share']:.0%}",
        "",
        ag["load"],
    )
    row(
        f"aged: Checkpointer.recover() ({size(ag['state'])})",
        f"{ag['in_process']['recover_median_s']:.2f} s",
        "< 5 s",
        ag["in_process"]["runs"][-1]["load"],
    )
    pr = ag["process_restart"]
    row(
        "aged: restart -> new checkpoint (process)",
        f"{pr['restart_to_new_checkpoint_s']:.2f} s",
        "< 5 s",
        pr["load"],
    )
    row(
        "aged: compaction (enforce_retention; a run does it in its loop every 60 s)",
        f"{ag['compaction_s']:.2f} s -> {size(ag['state_compacted'])}",
        "",
        ag["compaction_load"],
    )
    cp = ag["compacted_in_process"]
    row(
        "after compaction: Checkpointer.recover()",
        f"{cp['recover_median_s']:.2f} s",
        "< 5 s",
        cp["runs"][-1]["load"],
    )


if __name__ == "__main__":
    main()
