"""Scale-out on Kafka: workers join, leave, crash and stall; the output stays exact.

Each test runs real ``eventspine run`` worker processes of
``tests/scaleout/pipeline.py`` against the suite's Kafka broker, and judges the
committed (``read_committed``) output against the oracle of one uninterrupted
run: no record lost, none duplicated, no sequence-gap alert, every window count
right and emitted once.
"""

from __future__ import annotations

import random
import re
import signal
import time
from pathlib import Path

import pytest

from eventspine.log import Log

from .cluster import (
    Workers,
    finish,
    oracle_input,
    read_topic,
    wait_output,
)

pytestmark = pytest.mark.kafka


def _setup(
    log: Log, tmp_path: Path, url: str, *, records: int, slow_ms: float, repartition: bool = False
) -> tuple[list[dict[str, object]], Workers, str]:
    recs, env = oracle_input(log, records=records, slow_ms=slow_ms, repartition=repartition)
    return recs, Workers(url, env, tmp_path), env["SCALE_OUT"]


def test_rescale_one_to_three_and_back(
    kafka_log: Log, kafka_bootstrap: str, tmp_path: Path
) -> None:
    recs, workers, out = _setup(
        kafka_log, tmp_path, f"kafka://{kafka_bootstrap}", records=4000, slow_ms=8
    )
    try:
        first = workers.start()
        wait_output(kafka_log, out, 300, workers, timeout=60)
        second, third = workers.start(), workers.start()
        workers.wait_log(1, "started (checkpoint")
        workers.wait_log(2, "started (checkpoint")
        done = len(read_topic(kafka_log, out))
        assert done < len(recs) - 500, "the run ended before the workers joined: slow it down"
        wait_output(kafka_log, out, done + 300, workers, timeout=60)
        assert workers.stop(second) in (0, 143)
        assert workers.stop(third) in (0, 143)
        assert first.poll() is None
        finish(kafka_log, workers, recs, out)
        log_text = workers.stderr()
        assert "revoking task(s)" in log_text
        assert "started (checkpoint" in log_text
    finally:
        workers.close()


def test_kill9_of_workers_at_random_points(
    kafka_log: Log, kafka_bootstrap: str, tmp_path: Path
) -> None:
    url = f"kafka://{kafka_bootstrap}"
    # Through a repartition topic: crashes must not duplicate what crosses it either.
    recs, workers, out = _setup(kafka_log, tmp_path, url, records=3000, slow_ms=3, repartition=True)
    rng = random.Random(11)
    try:
        live = [workers.start(), workers.start()]
        for _ in range(3):
            time.sleep(rng.uniform(1.5, 4.0))
            victim = live.pop(rng.randrange(len(live)))
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            live.append(workers.start())
        finish(kafka_log, workers, recs, out)
    finally:
        workers.close()


def test_a_paused_worker_is_fenced_when_it_wakes(
    kafka_log: Log, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """SIGSTOP a worker past its session: the other takes its tasks; the zombie commits nothing."""
    url = f"kafka://{kafka_bootstrap}"
    recs, workers, out = _setup(kafka_log, tmp_path, url, records=2500, slow_ms=3)
    try:
        zombie = workers.start()
        workers.start()
        wait_output(kafka_log, out, 400, workers, timeout=60)
        zombie.send_signal(signal.SIGSTOP)
        time.sleep(9)  # > the 6 s session timeout: the group moves the zombie's tasks to `other`
        zombie.send_signal(signal.SIGCONT)
        finish(kafka_log, workers, recs, out)
        zombie_log = (tmp_path / "worker0.err").read_text()
        assert "session timed out" in zombie_log or "lost task(s)" in zombie_log, zombie_log
    finally:
        workers.close()


def test_at_least_once_with_clean_restarts_matches_the_oracle(
    kafka_log: Log, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """`--at-least-once` commits outputs, state and positions without a transaction.

    Without a crash nothing is replayed, so across a clean stop and restart the output
    is still exactly the oracle's (a crash would be allowed to repeat some).
    """
    url = f"kafka://{kafka_bootstrap}"
    recs, workers, out = _setup(kafka_log, tmp_path, url, records=2000, slow_ms=5)
    try:
        first = workers.start("--at-least-once")
        wait_output(kafka_log, out, 500, workers, timeout=60)
        assert workers.stop(first) == 143
        done = len(read_topic(kafka_log, out))
        assert done < len(recs) - 300, "the first worker finished the input: slow it down"
        workers.start("--at-least-once")
        workers.wait_log(1, "started (checkpoint")
        finish(kafka_log, workers, recs, out)
        assert "task 0 started (checkpoint None)" not in (tmp_path / "worker1.err").read_text()
    finally:
        workers.close()


def test_standby_copies_take_over_a_killed_worker(
    kafka_log: Log, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """`--standby`: the survivor restores the killed worker's tasks from its warm copies."""
    url = f"kafka://{kafka_bootstrap}"
    recs, workers, out = _setup(kafka_log, tmp_path, url, records=2500, slow_ms=3)
    try:
        victim = workers.start("--standby")
        workers.start("--standby")
        workers.wait_log(1, "started (checkpoint")
        wait_output(kafka_log, out, 800, workers, timeout=60)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        workers.wait_log(1, "from a standby copy", timeout=60)
        finish(kafka_log, workers, recs, out)
        took = re.findall(r"from a standby copy \((\d+) changelog", workers.stderr())
        assert took, workers.stderr()
        assert max(map(int, took)) > 0, workers.stderr()
    finally:
        workers.close()
