"""Kafka workers that stop serving the group, and at-least-once workers killed mid-run.

* ``max_poll_interval_ms``: one worker's step blocks in user code past the poll
  interval while librdkafka keeps heartbeating (the session does not expire). The group
  must move its tasks to the other worker, and the stuck worker, when it wakes, must
  commit nothing of its old generation, then rejoin (never crash-loop, never hang).
* ``--at-least-once`` under ``kill -9``: replays are allowed, loss is not.

Both run real ``eventspine run`` workers against the suite's broker and judge the output
read ``read_committed`` against the oracle of ``tests/scaleout/pipeline.py``.
"""

from __future__ import annotations

import json
import random
import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from eventspine.log import Log

from .cluster import (
    Workers,
    finish,
    judge,
    judge_windows,
    oracle_input,
    read_topic,
    wait_output,
)
from .pipeline import expected

pytestmark = pytest.mark.kafka

#: The smallest poll interval librdkafka accepts with the brokers' smallest session.
SESSION_MS = MAX_POLL_MS = 6000
STALL_S = 12.0  # > MAX_POLL_MS: the member leaves the group while the step blocks


def test_a_step_blocked_past_max_poll_interval_loses_its_tasks_and_commits_nothing(
    kafka_log: Log, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A step blocks 12 s with ``max_poll_interval_ms=6000``; the output stays exact.

    Worker 1 blocks once, inside the ``stats`` step, after its 300th record. Its
    member's poll interval runs out: librdkafka leaves the group (``MAXPOLL``), worker 0
    restores all six tasks from their last checkpoints and redoes what worker 1 had not
    committed. When worker 1 wakes, its checkpoint carries the stale group metadata and
    is refused; the output (exact: no duplicate) proves nothing of it was committed. It
    then polls, drops the lost tasks, rejoins and gets tasks back.
    """
    recs, env = oracle_input(kafka_log, records=5000, slow_ms=4)
    url = (
        f"kafka://{kafka_bootstrap}?session_timeout_ms={SESSION_MS}"
        f"&max_poll_interval_ms={MAX_POLL_MS}"
    )
    out = env["SCALE_OUT"]
    workers = Workers(url, env, tmp_path, target="tests/scaleout/stall_pipeline.py:pipeline")
    try:
        workers.start()
        wait_output(kafka_log, out, 200, workers, timeout=60)
        workers.env.update(SCALE_STALL_AFTER="300", SCALE_STALL_S=str(STALL_S))
        stuck = workers.start()
        del workers.env["SCALE_STALL_AFTER"]
        workers.wait_log(1, "started (checkpoint")
        workers.wait_log(1, "stall_pipeline: woke up", timeout=STALL_S + 60)
        done = len(read_topic(kafka_log, out))
        assert done < len(expected(recs)) - 300, "the input ended during the stall: slow it"
        # Worker 1 must be back in the group and running tasks again (not crash-looping).
        workers.wait_log(1, "task(s)", timeout=30)
        finish(kafka_log, workers, recs, out)
        assert stuck.returncode in (0, 143), workers.stderr()
        stuck_log = (tmp_path / "worker1.err").read_text()
        before, _, after = stuck_log.partition("stall_pipeline: woke up")
        assert "stall_pipeline: blocking" in before, stuck_log
        # The poll interval, not the session, expired (the member logs librdkafka's MAXPOLL
        # and the lost tasks); the group then moved them to worker 0.
        assert re.search(r"MAXPOLL|maximum poll interval", stuck_log, re.IGNORECASE), stuck_log
        assert "lost task(s)" in after, stuck_log
        assert "session timed out" not in stuck_log, stuck_log
        # Its first checkpoint after waking was refused (stale generation), never committed.
        assert re.search(r"checkpoint was aborted|the log failed", after), stuck_log
        assert "assigned task(s)" in after, stuck_log  # it rejoined and works again
    finally:
        workers.close()


def test_at_least_once_workers_killed_at_random_points_lose_nothing(
    kafka_log: Log, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """``--at-least-once``, two workers killed (``kill -9``) three times: replays, no loss.

    Worker 0 kills itself inside a checkpoint, after its outputs and state changes were
    acknowledged and its positions committed, before its checkpoint record (failpoint
    ``ckpt.before_commit``), so a replay certainly happens; then two workers are killed
    at seeded random points, a new one started after each kill.

    Pass criterion, per key (its rows are in one output partition, in order): the rows
    are *runs*, each the deterministic processing of the key's records from a seq ``s0``
    on, over a state this key had after an earlier row (:func:`_judge_at_least_once`):

    * no loss: no run starts past the last seq processed + 1, every key's last record
      is processed, and no run starts from a state older than its position;
    * no other row: every row is what the oracle's step computes within such a run;
    * a run over the state of ``s0 - 1`` (state and positions of one checkpoint) repeats
      oracle rows exactly: for every key whose runs are all such, the distinct rows are
      the oracle's rows of that key, and its window counts are right;
    * a run over a *newer* state (``B.last > s0 - 1``) is the documented at-least-once
      loss of accuracy: the crash came after the checkpoint's state changes were
      acknowledged and before its checkpoint record, so the restore reads those changes
      from the changelog (it reads to the end) and replays the records that made them.
      Its first row is a ``seq_gap`` alert with ``last >= seq``; the key's counts stay
      off from then on. Such keys are reported, not judged against the oracle.
    """
    recs, env = oracle_input(kafka_log, records=3000, slow_ms=3)
    url, out = f"kafka://{kafka_bootstrap}", env["SCALE_OUT"]
    workers = Workers(url, env, tmp_path)
    rng = random.Random(23)
    try:
        workers.env["EVENTSPINE_FAILPOINTS"] = "ckpt.before_commit=crash@12"
        live = [workers.start("--at-least-once")]
        del workers.env["EVENTSPINE_FAILPOINTS"]
        workers.wait_log(0, "started (checkpoint")  # (it creates the internal topics)
        live.append(workers.start("--at-least-once"))
        assert live[0].wait(60) == -signal.SIGKILL, workers.stderr()
        live[0] = workers.start("--at-least-once")
        for _ in range(2):
            time.sleep(rng.uniform(1.5, 4.0))
            victim = live.pop(rng.randrange(len(live)))
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            live.append(workers.start("--at-least-once"))
        _wait_all_processed(kafka_log, out, recs, workers, timeout=120)
        time.sleep(1.0)  # a replay would show up late: give it time
        for proc in live:
            assert workers.stop(proc) in (0, 143), workers.stderr()
        rows = read_topic(kafka_log, out)
        runs = _judge_at_least_once(recs, rows)
        print(runs)
        assert runs.restarts > 0, "no replay happened: the test did not exercise a crash"
        exact = {r["key"] for r in recs} - runs.ahead_keys
        # Replays from a consistent checkpoint repeat oracle rows exactly (and windows).
        judge(
            [r for r in recs if r["key"] in exact],
            list({json.dumps(r, sort_keys=True): r for r in rows if r["key"] in exact}.values()),
        )
        windows = read_topic(kafka_log, f"{out}.windows")
        judge_windows(
            [r for r in recs if r["key"] in exact],
            list({json.dumps(r, sort_keys=True): r for r in windows if r["key"] in exact}.values()),
        )
    finally:
        workers.close()


@dataclass
class _Runs:
    """How the output of an at-least-once run decomposes (see :func:`_judge_at_least_once`)."""

    rows: int = 0
    repeats: int = 0  # rows that repeat an earlier one exactly
    restarts: int = 0  # runs after the first, over all keys
    ahead: int = 0  # ...whose state was ahead of their position (a state change applied twice)
    ahead_keys: set[str] = field(default_factory=set)
    examples: list[str] = field(default_factory=list)


_State = tuple[int, int, int, int, int]  # last seq, count, sum, min, max (count 0: none)


def _step(st: _State, seq: int, value: int, key: str) -> tuple[list[dict[str, Any]], _State]:
    """One record through the oracle's step (``pipeline.RunningStats``): rows, new state."""
    last, count, total, lo, hi = st
    rows: list[dict[str, Any]] = []
    if seq - last != 1:
        rows.append({"key": key, "alert": "seq_gap", "last": last, "seq": seq})
    lo, hi = (value, value) if count == 0 else (min(lo, value), max(hi, value))
    new = (seq, count + 1, total + value, lo, hi)
    rows.append({"key": key, "seq": seq, "count": new[1], "sum": new[2], "min": lo, "max": hi})
    return rows, new


def _judge_at_least_once(records: list[dict[str, Any]], rows: list[dict[str, Any]]) -> _Runs:
    """Decompose each key's rows into runs; fail on a loss or a row no run explains.

    A run starts at the key's record ``s0`` over a state ``B`` the key had after some
    earlier row (or the empty state) and continues record by record. It must not skip a
    record (``s0`` <= the last seq processed so far + 1) nor start with a state older than
    its position (``B.last`` >= ``s0 - 1``). ``B.last == s0 - 1`` with ``B`` the oracle's
    state is an exact replay; ``B.last > s0 - 1`` is a state change applied twice.
    """
    values: dict[str, list[int]] = {}
    for r in records:
        values.setdefault(r["key"], []).append(r["value"])  # seqs are 1, 2, ... per key
    by_key: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_key.setdefault(row["key"], []).append(row)
    runs = _Runs(rows=len(rows))
    seen: set[str] = set()
    for row in rows:
        canon = json.dumps(row, sort_keys=True)
        runs.repeats += canon in seen
        seen.add(canon)
    for key, vals in values.items():
        oracle: list[_State] = [(0, 0, 0, 0, 0)]
        for seq, v in enumerate(vals, 1):
            oracle.append(_step(oracle[-1], seq, v, key)[1])
        history = {oracle[0]}
        state, nxt, done = oracle[0], 1, 0
        pending: list[dict[str, Any]] = []  # rows the current run still has to emit
        for row in by_key.get(key, []):
            if not pending and nxt <= len(vals):
                pending, state = _step(state, nxt, vals[nxt - 1], key)
            if pending and row == pending[0]:
                pending.pop(0)
                if not pending:
                    history.add(state)
                    done, nxt = max(done, nxt), nxt + 1
                continue
            # A new run: the row is its first (an alert, or a stats row with no alert).
            s0 = row["seq"]
            detail = f"key {key}: row {row} (processed up to seq {done})"
            assert s0 <= done + 1, f"a record was skipped (lost): {detail}"
            if "alert" in row:
                starts = [b for b in history if b[0] == row["last"]]
            else:
                starts = [b for b in history if _step(b, s0, vals[s0 - 1], key)[0] == [row]]
            assert starts, f"no replay from an earlier state explains {detail}"
            base = oracle[s0 - 1] if oracle[s0 - 1] in starts else starts[0]
            assert base[0] >= s0 - 1, f"restored state older than its position: {detail}"
            runs.restarts += 1
            if base != oracle[s0 - 1]:
                runs.ahead += 1
                runs.ahead_keys.add(key)
                runs.examples.append(f"{detail}: state of seq {base[0]} replayed from seq {s0}")
            pending, state = _step(base, s0, vals[s0 - 1], key)
            assert pending[0] == row, detail
            pending.pop(0)
            nxt = s0
            if not pending:
                history.add(state)
                done, nxt = max(done, nxt), nxt + 1
        assert not pending, f"key {key}: a run stopped inside a record: {pending}"
        assert done == len(vals), f"key {key}: processed up to {done} of {len(vals)}"
    return runs


def _wait_all_processed(
    log: Log, topic: str, records: list[dict[str, Any]], workers: Workers, timeout: float
) -> list[dict[str, Any]]:
    """Wait until every key's last record has its stats row in ``topic``; return the rows."""
    last: dict[str, int] = {}
    for r in records:
        last[r["key"]] = r["seq"]
    deadline = time.monotonic() + timeout
    while True:
        rows = read_topic(log, topic)
        reached = {(r["key"], r["seq"]) for r in rows if "alert" not in r}
        if all((k, s) in reached for k, s in last.items()):
            return rows
        if time.monotonic() > deadline:
            _judge_at_least_once(records, rows)  # names the record lost, if one was
            raise AssertionError(f"{topic}: not every key finished\n{workers.stderr()}")
        workers.supervise()
        time.sleep(0.5)
