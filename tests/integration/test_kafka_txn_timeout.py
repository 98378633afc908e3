"""KafkaLog: a transaction the coordinator aborts for its timeout does not fence the log for good.

A transaction open longer than ``transaction_timeout_ms`` (a broker restart under
it, a long pause of the process) is aborted by the coordinator, which bumps the
producer epoch: librdkafka then reports the producer as fenced (``_FENCED``). With
a generated transactional id no other process can have taken it over, so the log
must re-initialize its producer and go on; before this was handled, every later
transaction was refused and a worker restarted its tasks forever without progress
(found by ``tests/scaleout/test_kafka_copy.py`` after a broker ``kill -9``).
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import pytest

from eventspine.errors import LogError
from eventspine.log import LogRecord, TopicSpec
from eventspine.log.kafka import KafkaLog

pytestmark = pytest.mark.kafka

TIMEOUT_S = 3


def test_a_transaction_aborted_by_its_timeout_lets_the_next_one_commit(
    kafka_bootstrap: str,
) -> None:
    topic = f"txn-timeout-{uuid.uuid4().hex[:10]}"
    log = KafkaLog(
        kafka_bootstrap,
        transaction_timeout=timedelta(seconds=TIMEOUT_S),
        request_timeout=timedelta(seconds=2),
    )
    try:
        log.create_topic(TopicSpec(topic, partitions=1))
        with log.transaction() as txn:
            txn.append(topic, 0, [LogRecord(b"k", b"before", 1)])

        def outlive_the_timeout() -> None:
            with log.transaction() as txn:
                txn.append(topic, 0, [LogRecord(b"k", b"timed-out", 2)])
                # The coordinator checks every second (kafkactl's broker config) for
                # transactions past their timeout, aborts them and bumps the epoch.
                time.sleep(TIMEOUT_S + 4)

        with pytest.raises(LogError, match="nothing of it is visible"):
            outlive_the_timeout()
        with log.transaction() as txn:  # was: refused for good ("took over")
            txn.append(topic, 0, [LogRecord(b"k", b"after", 3)])
        assert [r.value for r in log.read(topic, 0, 0)] == [b"before", b"after"]
    finally:
        log.close()
