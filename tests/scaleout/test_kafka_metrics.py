"""Worker metrics on Kafka: a second worker joins, the metrics of both show the rebalance.

Real ``eventspine run`` worker processes of ``tests/scaleout/pipeline.py`` against
the suite's Kafka broker, each serving ``/metrics``. When the second worker joins,
the first has tasks revoked and the second has them assigned and restores their
state from the changelogs; the tasks owned add up to the partition count, the
lag of every source partition falls to 0, and the output is still exactly the
oracle's.
"""

from __future__ import annotations

import socket
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from eventspine.log import Log

from .cluster import Workers, judge, make_input, read_topic, wait_output
from .pipeline import expected

pytestmark = pytest.mark.kafka

PARTITIONS = 6


def _scrape(port: int) -> dict[str, float] | None:
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _lag(m: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in m.items() if k.startswith("eventspine_consumer_lag_records")}


def test_a_joining_worker_moves_rebalance_restore_and_lag_metrics(
    kafka_log: Log, kafka_bootstrap: str, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    recs = make_input(kafka_log, f"in-{tag}", records=6000, keys=40, partitions=PARTITIONS)
    out = f"out-{tag}"
    env = {
        "SCALE_IN": f"in-{tag}",
        "SCALE_OUT": out,
        "SCALE_APP": f"app-{tag}",
        "SCALE_SLOW_MS": "2",
    }
    workers = Workers(f"kafka://{kafka_bootstrap}", env, tmp_path)
    ports = [_free_port(), _free_port()]
    try:
        workers.start("--metrics-port", str(ports[0]))
        wait_output(kafka_log, out, 300, workers, timeout=90)
        workers.start("--metrics-port", str(ports[1]))
        workers.wait_log(1, "started (checkpoint", timeout=90)
        assert len(read_topic(kafka_log, out)) < len(recs) - 300, "ended too soon: slow it down"
        deadline = time.monotonic() + 120
        while True:
            workers.supervise()
            assert time.monotonic() < deadline, workers.stderr()
            m = [_scrape(p) for p in ports]
            if m[0] is not None and m[1] is not None:
                owned = m[0]["eventspine_tasks_owned{}"] + m[1]["eventspine_tasks_owned{}"]
                lags = {**_lag(m[0]), **_lag(m[1])}
                caught_up = len(lags) == PARTITIONS and not any(lags.values())
                want = len(expected(recs))  # type: ignore[arg-type]
                if owned == PARTITIONS and caught_up and len(read_topic(kafka_log, out)) >= want:
                    break
            time.sleep(0.5)
        first, second = m[0], m[1]
        assert first is not None
        assert second is not None
        # The first worker had every task, then gave some to the second.
        assert first["eventspine_rebalance_tasks_total{event=assign}"] == PARTITIONS
        assert first["eventspine_rebalances_total{event=revoke}"] >= 1
        moved = first["eventspine_rebalance_tasks_total{event=revoke}"]
        assert moved == second["eventspine_rebalance_tasks_total{event=assign}"]
        assert 1 <= moved < PARTITIONS
        assert first["eventspine_tasks_owned{}"] == PARTITIONS - moved
        assert first["eventspine_last_rebalance_timestamp_seconds{}"] > time.time() - 300
        # The second restored the moved tasks' state from the changelogs.
        assert second["eventspine_restores_total{}"] == moved
        assert second["eventspine_restore_records_total{}"] > 0
        assert second["eventspine_restoring_tasks{}"] == 0
        assert second["eventspine_last_restore_duration_seconds{}"] >= 0
        for mm in (first, second):
            assert mm["eventspine_checkpoints_total{}"] > 0
            assert mm["eventspine_tasks_running{}"] == mm["eventspine_tasks_owned{}"]
        for proc in workers.procs:
            assert workers.stop(proc) in (0, 143), workers.stderr()
        judge(recs, read_topic(kafka_log, out))  # type: ignore[arg-type]
    finally:
        workers.close()
