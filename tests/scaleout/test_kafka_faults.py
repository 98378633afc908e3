"""RELIABILITY.md T6 for scale-out: the brokers fail under running workers.

Each test starts its own broker (the session broker is shared by other tests),
runs worker processes of ``tests/scaleout/pipeline.py`` and, mid-stream,
crashes, restarts or pauses brokers. The workers must ride it out (restarting
their tasks from the last committed checkpoint when a commit fails) and the
committed output must equal the oracle's: nothing lost, nothing twice.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventspine.log import Log, open_log
from eventspine.runtime.worker import EXIT_STALLED
from kafka_broker import KafkaCluster, running_kafka

from .cluster import (
    Workers,
    judge,
    judge_windows,
    make_input,
    open_transactions,
    read_topic,
    wait_output,
)
from .pipeline import expected

pytestmark = pytest.mark.kafka


@pytest.fixture
def broker() -> Iterator[KafkaCluster]:
    with running_kafka(nodes=1) as cluster:
        yield cluster


def _run(
    log: Log, workers: Workers, recs: list[dict[str, object]], out: str, bootstrap: str
) -> None:
    wait_output(log, out, len(expected(recs)), workers, timeout=240)  # type: ignore[arg-type]
    time.sleep(1.0)
    for proc in workers.procs:
        if proc.poll() is None:
            # 75: stuck in a Kafka call after the broker faults, the watchdog ended it (the
            # output is judged below either way).
            assert workers.stop(proc) in (0, 143, EXIT_STALLED), workers.stderr()
    # The LSO reaches the high watermark within the transaction timeout + 10 s (T6).
    hanging = open_transactions(bootstrap, [out, f"{out}.windows"], within_s=30 + 10)
    assert not hanging, f"transactions still open (LSO, HW): {hanging}"
    judge(recs, read_topic(log, out))  # type: ignore[arg-type]
    judge_windows(recs, read_topic(log, f"{out}.windows"))  # type: ignore[arg-type]


def _env(tag: str) -> dict[str, str]:
    return {
        "SCALE_IN": f"in-{tag}",
        "SCALE_OUT": f"out-{tag}",
        "SCALE_APP": f"app-{tag}",
        "SCALE_SLOW_MS": "4",
    }


@pytest.mark.timeout(720)
def test_broker_crash_restart_and_pause_under_two_workers(
    broker: KafkaCluster, tmp_path: Path
) -> None:
    url = f"kafka://{broker.bootstrap}?request_timeout_ms=10000&transaction_timeout_ms=30000"
    log = open_log(url)
    try:
        recs = make_input(log, "in-t6", records=4000, keys=40, partitions=4)
        workers = Workers(url, _env("t6"), tmp_path)
        workers.extra = ("--stall-timeout-s", "25")  # librdkafka can hang in a transaction call
        try:
            workers.start(*workers.extra)
            workers.start(*workers.extra)
            wait_output(log, "out-t6", 500, workers, timeout=90)
            broker.kill(1)  # crash mid-transaction: open transactions are lost with it
            time.sleep(2)
            broker.start(1)
            wait_output(log, "out-t6", 1500, workers, timeout=240)
            broker.pause(1)  # a long GC pause of the broker
            time.sleep(3)
            broker.resume(1)
            wait_output(log, "out-t6", 2500, workers, timeout=240)
            broker.stop(1)  # clean restart
            broker.start(1)
            _run(log, workers, recs, "out-t6", broker.bootstrap)
            text = workers.logs()  # the whole logs: their ends are librdkafka's reconnects
            assert "restarting task(s)" in text or "is stuck" in text, workers.stderr()
        finally:
            workers.close()
    finally:
        log.close()


@pytest.mark.timeout(720)
def test_leader_kill_on_three_nodes_loses_no_acked_record(tmp_path: Path) -> None:
    with running_kafka(nodes=3) as cluster:
        url = f"kafka://{cluster.bootstrap}?replication_factor=3&request_timeout_ms=10000"
        log = open_log(url)
        try:
            recs = make_input(log, "in-rf3", records=3000, keys=40, partitions=4)
            workers = Workers(url, _env("rf3"), tmp_path)
            workers.extra = ("--stall-timeout-s", "25")
            try:
                workers.start(*workers.extra)
                workers.start(*workers.extra)
                wait_output(log, "out-rf3", 500, workers, timeout=90)
                cluster.kill(1)  # leads some partitions (and maybe the group or txn coordinator)
                wait_output(log, "out-rf3", 1500, workers, timeout=120)
                cluster.start(1)
                _run(log, workers, recs, "out-rf3", cluster.bootstrap)
            finally:
                workers.close()
        finally:
            log.close()
