"""Two-phase file sinks: a crash at any point of a checkpoint, then recover, equals no crash."""

from __future__ import annotations

import os
import random
import zlib
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from eventspine.connectors.file_sinks import CsvSink, JsonLinesSink
from eventspine.connectors.files import CsvSink as ReexportedCsvSink
from eventspine.connectors.files import JsonLinesSink as ReexportedJsonLinesSink
from eventspine.dataflow.ports import OpenContext
from eventspine.errors import SinkError, StorageCorruptError
from eventspine.records import Batch
from eventspine.timeutil import ManualClock

CKPTS = 4  # checkpoints in a run
CRASH_POINTS = ("after_write", "after_prepare", "after_commit", "after_append", "mid_append")


def ctx() -> OpenContext:
    return OpenContext("out", ManualClock(), transactional=True)


def batch(ckpt: int, columnar: bool) -> Batch:
    rows = [{"k": f"k{i}", "v": ckpt * 10 + i, "s": "a,b" if i == 1 else "x"} for i in range(3)]
    b = Batch(rows, [ckpt * 1000 + i for i in range(3)])
    return Batch.of_frame(b.frame) if columnar else b


def make_sink(fmt: str, path: Path, columns: list[str] | None = None) -> Any:
    return JsonLinesSink(path) if fmt == "jsonl" else CsvSink(path, columns=columns)


def uninterrupted(fmt: str, path: Path, columnar: bool) -> bytes:
    w = make_sink(fmt, path).open(ctx())
    w.recover(None)
    for c in range(1, CKPTS + 1):
        w.write(batch(c, columnar))
        w.prepare(c)
        w.publish(c)
    w.close()
    return path.read_bytes()


def crash(w: Any) -> None:
    """Forget the writer like kill -9 would (what reached the staging file stays)."""
    if w._f is not None:
        w._f.close()


def run_with_crash(fmt: str, path: Path, columnar: bool, at_ckpt: int, point: str) -> bytes:
    staging = Path(str(path) + ".staging")
    committed: Any = None  # the intent of the last committed checkpoint
    w = make_sink(fmt, path).open(ctx())
    w.recover(None)
    resume = 1
    for c in range(1, CKPTS + 1):
        w.write(batch(c, columnar))
        if c == at_ckpt and point == "after_write":
            resume = c
            break
        intent = w.prepare(c)
        if c == at_ckpt and point == "after_prepare":
            resume = c
            break
        committed = intent  # the transaction commits the intent
        if c == at_ckpt and point == "after_commit":
            resume = c + 1
            break
        if c == at_ckpt and point in ("after_append", "mid_append"):
            w._f.flush()
            with open(path, "ab") as f:
                f.write(staging.read_bytes())
            if point == "mid_append":
                prev = intent["committed_len"] - intent["staged"]
                cut = random.Random(c).randint(prev, intent["committed_len"] - 1)
                os.truncate(path, cut)
            resume = c + 1
            break
        w.publish(c)
    crash(w)
    w = make_sink(fmt, path).open(ctx())
    w.recover(committed)
    assert not staging.exists()
    if committed is not None:
        assert path.stat().st_size == committed["committed_len"]
    for c in range(resume, CKPTS + 1):
        w.write(batch(c, columnar))
        w.prepare(c)
        w.publish(c)
    w.close()
    return path.read_bytes()


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
@pytest.mark.parametrize("columnar", [False, True])
def test_a_crash_at_every_point_then_recover_gives_the_uninterrupted_bytes(
    tmp_path: Path, fmt: str, columnar: bool
) -> None:
    expected = uninterrupted(fmt, tmp_path / "ref", columnar)
    assert expected.count(b"\n") == CKPTS * 3 + (1 if fmt == "csv" else 0)
    for at in range(1, CKPTS + 1):
        for point in CRASH_POINTS:
            path = tmp_path / f"out-{at}-{point}"
            got = run_with_crash(fmt, path, columnar, at, point)
            assert got == expected, (at, point)


def test_csv_header_is_written_once_and_columns_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    w = CsvSink(path).open(ctx())
    w.recover(None)
    w.write(Batch([{"a": 1, "b": 2}], [0]))
    intent = w.prepare(1)
    w.publish(1)
    crash(w)
    w = CsvSink(path).open(ctx())  # columns not given: read back from the committed header
    w.recover(intent)
    w.write(Batch([{"b": 4, "a": 3}], [0]))
    w.prepare(2)
    w.publish(2)
    w.close()
    assert path.read_text() == "a,b\n1,2\n3,4\n"


def test_csv_with_columns_commits_the_header_at_the_first_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    w = CsvSink(path, columns=["a", "b"]).open(ctx())
    w.recover(None)
    intent = w.prepare(1)
    assert intent == {"committed_len": 4, "staged": 4, "crc": zlib.crc32(b"a,b\n")}
    w.publish(1)
    w.write(Batch.of_frame(Batch([{"a": 1, "b": None}], [0]).frame))
    w.prepare(2)
    w.publish(2)
    w.close()
    assert path.read_text() == "a,b\n1,\n"


def test_a_fresh_start_truncates_the_file_and_removes_stale_staging(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text("old output\n")
    Path(str(path) + ".staging").write_text("stale\n")
    w = JsonLinesSink(path).open(ctx())
    assert path.read_text() == "old output\n"  # nothing happens before recover
    w.recover(None)
    assert path.read_bytes() == b""
    assert not Path(str(path) + ".staging").exists()
    w.close()


def test_write_and_flush_never_touch_the_file_and_close_does_not_publish(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    w = JsonLinesSink(path).open(ctx())
    w.recover(None)
    w.write(Batch([{"a": 1}], [0]))
    w.flush()
    assert path.read_bytes() == b""
    assert Path(str(path) + ".staging").read_bytes() == b'{"a":1}\n'
    assert w.prepare(1) == {"committed_len": 0 + 8, "staged": 8, "crc": zlib.crc32(b'{"a":1}\n')}
    w.close()
    assert path.read_bytes() == b""


def test_publish_of_an_empty_checkpoint_keeps_the_committed_length(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    w = JsonLinesSink(path).open(ctx())
    w.recover(None)
    w.write(Batch([{"a": 1}], [0]))
    assert w.prepare(1) == {"committed_len": 8, "staged": 8, "crc": zlib.crc32(b'{"a":1}\n')}
    w.publish(1)
    assert w.prepare(2) == {"committed_len": 8, "staged": 0, "crc": 0}
    w.publish(2)
    w.close()
    assert path.read_bytes() == b'{"a":1}\n'
    assert not Path(str(path) + ".staging").exists()


def test_a_file_that_lost_committed_bytes_is_reported_as_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(b"12345")
    w = JsonLinesSink(path).open(ctx())
    with pytest.raises(StorageCorruptError) as err:
        w.recover({"committed_len": 20, "staged": 8})  # needs >= 12 bytes and a staging file
    msg = str(err.value)
    assert str(path) in msg
    assert "20 bytes" in msg
    assert "5 bytes" in msg
    assert "eventspine state reset" in msg


def test_a_missing_file_with_committed_bytes_is_corrupt(tmp_path: Path) -> None:
    w = JsonLinesSink(tmp_path / "gone.jsonl").open(ctx())
    with pytest.raises(StorageCorruptError, match="missing"):
        w.recover({"committed_len": 3, "staged": 0})


def test_writing_before_recover_is_refused(tmp_path: Path) -> None:
    w = JsonLinesSink(tmp_path / "o.jsonl").open(ctx())
    with pytest.raises(SinkError, match="recover"):
        w.write(Batch([{"a": 1}], [0]))


def test_direct_mode_is_unchanged_and_refuses_two_phase_calls(tmp_path: Path) -> None:
    path = tmp_path / "o.jsonl"
    path.write_text("old\n")
    w = JsonLinesSink(path).open(OpenContext("out", ManualClock()))
    assert path.read_bytes() == b""  # truncated at open, as before
    w.write(Batch.of_frame(pl.DataFrame({"a": [1, 2]})))
    w.flush()
    assert path.read_bytes() == b'{"a":1}\n{"a":2}\n'
    with pytest.raises(SinkError, match="prepare"):
        w.prepare(1)
    w.close()
    assert not Path(str(path) + ".staging").exists()


def test_sinks_are_still_importable_from_files() -> None:
    assert ReexportedCsvSink is CsvSink
    assert ReexportedJsonLinesSink is JsonLinesSink


def test_a_truncated_file_is_not_refilled_from_the_next_epochs_staging(tmp_path: Path) -> None:
    """Committed bytes cut off outside eventspine, staging already holding newer records.

    The staging file then has at least as many bytes as the last checkpoint staged, but
    they are the next epoch's: copying them in would lose and repeat records (T2 found it).
    """
    path = tmp_path / "out.jsonl"
    w = JsonLinesSink(path).open(ctx())
    w.recover(None)
    w.write(Batch([{"a": 1}, {"a": 2}], [0, 1]))
    intent = w.prepare(1)
    w.publish(1)
    w.write(Batch([{"b": 3}, {"b": 4}, {"b": 5}], [2, 3, 4]))  # the next epoch, not committed
    w.flush()
    crash(w)
    os.truncate(path, intent["committed_len"] - 3)  # damaged outside eventspine
    w = JsonLinesSink(path).open(ctx())
    with pytest.raises(StorageCorruptError, match="does not match the last checkpoint"):
        w.recover(intent)
