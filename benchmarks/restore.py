"""State restore on Kafka: how long a task takes to rebuild its state from its changelogs.

The part of a failover that eventspine controls (the rest is the group's session timeout):
``benchmarks/failover.py`` measures the whole failover under three workers; this measures
only the restore, alone on the machine, so that a change to the restore path shows up
clearly. Run (starts and stops its own broker)::

    .venv/bin/python benchmarks/restore.py [--keys 1000000] [--variants process,window]
        [--runs 5] [--profile] [--port-base 9470]

One worker (``eventspine run benchmarks/failover.py:pipeline``, the same pipelines) reads the
input of ``failover.py`` (one record per key, 6 partitions) until the group has committed all
of it, and stops (SIGTERM). Then this process restores task 0 (1/6 of the keys) ``--runs``
times, as a worker taking the task over does (``Executor.start``), and reports the median
and spread of the wall time; ``--profile`` adds one run under cProfile. ``--url-options``
(e.g. ``kafka.max.partition.fetch.bytes=4194304``) configures the restoring log.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import failover  # noqa: E402  # the same broker, input and pipelines

ROOT = HERE.parent


def load_state(bootstrap: str, topic: str, variant: str, ends: dict[int, int]) -> dict[str, str]:
    """Run one worker until the group has committed the whole input; return the pipeline env."""
    from confluent_kafka import Consumer, TopicPartition

    tag = f"rs_{variant}_{uuid.uuid4().hex[:6]}"
    env = {"FO_APP": tag, "FO_IN": topic, "FO_OUT": f"fo-out-{tag}", "FO_VARIANT": variant}
    cmd = [failover.EVENTSPINE, "run", "benchmarks/failover.py:pipeline", "--log-url",
           f"kafka://{bootstrap}?replication_factor=1", "--checkpoint-interval-ms", "1000",
           "--no-progress", "--quiet", "--state-dir", tempfile.mkdtemp(prefix="rs-")]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env}, stderr=subprocess.DEVNULL)
    watch = Consumer({"bootstrap.servers": bootstrap, "group.id": tag})
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            parts = [TopicPartition(topic, p) for p in ends]
            got = {tp.partition: tp.offset for tp in watch.committed(parts, timeout=10)}
            if all(got.get(p, -1) >= end for p, end in ends.items()):
                break
            if proc.poll() is not None:
                sys.exit(f"the worker exited with {proc.returncode}")
            time.sleep(1)
        else:
            sys.exit("the worker did not commit the whole input in 600 s")
    finally:
        watch.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
    return env


def restore(url: str, env: dict[str, str], runs: int, profile: bool) -> dict[str, Any]:
    """Restore task 0 ``runs`` times (and once under cProfile): wall times and the profile."""
    from eventspine.log import open_log
    from eventspine.runtime.executor import Executor, RunOptions

    os.environ.update(env)
    log = open_log(url)
    try:
        times: list[float] = []
        keys = None
        prof = cProfile.Profile() if profile else None
        for i in range(runs + (1 if profile else 0)):
            task = Executor(
                failover.pipeline(), options=RunOptions(log=log), partition=0,
                partitions=failover.PARTITIONS,
            )  # fmt: skip
            profiled = prof is not None and i == runs
            t0 = time.perf_counter()
            if profiled:
                prof.enable()  # type: ignore[union-attr]
            task.start()
            if profiled:
                prof.disable()  # type: ignore[union-attr]
            else:
                times.append(time.perf_counter() - t0)
            keys = max(m.state_keys for m in task.plan.metrics.values())
            task.close()
        out: dict[str, Any] = {
            "restore_s": {
                "median": statistics.median(times),
                "min": min(times),
                "max": max(times),
                "runs": times,
            },
            "state_keys": keys,
            "load1": os.getloadavg()[0],
        }
        if prof is not None:
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).strip_dirs().sort_stats("tottime").print_stats(20)
            text = buf.getvalue()
            out["profile"] = text[text.find("   ncalls") :]
        return out
    finally:
        log.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--variants", default="process,window")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--bootstrap", default=None)
    ap.add_argument("--port-base", type=int, default=9470)
    ap.add_argument("--url-options", default="", help="query of the restoring log's URL")
    ap.add_argument(
        "--out", default=None, help="results file (default: results/restore_<date>.json)"
    )
    a = ap.parse_args()
    result: dict[str, Any] = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
                              "keys": a.keys, "cpus": os.cpu_count(), "url_options": a.url_options,
                              "variants": {}}  # fmt: skip
    with failover.broker(a.bootstrap, a.port_base) as bootstrap:
        topic = f"fo-in-{a.keys}"
        ends = failover.produce_input(bootstrap, topic, a.keys)
        for variant in a.variants.split(","):
            env = load_state(bootstrap, topic, variant, ends)
            res = restore(f"kafka://{bootstrap}?{a.url_options}", env, a.runs, a.profile)
            result["variants"][variant] = res
            r = res["restore_s"]
            print(f"{variant:8} task 0 ({res['state_keys']} state keys): restore median "
                  f"{r['median']:.2f} s (min {r['min']:.2f}, max {r['max']:.2f}, {a.runs} runs, "
                  f"load1 {res['load1']:.1f})")  # fmt: skip
            if "profile" in res:
                print(res["profile"])
    out = Path(a.out) if a.out else HERE / "results" / f"restore_{datetime.now(UTC):%Y-%m-%d}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
