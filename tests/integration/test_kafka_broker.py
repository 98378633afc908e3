"""The real Kafka broker of tools/kafka does transactions right.

Exactly-once in Kafka mode rests on this: records of committed transactions
are visible to ``read_committed`` consumers, records of aborted ones never
are, and an open transaction holds the last stable offset (LSO) back.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    IsolationLevel,
    KafkaError,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

pytestmark = pytest.mark.kafka

PARTITIONS = 3
TXN_TIMEOUT_MS = 15_000
# Client timeouts below the transaction timeout (KAFKA.md): a stuck request
# fails before the broker aborts the transaction under it.
CLIENT_TIMEOUT_MS = 10_000


@pytest.fixture
def topic(kafka_bootstrap: str) -> Iterator[str]:
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    name = f"es-test-txn-{uuid.uuid4().hex[:12]}"
    # replication_factor=-1: the broker's default (1 single node, 3 in a cluster)
    new = NewTopic(name, num_partitions=PARTITIONS, replication_factor=-1)
    admin.create_topics([new], operation_timeout=15)[name].result(timeout=20)
    yield name
    admin.delete_topics([name], operation_timeout=15)[name].result(timeout=20)


def _producer(bootstrap: str) -> Producer:
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": f"es-test-{uuid.uuid4().hex[:12]}",
            "enable.idempotence": True,
            "acks": "all",
            "transaction.timeout.ms": TXN_TIMEOUT_MS,
            "message.timeout.ms": CLIENT_TIMEOUT_MS,
            "request.timeout.ms": CLIENT_TIMEOUT_MS,
            "socket.timeout.ms": CLIENT_TIMEOUT_MS,
            "linger.ms": 2,
        }
    )


def _produce_all(producer: Producer, topic: str, prefix: str, per_partition: int) -> list[str]:
    """Produce ``per_partition`` records to every partition; raise on any delivery error."""
    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            errors.append(err)

    values = []
    for i in range(per_partition):
        for p in range(PARTITIONS):
            value = f"{prefix}-{p}-{i}"
            producer.produce(topic, value=value, key=f"k{p}", partition=p, on_delivery=on_delivery)
            values.append(value)
    assert producer.flush(CLIENT_TIMEOUT_MS / 1000) == 0, "records still queued after flush"
    assert not errors, errors
    return values


def _read_all(bootstrap: str, topic: str, isolation: str) -> dict[int, list[str]]:
    """Read every partition from the start to its end (the LSO for read_committed)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"es-test-{uuid.uuid4().hex[:12]}",
            "isolation.level": isolation,
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 50,
        }
    )
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
        seen: dict[int, list[str]] = {p: [] for p in range(PARTITIONS)}
        at_end: set[int] = set()
        deadline = time.monotonic() + 20
        while len(at_end) < PARTITIONS:
            assert time.monotonic() < deadline, f"partitions {at_end} of {PARTITIONS} at end"
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                assert msg.error().code() == KafkaError._PARTITION_EOF, msg.error()
                at_end.add(msg.partition())
                continue
            seen[msg.partition()].append(msg.value().decode())
        return seen
    finally:
        consumer.close()


def _end_offsets(admin: AdminClient, topic: str, level: IsolationLevel) -> list[int]:
    request = {TopicPartition(topic, p): OffsetSpec.latest() for p in range(PARTITIONS)}
    futures = admin.list_offsets(request, isolation_level=level, request_timeout=10)
    by_partition = {tp.partition: f.result(timeout=15).offset for tp, f in futures.items()}
    return [by_partition[p] for p in range(PARTITIONS)]


def _await_end_offsets(
    admin: AdminClient, topic: str, level: IsolationLevel, expected: int
) -> None:
    """Wait until every partition's end offset at ``level`` is ``expected``.

    commit/abort_transaction return once the coordinator has logged the
    decision; it writes the markers to the partitions, which moves the LSO,
    a moment later.
    """
    deadline = time.monotonic() + 10
    while (offsets := _end_offsets(admin, topic, level)) != [expected] * PARTITIONS:
        assert time.monotonic() < deadline, f"{level.name} end offsets {offsets} != {expected}"
        time.sleep(0.05)


def test_read_committed_sees_exactly_the_committed_transactions(
    kafka_bootstrap: str, topic: str
) -> None:
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    producer = _producer(kafka_bootstrap)
    producer.init_transactions(30)

    producer.begin_transaction()
    committed = _produce_all(producer, topic, "committed", per_partition=3)
    producer.commit_transaction(30)

    producer.begin_transaction()
    aborted = _produce_all(producer, topic, "aborted", per_partition=3)
    producer.abort_transaction(30)

    # An open transaction whose records are on the broker holds the LSO at
    # its first offset; read_uncommitted ends at the high watermark.
    producer.begin_transaction()
    later = _produce_all(producer, topic, "later", per_partition=2)
    # per partition: 3 committed + marker, 3 aborted + marker, then 2 open
    _await_end_offsets(admin, topic, IsolationLevel.READ_COMMITTED, 8)
    _await_end_offsets(admin, topic, IsolationLevel.READ_UNCOMMITTED, 10)
    assert _read_all(kafka_bootstrap, topic, "read_committed") == {
        p: [v for v in committed if v.startswith(f"committed-{p}-")] for p in range(PARTITIONS)
    }

    producer.commit_transaction(30)
    # Every transaction is finished: LSO == high watermark (+1 marker each).
    _await_end_offsets(admin, topic, IsolationLevel.READ_COMMITTED, 11)
    _await_end_offsets(admin, topic, IsolationLevel.READ_UNCOMMITTED, 11)

    visible = _read_all(kafka_bootstrap, topic, "read_committed")
    for p in range(PARTITIONS):
        expected = [v for v in committed + later if v.split("-")[1] == str(p)]
        assert visible[p] == expected, f"partition {p}"
    assert not set(aborted) & {v for values in visible.values() for v in values}

    # The aborted records are in the log all the same: the broker filters them.
    raw = _read_all(kafka_bootstrap, topic, "read_uncommitted")
    assert sorted(v for values in raw.values() for v in values) == sorted(
        committed + aborted + later
    )
