"""Kafka scale-out failover: kill -9 one of three workers holding 1,000,000 keys of state.

Issue 4's target: "kill -9 of one of three workers holding 1,000,000 keys of state; time until
its partitions produce output again: under 10 s". Run (starts and stops its own broker)::

    .venv/bin/python benchmarks/failover.py [--keys 1000000] [--variants process,window]
        [--sessions 6000,2000] [--standby off,on] [--port-base 9460] [--no-mid-txn]
        [--profile-restore]

``--standby off,on`` runs each scenario twice, without and with ``eventspine run --standby``
(warm copies of the other workers' state, :mod:`eventspine.runtime.standby`).

(the figures of 2026-11-22: ``--keys 1000000 --variants process,window --sessions 6000,2000
--profile-restore``, about 17 min on 2 shared cores).

``--bootstrap host:port`` uses a running broker instead (its ``group.min.session.timeout.ms``
must allow the ``--sessions`` given). The broker started here gets
``KAFKACTL_SERVER_PROPS`` with ``log.retention.ms=-1`` (the event times are in 2023) and
``group.min.session.timeout.ms=1000`` (the default 6000 would refuse a 2 s session; it does
not change a 6 s session's behaviour).

**Input.** Topic ``fo-in-<keys>`` with 6 partitions: one record per key ``k0000000`` ...
(``{"key", "ts", "seq": 0}``), partition = the engine's ``partition_for(key_bytes(key), 6)``,
Kafka timestamp = ``ts`` (all in one hour: ``T0 + i // 2`` ms, ``T0`` hour-aligned).

**Pipelines** (``benchmarks/failover.py:pipeline``, chosen by ``$FO_VARIANT``): source topic (declared keyed by ``key``, so no repartition)
-> ``EventTime("ts", max_delay=1 s, idle_timeout=None)`` -> ``key_by("key")`` ->

* ``process``: a ``process`` step keeping a per-key counter in ``ctx.state`` and emitting
  ``{"key", "n", "seq"}`` per record (state: one dict per key);
* ``window``: ``Tumbling(1 h)``, ``emit=OnChange()``, ``count`` and ``max("seq")`` (state:
  one open window accumulator per key; every record updates and emits its window);

-> ``es.topic("fo-out-<tag>", key="key", partitions=6)``: an output record lands in the
partition number of the input record it comes from, so output partition p = task p.

**One scenario** per (variant, session timeout): a fresh pipeline name (= consumer group),
three ``eventspine run`` processes::

    eventspine run benchmarks/failover.py:pipeline \\
        --log-url 'kafka://127.0.0.1:9460?replication_factor=1&session_timeout_ms=S' \\
        --checkpoint-interval-ms 1000 --log-level INFO --no-progress --quiet --state-dir <tmp>

1. *Load*: wait until every task runs (2 per worker, from the workers' INFO lines
   ``assigned task(s)`` / ``task P started (checkpoint K) in X s`` / ``revoking`` / ``lost``,
   time-stamped by this process as they arrive) and the group's committed input positions are
   the input ends: all 1M keys are in committed state.
2. *Trickle*: one record per partition every 100 ms (``seq`` 1, 2, ... on one key of that
   partition, new to this scenario, ``ts`` still in the same hour; the trickle goes to the
   input topic, so the next scenario loads it too); a ``read_committed`` consumer of the output
   topic stamps each record's arrival. Normal latency (produce -> visible) is measured for
   2 s.
3. *kill -9* the middle worker. Per partition p it owned: ``failover_s`` = from the kill
   until the first output of p with a ``seq`` produced after the kill arrives. Breakdown from
   the survivors' lines: ``assigned_s`` (kill -> ``assigned task(s)`` with p: session expiry
   + rebalance), ``restore_s`` (the ``in X s`` of ``task p started``, state restore) and
   ``first_output_s`` (started -> first output: reading the records since the last
   checkpoint and the next checkpoint, at most ``--checkpoint-interval-ms`` away).
   ``longest_output_gap_s``: per partition (all six), the longest time without new output
   from the kill until the measurement ends (collateral stalls of unmoved partitions).
4. A fourth worker joins (its tasks move there with a checkpoint, as in a rescale); once 3 x 2
   tasks run again and output flows in every partition, the *SIGTERM handover*: SIGTERM one
   worker and measure the same per partition (it checkpoints its tasks and leaves the group,
   so no session wait). The first output that counts is that of a record produced after
   the worker exited (its final checkpoint commits records it read after the signal).
5. ``--mid-txn`` (default on): a fifth worker joins with ``EVENTSPINE_FAILPOINTS=
   ckpt.after_output_append=sleep:300@21,ckpt.before_commit=pause@21``: in its 11th
   checkpoint's Kafka transaction it sleeps 300 ms after producing the outputs (so the
   producer has sent them to the broker), then stops itself (SIGSTOP) before the commit;
   it is then killed with SIGKILL and timed as in 3 (``kill_in_txn``).
   A worker killed while its transaction is open leaves that transaction open on the broker
   until ``transaction_timeout_ms`` (60 s by default) aborts it, and ``read_committed``
   readers cannot read past it in the partitions it wrote.
6. Stop the trickle, wait until every partition's last record has its output (at most
   ``--limit-s``) and 1 s more, SIGTERM the rest.
7. ``--profile-restore``: restore task 0 of the stopped pipeline twice in this process
   (``Executor(..., partition=0, partitions=6).start()``, what a worker does when it takes
   a task over), timed, the second under cProfile (top 25 by cumulative time). *Exactly-once check* of the trickle
   output, per partition: ``process``: every seq 1..last exactly once and ``n == seq``;
   ``window``: no duplicate row, ``count == seq`` in every row (a replayed batch may
   fold several records in one update) and the last row has the last seq.

Every figure carries ``os.getloadavg()`` (1-min) at the kill. The machine has 2 cores
shared with other jobs and the broker: three workers and a JVM compete for them. Results:
a table on stdout and ``benchmarks/results/failover_<date>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / ".work" / "failover"
KAFKACTL = ROOT / "tools" / "kafka" / "kafkactl"
EVENTSPINE = str(Path(sys.executable).with_name("eventspine"))
PARTITIONS = 6
T0 = 1_700_002_800_000  # a whole hour (ms): every record of a key falls in one 1 h window
TRICKLE_S = 0.1


# ------------------------------------------------------------------------- the pipeline
class KeyCounter:
    """Counts records per key in ``ctx.state``; emits ``{"key", "n", "seq"}`` per record."""

    def on_record(self, record: dict[str, Any], ctx: Any) -> None:
        """Count the record and emit the key's new count."""
        n = ctx.state.get("n", 0) + 1
        ctx.state["n"] = n
        ctx.emit({"key": ctx.key, "n": n, "seq": record.get("seq", 0)})

    def on_timer(self, ctx: Any) -> None:
        """No timers are set."""


def pipeline() -> Any:
    """The ``$FO_VARIANT`` pipeline from ``$FO_IN`` to ``$FO_OUT`` (see the module doc)."""
    import eventspine as es

    p = es.Pipeline(os.environ["FO_APP"])
    keyed = p.source(
        "input",
        es.topic(os.environ["FO_IN"], dict, key="key"),  # produced keyed by key
        timestamps=es.EventTime("ts", max_delay=timedelta(seconds=1), idle_timeout=None),
    ).key_by("by_key", "key")
    out = es.topic(os.environ["FO_OUT"], key="key", partitions=PARTITIONS)
    if os.environ["FO_VARIANT"] == "process":
        keyed.process("count", KeyCounter()).sink("out", out)
    else:
        keyed.window(es.Tumbling(timedelta(hours=1)), emit=es.OnChange()).aggregate(
            "counts", count=es.count(), seq=es.max("seq")
        ).sink("out", out)
    return p


# ------------------------------------------------------------------------- broker, input
@contextmanager
def broker(bootstrap: str | None, port_base: int) -> Iterator[str]:
    """Yield a bootstrap address: the given one, or a broker started (and stopped) here."""
    if bootstrap:
        yield bootstrap
        return
    run_dir = tempfile.mkdtemp(prefix="fo-kafka-")
    props = Path(run_dir) / "extra.properties"
    props.write_text("log.retention.ms=-1\ngroup.min.session.timeout.ms=1000\n")
    env = {**os.environ, "KAFKACTL_PYTHON": sys.executable, "KAFKACTL_PORT_BASE": str(port_base),
           "KAFKACTL_FAST_START": "0", "KAFKACTL_SERVER_PROPS": str(props)}  # fmt: skip
    up = [str(KAFKACTL), "up", "--dir", run_dir, "--owner-pid", str(os.getpid())]
    proc = subprocess.run(up, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"kafkactl up failed:\n{proc.stderr}")
    try:
        yield proc.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run([str(KAFKACTL), "down", "--dir", run_dir], env=env, check=False)


def _part(key: str) -> int:
    from eventspine.connectors.topics import key_bytes, partition_for

    kb = key_bytes(key)
    assert kb is not None
    return partition_for(kb, PARTITIONS)


def produce_input(bootstrap: str, topic: str, keys: int) -> dict[int, int]:
    """Create ``topic`` with one record per key (once); return the end offsets."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    admin = AdminClient({"bootstrap.servers": bootstrap})
    if topic not in admin.list_topics(timeout=10).topics:
        cfg = {"message.timestamp.type": "CreateTime", "retention.ms": "-1",
               "message.timestamp.after.max.ms": str(2**63 - 1)}  # fmt: skip
        admin.create_topics([NewTopic(topic, PARTITIONS, 1, config=cfg)])[topic].result(30)
        prod = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "batch.size": 1_000_000,
                         "queue.buffering.max.messages": 1_000_000, "enable.idempotence": True})  # fmt: skip
        started = time.perf_counter()
        for i in range(keys):
            key = f"k{i:07d}"
            ts = T0 + i // 2
            value = json.dumps({"key": key, "ts": ts, "seq": 0}).encode()
            while True:
                try:
                    prod.produce(topic, value, key.encode(), partition=_part(key), timestamp=ts)
                    break
                except BufferError:
                    prod.poll(0.05)
        if prod.flush(180) != 0:
            sys.exit("the input producer did not deliver everything in 180 s")
        print(f"produced {keys} keys to {topic} in {time.perf_counter() - started:.1f} s")
    from eventspine.log.kafka import KafkaLog

    log = KafkaLog(bootstrap)
    try:
        return {po.partition: po.end for po in log.topics()[topic].offsets}
    finally:
        log.close()


# ------------------------------------------------------------------------- processes
_ASSIGNED = re.compile(r"assigned task\(s\) \[([\d, ]*)\]")
_REVOKED = re.compile(r"(?:revoking|lost) task\(s\) \[([\d, ]*)\]")
_STARTED = re.compile(r"task (\d+) started \(checkpoint (\w+)\) in ([\d.]+) s")


class Proc:
    """One worker process; its stderr lines are time-stamped on arrival."""

    def __init__(self, index: int, cmd: list[str], env: dict[str, str], work: Path) -> None:
        self.index = index
        self.lines: list[tuple[float, str]] = []
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self._file = open(work / f"worker{index}.err", "w")  # noqa: SIM115  # closed in reader
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            self.lines.append((time.monotonic(), line))
            self._file.write(f"{time.time():.3f} {line}\n")
            self._file.flush()
        self._file.close()

    def running(self) -> set[int]:
        """Tasks started and not revoked/lost since."""
        owned: set[int] = set()
        for _, line in list(self.lines):
            if m := _STARTED.search(line):
                owned.add(int(m.group(1)))
            elif m := _REVOKED.search(line):
                owned -= {int(x) for x in m.group(1).split(",") if x.strip()}
        return owned if self.proc.poll() is None else set()

    def events_after(self, t: float, p: int) -> dict[str, Any]:
        """When task ``p`` was assigned to and started in this worker after ``t``."""
        out: dict[str, Any] = {}
        for ts, line in list(self.lines):
            if ts < t:
                continue
            m = _ASSIGNED.search(line)
            if m and "assigned_at" not in out and p in {int(x) for x in m.group(1).split(",")}:
                out["assigned_at"] = ts
            m = _STARTED.search(line)
            if m and int(m.group(1)) == p and "started_at" not in out:
                out.update(started_at=ts, checkpoint=m.group(2), restore_s=float(m.group(3)))
        return out


class OutputReader:
    """A ``read_committed`` consumer of the output topic; stamps each record's arrival."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from confluent_kafka import Consumer, TopicPartition

        self.rows: list[tuple[float, int, dict[str, Any]]] = []
        self._stop = threading.Event()
        self._c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"fo-reader-{topic}",
                            "isolation.level": "read_committed", "enable.auto.commit": False,
                            "fetch.wait.max.ms": 10, "fetch.error.backoff.ms": 10})  # fmt: skip
        starts = []
        for p in range(PARTITIONS):
            _lo, hi = self._c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            starts.append(TopicPartition(topic, p, hi))
        self._c.assign(starts)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for m in self._c.consume(1000, 0.05):
                value, part = m.value(), m.partition()
                if m.error() is None and value is not None and part is not None:
                    self.rows.append((time.monotonic(), part, json.loads(value)))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._c.close()


class Trickle:
    """One record per partition every 100 ms on a fixed key of that partition."""

    def __init__(self, bootstrap: str, topic: str, keys: dict[int, str]) -> None:
        from confluent_kafka import Producer

        self.keys = keys
        self.sent: dict[int, list[tuple[float, int]]] = {p: [] for p in keys}
        self._prod = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "acks": "all"})
        self._topic = topic
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        seq = 0
        while not self._stop.is_set():
            seq += 1
            for p, key in self.keys.items():
                ts = T0 + 1_800_000 + seq * 10
                value = json.dumps({"key": key, "ts": ts, "seq": seq}).encode()
                self._prod.produce(self._topic, value, key.encode(), partition=p, timestamp=ts)
                self.sent[p].append((time.monotonic(), seq))
            self._prod.poll(0)
            self._stop.wait(TRICKLE_S)
        self._prod.flush(30)

    def last_seq(self, p: int, before: float) -> int:
        """The last seq of partition ``p`` handed to the producer before ``before``."""
        return max((s for t, s in self.sent[p] if t <= before), default=0)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)


# ------------------------------------------------------------------------- a scenario
def wait_until(pred: Any, limit_s: float, what: str, procs: list[Proc]) -> None:
    """Poll ``pred()`` every 0.2 s; exit with the workers' stderr tails after ``limit_s``."""
    deadline = time.monotonic() + limit_s
    while not pred():
        if time.monotonic() > deadline:
            tails = "\n".join(
                f"--- worker {p.index}\n" + "\n".join(line for _, line in p.lines[-15:])
                for p in procs
            )
            raise RuntimeError(f"timed out after {limit_s:.0f} s waiting for {what}\n{tails}")
        time.sleep(0.2)


def latency(trickle: Trickle, reader: OutputReader, p: int, since: float) -> list[float]:
    """Produce -> visible latencies of partition ``p``'s trickle after ``since``."""
    sent = {s: t for t, s in trickle.sent[p] if t >= since}
    seen: dict[int, float] = {}
    for t, part, row in list(reader.rows):
        if part == p and row.get("seq") in sent and row["seq"] not in seen:
            seen[row["seq"]] = t
    return [seen[s] - sent[s] for s in seen]


def failover(
    how: str,
    victim: Proc,
    procs: list[Proc],
    trickle: Trickle,
    reader: OutputReader,
    limit_s: float,
) -> dict[str, Any]:
    """Stop ``victim`` (``kill`` = SIGKILL, ``term`` = SIGTERM); time its partitions' output."""
    owned = sorted(victim.running())
    load = os.getloadavg()[0]
    t_kill = time.monotonic()
    victim.proc.send_signal(signal.SIGKILL if how == "kill" else signal.SIGTERM)
    t_gone = t_kill
    if how == "term":
        # A SIGTERMed worker reads on until its final checkpoint, which commits records
        # produced after the signal: only a record produced after it exited shows that
        # the new owner runs the task.
        victim.proc.wait(60)
        t_gone = time.monotonic()
    seq_at = {p: trickle.last_seq(p, t_gone) for p in owned}

    def back(p: int) -> float | None:
        for t, part, row in list(reader.rows):
            if part == p and t > t_kill and row.get("seq", 0) > seq_at[p]:
                return t
        return None

    deadline = t_kill + limit_s
    while time.monotonic() < deadline and any(back(p) is None for p in owned):
        time.sleep(0.05)
    victim.proc.wait(60)
    res: dict[str, Any] = {"how": how, "partitions": owned, "load1": load, "per_partition": {}}
    for p in owned:
        t_back = back(p)
        row: dict[str, Any] = {"failover_s": None if t_back is None else t_back - t_kill}
        for other in procs:
            if other is victim:
                continue
            ev = other.events_after(t_kill, p)
            if ev:
                row["new_worker"] = other.index
                if "assigned_at" in ev:
                    row["assigned_s"] = ev["assigned_at"] - t_kill
                if "started_at" in ev:
                    row.update(restore_s=ev["restore_s"], checkpoint=ev["checkpoint"])
                    row["started_s"] = ev["started_at"] - t_kill
                    if t_back is not None:
                        row["first_output_s"] = t_back - ev["started_at"]
                break
        res["per_partition"][str(p)] = row
    # Collateral: the longest wait for output of every partition (moved or not) after the kill.
    end = time.monotonic()
    res["longest_output_gap_s"] = {}
    for p in range(PARTITIONS):
        arrivals = [t_kill] + [t for t, part, _ in list(reader.rows) if part == p and t > t_kill]
        gaps = [b - a for a, b in zip(arrivals, [*arrivals[1:], end], strict=True)]
        res["longest_output_gap_s"][str(p)] = round(max(gaps), 2)
    times = [r["failover_s"] for r in res["per_partition"].values()]
    res["max_failover_s"] = None if None in times else max(times)
    return res


def _stopped(pid: int) -> bool:
    """Whether process ``pid`` is stopped (SIGSTOP: state ``T`` in /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "T"
    except OSError:
        return False


def caught_up(trickle: Trickle, reader: OutputReader, limit_s: float) -> None:
    """Wait (at most ``limit_s``) until every partition's last trickle seq has its output."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        seen: dict[int, int] = {}
        for _, p, row in list(reader.rows):
            if row.get("key") == trickle.keys.get(p):
                seen[p] = max(seen.get(p, 0), row.get("seq", 0))
        if all(seen.get(p, 0) >= trickle.last_seq(p, time.monotonic()) for p in trickle.keys):
            break
        time.sleep(0.2)
    time.sleep(1.0)  # a duplicate would arrive late: give it time


def check_exactly_once(variant: str, trickle: Trickle, reader: OutputReader) -> dict[str, Any]:
    """The trickle's output per partition: complete, no duplicates, counts consistent."""
    problems: list[str] = []
    rows_by_p: dict[int, list[dict[str, Any]]] = {p: [] for p in trickle.keys}
    for _, p, row in reader.rows:
        if row.get("key") == trickle.keys.get(p):
            rows_by_p[p].append(row)
    for p, rows in rows_by_p.items():
        last = trickle.last_seq(p, time.monotonic())
        seqs = [r["seq"] for r in rows]
        count_field = "n" if variant == "process" else "count"
        wrong = [r for r in rows if r[count_field] != r["seq"]]
        if wrong:
            problems.append(f"p{p}: {len(wrong)} rows whose count != seq, e.g. {wrong[:2]}")
        if variant == "process":
            want = list(range(1, last + 1))
            if sorted(seqs) != want:
                dup = len(seqs) - len(set(seqs))
                miss = sorted(set(want) - set(seqs))
                problems.append(f"p{p}: {dup} duplicate seqs, missing {miss[:5]}")
        else:
            if len(seqs) != len(set(seqs)):
                problems.append(f"p{p}: duplicate window updates")
            if not seqs or max(seqs) != last:
                problems.append(f"p{p}: last update has seq {max(seqs, default=None)}, not {last}")
    return {"pass": not problems, "problems": problems}


def scenario(
    bootstrap: str,
    topic: str,
    variant: str,
    session_ms: int,
    limit_s: float,
    mid_txn: bool,
    profile: bool = False,
    standby: bool = False,
) -> dict[str, Any]:
    """Load, kill -9, rejoin, SIGTERM (see the module doc); return the figures."""
    from eventspine.log.kafka import KafkaLog

    tag = f"{variant}-{session_ms}-{'sb' if standby else 'cold'}-{uuid.uuid4().hex[:6]}"
    app, out = f"fo_{tag.replace('-', '_')}", f"fo-out-{tag}"
    work = WORK / tag
    work.mkdir(parents=True, exist_ok=True)
    url = f"kafka://{bootstrap}?replication_factor=1&session_timeout_ms={session_ms}"
    env = {**os.environ, "FO_APP": app, "FO_IN": topic, "FO_OUT": out, "FO_VARIANT": variant}

    def start(i: int, extra_env: dict[str, str] | None = None) -> Proc:
        cmd = [EVENTSPINE, "run", f"{HERE / 'failover.py'}:pipeline", "--log-url", url,
               "--checkpoint-interval-ms", "1000", "--log-level", "INFO", "--no-progress",
               "--quiet", "--state-dir", str(work / f"state{i}"),
               *(["--standby"] if standby else [])]  # fmt: skip
        return Proc(i, cmd, {**env, **(extra_env or {})}, work)

    res: dict[str, Any] = {
        "variant": variant,
        "session_timeout_ms": session_ms,
        "standby": standby,
        "app": app,
    }
    log = KafkaLog(bootstrap)
    procs: list[Proc] = []
    trickle = reader = None
    try:
        t0 = time.monotonic()
        procs = [start(i) for i in range(3)]

        def balanced() -> bool:
            live = [p for p in procs if p.proc.poll() is None]
            running = [p.running() for p in live]
            return sorted(t for r in running for t in r) == list(range(PARTITIONS)) and all(
                len(r) == PARTITIONS // len(live) for r in running
            )

        def loaded() -> bool:
            try:
                committed = log.committed(app, topic)
            except Exception:  # the group may not exist yet
                return False
            return all(committed.get(p) == end for p, end in ends.items())

        # The end offsets now: earlier scenarios' trickles appended to the input topic.
        ends = {po.partition: po.end for po in log.topics()[topic].offsets}
        wait_until(lambda: loaded() and balanced(), limit_s * 10, "1M keys committed", procs)
        res["load_s"] = time.monotonic() - t0
        print(f"  [{tag}] loaded {sum(ends.values())} records in {res['load_s']:.0f} s", flush=True)
        # Trickle keys new to this scenario (one per partition), so their counts start at 0.
        keys: dict[int, str] = {}
        i = 0
        while len(keys) < PARTITIONS:
            keys.setdefault(_part(f"t-{tag}-{i}"), f"t-{tag}-{i}")
            i += 1
        reader = OutputReader(bootstrap, out)
        trickle = Trickle(bootstrap, topic, keys)
        t_trickle = time.monotonic()
        wait_until(
            lambda: all(latency(trickle, reader, p, t_trickle) for p in keys),
            limit_s,
            "output",
            procs,
        )
        time.sleep(2)
        lat = [x for p in keys for x in latency(trickle, reader, p, t_trickle)]
        res["steady_latency_s"] = {"median": statistics.median(lat), "max": max(lat)}
        res["kill"] = failover("kill", procs[1], procs, trickle, reader, limit_s)
        print(f"  [{tag}] kill -9: {json.dumps(res['kill'])}", flush=True)
        procs.append(start(3))
        wait_until(balanced, limit_s, "rebalance onto the new worker", procs)
        t_bal = time.monotonic()
        time.sleep(2)
        wait_until(
            lambda: all(latency(trickle, reader, p, t_bal) for p in keys),
            limit_s,
            "output",
            procs,
        )
        res["term"] = failover("term", procs[3], procs, trickle, reader, limit_s)
        print(f"  [{tag}] SIGTERM: {json.dumps(res['term'])}", flush=True)
        if mid_txn:
            # A worker that stops (SIGSTOP via the failpoint) inside its 11th checkpoint
            # transaction, after appending outputs and metadata, before the commit; killed then.
            fp = "ckpt.after_output_append=sleep:300@21,ckpt.before_commit=pause@21"
            procs.append(start(4, {"EVENTSPINE_FAILPOINTS": fp}))
            wait_until(balanced, limit_s, "rebalance onto the new worker", procs)
            victim = procs[4]
            wait_until(lambda: _stopped(victim.proc.pid), limit_s, "the failpoint", procs)
            res["kill_in_txn"] = failover("kill", victim, procs, trickle, reader, limit_s)
            print(f"  [{tag}] kill -9 in txn: {json.dumps(res['kill_in_txn'])}", flush=True)
        time.sleep(2)
        trickle.close()
        caught_up(trickle, reader, limit_s)
        res["exactly_once"] = check_exactly_once(variant, trickle, reader)
    except RuntimeError as exc:
        res["error"] = str(exc)
        print(f"  [{tag}] FAILED: {exc}", flush=True)
    finally:
        if trickle is not None:
            trickle.close()
        for p in procs:
            if p.proc.poll() is None:
                p.proc.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.proc.wait(60)
            except subprocess.TimeoutExpired:
                p.proc.kill()
                p.proc.wait()
        if reader is not None:
            reader.close()
        log.close()
    res["exit_codes"] = [p.proc.returncode for p in procs]
    if profile and "error" not in res:
        res["restore_profile"] = profile_restore(bootstrap, env, 0)
        print(f"  [{tag}] in-process restore of task 0: {res['restore_profile']['restore_s']}")
        print(res["restore_profile"]["profile"])
    return res


def profile_restore(bootstrap: str, env: dict[str, str], partition: int) -> dict[str, Any]:
    """Restore task ``partition`` of a stopped scenario in this process: time it, profile it."""
    import cProfile
    import io
    import pstats

    from eventspine.log.kafka import KafkaLog
    from eventspine.runtime.executor import Executor, RunOptions

    os.environ.update(env)
    log = KafkaLog(bootstrap)
    try:
        timings = []
        prof = cProfile.Profile()
        for i in range(2):
            task = Executor(
                pipeline(), options=RunOptions(log=log), partition=partition, partitions=PARTITIONS
            )
            t0 = time.perf_counter()
            if i == 1:
                prof.enable()
            ckpt = task.start()
            if i == 1:
                prof.disable()
            timings.append(time.perf_counter() - t0)
            task.close()
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).strip_dirs().sort_stats("cumulative").print_stats(25)
        text = buf.getvalue()
        return {"partition": partition, "checkpoint": ckpt, "restore_s": timings,
                "load1": os.getloadavg()[0], "profile": text[text.find("   ncalls") :]}  # fmt: skip
    finally:
        log.close()


# ------------------------------------------------------------------------- driver
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--variants", default="process,window")
    ap.add_argument("--sessions", default="6000,2000", help="session timeouts (ms)")
    ap.add_argument("--bootstrap", default=None)
    ap.add_argument("--port-base", type=int, default=9460)
    ap.add_argument("--limit-s", type=float, default=120)
    ap.add_argument("--mid-txn", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--profile-restore", action=argparse.BooleanOptionalAction, default=False)
    ap.add_argument("--standby", default="off", help="off, on or off,on: run with --standby")
    a = ap.parse_args()
    result: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "keys": a.keys,
        "partitions": PARTITIONS,
        "workers": 3,
        "cpus": os.cpu_count(),
        "scenarios": [],
    }
    with broker(a.bootstrap, a.port_base) as bootstrap:
        topic = f"fo-in-{a.keys}"
        produce_input(bootstrap, topic, a.keys)
        for variant in a.variants.split(","):
            for session in [int(s) for s in a.sessions.split(",")]:
                for standby in a.standby.split(","):
                    result["scenarios"].append(
                        scenario(
                            bootstrap,
                            topic,
                            variant,
                            session,
                            a.limit_s,
                            a.mid_txn,
                            profile=a.profile_restore,
                            standby=standby == "on",
                        )
                    )
    print_table(result)
    out = HERE / "results" / f"failover_{datetime.now(UTC):%Y-%m-%d}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


def print_table(result: dict[str, Any]) -> None:
    """One row per (scenario, stop kind, partition)."""
    print(f"\nfailover, {result['keys']:,} keys, 6 partitions, 3 workers (target: < 10 s)")
    print(f"{'variant':8} {'session':>7} {'sb':3} {'stop':5} {'p':>2} {'failover s':>10} {'assigned s':>10} "
          f"{'restore s':>9} {'1st out s':>9} {'load s':>6} {'load1':>5}  exactly-once")  # fmt: skip
    for s in result["scenarios"]:
        if "error" in s:
            print(f"{s['variant']:8} {s['session_timeout_ms']:>7} FAILED: {s['error'][:200]}")
            continue
        eo = "ok" if s.get("exactly_once", {}).get("pass") else s.get("exactly_once")
        for how in ("kill", "term", "kill_in_txn"):
            r = s.get(how)
            if r is None:
                continue
            for p, row in r["per_partition"].items():
                print(
                    f"{s['variant']:8} {s['session_timeout_ms']:>7} "
                    f"{'on' if s.get('standby') else 'off':3} {how:5} {p:>2} "
                    f"{_f(row.get('failover_s'))} {_f(row.get('assigned_s'))} "
                    f"{_f(row.get('restore_s'), 9)} {_f(row.get('first_output_s'), 9)} "
                    f"{s['load_s']:>6.0f} {r['load1']:>5.2f}  {eo}"
                )
        lat = s["steady_latency_s"]
        print(f"{'':8} steady produce->output latency: median {lat['median']:.2f} s, "
              f"max {lat['max']:.2f} s")  # fmt: skip


def _f(x: float | None, width: int = 10) -> str:
    return f"{'-':>{width}}" if x is None else f"{x:>{width}.2f}"


if __name__ == "__main__":
    main()
