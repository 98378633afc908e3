"""Every log backend passes the ``Log`` conformance suite."""

import uuid
from pathlib import Path

import pytest

from eventspine.log import Log, MemoryLog, SqliteLog, open_log
from eventspine.testing.log_conformance import LogConformance


class TestMemoryLog(LogConformance):
    @pytest.fixture(autouse=True)
    def _fresh(self) -> None:
        self.name = f"conformance-{uuid.uuid4().hex}"

    def open_log(self) -> Log:
        return MemoryLog(self.name)


class TestSqliteLog(LogConformance):
    @pytest.fixture(autouse=True)
    def _fresh(self, tmp_path: Path) -> None:
        self.path = tmp_path / "log.db"

    def open_log(self) -> Log:
        return SqliteLog(self.path)


class TestSqliteLogFullSyncByUrl(LogConformance):
    @pytest.fixture(autouse=True)
    def _fresh(self, tmp_path: Path) -> None:
        self.url = f"sqlite://{tmp_path}/full.db?synchronous=FULL"

    def open_log(self) -> Log:
        return open_log(self.url)


@pytest.mark.kafka
class TestKafkaLog(LogConformance):
    """The real broker of tools/kafka, through ``open_log("kafka://...")``.

    Topics get a unique prefix per test (the broker is shared by the session).
    Kafka compacts and deletes on its own schedule, and aborted transactions
    leave offsets behind: the two capability flags of the suite.
    """

    broker_retention = True
    aborts_take_offsets = True

    @pytest.fixture(autouse=True)
    def _fresh(self, kafka_bootstrap: str) -> None:
        self.bootstrap = kafka_bootstrap
        self.prefix = f"conformance-{uuid.uuid4().hex[:10]}-"

    def open_log(self) -> Log:
        # Short transaction timeout with the client timeout below it (KAFKA.md).
        return open_log(
            f"kafka://{self.bootstrap}?transaction_timeout_ms=15000&request_timeout_ms=10000"
        )

    def topic_name(self, base: str) -> str:
        return self.prefix + base

    def advance_log_start(self, log: Log, topic: str, partition: int, offset: int) -> None:
        from confluent_kafka import TopicPartition
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        futures = admin.delete_records([TopicPartition(topic, partition, offset)])
        for future in futures.values():
            future.result(timeout=10)
