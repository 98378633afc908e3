"""Topics as sources and sinks, against the memory and SQLite logs."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

import eventspine as es
from eventspine.connectors.topics import TopicConnection, TopicReader, topic
from eventspine.dataflow.ports import OpenContext
from eventspine.errors import ConfigError, DefinitionError, LogError, SinkError
from eventspine.log import Log, LogRecord, TopicSpec, open_log
from eventspine.records import Batch
from eventspine.runtime.checkpoint import CheckpointPolicy
from eventspine.runtime.executor import Executor, RunOptions
from eventspine.serde.codecs import MsgpackCodec
from eventspine.timeutil import ManualClock

pytestmark = pytest.mark.timeout(30)


class Order(es.Event):
    id: int
    symbol: str
    ts: int = 0


@pytest.fixture(params=["memory", "sqlite"])
def log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Log]:
    url = "memory://" if request.param == "memory" else f"sqlite://{tmp_path}/log.db"
    opened = open_log(url)
    yield opened
    opened.close()


def ctx(log: Log | None, *, group: str = "pipe", transactional: bool = True) -> OpenContext:
    return OpenContext("step", ManualClock(), log=log, group=group, transactional=transactional)


def readers(conn: TopicConnection) -> list[TopicReader]:
    return list(conn)


def json_records(*values: bytes | None, ts: int = 0) -> list[LogRecord]:
    return [LogRecord(None, v, ts + i) for i, v in enumerate(values)]


def test_source_reads_each_partition_from_the_log_start(log: Log) -> None:
    log.create_topic(TopicSpec("orders", partitions=2))
    log.append("orders", 0, json_records(b'{"id": 1, "symbol": "A"}', b'{"id": 2, "symbol": "B"}'))
    log.append("orders", 1, json_records(b'{"id": 3, "symbol": "C"}'))
    rs = readers(topic("orders", Order).open(ctx(log)))
    assert [(r.topic, r.partition_id, r.partition) for r in rs] == [
        ("orders", 0, "orders/0"),
        ("orders", 1, "orders/1"),
    ]
    c0 = rs[0].poll(10, False)
    assert c0.records == [Order(id=1, symbol="A"), Order(id=2, symbol="B")]
    assert (c0.first_offset, c0.next_offset, c0.offsets, c0.errors) == (0, 2, None, [])
    c1 = rs[1].poll(10, False)
    assert c1.records == [Order(id=3, symbol="C")]
    caught_up = rs[0].poll(10, False)
    assert (caught_up.records, caught_up.first_offset, caught_up.next_offset) == ([], 2, 2)


def test_source_respects_max_records_and_sees_new_commits(log: Log) -> None:
    log.create_topic(TopicSpec("t"))
    log.append("t", 0, json_records(*[b'{"n": %d}' % i for i in range(5)]))
    (r,) = readers(topic("t").open(ctx(log)))
    assert [x["n"] for x in r.poll(3, False).records] == [0, 1, 2]
    assert [x["n"] for x in r.poll(3, False).records] == [3, 4]
    with log.transaction() as txn:
        txn.append("t", 0, json_records(b'{"n": 5}'))
    chunk = r.poll(3, False)
    assert (chunk.records, chunk.first_offset, chunk.next_offset) == ([{"n": 5}], 5, 6)


def test_source_resumes_from_seek_then_committed_group_position(log: Log) -> None:
    log.create_topic(TopicSpec("t"))
    log.append("t", 0, json_records(*[b'{"n": %d}' % i for i in range(6)]))
    with log.transaction() as txn:
        txn.commit_positions("pipe", "t", {0: 4})
    (r,) = readers(topic("t").open(ctx(log)))
    assert r.poll(10, False).records == [{"n": 4}, {"n": 5}]
    (other_group,) = readers(topic("t").open(ctx(log, group="other")))
    assert len(other_group.poll(10, False).records) == 6
    (seeked,) = readers(topic("t").open(ctx(log)))
    seeked.seek(1)  # the checkpoint's position wins over the group's
    assert seeked.poll(2, False).records == [{"n": 1}, {"n": 2}]


def test_source_moves_to_the_log_start_when_retention_deleted_its_position(log: Log) -> None:
    log.create_topic(TopicSpec("t", retention=timedelta(seconds=1)))
    log.append("t", 0, [LogRecord(None, b'{"n": 0}', 0)])
    log.append("t", 0, [LogRecord(None, b'{"n": 1}', 10_000)])
    log.enforce_retention()
    assert log.topics()["t"].offsets[0].log_start == 1
    (r,) = readers(topic("t").open(ctx(log)))
    r.seek(0)
    chunk = r.poll(10, False)
    assert (chunk.records, chunk.first_offset, chunk.next_offset) == ([{"n": 1}], 1, 2)


def test_decode_errors_become_chunk_errors_with_position_and_raw_bytes(log: Log) -> None:
    log.create_topic(TopicSpec("t", partitions=2))
    bad_type = b'{"id": "seven", "symbol": "A"}'
    log.append("t", 1, json_records(b'{"id": 1, "symbol": "A"}', b"\xffgarbage", bad_type))
    log.append("t", 1, json_records(b'{"id": 4, "symbol": "D"}', None))  # None: a tombstone
    r = readers(topic("t", Order).open(ctx(log)))[1]
    chunk = r.poll(10, False)
    assert chunk.records == [Order(id=1, symbol="A"), Order(id=4, symbol="D")]
    assert chunk.offsets == [0, 3]
    assert (chunk.first_offset, chunk.next_offset) == (0, 5)
    assert [(e.position, e.raw) for e in chunk.errors] == [
        ("t/1@1", b"\xffgarbage"),
        ("t/1@2", bad_type),
    ]
    assert "field 'id'" in str(chunk.errors[1])
    assert "topic 't'" in str(chunk.errors[1])
    assert str(chunk.errors[1]).count("cannot decode") == 1


def test_a_bad_value_in_a_batch_without_tombstones_is_found_one_by_one(log: Log) -> None:
    # The batch decode fails as a whole; the record-by-record pass names the bad one.
    log.create_topic(TopicSpec("t"))
    log.append("t", 0, json_records(b'{"id": 1, "symbol": "A"}', b"{", b'{"id": 3, "symbol": "C"}'))
    chunk = readers(topic("t", Order).open(ctx(log)))[0].poll(10, False)
    assert chunk.records == [Order(id=1, symbol="A"), Order(id=3, symbol="C")]
    assert chunk.offsets == [0, 2]
    assert [(e.position, e.raw) for e in chunk.errors] == [("t/0@1", b"{")]


def test_ts_field_copies_the_log_timestamp_into_records(log: Log) -> None:
    log.create_topic(TopicSpec("t"))
    log.append("t", 0, [LogRecord(None, b'{"id": 1, "symbol": "A"}', 1234)])
    (typed,) = readers(topic("t", Order, ts_field="ts").open(ctx(log)))
    assert typed.poll(10, False).records == [Order(id=1, symbol="A", ts=1234)]
    (plain,) = readers(topic("t", ts_field="when").open(ctx(log)))
    assert plain.poll(10, False).records == [{"id": 1, "symbol": "A", "when": 1234}]
    with pytest.raises(DefinitionError, match="not a field of Order"):
        topic("t", Order, ts_field="when")


def sink_batch(rows: list[Any], ts: list[int], offsets: list[int] | None = None) -> Batch:
    return Batch(rows, ts, offsets=offsets)


def test_sink_buffers_until_drained_and_partitions_by_key_crc32(log: Log) -> None:
    conn = topic("bars", key="symbol", partitions=4).open(ctx(log))
    rows = [{"symbol": s, "v": i} for i, s in enumerate(["AAPL", "MSFT", "AAPL", "X", "GOOG"])]
    conn.write(sink_batch(rows, [10, 20, 30, 40, 50]))
    conn.flush()
    assert all(p.end == 0 for p in log.topics()["bars"].offsets)  # flush appends nothing
    drained = conn.drain_log_records()
    assert conn.drain_log_records() == []
    expected: dict[int, list[LogRecord]] = {}
    for row, ts in zip(rows, [10, 20, 30, 40, 50], strict=True):
        key = row["symbol"].encode()
        expected.setdefault(zlib.crc32(key) % 4, []).append(
            LogRecord(key, msgspec.json.encode(row), ts)
        )
    assert drained == [("bars", p, recs) for p, recs in sorted(expected.items())]
    with log.transaction() as txn:
        for name, part, recs in drained:
            txn.append(name, part, recs)
    (r,) = [r for r in readers(topic("bars").open(ctx(log))) if r.partition_id == drained[0][1]]
    assert r.poll(10, False).records == [
        msgspec.json.decode(x.value) for x in drained[0][2] if x.value
    ]


def test_key_partitioning_is_stable_for_known_keys(log: Log) -> None:
    # Fixed expectations: a change of the partitioner would move keys between partitions.
    conn = topic("k", key=lambda r: r["k"], partitions=3).open(ctx(log))
    conn.write(sink_batch([{"k": "a"}, {"k": 7}, {"k": b"\x00"}], [0, 0, 0]))
    placed = {rec.key: part for _, part, recs in conn.drain_log_records() for rec in recs}
    assert placed == {b"a": 0, b"7": 0, b"\x00": 1}  # crc32 % 3 of each key


def test_unkeyed_records_go_round_robin_by_offset_else_by_value(log: Log) -> None:
    conn = topic("u", partitions=3).open(ctx(log))
    conn.write(sink_batch([{"n": i} for i in range(4)], [0] * 4, offsets=[5, 6, 7, 8]))
    assert [(p, len(recs)) for _, p, recs in conn.drain_log_records()] == [(0, 1), (1, 1), (2, 2)]
    conn.write(sink_batch([{"n": 1}], [0]))
    ((_, part, _),) = conn.drain_log_records()
    assert part == zlib.crc32(b'{"n":1}') % 3


def test_a_keyed_sink_places_records_without_a_key_like_an_unkeyed_one(log: Log) -> None:
    # A key function returning None for some records: the whole batch takes the
    # record-by-record path, and those records go by offset (else by value).
    conn = topic("m", key=lambda r: r.get("k"), partitions=3).open(ctx(log))
    rows = [{"k": "a"}, {"n": 1}, {"k": "b"}, {"n": 2}]
    conn.write(sink_batch(rows, [1, 2, 3, 4], offsets=[10, 11, 12, 13]))
    placed = [
        (part, rec.key, rec.ts_ms) for _, part, recs in conn.drain_log_records() for rec in recs
    ]
    expected = [
        (zlib.crc32(b"a") % 3, b"a", 1),
        (11 % 3, None, 2),
        (zlib.crc32(b"b") % 3, b"b", 3),
        (13 % 3, None, 4),
    ]
    assert sorted(placed, key=lambda x: x[2]) == expected
    conn.write(sink_batch([{"n": 3}], [5]))
    ((_, part, _),) = conn.drain_log_records()
    assert part == zlib.crc32(b'{"n":3}') % 3


def test_keyed_sink_errors_name_the_record(log: Log) -> None:
    conn = topic("e", key="id", partitions=2).open(ctx(log))
    with pytest.raises(SinkError, match="cannot encode a dict"):
        conn.write(sink_batch([{"id": 1, "v": 1}, {"id": 2, "v": object()}], [0, 0]))
    compacted = topic("ce", key=lambda r: r.get("id"), compacted=True).open(ctx(log))
    with pytest.raises(SinkError, match="compacted, so every record needs a key"):
        compacted.write(sink_batch([{"id": 1}, {"x": 1}], [0, 0]))


def test_sink_without_checkpointer_appends_on_flush(log: Log) -> None:
    conn = topic("direct", codec=MsgpackCodec()).open(ctx(log, transactional=False))
    conn.write(sink_batch([{"a": 1}, {"a": 2}], [7, 8]))
    assert log.topics()["direct"].offsets[0].end == 0
    conn.flush()
    stored = log.read("direct", 0, 0)
    assert [(MsgpackCodec().decode(s.value or b""), s.ts_ms) for s in stored] == [
        ({"a": 1}, 7),
        ({"a": 2}, 8),
    ]


def test_sink_errors_name_the_problem(log: Log) -> None:
    conn = topic("c", key="id", compacted=True).open(ctx(log))
    with pytest.raises(SinkError, match="no key field 'id'"):
        conn.write(sink_batch([{"x": 1}], [0]))
    unkeyed = topic("c", compacted=True).open(ctx(log))
    with pytest.raises(SinkError, match="compacted, so every record needs a key"):
        unkeyed.write(sink_batch([{"x": 1}], [0]))


def test_open_creates_checks_or_adopts_the_topic(log: Log) -> None:
    topic("new", partitions=3).open(ctx(log))
    assert log.topics()["new"].spec.partitions == 3
    assert len(topic("new").open(ctx(log))) == 3  # no settings given: adopt the existing topic
    with pytest.raises(LogError, match="already exists with partitions=3"):
        topic("new", partitions=2).open(ctx(log))
    topic("fresh").open(ctx(log))
    assert log.topics()["fresh"].spec == TopicSpec("fresh")


def test_open_without_a_log_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="needs the run's durable log"):
        topic("t").open(ctx(None))


def test_definition_errors() -> None:
    with pytest.raises(DefinitionError, match="record_type"):
        topic("t", list)
    with pytest.raises(DefinitionError, match="topic name"):
        topic("bad name")
    with pytest.raises(DefinitionError, match="partitions"):
        topic("t", partitions=0)


def test_pipeline_topic_to_topic_commits_output_and_positions_together() -> None:
    log = open_log("memory://")
    log.create_topic(TopicSpec("in", partitions=2))
    for p in (0, 1):
        log.append("in", p, json_records(*[b'{"id": %d, "symbol": "S"}' % i for i in range(3)]))

    p = es.Pipeline("copy")
    src = p.source("in", topic("in", Order))
    src.map("double", lambda o: {"id": o.id * 2}).sink("out", topic("out", key="id"))
    options = RunOptions(
        log=log,
        handle_signals=False,
        max_wall=timedelta(milliseconds=300),
        checkpoint=CheckpointPolicy(interval=timedelta(milliseconds=10)),
    )
    Executor(p, options=options).run()
    out = [msgspec.json.decode(r.value or b"") for r in log.read("out", 0, 0)]
    assert sorted(x["id"] for x in out) == [0, 0, 2, 2, 4, 4]
    assert log.committed("copy", "in") == {0: 3, 1: 3}
    log.append("in", 0, json_records(b'{"id": 10, "symbol": "S"}'))
    Executor(p, options=options).run()  # resumes: only the new record is copied
    out = [msgspec.json.decode(r.value or b"") for r in log.read("out", 0, 0)]
    assert sorted(x["id"] for x in out) == [0, 0, 2, 2, 4, 4, 20]
