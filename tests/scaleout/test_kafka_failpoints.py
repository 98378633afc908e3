"""T1 on Kafka at the named failpoints: a worker crashes (SIGKILL) at each step; output exact.

Every failpoint of a Kafka checkpoint (the ``ckpt.*`` and ``recovery.*`` steps of
``eventspine.runtime.checkpoint``, which the same Checkpointer hits on Kafka, and the
``kafka.txn.*`` steps of ``eventspine.log.kafka._txn``) is armed in one worker of a
*lane*: a pipeline run where one worker at a time runs all tasks, crashes at its
failpoint (``=crash@k``, ``k`` past the first checkpoint so state exists), and the next
worker of the lane takes over its tasks after the group drops the dead member. Five
lanes run side by side (the waits are for session timeouts, not CPU), so one unmarked
test crashes at every failpoint; each crash is checked in ``EVENTSPINE_FAILPOINTS_LOG``
(the armed failpoint was reached ``k`` times) and by the exit status (-9). A last clean
worker of each lane finishes the input, and the committed output must equal the oracle's:
no loss, no duplicate, no sequence-gap alert, every window count right and emitted once.
"""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from eventspine.log import Log
from reliability.harness.failpoint_names import CHECKPOINT_FAILPOINTS, KAFKA_TXN_FAILPOINTS, hits

from .cluster import Workers, judge, judge_windows, make_input, read_topic, wait_output
from .pipeline import expected

pytestmark = pytest.mark.kafka

PARTITIONS = 3
#: A crash leaves its transaction open until the broker aborts it: keep that short.
URL_OPTIONS = "?transaction_timeout_ms=6000&request_timeout_ms=5000"
#: How long one worker may take to reach its failpoint (join after a dead member's
#: 6 s session, restore, two checkpoints).
STEP_TIMEOUT_S = 60.0


def _at(name: str) -> int:
    """The hit that crashes: past the first checkpoint (state exists) or the first task."""
    if name.startswith("ckpt."):
        return PARTITIONS + 2  # hit once per task per checkpoint: task 2 of checkpoint 2
    if name == "recovery.mid_replay":
        return 3  # the third changelog batch folded: mid-restore
    return 2  # kafka.txn.* once per transaction; recovery.* once per task


#: Every failpoint, one crash each, in lanes (nightly); recovery ones after state exists.
ALL_LANES: tuple[tuple[str, ...], ...] = (
    ("ckpt.before_begin", "kafka.txn.after_begin", "recovery.before_restore"),
    ("ckpt.after_state_write", "kafka.txn.after_flush", "recovery.mid_replay"),
    ("ckpt.after_output_append", "kafka.txn.after_send_offsets", "recovery.after_restore"),
    ("ckpt.before_commit", "kafka.txn.after_commit"),
    ("ckpt.after_commit_before_ack", "ckpt.after_publish"),
)
#: The PR subset: a crash at each Kafka transaction step and one inside a restore (the
#: checkpoint steps crash the embedded T1, ``tests/reliability/test_t1_kill9.py``).
PR_LANES: tuple[tuple[str, ...], ...] = (
    ("kafka.txn.after_flush", "kafka.txn.after_commit", "recovery.mid_replay"),
    ("kafka.txn.after_begin", "kafka.txn.after_send_offsets"),
)


@dataclass
class Lane:
    """One pipeline run whose workers crash, one after another, at the lane's failpoints."""

    records: list[dict[str, Any]]
    workers: Workers
    out: str
    hits_log: Path
    todo: list[str]
    current: str | None = None
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    crashed: list[str] = field(default_factory=list)
    seen: Counter[str] = field(default_factory=Counter)

    def next(self) -> None:
        """Start the next worker: armed with the next failpoint, or a clean finisher."""
        self.current = self.todo.pop(0) if self.todo else None
        if self.current is None:
            self.workers.env.pop("EVENTSPINE_FAILPOINTS", None)
            self.workers.env["SCALE_SLOW_MS"] = "0"  # the slow-down changes no output
        else:
            self.workers.env["EVENTSPINE_FAILPOINTS"] = f"{self.current}=crash@{_at(self.current)}"
        self.proc = self.workers.start()
        self.started = time.monotonic()

    def step(self) -> bool:
        """Check the armed worker; start the next one when it crashed. False when finishing."""
        if self.current is None:
            return False
        assert self.proc is not None
        code = self.proc.poll()
        if code is None:
            if time.monotonic() - self.started > STEP_TIMEOUT_S:
                raise AssertionError(
                    f"{self.current} did not crash the worker within {STEP_TIMEOUT_S:.0f} s; "
                    f"hits {hits(self.hits_log)}\n{self.workers.stderr()}"
                )
            return True
        reached = hits(self.hits_log).get(self.current, 0)
        assert code == -signal.SIGKILL, (
            f"{self.current}: the worker exited {code}, not by its failpoint\n"
            + self.workers.stderr()
        )
        assert reached >= _at(self.current), f"{self.current} was hit {reached}x"
        self.crashed.append(self.current)
        self.seen.update(hits(self.hits_log))
        self.hits_log.write_text("")  # the next worker counts from zero again
        self.next()
        return True


def _lane(log: Log, url: str, tmp: Path, failpoints: tuple[str, ...]) -> Lane:
    tag = uuid.uuid4().hex[:8]
    recs = make_input(log, f"in-{tag}", records=6000, keys=30, partitions=PARTITIONS)
    hits_log = tmp / "hits.txt"
    hits_log.touch()
    env = {
        "SCALE_IN": f"in-{tag}",
        "SCALE_OUT": f"out-{tag}",
        "SCALE_APP": f"app-{tag}",
        "SCALE_SLOW_MS": "1",  # a loop pass of 3 tasks takes ~0.8 s: crashes land mid-stream
        "EVENTSPINE_FAILPOINTS_LOG": str(hits_log),
    }
    return Lane(recs, Workers(url, env, tmp), f"out-{tag}", hits_log, list(failpoints))


def _run_lanes(log: Log, url: str, tmp: Path, plan: tuple[tuple[str, ...], ...]) -> Counter[str]:
    """Crash at each lane's failpoints, finish each lane, judge; return every hit counted."""
    lanes = []
    for i, names in enumerate(plan):
        (tmp / f"lane{i}").mkdir()
        lanes.append(_lane(log, url, tmp / f"lane{i}", names))
    try:
        for lane in lanes:
            lane.next()
        while True:
            busy = [lane.step() for lane in lanes]  # step every lane, no short-circuit
            if not any(busy):
                break
            time.sleep(0.2)
        assert sorted(c for lane in lanes for c in lane.crashed) == sorted(sum(plan, ()))
        for lane in lanes:
            wait_output(log, lane.out, len(expected(lane.records)), lane.workers, 120)
        time.sleep(1.0)  # a duplicate would show up late: give it time to be committed
        seen: Counter[str] = Counter()
        for lane in lanes:
            assert lane.proc is not None
            assert lane.workers.stop(lane.proc) in (0, 143), lane.workers.stderr()
            judge(lane.records, read_topic(log, lane.out))
            judge_windows(lane.records, read_topic(log, f"{lane.out}.windows"))
            seen += lane.seen + Counter(hits(lane.hits_log))
        return seen
    finally:
        for lane in lanes:
            lane.workers.close()


def test_crash_at_kafka_txn_failpoints_and_hit_every_failpoint(
    kafka_log: Log, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A crash at each ``kafka.txn.*`` step and mid-restore; output == oracle.

    Coverage: the runs reach every named failpoint of the Kafka path (the checkpoint and
    recovery ones on their clean passes), so a renamed or unreachable one fails here.
    """
    assert len(KAFKA_TXN_FAILPOINTS) >= 4, KAFKA_TXN_FAILPOINTS
    assert set(KAFKA_TXN_FAILPOINTS) <= set(sum(PR_LANES, ()))
    url = f"kafka://{kafka_bootstrap}{URL_OPTIONS}"
    seen = _run_lanes(kafka_log, url, tmp_path, PR_LANES)
    missing = [n for n in (*CHECKPOINT_FAILPOINTS, *KAFKA_TXN_FAILPOINTS) if not seen[n]]
    assert not missing, f"failpoints never reached on Kafka: {missing}; hits {dict(seen)}"


@pytest.mark.slow
def test_crash_at_every_kafka_failpoint(
    kafka_log: Log, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Each named failpoint of the Kafka path crashes one worker; the output == oracle."""
    every = {*CHECKPOINT_FAILPOINTS, *KAFKA_TXN_FAILPOINTS}
    assert sorted(sum(ALL_LANES, ())) == sorted(every), "every failpoint is in one lane"
    _run_lanes(kafka_log, f"kafka://{kafka_bootstrap}{URL_OPTIONS}", tmp_path, ALL_LANES)
