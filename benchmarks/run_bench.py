"""Run eventspine beside its Python peers on the shared anchor workloads (W1-W4).

    .venv/bin/python benchmarks/run_bench.py                       # base + bytewax, 3 reps
    .venv/bin/python benchmarks/run_bench.py --peers pathway,streamz --reps 1 --workloads w2

Steps: (a) copy the shared harness (``$EVENTSPINE_SHARED_BENCH`` or
``../shared/bench``) to ``benchmarks/.work/bench`` (git-ignored), (b) create the
peer virtualenvs it needs with pip (``base`` always; ``bytewax`` by default;
``--peers`` adds pathway/streamz/flink), (c) generate the data and the batch
reference once, (d) register eventspine with the harness through
``EVENTSPINE_BENCH_PYTHON``/``EVENTSPINE_BENCH_ADAPTER`` (the shared copy is not
edited), (e) run every system side by side (reps outermost, as the harness
does), (f) print medians with the ratios eventspine/peer and
eventspine/polars-batch (the vectorized batch ceiling), peak RSS and
correctness, and write ``benchmarks/results/anchors_<date>.json`` and ``.md``.

Only same-run ratios are meaningful: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORK = os.path.join(HERE, ".work")
BENCH = os.path.join(WORK, "bench")
RESULTS = os.path.join(HERE, "results")
PEERS = {  # system name -> (venv, pip packages, import probe)
    "baseline-loop": ("base", ["polars", "numpy", "psutil"], "polars"),
    "polars-batch": ("base", ["polars", "numpy", "psutil"], "polars"),
    "bytewax": ("bytewax", ["bytewax==0.21.1", "psutil"], "bytewax"),
    "pathway": ("pathway", ["pathway", "psutil"], "pathway"),
    "streamz": ("streamz", ["streamz", "psutil"], "streamz"),
    "pyflink-sql": ("flink", ["apache-flink", "psutil"], "pyflink"),
}


def sh(cmd: list[str], **kw: Any) -> None:
    """Run a command, echoing it; fail loudly."""
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kw)


def copy_harness(src: str, fresh: bool) -> None:
    """(a) Copy the shared harness, keeping venvs and data already made."""
    if fresh and os.path.exists(BENCH):
        shutil.rmtree(BENCH)
    os.makedirs(BENCH, exist_ok=True)
    for name in os.listdir(src):
        if name in (".work", "results"):
            continue
        s, d = os.path.join(src, name), os.path.join(BENCH, name)
        if os.path.isdir(s):
            shutil.copytree(s, d, dirs_exist_ok=True)
        else:
            shutil.copyfile(s, d)
    os.makedirs(os.path.join(BENCH, "results", "raw"), exist_ok=True)


def make_venvs(systems: list[str]) -> None:
    """(b) One venv per peer under the copy's ``.work/venvs`` (idempotent)."""
    py = os.environ.get("PYTHON", shutil.which("python3.11") or shutil.which("python3") or "")
    done: set[str] = set()
    for system in systems:
        venv, pkgs, probe = PEERS[system]
        if venv in done:
            continue
        done.add(venv)
        vpy = os.path.join(BENCH, ".work", "venvs", venv, "bin", "python")
        if os.path.exists(vpy) and subprocess.run([vpy, "-c", f"import {probe}"]).returncode == 0:
            continue
        sh([py, "-m", "venv", os.path.dirname(os.path.dirname(vpy))])
        sh([vpy, "-m", "pip", "install", "-q", *pkgs])


def make_data() -> None:
    """(c) Data and reference, once (both are deterministic)."""
    base = os.path.join(BENCH, ".work", "venvs", "base", "bin", "python")
    data = os.path.join(BENCH, ".work", "data")
    if not os.path.exists(os.path.join(data, "w4_payments.jsonl")):
        sh([base, "datagen.py"], cwd=BENCH)
    if not os.path.exists(os.path.join(data, "ref_w4.marshal")):
        sh([base, "check.py", "--build-ref"], cwd=BENCH)


def run_matrix(systems: list[str], a: argparse.Namespace) -> None:
    """(d) + (e) Register eventspine by env vars and run the harness over every system."""
    raw = os.path.join(BENCH, "results", "raw")
    for f in glob.glob(os.path.join(raw, "*.json")):
        os.remove(f)
    env = dict(os.environ)
    env["EVENTSPINE_BENCH_PYTHON"] = a.python
    env["EVENTSPINE_BENCH_ADAPTER"] = os.path.join(HERE, "harness_adapter.py")
    env["EVENTSPINE_BENCH_DIR"] = BENCH
    base = os.path.join(BENCH, ".work", "venvs", "base", "bin", "python")
    cmd = [base, "run_anchors.py", "--systems", ",".join(["eventspine", *systems])]
    cmd += ["--workloads", a.workloads, "--sources", a.sources, "--reps", str(a.reps)]
    sh(cmd, cwd=BENCH, env=env)


def _median(rs: list[dict[str, Any]], field: str) -> float | None:
    vals = [r[field] for r in rs if r.get(field) is not None]
    return statistics.median(vals) if vals else None


def summarize(systems: list[str], a: argparse.Namespace) -> dict[str, Any]:
    """(f) Medians per (workload, source, system) and eventspine's ratios."""
    cells: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for f in sorted(glob.glob(os.path.join(BENCH, "results", "raw", "*.json"))):
        with open(f) as fh:
            r = json.load(fh)
        if r.get("probe") or r.get("workers", 1) != 1:
            continue
        cells.setdefault((r["workload"], r["source"], r["system"]), []).append(r)
    rows: list[dict[str, Any]] = []
    for (w, src, system), rs in sorted(cells.items()):
        rows.append(
            {
                "workload": w,
                "source": src,
                "system": system,
                "reps": len(rs),
                "events_per_s": _median(rs, "events_per_s"),
                "pipeline_s": _median(rs, "pipeline_s"),
                "wall_s": _median(rs, "wall_s"),
                "peak_rss_mb": _median(rs, "peak_rss_mb"),
                "correct": f"{sum(bool(r.get('correct')) for r in rs)}/{len(rs)}",
                "variant": ((rs[0].get("adapter") or {}).get("variant") or ""),
            }
        )
    by = {(r["workload"], r["source"], r["system"]): r for r in rows}
    for r in rows:
        mine = by.get((r["workload"], r["source"], "eventspine"))
        if mine and mine["events_per_s"] and r["events_per_s"]:
            r["eventspine_over_this"] = round(mine["events_per_s"] / r["events_per_s"], 3)
    load = os.getloadavg()
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "loadavg_at_end": [round(x, 2) for x in load]},
        "args": {
            "systems": systems,
            "reps": a.reps,
            "workloads": a.workloads,
            "sources": a.sources,
        },
        "rows": rows,
    }


def _rate(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x / 1e3:.0f}k"


def to_markdown(summary: dict[str, Any]) -> str:
    """The table printed and written beside the JSON."""
    lines = [
        f"# eventspine vs peers ({summary['date']})",
        "",
        f"Machine: {summary['machine']['cpus']} cores, load average at the end "
        f"{summary['machine']['loadavg_at_end']} (shared: only same-run ratios are meaningful). "
        f"Medians of {summary['args']['reps']} fresh-process runs; events/s = N / pipeline_s.",
        "",
        "| workload | source | system | variant | events/s | eventspine / this | pipeline s "
        "| peak RSS MB | correct |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["rows"]:
        ratio = r.get("eventspine_over_this")
        lines.append(
            f"| {r['workload']} | {r['source']} | {r['system']} | {r['variant']} "
            f"| {_rate(r['events_per_s'])} | {'-' if ratio is None else f'{ratio:.2f}x'} "
            f"| {r['pipeline_s'] if r['pipeline_s'] is not None else '-'} "
            f"| {r['peak_rss_mb']:.0f} | {r['correct']} |"
        )
    lines += [
        "",
        "`eventspine / this` on the polars-batch rows is eventspine's share of the "
        "vectorized batch ceiling (polars over the whole file, no streaming semantics, 2 cores).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    """Parse arguments and run steps (a)-(f)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--peers", default="", help="extra peers: pathway,streamz,pyflink-sql")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--workloads", default="w1,w2,w3,w4")
    ap.add_argument("--sources", default="file,memory")
    ap.add_argument("--python", default=os.path.join(ROOT, ".venv", "bin", "python"))
    ap.add_argument(
        "--shared",
        default=os.environ.get(
            "EVENTSPINE_SHARED_BENCH", os.path.join(ROOT, "..", "shared", "bench")
        ),
    )
    ap.add_argument("--fresh", action="store_true", help="recopy the harness (keeps nothing)")
    ap.add_argument(
        "--summarize-only", action="store_true", help="only rebuild the table from the raw runs"
    )
    a = ap.parse_args()
    systems = ["baseline-loop", "polars-batch", "bytewax"]
    systems += [p for p in a.peers.split(",") if p]
    unknown = [s for s in systems if s not in PEERS]
    if unknown:
        sys.exit(f"unknown peers: {unknown}; choose from {sorted(PEERS)}")
    if not a.summarize_only:
        copy_harness(os.path.abspath(a.shared), a.fresh)
        make_venvs(systems)
        make_data()
        run_matrix(systems, a)
    summary = summarize(systems, a)
    md = to_markdown(summary)
    print(md)
    os.makedirs(RESULTS, exist_ok=True)
    stem = os.path.join(RESULTS, "anchors_" + dt.datetime.now(dt.UTC).date().isoformat())
    with open(stem + ".json", "w") as f:
        json.dump(summary, f, indent=1)
    with open(stem + ".md", "w") as f:
        f.write(md)
    print(f"wrote {stem}.json and {stem}.md")


if __name__ == "__main__":
    main()
