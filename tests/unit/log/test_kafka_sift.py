"""Which consumed messages a Kafka read keeps (``_sift``; no broker needed)."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, Message

from eventspine.errors import LogError
from eventspine.log.kafka._reader import _columns, _Reader, _sift


def record(offset: int, **fields: Any) -> Message:
    return Message(topic="t", partition=0, offset=offset, value=b"v%d" % offset, **fields)


def event(offset: int, code: int) -> Message:
    return Message(topic="t", partition=0, offset=offset, error=KafkaError(code))


def sift(messages: list[Message], next_offset: int, end: int) -> tuple[list[int], int, bool]:
    reader = _Reader(None, "t", 0)  # type: ignore[arg-type]  # _sift never calls the consumer
    reader.next_offset = next_offset
    good, offsets, at_end = _sift(reader, messages, next_offset, end)
    assert offsets == [m.offset() for m in good]
    return offsets, reader.next_offset, at_end


def test_records_in_increasing_offsets_are_kept_with_their_gaps() -> None:
    assert sift([record(5), record(6), record(8)], 5, 100) == ([5, 6, 8], 9, False)


def test_records_below_the_next_offset_and_repeats_are_dropped() -> None:
    assert sift([record(3), record(4), record(5), record(6)], 5, 100) == ([5, 6], 7, False)
    assert sift([record(5), record(5), record(6)], 5, 100) == ([5, 6], 7, False)
    assert sift([record(4)], 5, 100) == ([], 5, False)


def test_the_end_of_partition_event_ends_a_read_only_at_the_end() -> None:
    eof = KafkaError._PARTITION_EOF
    assert sift([record(5), record(6), event(7, eof)], 5, 7) == ([5, 6], 7, True)
    assert sift([record(5), event(6, eof)], 5, 10) == ([5], 6, False)


def test_an_error_fails_the_read_and_marks_the_reader_broken() -> None:
    reader = _Reader(None, "t", 0)  # type: ignore[arg-type]
    reader.next_offset = 5
    with pytest.raises(LogError, match=r"reading t\[0\] from offset 5 failed"):
        _sift(reader, [record(5), event(6, KafkaError._TRANSPORT)], 5, 100)
    assert reader.broken
    assert reader.next_offset == -1


def test_columns_take_ts_zero_from_the_reserved_header() -> None:
    batch = [
        record(5, timestamp=(1, 7)),
        record(6, timestamp=(1, 1), headers=[("h", b"x"), ("eventspine.ts", b"0")]),
        record(7, timestamp=(1, 9), headers=[("h", b"x")]),
    ]
    columns = _columns(iter([(batch, [5, 6, 7])]))
    assert (columns.offsets, columns.values, columns.ts_ms) == (
        [5, 6, 7],
        [b"v5", b"v6", b"v7"],
        [7, 0, 9],
    )
