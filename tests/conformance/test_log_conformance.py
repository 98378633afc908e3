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
