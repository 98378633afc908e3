"""KafkaLog transactions on the real broker: read_committed, fencing, visibility.

The conformance suite covers the port's contract; these check what only
Kafka can get wrong: records of aborted transactions that reached the broker,
a zombie with the same transactional id, and the last stable offset (LSO)
that the coordinator moves only after ``commit_transaction`` returns.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from confluent_kafka import Consumer, IsolationLevel, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec  # type: ignore[attr-defined]

from eventspine.errors import LogError, TransactionAbortedError
from eventspine.log import LogRecord, TopicSpec
from eventspine.log.kafka import KafkaLog

pytestmark = pytest.mark.kafka


def _log(bootstrap: str, transactional_id: str | None = None) -> KafkaLog:
    return KafkaLog(
        bootstrap,
        transactional_id=transactional_id,
        transaction_timeout=timedelta(seconds=15),
        request_timeout=timedelta(seconds=10),
    )


def _records(prefix: str, n: int) -> list[LogRecord]:
    return [
        LogRecord(b"k%d" % (i % 3), b"%s-%d" % (prefix.encode(), i), 1_000 + i) for i in range(n)
    ]


@pytest.fixture
def topic() -> str:
    return f"kafka-log-txn-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def log(kafka_bootstrap: str, topic: str) -> Iterator[KafkaLog]:
    log = _log(kafka_bootstrap)
    log.create_topic(TopicSpec(topic, partitions=2))
    yield log
    log.close()


def _high_watermark(bootstrap: str, topic: str, partition: int) -> int:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    tp = TopicPartition(topic, partition)
    futures = admin.list_offsets(
        {tp: OffsetSpec.latest()}, isolation_level=IsolationLevel.READ_UNCOMMITTED
    )
    return int(futures[tp].result(timeout=10).offset)


def _read_uncommitted(bootstrap: str, topic: str, partition: int, count: int) -> list[bytes]:
    """Read ``count`` records with ``read_uncommitted`` (sees aborted records too)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "raw",
            "isolation.level": "read_uncommitted",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, partition, 0)])
    values: list[bytes] = []
    deadline = time.monotonic() + 10
    try:
        while time.monotonic() < deadline:
            message = consumer.poll(0.1)
            if message is None or message.error():
                continue
            values.append(message.value())
            if len(values) >= count:
                break
    finally:
        consumer.close()
    return values


def test_aborted_records_on_the_broker_are_never_read(
    kafka_bootstrap: str, log: KafkaLog, topic: str
) -> None:
    log.append(topic, 0, _records("before", 2))

    def crash_inside_a_transaction() -> None:
        with log.transaction() as txn:
            txn.append(topic, 0, _records("aborted", 50))
            # Let the records reach the broker (the high watermark moves) before aborting,
            # so the abort has to hide stored records, not just purge a client queue.
            deadline = time.monotonic() + 10
            while _high_watermark(kafka_bootstrap, topic, 0) < 52 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert _high_watermark(kafka_bootstrap, topic, 0) == 52
            raise RuntimeError("crash inside the transaction")

    with pytest.raises(RuntimeError, match="crash"):
        crash_inside_a_transaction()
    end = log.topics()[topic].offsets[0].end
    assert end == 53  # 2 records, 50 aborted ones and the abort marker keep their offsets
    raw = _read_uncommitted(kafka_bootstrap, topic, 0, count=52)
    assert sum(v.startswith(b"aborted") for v in raw) == 50  # they are on the broker
    assert [r.value for r in log.read(topic, 0, 0, 1000)] == [b"before-0", b"before-1"]
    assert log.read(topic, 0, 10, 1000) == []  # from inside the aborted range
    with log.transaction() as txn:
        txn.append(topic, 0, _records("after", 3))
    got = log.read(topic, 0, 2, 1000)
    assert [r.value for r in got] == [b"after-0", b"after-1", b"after-2"]
    assert [r.offset for r in got] == [53, 54, 55]


def test_a_zombie_with_the_same_transactional_id_is_fenced(
    kafka_bootstrap: str, log: KafkaLog, topic: str
) -> None:
    txn_id = f"es-zombie-{uuid.uuid4().hex[:8]}"
    zombie, successor = _log(kafka_bootstrap, txn_id), _log(kafka_bootstrap, txn_id)
    try:

        def overlap() -> None:
            with zombie.transaction() as old:
                old.append(topic, 1, _records("zombie", 3))
                old.commit_positions("app", topic, {0: 7})
                with successor.transaction() as new:  # init_transactions fences the zombie
                    new.append(topic, 1, _records("successor", 2))
                    new.commit_positions("app", topic, {0: 1})

        with pytest.raises(LogError, match=r"same Kafka transactional id .* took over"):
            overlap()
        assert [r.value for r in log.read(topic, 1, 0)] == [b"successor-0", b"successor-1"]
        assert log.committed("app", topic) == {0: 1}
        with pytest.raises(LogError, match="took over"):
            zombie.transaction().__enter__()
        end = log.topics()[topic].offsets[1].end
        with successor.transaction() as new:  # the successor goes on
            new.append(topic, 1, _records("again", 1))
        assert [r.value for r in log.read(topic, 1, end)] == [b"again-0"]
    finally:
        zombie.close()
        successor.close()


def test_read_right_after_commit_reaches_the_new_end(log: KafkaLog, topic: str) -> None:
    expected: list[bytes] = []
    for round_ in range(5):
        batch = _records(f"r{round_}", 4)
        with log.transaction() as txn:
            txn.append(topic, 0, batch)
            txn.commit_positions("app", topic, {0: len(expected) + 4})
        expected += [r.value for r in batch if r.value is not None]
        # No polling here: the block returns only once the LSO passed the commit.
        end = log.topics()[topic].offsets[0].end
        assert end == 5 * (round_ + 1)  # 4 records and a commit marker per round
        assert [r.value for r in log.read(topic, 0, 0, 1000)] == expected
        assert log.read(topic, 0, end) == []
        assert log.committed("app", topic) == {0: len(expected)}


def test_a_refused_record_before_the_last_aborts_the_whole_transaction(
    kafka_bootstrap: str, topic: str
) -> None:
    """A transaction asks for the delivery report of each call's last record only.

    So a record refused by the broker in the middle of an append must still fail the
    commit: the broker's ``max.message.bytes`` of 2,000 refuses the batch holding a
    3,000-byte value (``batch.size=1500`` gives it a batch of its own). The idempotent
    producer then fails the partition's later records too (seen here: the high
    watermark stays at the 5 records before it plus the abort marker), so the last
    record's report carries the failure; and a failed record puts the transaction in
    librdkafka's abortable state anyway.
    """
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    cfg = {"max.message.bytes": "2000"}
    admin.create_topics([NewTopic(topic, 1, 1, config=cfg)])[topic].result(30)
    log = KafkaLog(
        kafka_bootstrap,
        transaction_timeout=timedelta(seconds=15),
        request_timeout=timedelta(seconds=10),
        client_config={"batch.size": "1500", "linger.ms": "0"},
    )
    try:
        small = [LogRecord(b"k", b"s" * 100, 1_000 + i) for i in range(30)]
        big = LogRecord(b"k", b"b" * 3000, 999)
        with pytest.raises(TransactionAbortedError), log.transaction() as txn:
            txn.append(topic, 0, [*small[:5], big, *small[5:]])
        assert log.read(topic, 0, 0, 1000) == []  # none of it is visible
        with log.transaction() as txn:  # and the next transaction works
            txn.append(topic, 0, small[:3])
        assert [r.value for r in log.read(topic, 0, 0, 1000)] == [b"s" * 100] * 3
    finally:
        log.close()
