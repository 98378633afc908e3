"""Damaged, foreign and newer files are refused with errors that name the file."""

import sqlite3
from pathlib import Path

import pytest

from eventspine.errors import LogError, StorageCorruptError
from eventspine.log import LogRecord, SqliteLog, TopicSpec


def _write_log(path: Path) -> None:
    with SqliteLog(path) as log:
        log.create_topic(TopicSpec("orders", partitions=2))
        log.append("orders", 1, [LogRecord(b"k", b"first-%d" % i, i) for i in range(10)])
        log.append("orders", 1, [LogRecord(b"k", b"MARKER-%04d" % i, i) for i in range(10)])
        log.append("orders", 1, [LogRecord(b"k", b"last-%d" % i, i) for i in range(10)])


def _flip_file_byte(path: Path, marker: bytes) -> None:
    data = bytearray(path.read_bytes())
    at = data.index(marker)
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_flipped_byte_in_a_batch_is_reported_with_file_topic_partition_and_offsets(
    tmp_path: Path,
) -> None:
    path = tmp_path / "log.db"
    _write_log(path)
    assert not (tmp_path / "log.db-wal").exists(), "close checkpoints the WAL into the file"
    _flip_file_byte(path, b"MARKER-0005")
    with SqliteLog(path) as log:
        assert len(log.read("orders", 1, 0, 10)) == 10  # the batch before is intact
        with pytest.raises(StorageCorruptError) as err:
            log.read("orders", 1, 12)
        message = str(err.value)
        assert str(path) in message
        assert "orders[1]" in message
        assert "offsets 10 to 19" in message
        assert "CRC" in message
        assert [r.value for r in log.read("orders", 1, 20, 2)] == [b"last-0", b"last-1"]


def test_an_unknown_batch_format_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    _write_log(path)
    with sqlite3.connect(path) as conn:
        conn.execute(
            "UPDATE batches SET payload = CAST(x'09' || substr(payload, 2) AS BLOB) "
            "WHERE base_offset = 0"
        )
    conn.close()
    with SqliteLog(path) as log, pytest.raises(StorageCorruptError, match="format version 9"):
        log.read("orders", 1, 0)


def test_a_payload_damaged_into_text_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    _write_log(path)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE batches SET payload = 'hello' WHERE base_offset = 10")
    conn.close()
    with SqliteLog(path) as log, pytest.raises(StorageCorruptError, match="offsets 10 to 19"):
        log.read("orders", 1, 10)


def test_a_batch_that_does_not_match_its_row_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    _write_log(path)
    with sqlite3.connect(path) as conn:  # a misdirected write: batch 0 stored as batch 10
        (payload,) = conn.execute("SELECT payload FROM batches WHERE base_offset = 0").fetchone()
        conn.execute("UPDATE batches SET payload = ? WHERE base_offset = 10", (payload,))
    conn.close()
    with SqliteLog(path) as log, pytest.raises(StorageCorruptError, match="do not match"):
        log.read("orders", 1, 10)


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    path.write_text("name,price\nA,1\n" * 100)
    with pytest.raises(StorageCorruptError, match="is not an SQLite database") as err:
        SqliteLog(path)
    assert str(path) in str(err.value)
    assert path.read_text().startswith("name,price")  # left untouched


def test_a_damaged_database_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    _write_log(path)
    data = bytearray(path.read_bytes())
    data[16:24] = b"\xff" * 8  # page size and format bytes
    path.write_bytes(bytes(data))
    with pytest.raises(StorageCorruptError) as err:
        SqliteLog(path)
    assert str(path) in str(err.value)


def test_a_truncated_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    _write_log(path)
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size // 2)

    def open_and_read_everything() -> None:
        with SqliteLog(path) as log:
            for partition in (0, 1):
                log.read("orders", partition, 0, 1000)

    with pytest.raises(StorageCorruptError) as err:  # at open or at the first read
        open_and_read_everything()
    assert str(path) in str(err.value)


def test_another_applications_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    conn.close()
    with pytest.raises(LogError, match="not an eventspine log") as err:
        SqliteLog(path)
    assert str(path) in str(err.value)
    with sqlite3.connect(path) as conn:  # not converted to WAL, not modified
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    conn.close()


def test_a_newer_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    _write_log(path)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '2' WHERE name = 'schema_version'")
    conn.close()
    with pytest.raises(LogError, match=r"newer eventspine .*version 2") as err:
        SqliteLog(path)
    assert str(path) in str(err.value)
    assert not isinstance(err.value, StorageCorruptError)


def test_an_empty_file_becomes_a_new_log(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "log.db"
    path.parent.mkdir(parents=True)
    path.touch()
    with SqliteLog(path) as log:
        assert log.topics() == {}
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA application_id").fetchone()[0] == 0x45534C47
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    conn.close()
