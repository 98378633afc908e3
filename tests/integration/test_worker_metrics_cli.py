"""Worker metrics of a real ``eventspine run --workers 2`` on the SQLite log, over HTTP.

Two worker processes split four tasks; each serves ``/metrics`` on its own port.
The test scrapes both while they catch up with their input: the tasks owned add
up to the partition count, the consumer lag is shown (progress line and
``/metrics``) and falls to 0, and the checkpoint counters keep moving.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from eventspine.log import open_log
from scaleout.cluster import EVENTSPINE, ROOT, make_input, read_topic
from scaleout.pipeline import expected

pytestmark = pytest.mark.timeout(120)


def two_free_ports() -> int:
    """A port P such that P and P + 1 are free (worker i serves on P + i)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise AssertionError("no two consecutive free ports")


def scrape(port: int) -> dict[str, float] | None:
    """``name{label=value,...}`` (labels sorted, ``pipeline`` left out) -> value; None if down."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()) if k != "pipeline")
            out[f"{s.name}{{{labels}}}"] = s.value
    return out


def lag_of(m: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in m.items() if k.startswith("eventspine_consumer_lag_records")}


def test_two_workers_serve_tasks_lag_and_checkpoints_on_metrics(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    log = open_log(url)
    try:
        recs = make_input(log, "orders", records=3000, keys=40, partitions=4)
        want = len(expected(recs))
        port = two_free_ports()
        env = {
            **os.environ,
            "SCALE_IN": "orders",
            "SCALE_OUT": "stats",
            "SCALE_APP": "metrics",
            "SCALE_SLOW_MS": "1",
        }
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
                    "--metrics-port",
                    str(port),
                    "--checkpoint-interval-ms",
                    "200",
                    "--progress",
                ],
                cwd=ROOT,
                env=env,
                stderr=stderr,
            )
            try:
                seen_lag = {0: 0.0, 1: 0.0}
                first: dict[int, dict[str, float]] = {}
                deadline = time.monotonic() + 90
                while True:
                    assert proc.poll() is None, err.read_text()
                    assert time.monotonic() < deadline, err.read_text()
                    now = {i: scrape(port + i) for i in (0, 1)}
                    up = {i: m for i, m in now.items() if m is not None and lag_of(m)}
                    for i, m in up.items():
                        first.setdefault(i, m)
                        seen_lag[i] = max(seen_lag[i], sum(lag_of(m).values()))
                    done = len(read_topic(log, "stats")) >= want
                    caught_up = len(up) == 2 and all(
                        sum(lag_of(m).values()) == 0 for m in up.values()
                    )
                    if done and caught_up:
                        break
                    time.sleep(0.2)
                time.sleep(0.6)  # a few more checkpoints
                last = {i: scrape(port + i) for i in (0, 1)}
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(60) == 143, err.read_text()
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        text = err.read_text()
        # Both workers had input to catch up with (3,000 records at 1 ms each).
        assert seen_lag[0] > 0, text
        assert seen_lag[1] > 0, text
        assert "| lag " in text  # the progress line shows the lag while there is one
        owned = 0.0
        for i in (0, 1):
            m = last[i]
            assert m is not None, text
            owned += m["eventspine_tasks_owned{}"]
            # The static split: worker i runs the tasks p % 2 == i, two partitions each.
            assert set(lag_of(m)) == {
                f"eventspine_consumer_lag_records{{partition={p},topic=orders}}" for p in (i, i + 2)
            }
            assert m["eventspine_rebalance_tasks_total{event=assign}"] == 2
            assert m["eventspine_restores_total{}"] == 2
            assert m["eventspine_checkpoints_total{}"] > first[i]["eventspine_checkpoints_total{}"]
            assert m["eventspine_checkpoint_failures_total{}"] == 0
            assert 0 <= m["eventspine_checkpoint_age_seconds{}"] < 10
            assert m["eventspine_last_checkpoint_duration_seconds{}"] > 0
            assert m["eventspine_state_keys{step=stats}"] > 0
        assert owned == 4
        # `state show` prints the lag of the committed positions: all read, all 0.
        shown = subprocess.run(
            [EVENTSPINE, "state", "show", "metrics", "--log", url, "--json"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        doc = json.loads(shown.stdout)
        assert doc["lag"] == {"orders": {"0": 0, "1": 0, "2": 0, "3": 0}}, doc
        shown = subprocess.run(
            [EVENTSPINE, "state", "show", "metrics", "--log", url],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        assert "lag (end offset - position): 0=0 1=0 2=0 3=0 (total 0)" in shown.stdout
    finally:
        log.close()
