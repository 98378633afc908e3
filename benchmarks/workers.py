"""``eventspine run --workers N`` on the embedded SQLite log: W2, one worker against two.

Issue 3's target: "``--workers 2`` on W2: at least 1.6x one worker". Run::

    .venv/bin/python benchmarks/workers.py [--events 1000000] [--partitions 2[,4]]
        [--workers 1,2] [--reps 3] [--no-profile]

(about 10-15 min with the defaults on 2 shared cores). The figures of 2026-11-22:
``--events 1000000 --partitions 2,4 --reps 3`` (``workers_2026-11-22_run1.json``, before
``cpu_s`` was recorded; with the profile) and ``--events 1000000 --partitions 2 --reps 3
--no-profile`` (``workers_2026-11-22.json``). This process is only the driver; the
pipeline itself runs as ``eventspine run benchmarks/workers.py:pipeline`` (the
:func:`pipeline` function below, configured by the ``WB_*`` environment variables).

**Data.** The W1/W2 stream of ``/work/shared/bench`` (``datagen.py``: 2,000,000 events over
10k keys, 10 % up to 500 ms late; the JSONL copy in ``$EVENTSPINE_BENCH_DIR/.work/data``,
default ``benchmarks/.work/bench``, generated with ``datagen.py`` if missing); ``--events N``
takes its first N events in arrival order. They are loaded once per (N, partition count)
into the SQLite log ``benchmarks/.work/workers/in-<N>-p<P>.db``: topic ``w2_in`` with P
partitions, key = the event key, partition = the engine's partitioner
``partition_for(key_bytes(key), P)``, ``ts_ms`` = ``ts``, value = the JSON line. Topic
sources never end, so after the events each partition gets one end marker
``{"key": <a key of that partition>, "ts": max_ts + 10 s, "value": -1.0}``: it moves every
partition's watermark past the last real window, so every real window closes on event
time, deterministically (an ``EventTime`` idle timeout would also close them, but only
after idle_timeout + 1 s of *wall clock* with nothing to read, which would be timed as
pipeline work). The marker's own window stays open and is never emitted.

**Pipeline** (W2 as the bench defines it): ``es.topic("w2_in", key="key")`` ->
``EventTime("ts", max_delay=1 s, idle_timeout=None)`` -> ``key_by("key")`` ->
``Tumbling(1 s)`` -> ``count``/``sum``/``mean`` -> ``es.topic("w2_out", key="key",
partitions=P)``; exactly-once checkpoints every ``--checkpoint-interval-ms`` (1000).

**Runs.** Each run gets a fresh copy of the loaded database and runs::

    eventspine run benchmarks/workers.py:pipeline --log-url sqlite:///<copy> --workers W \\
        --checkpoint-interval-ms 1000 --log-level INFO --no-progress --quiet --state-dir <tmp>

``--reps`` runs per worker count, alternating (1, 2, 1, 2, ...). The driver polls the
committed positions of the pipeline's group (``log.committed("w2_workers", "w2_in")``, a
separate read-only connection, every 50 ms): the run is *done* when every partition's
committed position is its end offset (the markers included). Positions, outputs and state
commit in one transaction, and a checkpoint is taken after the iteration's watermark has
closed the windows, so at that moment every output row is committed. Then SIGTERM.

* ``events_per_s = N / (done - Popen)``: the whole process (interpreter, imports, opening the
  log with its ``quick_check``, restore, the run, the last checkpoint).
* ``cpu_s``: user + system CPU seconds of the run's processes (``RUSAGE_CHILDREN`` of this
  driver around the run, so the worker children reaped by the ``--workers`` parent are
  included; it also covers the SIGTERM shutdown), and ``cores_used = cpu_s / wall``
  (Popen to exit): how much of the 2 cores the run actually got.
* ``events_per_s_run = N / (done - started)``, where ``started`` is when the last
  ``task P started`` INFO line reached the driver (the worker has built and restored its
  tasks; with 2 workers, the later of the two): start-up excluded.

**Correctness.** Every run's output topic is read back (all partitions) and compared with
the first 1-worker run's: the same (key, window) rows with equal key, window bounds and
count, and sum/mean within 1e-9 relative (``same``); ``bitwise`` says whether the multisets
of exact rows are identical, and ``float_diffs`` counts rows whose sum or mean differ in
their last bits (the engine's float sums depend on micro-batch boundaries, which depend on
timing). And the (key, window_start) rows
must match an independent batch reference of the prefix exactly (same set, no duplicate,
equal count, sum and mean within 1e-9 relative). For N = 2,000,000 the reference size is
asserted against the bench README (1,264,102 rows).

**Profile.** ``--profile`` (default on) adds one 1-worker run of the first partition count
under ``python -m cProfile`` (left out of the medians) and prints the top 15 by cumulative
and by internal time.

Every figure carries ``os.getloadavg()`` (1-min) at the start and end of its run, and
``steal_share``: the share of the machine's CPU time the hypervisor gave to other guests
during the run (``steal`` in ``/proc/stat``; on a virtual machine the load average does
not show it): the machine has 2 cores
shared with other jobs, and 2 workers can at best use both. Results:
a table on stdout and ``benchmarks/results/workers_<date>.json``.
"""

from __future__ import annotations

import argparse
import cProfile  # noqa: F401  # documents that the profile is cProfile's
import io
import json
import os
import pstats
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BENCH = Path(os.environ.get("EVENTSPINE_BENCH_DIR", HERE / ".work" / "bench"))
WORK = HERE / ".work" / "workers"
EVENTSPINE = str(Path(sys.executable).with_name("eventspine"))
APP = "w2_workers"
IN, OUT = "w2_in", "w2_out"
END_AFTER_MS = 10_000
N_W2 = 2_000_000
W2_REF_ROWS = 1_264_102  # the bench README's reference size for the full data


# ------------------------------------------------------------------------- the pipeline
def pipeline() -> Any:
    """W2 from topic ``$WB_IN`` to topic ``$WB_OUT`` (``$WB_PARTITIONS`` partitions)."""
    import eventspine as es

    p = es.Pipeline(os.environ.get("WB_APP", APP))
    (
        p.source(
            "events",
            es.topic(os.environ.get("WB_IN", IN), dict, key="key"),  # produced keyed by key
            timestamps=es.EventTime("ts", max_delay=timedelta(seconds=1), idle_timeout=None),
        )
        .key_by("by_key", "key")
        .window(es.Tumbling(timedelta(seconds=1)))
        .aggregate("agg", count=es.count(), sum=es.sum("value"), mean=es.mean("value"))
        .sink(
            "out",
            es.topic(
                os.environ.get("WB_OUT", OUT),
                key="key",
                partitions=int(os.environ.get("WB_PARTITIONS", "2")),
            ),
        )
    )
    return p


# ------------------------------------------------------------------------- data
def load_lines(n: int) -> list[bytes]:
    """The first ``n`` JSON lines of the bench's W2 stream (generated if missing)."""
    data = BENCH / ".work" / "data" / "w2_events.jsonl"
    if not data.exists():
        sys.path.insert(0, str(BENCH))
        import datagen  # type: ignore[import-not-found]

        data.parent.mkdir(parents=True, exist_ok=True)
        with open(data, "w") as f:
            f.writelines(datagen.dump_line(e) for e in datagen.events("w2")["events"])
    lines: list[bytes] = []
    with open(data, "rb") as f:
        for line in f:
            if len(lines) >= n:
                break
            lines.append(line.rstrip(b"\n"))
    if len(lines) < n:
        sys.exit(f"the data has only {len(lines)} events, fewer than --events {n}")
    return lines


def marker_key(p: int, partitions: int) -> str:
    """A key that the engine's partitioner puts in partition ``p``."""
    from eventspine.connectors.topics import key_bytes, partition_for

    i = 0
    while True:
        key = f"__end__{i}"
        kb = key_bytes(key)
        assert kb is not None
        if partition_for(kb, partitions) == p:
            return key
        i += 1


def build_input(lines: list[bytes], events: list[dict[str, Any]], partitions: int) -> Path:
    """The loaded SQLite log for ``(len(lines), partitions)`` (built once, then reused)."""
    from eventspine.connectors.topics import key_bytes, partition_for
    from eventspine.log import open_log
    from eventspine.log.base import LogRecord, TopicSpec

    db = WORK / f"in-{len(lines)}-p{partitions}.db"
    if db.exists():
        return db
    WORK.mkdir(parents=True, exist_ok=True)
    tmp = db.with_suffix(".tmp.db")
    for f in WORK.glob(tmp.name + "*"):
        f.unlink()
    started = time.perf_counter()
    log = open_log(f"sqlite:///{tmp}")
    try:
        log.create_topic(TopicSpec(IN, partitions))
        by_part: dict[int, list[LogRecord]] = {p: [] for p in range(partitions)}
        for line, e in zip(lines, events, strict=True):
            kb = key_bytes(e["key"])
            assert kb is not None
            by_part[partition_for(kb, partitions)].append(LogRecord(kb, line, e["ts"]))
        end_ts = max(e["ts"] for e in events) + END_AFTER_MS
        for p, recs in by_part.items():
            key = marker_key(p, partitions)
            marker = {"key": key, "ts": end_ts, "value": -1.0}
            recs.append(LogRecord(key.encode(), json.dumps(marker).encode(), end_ts))
            for i in range(0, len(recs), 20_000):
                log.append(IN, p, recs[i : i + 20_000])
    finally:
        log.close()
    for suffix in ("-wal", "-shm"):
        extra = Path(str(tmp) + suffix)
        if extra.exists() and extra.stat().st_size:
            raise SystemExit(f"{extra} is not empty after close; cannot copy the database")
        extra.unlink(missing_ok=True)
    tmp.rename(db)
    print(f"loaded {len(lines)} events into {db.name} in {time.perf_counter() - started:.1f} s")
    return db


def reference(events: list[dict[str, Any]]) -> dict[tuple[str, int], list[float]]:
    """Independent batch W2 of the prefix: (key, window_start) -> [count, sum]."""
    ref: dict[tuple[str, int], list[float]] = {}
    for e in events:
        acc = ref.setdefault((e["key"], e["ts"] - e["ts"] % 1000), [0, 0.0])
        acc[0] += 1
        acc[1] += e["value"]
    return ref


# ------------------------------------------------------------------------- one run
def _ends(url: str) -> dict[int, int]:
    from eventspine.log import open_log

    log = open_log(f"{url}?check=none")
    try:
        return {po.partition: po.end for po in log.topics()[IN].offsets}
    finally:
        log.close()


def read_output(url: str) -> list[dict[str, Any]]:
    """Every committed record of the output topic, decoded."""
    from eventspine.log import open_log, read_all

    log = open_log(f"{url}?check=none")
    try:
        info = log.topics().get(OUT)
        if info is None:
            return []
        return [json.loads(r.value) for _, r in read_all(log, info) if r.value is not None]
    finally:
        log.close()


def run_once(
    db: Path, partitions: int, workers: int, rep: int, limit_s: float, profile: Path | None = None
) -> dict[str, Any]:
    """Run the pipeline on a fresh copy of ``db`` until every input position is committed."""
    from eventspine.log import open_log

    tmp = Path(tempfile.mkdtemp(prefix=f"wb-{workers}w-", dir=WORK))
    copy = tmp / "log.db"
    shutil.copyfile(db, copy)
    url = f"sqlite:///{copy}"
    ends = _ends(url)
    env = {
        **os.environ,
        "WB_APP": APP,
        "WB_IN": IN,
        "WB_OUT": OUT,
        "WB_PARTITIONS": str(partitions),
    }
    cli = ["run", f"{HERE / 'workers.py'}:pipeline", "--log-url", url, "--workers", str(workers)]
    cli += ["--checkpoint-interval-ms", "1000", "--log-level", "INFO", "--no-progress", "--quiet"]
    cli += ["--state-dir", str(tmp / "state")]
    if profile is not None:
        cmd = [sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "eventspine.cli.main"]
    else:
        cmd = [EVENTSPINE]
    load0 = os.getloadavg()[0]
    steal0 = _steal_s()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [*cmd, *cli], cwd=ROOT, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL
    )
    started: list[float] = []
    err_lines: list[str] = []

    def reader() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            err_lines.append(line)
            if " started (checkpoint " in line:
                started.append(time.monotonic())

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    res: dict[str, Any] = {"workers": workers, "partitions": partitions, "rep": rep}
    done: float | None = None
    watcher = None
    try:
        deadline = t0 + limit_s
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
            if watcher is None:
                try:
                    watcher = open_log(f"{url}?check=none")
                except Exception:  # the file may be busy at start
                    continue
            try:
                committed = watcher.committed(APP, IN)
            except Exception:  # no positions yet, or a busy moment
                continue
            if all(committed.get(p) == end for p, end in ends.items()):
                done = time.monotonic()
                break
    finally:
        if watcher is not None:
            watcher.close()
        load1 = os.getloadavg()[0]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        thread.join(5)
    t_exit = time.monotonic()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    res.update(load1_start=load0, load1_end=load1, exit_code=proc.returncode)
    res.update(cpu_s=cpu, cores_used=cpu / (t_exit - t0))
    steal = _steal_s()
    if steal is not None and steal0 is not None:
        res["steal_share"] = (steal - steal0) / ((os.cpu_count() or 1) * (t_exit - t0))
    if done is None:
        res.update(ok=False, error="not done:\n" + "\n".join(err_lines[-30:]))
        return res
    n = sum(ends.values()) - partitions  # the markers are not events
    res.update(
        ok=True,
        events=n,
        total_s=done - t0,
        events_per_s=n / (done - t0),
        startup_s=(max(started) - t0) if len(started) >= partitions else None,
    )
    if res["startup_s"] is not None:
        res["run_s"] = done - max(started)
        res["events_per_s_run"] = n / res["run_s"]
    res["rows"] = read_output(url)
    shutil.rmtree(tmp, ignore_errors=True)
    return res


# ------------------------------------------------------------------------- checks
def canon(rows: list[dict[str, Any]]) -> Counter[str]:
    """The output as a multiset of exact JSON rows."""
    return Counter(json.dumps(r, sort_keys=True) for r in rows)


def compare(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> dict[str, Any]:
    """Two runs' outputs: ``same`` as multisets up to float rounding (sum/mean within 1e-9
    relative, everything else equal); ``bitwise`` if identical as multisets of exact rows;
    ``float_diffs``: (key, window) rows whose sum or mean differ in their bits."""
    bitwise = canon(a) == canon(b)

    def by_window(rows: list[dict[str, Any]]) -> dict[tuple[str, int], list[dict[str, Any]]]:
        out: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for r in rows:
            out.setdefault((r["key"], r["window_start_ms"]), []).append(r)
        return out

    wa, wb = by_window(a), by_window(b)
    same = wa.keys() == wb.keys()
    diffs: list[tuple[Any, Any]] = []
    for k in wa.keys() & wb.keys():
        ra, rb = wa[k], wb[k]
        if len(ra) != len(rb):
            same = False
            continue
        for x, y in zip(ra, rb, strict=True):
            if {f: v for f, v in x.items() if f not in ("sum", "mean")} != {
                f: v for f, v in y.items() if f not in ("sum", "mean")
            }:
                same = False
            elif x["sum"] != y["sum"] or x["mean"] != y["mean"]:
                diffs.append((x, y))
                if not (_close(x["sum"], y["sum"]) and _close(x["mean"], y["mean"])):
                    same = False
    return {"same": same, "bitwise": bitwise, "float_diffs": len(diffs),
            "float_diff_examples": [list(d) for d in diffs[:3]]}  # fmt: skip


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= max(1e-6, 1e-9 * max(abs(a), abs(b)))


def check_ref(
    rows: list[dict[str, Any]], ref: dict[tuple[str, int], list[float]]
) -> dict[str, Any]:
    """The bench's W2 check of (key, window_start) rows against the batch reference."""
    got: dict[tuple[str, int], dict[str, Any]] = {}
    dups = 0
    for r in rows:
        k = (r["key"], r["window_start_ms"])
        dups += k in got
        got[k] = r
    missing = sum(1 for k in ref if k not in got)
    extra = sum(1 for k in got if k not in ref)
    bad = 0
    for k, r in got.items():
        want = ref.get(k)
        if want is None:
            continue
        c, s = want
        if r["count"] != c or not _close(r["sum"], s) or not _close(r["mean"], s / c):
            bad += 1
    ok = not (dups or missing or extra or bad)
    return {"pass": ok, "rows": len(rows), "expected_rows": len(ref), "duplicates": dups,
            "missing": missing, "extra": extra, "mismatched": bad}  # fmt: skip


def profile_top(path: Path) -> dict[str, str]:
    """The top 15 functions by cumulative and by internal time."""
    out = {}
    for key in ("cumulative", "tottime"):
        buf = io.StringIO()
        pstats.Stats(str(path), stream=buf).strip_dirs().sort_stats(key).print_stats(15)
        text = buf.getvalue()
        out[key] = text[text.find("   ncalls") :]
    return out


# ------------------------------------------------------------------------- driver
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--partitions", default="2", help="comma-separated partition counts")
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--limit-s", type=float, default=600)
    ap.add_argument("--profile", action=argparse.BooleanOptionalAction, default=True)
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run_once's finally stops the child
    worker_counts = [int(w) for w in a.workers.split(",")]
    lines = load_lines(a.events)
    events = [json.loads(line) for line in lines]
    ref = reference(events)
    if a.events == N_W2:
        assert len(ref) == W2_REF_ROWS, f"reference has {len(ref)} rows, not {W2_REF_ROWS}"
    print(f"{a.events} events, reference {len(ref)} (key, window) rows")
    result: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "events": a.events,
        "cpus": os.cpu_count(),
        "reps": a.reps,
        "reference_rows": len(ref),
        "cases": {},
    }
    for partitions in [int(p) for p in a.partitions.split(",")]:
        db = build_input(lines, events, partitions)
        runs: list[dict[str, Any]] = []
        first: list[dict[str, Any]] | None = None
        for rep in range(a.reps):
            for w in worker_counts:
                r = run_once(db, partitions, w, rep, a.limit_s)
                rows = r.pop("rows", None)
                if rows is not None:
                    r["check"] = check_ref(rows, ref)
                    if first is None:
                        first = rows
                    r["vs_first_run"] = compare(first, rows)
                    r["same_as_first_run"] = r["vs_first_run"]["same"]
                    del rows
                runs.append(r)
                print(_line(r), flush=True)
        case: dict[str, Any] = {"runs": runs, "median": {}}
        for w in worker_counts:
            ok = [r for r in runs if r["workers"] == w and r.get("ok")]
            if not ok:
                continue
            med: dict[str, Any] = {"n": len(ok)}
            fields = ("events_per_s", "events_per_s_run", "total_s", "startup_s", "load1_start")
            for f in (*fields, "cpu_s", "cores_used"):
                vals = [r[f] for r in ok if r.get(f) is not None]
                med[f] = statistics.median(vals) if vals else None
            case["median"][str(w)] = med
        m1 = case["median"].get("1")
        for w in worker_counts:
            mw = case["median"].get(str(w))
            if m1 and mw and w != 1:
                mw["speedup"] = mw["events_per_s"] / m1["events_per_s"]
                if mw.get("events_per_s_run") and m1.get("events_per_s_run"):
                    mw["speedup_run"] = mw["events_per_s_run"] / m1["events_per_s_run"]
        if a.profile and partitions == int(a.partitions.split(",")[0]):
            prof = WORK / f"profile-1w-p{partitions}.prof"
            r = run_once(db, partitions, 1, -1, a.limit_s, profile=prof)
            r.pop("rows", None)
            case["profile_run"] = r
            if prof.exists():
                case["profile"] = profile_top(prof)
        result["cases"][str(partitions)] = case
    print_table(result)
    out = HERE / "results" / f"workers_{datetime.now(UTC):%Y-%m-%d}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


def _steal_s() -> float | None:
    """CPU seconds the hypervisor gave to others (``steal`` of ``/proc/stat``), all CPUs."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _line(r: dict[str, Any]) -> str:
    if not r.get("ok"):
        return f"  P={r['partitions']} W={r['workers']} rep {r['rep']}: FAILED {r.get('error')}"
    run = r.get("events_per_s_run")
    return (
        f"  P={r['partitions']} W={r['workers']} rep {r['rep']}: {r['events_per_s']:,.0f} ev/s "
        f"({r['total_s']:.1f} s; start-up {r['startup_s'] or 0:.1f} s; excl. start-up "
        f"{run or 0:,.0f} ev/s) cpu {r['cpu_s']:.1f} s = {r['cores_used']:.2f} cores; "
        f"load {r['load1_start']:.2f}->{r['load1_end']:.2f} "
        f"steal {100 * r.get('steal_share', 0):.0f} % "
        f"check={'ok' if r['check']['pass'] else r['check']} same={r['same_as_first_run']} "
        f"float-diff rows={r['vs_first_run']['float_diffs']}"
    )


def print_table(result: dict[str, Any]) -> None:
    """Medians per (partitions, workers) and the speed-up over one worker."""
    print(f"\nW2 on the SQLite log, {result['events']:,} events, medians of {result['reps']}")
    print(f"{'P':>2} {'W':>2} {'ev/s':>10} {'x1':>6} {'ev/s excl. start':>17} {'x1':>6} "
          f"{'start-up s':>10} {'cpu s':>6} {'cores':>5} {'load1':>6}")  # fmt: skip
    for p, case in result["cases"].items():
        for w, m in case["median"].items():
            run = m.get("events_per_s_run")
            print(
                f"{p:>2} {w:>2} {m['events_per_s']:>10,.0f} {m.get('speedup', 1.0):>6.2f} "
                f"{(run or 0):>17,.0f} {m.get('speedup_run', 1.0):>6.2f} "
                f"{(m.get('startup_s') or 0):>10.2f} {(m.get('cpu_s') or 0):>6.1f} "
                f"{(m.get('cores_used') or 0):>5.2f} {m['load1_start']:>6.2f}"
            )
        if "profile" in case:
            print(f"\n1-worker profile (P={p}), top 15 by cumulative time:")
            print(case["profile"]["cumulative"])


if __name__ == "__main__":
    main()
