"""``open_log(url)`` picks the backend and the file from the URL."""

from pathlib import Path

import pytest

from eventspine.errors import ConfigError
from eventspine.log import LogRecord, MemoryLog, SqliteLog, TopicSpec, open_log


def test_memory_urls() -> None:
    private_a, private_b = open_log("memory://"), open_log("memory://")
    assert isinstance(private_a, MemoryLog)
    private_a.create_topic(TopicSpec("t"))
    assert "t" not in private_b.topics()
    shared = open_log("memory://test-open-log-shared")
    shared.create_topic(TopicSpec("t"))
    shared.append("t", 0, [LogRecord(None, b"v", 1)])
    shared.close()
    again = open_log("memory://test-open-log-shared")
    assert [r.value for r in again.read("t", 0, 0)] == [b"v"]


def test_sqlite_absolute_file_and_options(tmp_path: Path) -> None:
    log = open_log(f"sqlite://{tmp_path}/sub/x.db?synchronous=full&busy_timeout_ms=100")
    assert isinstance(log, SqliteLog)
    assert log.path == tmp_path / "sub" / "x.db"
    log.close()


def test_sqlite_relative_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    log = open_log("sqlite://.eventspine")
    assert isinstance(log, SqliteLog)
    assert log.path == tmp_path / ".eventspine" / "log.db"
    log.close()
    assert (tmp_path / ".eventspine" / "log.db").is_file()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite://", "has no path"),
        ("sqlite:///tmp/x.db?synchronous=OFF", "unknown option synchronous"),
        ("sqlite:///tmp/x.db?cache=1", "unknown option cache"),
        ("memory://a/b", "memory://name"),
        ("kafka://localhost:9092?nope=1", "unknown option .nope."),
        ("postgres://db", "unknown scheme"),
        ("/plain/path", "unknown scheme"),
    ],
)
def test_bad_urls_are_config_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        open_log(url)


def test_bad_synchronous_value_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="synchronous"):
        SqliteLog(tmp_path / "x.db", synchronous="OFF")  # type: ignore[arg-type]
