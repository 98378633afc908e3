"""``eventspine run --workers 2`` on the embedded SQLite log: a static split of the tasks."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from eventspine.log import open_log

from .cluster import judge, judge_windows, make_input, read_topic, start_workers
from .pipeline import expected


def test_two_workers_split_the_tasks_and_match_one_worker(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    log = open_log(url)
    try:
        recs = make_input(log, "orders", records=3000, keys=40, partitions=4)
        want = len(expected(recs))
        env = {"SCALE_IN": "orders", "SCALE_OUT": "stats", "SCALE_SLOW_MS": "1"}
        err = tmp_path / "workers.err"
        with err.open("wb") as stderr:
            extra = ("--checkpoint-interval-ms", "200", "--quiet", "--log-level", "INFO")
            proc = start_workers(url, 2, env, stderr, *extra)
            deadline = time.monotonic() + 120
            while len(read_topic(log, "stats")) < want:
                assert proc.poll() is None, err.read_text()
                assert time.monotonic() < deadline, err.read_text()
                time.sleep(0.3)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 143, err.read_text()
        text = err.read_text()
        assert "started 2 workers" in text
        # Worker 0 ran tasks 0 and 2, worker 1 tasks 1 and 3 (p % 2).
        assert text.count("started (checkpoint") == 4, text
        judge(recs, read_topic(log, "stats"))
        judge_windows(recs, read_topic(log, "stats.windows"))
    finally:
        log.close()


def test_the_workers_stop_when_their_parent_is_killed(tmp_path: Path) -> None:
    """kill -9 of `--workers 2`: the children must not run on beside the next run."""
    url = f"sqlite:///{tmp_path / 'log.db'}"
    log = open_log(url)
    try:
        make_input(log, "orders", records=3000, keys=40, partitions=4)
    finally:
        log.close()
    env = {"SCALE_IN": "orders", "SCALE_OUT": "stats", "SCALE_SLOW_MS": "5"}
    err = tmp_path / "workers.err"
    with err.open("wb") as stderr:
        proc = start_workers(url, 2, env, stderr, "--quiet", "--log-level", "INFO")
        deadline = time.monotonic() + 60
        while err.read_text().count("started (checkpoint") < 4:
            assert proc.poll() is None, err.read_text()
            assert time.monotonic() < deadline, err.read_text()
            time.sleep(0.2)
        text = err.read_text()
        pids = [int(p) for p in text.split("(pids ", 1)[1].split(")", 1)[0].split(", ")]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in pids):
            assert time.monotonic() < deadline, f"workers {pids} outlived their parent"
            time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by init) counts as stopped.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
