"""Helpers of the scale-out tests: input topics, worker processes, reading the output."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import IO, Any

from eventspine.connectors.topics import key_bytes, partition_for
from eventspine.errors import LogError
from eventspine.log import Log, read_all
from eventspine.log.base import LogRecord, TopicSpec
from eventspine.runtime.worker import EXIT_STALLED

from .pipeline import expected

ROOT = Path(__file__).resolve().parents[2]
EVENTSPINE = str(Path(sys.executable).with_name("eventspine"))
T0 = 1_700_000_000_000


def make_input(
    log: Log, topic: str, *, records: int, keys: int, partitions: int
) -> list[dict[str, Any]]:
    """Append ``records`` keyed oracle records to a new ``topic``; return them in order."""
    log.create_topic(TopicSpec(topic, partitions))
    rng = random.Random(7)
    seqs: dict[str, int] = {}
    out: list[dict[str, Any]] = []
    by_part: dict[int, list[LogRecord]] = {}
    for i in range(records):
        key = f"k{rng.randrange(keys)}"
        seqs[key] = seqs.get(key, 0) + 1
        rec = {"key": key, "seq": seqs[key], "value": rng.randrange(-50, 100), "ts": T0 + i * 20}
        out.append(rec)
        kb = key_bytes(key)
        assert kb is not None
        by_part.setdefault(partition_for(kb, partitions), []).append(
            LogRecord(kb, json.dumps(rec).encode(), rec["ts"])
        )
    for p, recs in by_part.items():
        for i in range(0, len(recs), 2000):
            log.append(topic, p, recs[i : i + 2000])
    return out


def read_topic(log: Log, topic: str) -> list[dict[str, Any]]:
    """Every committed record of ``topic`` (all partitions), decoded."""
    info = log.topics().get(topic)
    if info is None:
        return []
    return [json.loads(r.value) for _, r in read_all(log, info) if r.value is not None]


def canon(rows: list[dict[str, Any]]) -> Counter[str]:
    """A multiset of rows, comparable regardless of order."""
    return Counter(json.dumps(r, sort_keys=True) for r in rows)


class Workers:
    """Worker processes of a scale-out pipeline (``eventspine run TARGET`` each)."""

    def __init__(
        self,
        url: str,
        env: dict[str, str],
        tmp: Path,
        target: str = "tests/scaleout/pipeline.py:pipeline",
    ) -> None:
        self.url = url
        self.target = target
        self.env = {**os.environ, **env}
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []
        self.restarted: set[int] = set()
        self.extra: tuple[str, ...] = ()

    def start(self, *extra: str) -> subprocess.Popen[bytes]:
        n = len(self.procs)
        err = open(self.tmp / f"worker{n}.err", "wb")  # noqa: SIM115  # closed with the process
        proc = subprocess.Popen(
            [
                EVENTSPINE,
                "run",
                self.target,
                "--log-url",
                self.url,
                "--state-dir",
                str(self.tmp / f"state{n}"),
                "--checkpoint-interval-ms",
                "300",
                "--quiet",
                "--log-level",
                "INFO",
                *extra,
            ],
            cwd=ROOT,
            env=self.env,
            stderr=err,
        )
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 60) -> int:
        """SIGTERM ``proc``; return its exit code (143: stopped by the signal, cleanly)."""
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout)
        # Killed by the signal itself: it came before the CLI installed its handlers (the
        # worker was still importing, on a loaded machine), so it had done nothing yet.
        return 143 if code == -signal.SIGTERM else code

    def wait_log(self, index: int, text: str, timeout: float = 60) -> None:
        """Wait until worker ``index`` has logged ``text``."""
        path = self.tmp / f"worker{index}.err"
        deadline = time.monotonic() + timeout
        while text not in path.read_text(errors="replace"):
            if time.monotonic() > deadline:
                raise AssertionError(f"worker {index} did not log {text!r}\n{self.stderr()}")
            time.sleep(0.1)

    def supervise(self) -> None:
        """Restart the workers whose stall watchdog stopped them (exit 75), as a supervisor would."""
        for i, p in enumerate(list(self.procs)):
            if p.poll() == EXIT_STALLED and i not in self.restarted:
                self.restarted.add(i)
                self.start(*self.extra)

    def dump_stacks(self) -> None:
        """Ask every live worker to print its threads' stacks (SIGUSR1) into its stderr."""
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGUSR1)
        time.sleep(1.0)

    def logs(self) -> str:
        """Every worker's whole stderr (``stderr`` keeps only the end of each, for messages)."""
        return "\n".join(
            (self.tmp / f"worker{i}.err").read_text(errors="replace")
            for i in range(len(self.procs))
        )

    def stderr(self) -> str:
        return "\n".join(
            f"--- worker {i}\n" + (self.tmp / f"worker{i}.err").read_text(errors="replace")[-6000:]
            for i in range(len(self.procs))
        )

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def start_workers(
    url: str, workers: int, env: dict[str, str], stderr: IO[bytes], *extra: str
) -> subprocess.Popen[bytes]:
    """``eventspine run`` of the oracle pipeline with ``--workers N`` on ``url``."""
    target = "tests/scaleout/pipeline.py:pipeline"
    args = [EVENTSPINE, "run", target, "--log-url", url, "--workers", str(workers), *extra]
    return subprocess.Popen(args, cwd=ROOT, env={**os.environ, **env}, stderr=stderr)


def wait_output(
    log: Log, topic: str, count: int, workers: Workers, timeout: float
) -> list[dict[str, Any]]:
    """Wait until ``topic`` holds at least ``count`` committed records; return them."""
    deadline = time.monotonic() + timeout
    rows: list[dict[str, Any]] = []
    while len(rows) < count:
        workers.supervise()
        if time.monotonic() > deadline:
            workers.dump_stacks()
            raise AssertionError(
                f"{topic} has {len(rows)} of {count} records after {timeout:.0f} s\n"
                + workers.stderr()
            )
        with contextlib.suppress(LogError):  # a broker of the cluster is down: ask again
            rows = read_topic(log, topic)
        if len(rows) < count:
            time.sleep(0.5)
    return rows


def open_transactions(bootstrap: str, topics: list[str], within_s: float) -> dict[str, Any]:
    """Partitions whose last stable offset stays below the high watermark for ``within_s``.

    RELIABILITY.md T6/T8: once the faults are over, no transaction may be left open
    (it would hold every ``read_committed`` reader back). Returns ``{"topic[p]":
    (LSO, HW)}`` of the partitions still behind when the time is up (empty: none).
    """
    from confluent_kafka import IsolationLevel, TopicPartition
    from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

    admin = AdminClient({"bootstrap.servers": bootstrap})
    meta = admin.list_topics(timeout=10).topics
    tps = [TopicPartition(t, p) for t in topics for p in meta[t].partitions]
    deadline = time.monotonic() + within_s
    while True:
        ends = {}
        for level in (IsolationLevel.READ_COMMITTED, IsolationLevel.READ_UNCOMMITTED):
            futures = admin.list_offsets({tp: OffsetSpec.latest() for tp in tps},
                                         isolation_level=level)  # fmt: skip
            ends[level] = {tp: futures[tp].result(timeout=10).offset for tp in tps}
        behind = {
            f"{tp.topic}[{tp.partition}]": (ends[IsolationLevel.READ_COMMITTED][tp], hw)
            for tp, hw in ends[IsolationLevel.READ_UNCOMMITTED].items()
            if ends[IsolationLevel.READ_COMMITTED][tp] < hw
        }
        if not behind or time.monotonic() > deadline:
            return behind
        time.sleep(1.0)


def judge(records: list[dict[str, Any]], rows: list[dict[str, Any]]) -> None:
    """The output must be exactly the oracle's: no loss, no duplicate, no gap alert."""
    want, got = canon(expected(records)), canon(rows)
    missing, extra = want - got, got - want
    detail = (
        f"{sum(missing.values())} missing, {sum(extra.values())} unexpected/duplicate rows; "
        f"e.g. missing {list(missing)[:3]}, extra {list(extra)[:3]}"
    )
    assert not missing, detail
    assert not extra, detail


def judge_windows(records: list[dict[str, Any]], rows: list[dict[str, Any]]) -> None:
    """Every emitted window count is the true count, and no window is emitted twice."""
    seen = Counter((r["key"], r["window_start_ms"]) for r in rows)
    dups = [k for k, n in seen.items() if n > 1]
    assert not dups, f"windows emitted twice: {dups[:5]}"
    truth = Counter((r["key"], r["ts"] - r["ts"] % 10_000) for r in records)
    wrong = [r for r in rows if truth[r["key"], r["window_start_ms"]] != r["count"]]
    assert not wrong, f"{len(wrong)} wrong window counts, e.g. {wrong[:3]}"


def oracle_input(
    log: Log, *, records: int, slow_ms: float, repartition: bool = False
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """A new input topic of the oracle pipeline (6 partitions, 40 keys) and the workers' env."""
    tag = uuid.uuid4().hex[:8]
    recs = make_input(log, f"in-{tag}", records=records, keys=40, partitions=6)
    env = {
        "SCALE_IN": f"in-{tag}",
        "SCALE_OUT": f"out-{tag}",
        "SCALE_APP": f"app-{tag}",
        "SCALE_SLOW_MS": str(slow_ms),
        "SCALE_REPARTITION": "1" if repartition else "0",
    }
    return recs, env


def finish(log: Log, workers: Workers, recs: list[dict[str, Any]], out: str) -> None:
    """Wait for the whole output, stop the workers cleanly, judge it against the oracle."""
    wait_output(log, out, len(expected(recs)), workers, timeout=120)
    time.sleep(1.0)  # a duplicate would show up late: give it time to be committed
    for proc in workers.procs:
        if proc.poll() is None:
            assert workers.stop(proc) in (0, 143), workers.stderr()
    judge(recs, read_topic(log, out))
    judge_windows(recs, read_topic(log, f"{out}.windows"))
