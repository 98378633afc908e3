"""``eventspine run --workers 2`` on the embedded SQLite log: a static split of the tasks."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from eventspine.log import open_log

from .cluster import EVENTSPINE, ROOT, judge, judge_windows, make_input, read_topic
from .pipeline import expected


def test_two_workers_split_the_tasks_and_match_one_worker(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    log = open_log(url)
    try:
        recs = make_input(log, "orders", records=3000, keys=40, partitions=4)
        want = len(expected(recs))
        env = {**os.environ, "SCALE_IN": "orders", "SCALE_OUT": "stats", "SCALE_SLOW_MS": "1"}
        err = tmp_path / "workers.err"
        with err.open("wb") as stderr:
            proc = subprocess.Popen(
                [
                    EVENTSPINE,
                    "run",
                    "tests/scaleout/pipeline.py:pipeline",
                    "--log-url",
                    url,
                    "--workers",
                    "2",
                    "--checkpoint-interval-ms",
                    "200",
                    "--quiet",
                    "--log-level",
                    "INFO",
                ],
                cwd=ROOT,
                env=env,
                stderr=stderr,
            )
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
