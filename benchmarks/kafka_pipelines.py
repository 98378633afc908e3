"""Kafka-to-Kafka pipelines, eventspine beside Quix Streams, on one broker and the same data.

Run (starts and stops its own broker; about 15-30 min on 2 shared cores with the defaults)::

    .venv/bin/python benchmarks/kafka_pipelines.py --events 500000 --partitions 1 \\
        --workloads w1,w2 --modes eo,alo --reps-es 3 --reps-quix 2 --profile

``--bootstrap host:port`` uses a running broker instead. Quix Streams
(``quixstreams==3.28.1``, the version of the anchor benchmark) is installed on
first use into its own venv ``benchmarks/.work/kafka_pipelines/quix-venv``
(git-ignored), never into the project's environment.

**Data.** The W1/W2 stream of ``/work/shared/bench`` (``datagen.events("w2")``:
2,000,000 events over 10k keys, 10 % up to 500 ms late), generated once and
cached as ``benchmarks/.work/kafka_pipelines/w2_events.jsonl``; ``--events N``
takes its first N events in arrival order. They are produced once per
partition count into the input topic ``kp-in-<N>-p<P>`` by a plain producer:
key = the event key, Kafka timestamp = ``ts``, value = the JSON line,
partition = ``crc32(key) % P``. After them each partition gets one end marker
``{"key": "__end__<p>", "ts": max_ts + 10 s, "value": -1.0}``: the topic never
ends, so the marker advances every partition's event time past the last window
(both systems then close every real window; the marker's own window stays
open, W1 filters it out).

**Workloads** (both systems, public API only, one worker, 1 s between
checkpoints / commits in both):

* W1: ``value > 0.5`` filter, ``value * 2`` map, every result to the output topic.
* W2: event-time tumbling 1 s windows per key, count/sum/mean, 1 s watermark
  delay (eventspine ``EventTime("ts", max_delay=1 s)``; Quix ``grace_ms=1000``,
  ``final(closing_strategy="partition")``: Quix's default ``"key"`` strategy
  closes a key's window only when that key sees a later record, so most of the
  last windows would never be emitted).

**Modes.** ``eo``: eventspine ``CheckpointPolicy(exactly_once=True)``, Quix
``processing_guarantee="exactly-once"``; ``alo``: ``exactly_once=False`` /
``"at-least-once"``. eventspine's ALO column is skipped (with a message) while
``KafkaLog`` has no ``non_atomic_transaction`` (without it ``exactly_once=False``
commits the same Kafka transaction as EO).

**Measure.** Each run is a fresh subprocess with a fresh consumer group,
pipeline name and output topic. The worker prints ``START <time>`` just before
``es.run`` / ``app.run`` (both still include opening the clients, creating
their topics and joining/assigning partitions); this process then polls the
group's committed input offsets (``list_consumer_group_offsets``, stable
only) every 50 ms, and the run is done when they reach the input end: the
outputs are then committed too (EO: in the same transaction; ALO: produced
and flushed before the offsets). ``events_per_s = N / (done - START)``.
The worker is stopped with SIGTERM, its output read back with a
``read_committed`` reader and checked against an independent batch reference
of the same prefix: W1 count and sum (1e-9 rel); W2 the exact set of
(key, window_start), no duplicates, equal counts, sum and mean within 1e-9 rel.
For N = 2,000,000 the reference sizes are asserted against the bench README
(W1 1,000,044; W2 1,264,102 rows). The load average is recorded per run.
Medians and the eventspine / Quix ratios go to stdout and to
``benchmarks/results/kafka_pipelines_<date>.json``. ``--profile [w1,w2]`` adds
one eventspine EO run per workload (default W2) under cProfile (left out of the
medians) and prints its top 15 by cumulative time.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORK = HERE / ".work" / "kafka_pipelines"
QUIX_VENV = WORK / "quix-venv"
QUIX_VERSION = "3.28.1"
BENCH_DIR = Path("/work/shared/bench")
KAFKACTL = REPO / "tools" / "kafka" / "kafkactl"
DATA = WORK / "w2_events.jsonl"
END_AFTER_MS = 10_000
REF_FULL = {"w1": 1_000_044, "w2": 1_264_102}


# ---------------------------------------------------------------------------- workers
def worker(a: argparse.Namespace) -> None:
    """Run one system's pipeline until SIGTERM (this runs in the subprocess)."""
    if a.system == "eventspine":
        _eventspine_worker(a)
    else:
        _quix_worker(a)


def _start() -> None:
    print(f"START {time.time():.6f}", flush=True)


def _eventspine_worker(a: argparse.Namespace) -> None:
    import eventspine as es
    from eventspine.runtime.checkpoint import CheckpointPolicy

    p = es.Pipeline(a.group)
    events = p.source(
        "events",
        es.topic(a.input, dict, key="key"),  # produced keyed by key: no repartition
        timestamps=es.EventTime("ts", max_delay=timedelta(seconds=1)),
    )
    out = es.topic(a.output, key="key", partitions=a.partitions)
    if a.workload == "w1":
        events.filter("keep", es.col("value") > 0.5).map("double", value=es.col("value") * 2).sink(
            "out", out
        )
    else:
        (
            events.key_by("by_key", "key")
            .window(es.Tumbling(timedelta(seconds=1)))
            .aggregate("agg", count=es.count(), sum=es.sum("value"), mean=es.mean("value"))
            .sink("out", out)
        )
    options = es.RunOptions(
        log=f"kafka://{a.bootstrap}?replication_factor=1",
        checkpoint=CheckpointPolicy(interval=timedelta(seconds=1), exactly_once=a.mode == "eo"),
        latency_budget=timedelta(milliseconds=a.latency_budget_ms),
        state_dir=a.state_dir,
    )
    if a.profile:
        import cProfile

        prof = cProfile.Profile()
        _start()
        prof.enable()
        result = es.run(p, options=options)
        prof.disable()
        prof.dump_stats(a.profile)
    else:
        _start()
        result = es.run(p, options=options)
    print(f"RESULT {json.dumps({'checkpoints': result.checkpoints})}", flush=True)


def _quix_worker(a: argparse.Namespace) -> None:
    from quixstreams import Application  # type: ignore[import-not-found]
    from quixstreams.dataframe.windows import Count, Mean, Sum  # type: ignore[import-not-found]
    from quixstreams.models import TopicConfig  # type: ignore[import-not-found]

    app = Application(
        broker_address=a.bootstrap,
        consumer_group=a.group,
        processing_guarantee="exactly-once" if a.mode == "eo" else "at-least-once",
        auto_offset_reset="earliest",
        commit_interval=1.0,
        state_dir=a.state_dir,
        loglevel="WARNING",
    )
    src = app.topic(a.input, value_deserializer="json", key_deserializer="str")
    out = app.topic(
        a.output,
        value_serializer="json",
        key_serializer="str",
        config=TopicConfig(
            num_partitions=a.partitions,
            replication_factor=1,
            extra_config={"retention.ms": "-1"},
        ),
    )
    sdf = app.dataframe(src)
    if a.workload == "w1":
        sdf = sdf.filter(lambda v: v["value"] > 0.5)
        sdf = sdf.apply(lambda v: {**v, "value": v["value"] * 2})
    else:
        sdf = (
            sdf.tumbling_window(1000, grace_ms=1000)
            .agg(count=Count(), sum=Sum("value"), mean=Mean("value"))
            .final(closing_strategy="partition")
        )
    sdf.to_topic(out)
    _start()
    app.run()


# ---------------------------------------------------------------------------- data
def load_events(n: int) -> list[bytes]:
    """The first ``n`` JSON lines of the bench's W1/W2 stream (generated once, then cached)."""
    if not DATA.exists():
        sys.path.insert(0, str(BENCH_DIR))
        sys.dont_write_bytecode = True
        import datagen  # type: ignore[import-not-found]

        started = time.perf_counter()
        lst = datagen.events("w2", use_cache=False)["events"]
        WORK.mkdir(parents=True, exist_ok=True)
        tmp = DATA.with_suffix(".tmp")
        with open(tmp, "w") as f:
            f.writelines(datagen.dump_line(e) for e in lst)
        tmp.rename(DATA)
        print(f"generated {len(lst)} events in {time.perf_counter() - started:.1f} s", flush=True)
    lines: list[bytes] = []
    with open(DATA, "rb") as f:
        for line in f:
            if len(lines) >= n:
                break
            lines.append(line.rstrip(b"\n"))
    if len(lines) < n:
        sys.exit(f"the data has only {len(lines)} events, fewer than --events {n}")
    return lines


def reference(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Independent batch results of the prefix (no watermarks)."""
    kept = [e["value"] * 2 for e in events if e["value"] > 0.5]
    windows: dict[tuple[str, int], list[float]] = {}
    for e in events:
        acc = windows.setdefault((e["key"], e["ts"] - e["ts"] % 1000), [0, 0.0])
        acc[0] += 1
        acc[1] += e["value"]
    return {"w1": (len(kept), sum(kept)), "w2": windows}


def produce_input(bootstrap: str, name: str, lines: list[bytes], events: list[dict[str, Any]],
                  partitions: int) -> dict[int, int]:  # fmt: skip
    """Create ``name`` and produce the events plus one end marker per partition.

    Returns the end offset of each partition.
    """
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    admin = AdminClient({"bootstrap.servers": bootstrap})
    if name in admin.list_topics(timeout=10).topics:
        return _ends(bootstrap, name, partitions)
    # Event times are in 2023: without retention.ms=-1 the broker deletes them at once.
    cfg = {
        "message.timestamp.type": "CreateTime",
        "message.timestamp.after.max.ms": str(2**63 - 1),
        "retention.ms": "-1",
    }
    admin.create_topics([NewTopic(name, partitions, 1, config=cfg)])[name].result(30)
    prod = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 50, "batch.size": 1_000_000,
         "queue.buffering.max.messages": 1_000_000, "enable.idempotence": True}
    )  # fmt: skip
    started = time.perf_counter()
    for line, e in zip(lines, events, strict=True):
        key = e["key"].encode()
        part = zlib.crc32(key) % partitions
        while True:
            try:
                prod.produce(name, line, key, partition=part, timestamp=e["ts"])
                break
            except BufferError:
                prod.poll(0.05)
    end_ts = max(e["ts"] for e in events) + END_AFTER_MS
    for p in range(partitions):
        marker = {"key": f"__end__{p}", "ts": end_ts, "value": -1.0}
        prod.produce(name, json.dumps(marker).encode(), marker["key"].encode(), partition=p,
                     timestamp=end_ts)  # fmt: skip
    if prod.flush(120) != 0:
        sys.exit("the input producer did not deliver everything in 120 s")
    print(f"produced {len(lines)} events to {name} in {time.perf_counter() - started:.1f} s")
    _warm_coordinators(bootstrap, name)
    return _ends(bootstrap, name, partitions)


def _warm_coordinators(bootstrap: str, topic: str) -> None:
    """Commit one transaction with offsets, so no timed run pays for the broker's first one.

    The first transactional producer and group commit on a fresh broker create
    ``__transaction_state`` and ``__consumer_offsets`` and load their coordinators.
    """
    from confluent_kafka import Consumer, Producer, TopicPartition

    prod = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"kp-warm-{topic}"})
    prod.init_transactions(60)
    prod.begin_transaction()
    group = Consumer({"bootstrap.servers": bootstrap, "group.id": f"kp-warm-{topic}"})
    prod.send_offsets_to_transaction(
        [TopicPartition(topic, 0, 0)], group.consumer_group_metadata(), 60
    )
    prod.commit_transaction(60)
    group.close()


def _ends(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    from eventspine.log.kafka import KafkaLog

    log = KafkaLog(bootstrap)
    try:
        offsets = log.topics()[topic].offsets
        return {p: offsets[p].end for p in range(partitions)}
    finally:
        log.close()


# ---------------------------------------------------------------------------- one run
def run_once(cfg: argparse.Namespace, system: str, workload: str, mode: str, partitions: int,
             rep: int, ends: dict[int, int], ref: dict[str, Any],
             profile: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Run one pipeline in a subprocess until its group committed the input end; check it."""
    from eventspine.log.kafka import KafkaLog

    rid = f"{system[:2]}-{workload}-{mode}-p{partitions}-r{rep}-{uuid.uuid4().hex[:6]}"
    group, output = f"kp_{rid}".replace("-", "_"), f"kp-out-{rid}"
    in_topic = input_topic(cfg.events, partitions)
    state_dir = tempfile.mkdtemp(prefix=f"{rid}-", dir=WORK)
    python = str(QUIX_VENV / "bin" / "python") if system == "quix" else sys.executable
    cmd = [python, __file__, "worker", "--system", system, "--workload", workload,
           "--mode", mode, "--bootstrap", cfg.bootstrap, "--input", in_topic, "--output", output,
           "--group", group, "--partitions", str(partitions), "--state-dir", state_dir,
           "--latency-budget-ms", str(cfg.latency_budget_ms)]  # fmt: skip
    if profile:
        cmd += ["--profile", profile]
    log_path = WORK / f"{rid}.log"
    load0 = os.getloadavg()[0]
    launched = time.time()
    with open(log_path, "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True)
        reader.start()
        log = KafkaLog(cfg.bootstrap, request_timeout=timedelta(seconds=10))
        done = None
        try:
            deadline = time.monotonic() + cfg.timeout
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    committed = log.committed(group, in_topic)
                except Exception:  # the group or topic may not exist yet
                    committed = {}
                if all(committed.get(p, -1) >= end for p, end in ends.items()):
                    done = time.time()
                    break
                time.sleep(0.05)
            load1 = os.getloadavg()[0]
            _stop(proc)
            reader.join(5)
            if "deleted by retention" in log_path.read_text():
                sys.exit(f"{rid}: the input was deleted by retention; see {log_path}")
            starts = [float(x.split()[1]) for x in lines if x.startswith("START ")]
            res: dict[str, Any] = {
                "system": system, "workload": workload, "mode": mode, "partitions": partitions,
                "rep": rep, "events": cfg.events, "run_id": rid, "exit_code": proc.returncode,
                "load_before": round(load0, 2), "load_after": round(load1, 2),
            }  # fmt: skip
            if done is None or not starts:
                tail = log_path.read_text()[-2000:]
                res.update(ok=False, error=f"not done (timeout or exit); log tail:\n{tail}")
                return res
            elapsed = done - starts[0]
            res.update(
                ok=True,
                seconds=round(elapsed, 3),
                startup_s=round(starts[0] - launched, 3),
                events_per_s=round(cfg.events / elapsed, 1),
            )
            res.update(check(log, output, partitions, workload, system, ref))
            return res
        finally:
            _stop(proc)
            _delete_run_topics(log, rid, group)
            log.close()
            subprocess.run(["rm", "-rf", state_dir], check=False)


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _delete_run_topics(log: Any, rid: str, group: str) -> None:
    for name in list(log.topics()):
        if rid in name or group in name:
            try:
                log.delete_topic(name)
            except Exception as exc:  # a leftover topic only costs broker memory
                print(f"warning: cannot delete {name}: {exc}", file=sys.stderr)


def check(log: Any, topic: str, partitions: int, workload: str, system: str,
          ref: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """Read the committed output back and compare it with the reference."""
    rows: list[tuple[bytes | None, dict[str, Any]]] = []
    ends = {p: log.topics()[topic].offsets[p].end for p in range(partitions)}
    for p, end in ends.items():
        off = 0
        while off < end:
            got = log.read(topic, p, off, 50_000)
            if not got:
                break
            rows.extend((r.key, json.loads(r.value)) for r in got if r.value is not None)
            off = got[-1].offset + 1
    if workload == "w1":
        count, total = ref["w1"]
        n = len(rows)
        s = sum(v["value"] for _, v in rows)
        ok = n == count and abs(s - total) <= 1e-9 * abs(total)
        return {
            "outputs": n,
            "correct": ok,
            "detail": f"count {n}/{count}, sum {s:.6f}/{total:.6f}",
        }
    want: dict[tuple[str, int], list[Any]] = ref["w2"]
    seen: dict[tuple[str, int], dict[str, Any]] = {}
    dups = 0
    for key, v in rows:
        if system == "quix":
            k = (key or b"").decode()
            wk = (k, v["start"])
        else:
            wk = (v["key"], v["window_start_ms"])
        dups += wk in seen
        seen[wk] = v
    missing = len(want.keys() - seen.keys())
    extra = len(seen.keys() - want.keys())
    bad = 0
    for wk, v in seen.items():
        exp = want.get(wk)
        if exp is None:
            continue
        mean = exp[1] / exp[0]
        if (
            v["count"] != exp[0]
            or abs(v["sum"] - exp[1]) > 1e-9 * abs(exp[1]) + 1e-6
            or abs(v["mean"] - mean) > 1e-9 * abs(mean) + 1e-6
        ):
            bad += 1
    ok = not (missing or extra or dups or bad)
    detail = (
        f"rows {len(rows)}/{len(want)}, missing {missing}, extra {extra}, dup {dups}, bad {bad}"
    )
    return {"outputs": len(rows), "correct": ok, "detail": detail}


# ---------------------------------------------------------------------------- driver
def input_topic(events: int, partitions: int) -> str:
    """The input topic of a prefix size and partition count."""
    return f"kp-in-{events}-p{partitions}"


@contextmanager
def broker(bootstrap: str | None, port_base: str = "9480") -> Iterator[str]:
    """Yield a bootstrap address: the given one, or a broker started (and stopped) here."""
    if bootstrap:
        yield bootstrap
        return
    run_dir = tempfile.mkdtemp(prefix="kp-kafka-")
    WORK.mkdir(parents=True, exist_ok=True)
    props = WORK / "broker.properties"
    # The data's event times are in 2023: keep every topic's records regardless of age.
    props.write_text("log.retention.ms=-1\n")
    env = {**os.environ, "KAFKACTL_PYTHON": sys.executable, "KAFKACTL_PORT_BASE": port_base,
           "KAFKACTL_FAST_START": "0", "KAFKACTL_SERVER_PROPS": str(props)}  # fmt: skip
    up = [str(KAFKACTL), "up", "--dir", run_dir, "--owner-pid", str(os.getpid())]
    proc = subprocess.run(up, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"kafkactl up failed:\n{proc.stderr}")
    try:
        yield proc.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run([str(KAFKACTL), "down", "--dir", run_dir], env=env, check=False)
        subprocess.run(["rm", "-rf", run_dir], check=False)


def ensure_quix() -> None:
    """Create the Quix Streams venv (git-ignored) if missing."""
    if (QUIX_VENV / "bin" / "python").exists():
        return
    subprocess.run(["python3.11", "-m", "venv", str(QUIX_VENV)], check=True)
    pip = [str(QUIX_VENV / "bin" / "pip"), "install", "-q", f"quixstreams=={QUIX_VERSION}"]
    subprocess.run(pip, check=True)


def es_alo_available() -> bool:
    """True if eventspine's at-least-once checkpoint differs from EO on Kafka."""
    from eventspine.log.kafka import KafkaLog
    from eventspine.runtime.checkpoint import CheckpointPolicy

    fields = getattr(CheckpointPolicy, "__dataclass_fields__", {})
    return "exactly_once" in fields and hasattr(KafkaLog, "non_atomic_transaction")


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median events/s per (workload, partitions, mode, system), ratios and EO overhead."""
    med: dict[str, Any] = {}
    for r in runs:
        if r.get("ok") and r.get("correct"):
            k = f"{r['workload']}/p{r['partitions']}/{r['mode']}/{r['system']}"
            med.setdefault(k, []).append(r["events_per_s"])
    table = {k: round(statistics.median(v), 1) for k, v in med.items()}
    ratios: dict[str, float] = {}
    for k, v in table.items():
        w, p, m, s = k.split("/")
        if s == "eventspine" and f"{w}/{p}/{m}/quix" in table:
            ratios[f"{w}/{p}/{m} eventspine/quix"] = round(v / table[f"{w}/{p}/{m}/quix"], 2)
        if m == "alo" and f"{w}/{p}/eo/{s}" in table:
            ratios[f"{w}/{p}/{s} EO overhead (ALO/EO - 1)"] = round(
                v / table[f"{w}/{p}/eo/{s}"] - 1, 3
            )
    return {"median_events_per_s": table, "ratios": ratios}


def print_table(runs: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    """Every run, then the medians and ratios."""
    print(f"\n{'run':<44} {'events/s':>10} {'s':>7} {'start s':>7} {'load':>9}  correct")
    for r in runs:
        name = f"{r['workload']} p{r['partitions']} {r['mode']:<3} {r['system']:<10} rep {r['rep']}"
        name += " cProfile" if r.get("profiled") else ""
        if not r.get("ok"):
            print(f"{name:<44} FAILED: {r.get('error', '')[:300]}")
            continue
        load = f"{r['load_before']}/{r['load_after']}"
        print(f"{name:<44} {r['events_per_s']:>10,.0f} {r['seconds']:>7.2f} {r['startup_s']:>7.2f} "
              f"{load:>9}  {r['correct']} ({r['detail']})")  # fmt: skip
    print("\nmedians (events/s):")
    for k, v in sorted(summary["median_events_per_s"].items()):
        print(f"  {k:<32} {v:>12,.0f}")
    print("ratios:")
    for k, v in sorted(summary["ratios"].items()):
        print(f"  {k:<40} {v}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=500_000)
    ap.add_argument("--partitions", default="1", help="comma list, e.g. 1,4")
    ap.add_argument("--workloads", default="w1,w2")
    ap.add_argument("--modes", default="eo,alo")
    ap.add_argument("--systems", default="eventspine,quix")
    ap.add_argument("--reps-es", type=int, default=3)
    ap.add_argument("--reps-quix", type=int, default=2)
    ap.add_argument("--latency-budget-ms", type=int, default=20, help="eventspine's (default 20)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per run")
    ap.add_argument("--bootstrap", help="use this broker instead of starting one")
    ap.add_argument(
        "--profile",
        nargs="?",
        const="w2",
        help="add an untimed cProfiled eventspine EO run of these workloads (default w2)",
    )
    ap.add_argument("--port-base", default="9480", help="KAFKACTL_PORT_BASE of the own broker")
    ap.add_argument("--no-save", action="store_true")
    ap.add_argument("--results", help="JSON path (default results/kafka_pipelines_<date>.json)")
    cfg = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped by SIGTERM"))
    systems = cfg.systems.split(",")
    if "quix" in systems:
        ensure_quix()
    WORK.mkdir(parents=True, exist_ok=True)
    lines = load_events(cfg.events)
    events = [json.loads(x) for x in lines]
    ref = reference(events)
    full = (ref["w1"][0], len(ref["w2"])) == (REF_FULL["w1"], REF_FULL["w2"])
    if cfg.events == 2_000_000 and not full:
        sys.exit(f"the reference differs from the bench README's: {REF_FULL}")
    alo_ok = es_alo_available()
    skipped: list[str] = []
    runs: list[dict[str, Any]] = []
    profile_top: dict[str, str] = {}
    with broker(cfg.bootstrap, cfg.port_base) as boot:
        cfg.bootstrap = boot
        print(f"broker {boot}; {cfg.events} events; load {os.getloadavg()[0]:.2f}", flush=True)
        for parts in [int(x) for x in cfg.partitions.split(",")]:
            ends = produce_input(boot, input_topic(cfg.events, parts), lines, events, parts)
            for workload in cfg.workloads.split(","):
                # Reps interleave modes and systems, so load drifts hit every column alike.
                for rep in range(1, max(cfg.reps_es, cfg.reps_quix) + 1):
                    for mode in cfg.modes.split(","):
                        for system in systems:
                            reps = cfg.reps_es if system == "eventspine" else cfg.reps_quix
                            if rep > reps:
                                continue
                            if system == "eventspine" and mode == "alo" and not alo_ok:
                                if rep == 1:
                                    msg = (f"{workload} p{parts} alo eventspine: skipped, KafkaLog "
                                           f"has no non_atomic_transaction yet (would be EO)")  # fmt: skip
                                    print(msg, flush=True)
                                    skipped.append(msg)
                                continue
                            r = run_once(cfg, system, workload, mode, parts, rep, ends, ref)
                            runs.append(r)
                            print(json.dumps({k: v for k, v in r.items() if k != "error"}),
                                  r.get("error", ""), flush=True)  # fmt: skip
            for workload in cfg.profile.split(",") if cfg.profile else []:
                if parts != int(cfg.partitions.split(",")[0]):
                    break
                path = str(WORK / f"eventspine_{workload}_eo.prof")
                r = run_once(cfg, "eventspine", workload, "eo", parts, 0, ends, ref, profile=path)
                r["profiled"] = True
                print("profiled run:", json.dumps(r), flush=True)
                runs.append(r)
                profile_top[workload] = _profile_top(path)
    summary = summarize([r for r in runs if not r.get("profiled")])
    print_table(runs, summary)
    for workload, top in profile_top.items():
        print(f"\ncProfile, eventspine {workload} EO (top 15 cumulative):\n{top}")
    if not cfg.no_save:
        day = datetime.now(UTC).date().isoformat()
        out = Path(cfg.results or HERE / "results" / f"kafka_pipelines_{day}.json")
        out.write_text(json.dumps({
            "command": " ".join(sys.argv), "events": cfg.events, "quixstreams": QUIX_VERSION,
            "cpus": os.cpu_count(), "skipped": skipped, **summary, "runs": runs,
            "profile_top15_cumulative": profile_top,
        }, indent=1) + "\n")  # fmt: skip
        print(f"\nwrote {out}")


def _profile_top(path: str) -> str:
    import io
    import pstats

    buf = io.StringIO()
    pstats.Stats(path, stream=buf).sort_stats("cumulative").print_stats(15)
    return buf.getvalue()


def _worker_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    for name in ("system", "workload", "mode", "bootstrap", "input", "output", "group",
                 "state-dir"):  # fmt: skip
        ap.add_argument(f"--{name}", required=True)
    ap.add_argument("--partitions", type=int, required=True)
    ap.add_argument("--latency-budget-ms", type=int, default=20)
    ap.add_argument("--profile")
    return ap.parse_args(argv)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        worker(_worker_args(sys.argv[2:]))
    else:
        main()
