"""The copy test of Kafka's own ``transactions_test``, run on eventspine workers.

A seeded input topic of 100,000 keyed records with unique ``seq`` values (3
partitions) is copied, unchanged, to an output topic by two transactional
copiers (real ``eventspine run`` workers of ``tests/scaleout/copy_pipeline.py``
in one group): one Kafka transaction per checkpoint, of a few hundred records,
with the input positions committed in it. During the copy the copiers are
bounced (``kill -9`` and a clean SIGTERM, a new copier started after each) and
so is the broker (a hard ``kill -9`` and a clean restart), while a plain
``confluent_kafka`` consumer with ``isolation.level=read_committed`` reads the
output the whole time. At the end:

* the output, read ``read_committed`` by eventspine's log, holds every input
  record exactly once, partition by partition in input order (the copy keeps
  keys, so a record lands in the partition number it was read from);
* the concurrent reader saw no duplicate, nothing outside the input (so no
  record of an aborted transaction), and in the end exactly that output;
* the aborted records and transaction markers in the output are counted
  (``read_uncommitted`` against ``read_committed``), and the average
  transaction is a few hundred records.
"""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from eventspine.connectors.topics import key_bytes, partition_for
from eventspine.log import Log, open_log, read_all
from eventspine.log.base import LogRecord, TopicSpec
from kafka_broker import KafkaCluster, running_kafka

from .cluster import T0, Workers

pytestmark = pytest.mark.kafka

RECORDS = 100_000
PARTITIONS = 3
KEYS = 300
#: per record, per copier: two copiers alone need about 100,000 * 0.3 / 2 ms = 15 s
SLOW_MS = 0.3
#: one checkpoint (one Kafka transaction) per copier every 150 ms: a few hundred records
INTERVAL_MS = 150


def _seed(log: Log, topic: str) -> dict[int, list[int]]:
    """Append the input: record ``seq`` has key ``k{seq % KEYS}``; return seqs per partition."""
    log.create_topic(TopicSpec(topic, PARTITIONS))
    by_part: dict[int, list[LogRecord]] = {p: [] for p in range(PARTITIONS)}
    seqs: dict[int, list[int]] = {p: [] for p in range(PARTITIONS)}
    for seq in range(RECORDS):
        key = f"k{seq % KEYS}"
        kb = key_bytes(key)
        assert kb is not None
        p = partition_for(kb, PARTITIONS)
        by_part[p].append(LogRecord(kb, json.dumps({"key": key, "seq": seq}).encode(), T0 + seq))
        seqs[p].append(seq)
    for p, recs in by_part.items():
        for i in range(0, len(recs), 5000):
            log.append(topic, p, recs[i : i + 5000])
    return seqs


class Reader(threading.Thread):
    """A plain Kafka consumer reading every partition of ``topic`` from its start.

    ``seen[p]`` is the list of ``(offset, seq)`` it received from partition ``p``;
    values that are not copy records go to ``foreign``. It runs until :meth:`halt`
    (a running reader rides out a broker restart: librdkafka reconnects).
    """

    def __init__(self, bootstrap: str, topic: str, isolation: str = "read_committed") -> None:
        super().__init__(name=f"reader-{isolation}", daemon=True)
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"copy-reader-{uuid.uuid4().hex[:8]}",  # assigned, never joins
                "enable.auto.commit": False,
                "isolation.level": isolation,
                "enable.partition.eof": True,
            }
        )
        self.consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)]
        )
        self.seen: dict[int, list[tuple[int, int]]] = {p: [] for p in range(PARTITIONS)}
        self.foreign: list[bytes | None] = []
        self.eof: set[int] = set()
        self.errors: Counter[str] = Counter()
        self._halt = threading.Event()

    @property
    def count(self) -> int:
        return sum(len(s) for s in self.seen.values())

    def run(self) -> None:
        try:
            while not self._halt.is_set():
                for msg in self.consumer.consume(1000, 0.2):
                    err = msg.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            self.eof.add(msg.partition() or 0)
                        else:  # the broker is down: librdkafka retries by itself
                            self.errors[err.name()] += 1
                        continue
                    p = msg.partition() or 0
                    self.eof.discard(p)
                    try:
                        seq = json.loads(msg.value() or b"")["seq"]
                    except (ValueError, KeyError, TypeError):
                        self.foreign.append(msg.value())
                        continue
                    self.seen[p].append((msg.offset() or 0, seq))
        finally:
            self.consumer.close()

    def halt(self) -> None:
        self._halt.set()
        self.join(30)


def _drain(bootstrap: str, topic: str, isolation: str) -> dict[int, list[tuple[int, int]]]:
    """Read every partition of ``topic`` to its end with a new consumer (nothing is running)."""
    reader = Reader(bootstrap, topic, isolation)
    reader.start()
    deadline = time.monotonic() + 60
    while len(reader.eof) < PARTITIONS:
        assert time.monotonic() < deadline, f"{isolation} reader did not reach the end"
        time.sleep(0.1)
    reader.halt()
    assert not reader.foreign
    return reader.seen


def _seqs(view: dict[int, list[tuple[int, int]]]) -> dict[int, list[int]]:
    return {p: [seq for _, seq in rows] for p, rows in view.items()}


def _compare(want: dict[int, list[int]], got: dict[int, list[int]], what: str) -> None:
    """``got`` must be ``want``, partition by partition, in order; say how it differs."""
    for p in range(PARTITIONS):
        if got[p] == want[p]:
            continue
        counts = Counter(got[p])
        dups = [s for s, n in counts.items() if n > 1]
        missing = set(want[p]) - set(counts)
        foreign = set(counts) - set(want[p])
        first = next(
            (i for i, (a, b) in enumerate(zip(want[p], got[p], strict=False)) if a != b),
            min(len(want[p]), len(got[p])),
        )
        raise AssertionError(
            f"{what}, partition {p}: {len(got[p])} records for {len(want[p])} input records; "
            f"{len(dups)} duplicated (e.g. {dups[:5]}), {len(missing)} missing (e.g. "
            f"{sorted(missing)[:5]}), {len(foreign)} not in the input (e.g. {sorted(foreign)[:5]}); "
            f"first difference at index {first}"
        )


@pytest.fixture
def broker() -> Iterator[KafkaCluster]:
    with running_kafka(nodes=1) as cluster:
        yield cluster


class Copy:
    """The copiers of one run, the concurrent reader, and the bounces between them."""

    def __init__(self, broker: KafkaCluster, tmp: Path, tag: str) -> None:
        self.broker = broker
        self.url = (
            f"kafka://{broker.bootstrap}?request_timeout_ms=10000&transaction_timeout_ms=15000"
        )
        self.src, self.out = f"copy-in-{tag}", f"copy-out-{tag}"
        env = {
            "COPY_IN": self.src,
            "COPY_OUT": self.out,
            "COPY_APP": f"copy-{tag}",
            "COPY_SLOW_MS": str(SLOW_MS),
        }
        self.workers = Workers(
            self.url, env, tmp, target="tests/scaleout/copy_pipeline.py:pipeline"
        )
        self.workers.extra = (
            "--checkpoint-interval-ms",
            str(INTERVAL_MS),
            "--stall-timeout-s",
            "20",  # librdkafka can hang in a transaction call after a broker crash
        )
        self.reader = Reader(broker.bootstrap, self.out)
        self.t0 = time.monotonic()
        self.bounces: list[str] = []

    def start_copier(self) -> None:
        self.workers.start(*self.workers.extra)

    def wait(self, count: int, timeout: float = 150) -> None:
        """Wait until the concurrent reader has seen ``count`` records; supervise the copiers."""
        deadline = time.monotonic() + timeout
        while self.reader.count < count:
            self.workers.supervise()  # a copier the stall watchdog stopped starts again
            if time.monotonic() > deadline:
                self.workers.dump_stacks()
                raise AssertionError(
                    f"the reader saw {self.reader.count} of {count} records after {timeout:.0f} s "
                    f"(bounces so far: {self.bounces})\n{self.workers.stderr()}"
                )
            time.sleep(0.1)

    def bounce(self, what: str) -> None:
        """Bounce a copier (``kill``: ``kill -9``; ``term``: SIGTERM) or the broker."""
        assert self.reader.count < RECORDS, f"the copy ended before the bounce {what!r}"
        if what == "broker-kill":
            self.broker.kill(1)  # its open transactions are lost with it
            time.sleep(1)
            self.broker.start(1)
        elif what == "broker-stop":
            self.broker.stop(1)
            self.broker.start(1)
        else:
            victim = next(p for p in self.workers.procs if p.poll() is None)
            victim.send_signal(signal.SIGKILL if what == "kill" else signal.SIGTERM)
            code = victim.wait(60)
            # 75: the stall watchdog stopped it first (it was hung in a Kafka call)
            assert what == "kill" or code in (0, 143, 75), self.workers.stderr()
            self.start_copier()
        self.bounces.append(f"{what} at {self.reader.count} ({time.monotonic() - self.t0:.0f} s)")

    def finish(self) -> None:
        """Stop the copiers cleanly once the whole input is copied."""
        self.wait(RECORDS)
        time.sleep(1.0)  # a duplicate would show up late: give it time to be committed
        for proc in self.workers.procs:
            if proc.poll() is None:
                assert self.workers.stop(proc) in (0, 143), self.workers.stderr()


def _judge(copy: Copy, log: Log, want: dict[int, list[int]]) -> dict[str, float]:
    # The final output, read by eventspine's KafkaLog (read_committed): every input
    # record exactly once, each partition in input order.
    info = log.topics()[copy.out]
    final: dict[int, list[int]] = {p: [] for p in range(PARTITIONS)}
    for p, rec in read_all(log, info):
        assert rec.value is not None
        final[p].append(json.loads(rec.value)["seq"])
    _compare(want, final, "the final read_committed output")
    # The concurrent reader: nothing foreign (an aborted record), no duplicate, ever; and
    # in the end exactly the final output.
    reader = copy.reader
    assert not reader.foreign, f"the reader saw non-copy values: {reader.foreign[:3]}"
    where: dict[int, list[tuple[int, int]]] = {}
    for p, rows in reader.seen.items():
        for offset, seq in rows:
            where.setdefault(seq, []).append((p, offset))
    dups = {seq: at for seq, at in where.items() if len(at) > 1}
    assert not dups, (
        f"the read_committed reader saw {len(dups)} values twice (partition, offset): "
        f"{list(dups.items())[:5]}"
    )
    _compare(want, _seqs(reader.seen), "the concurrent read_committed reader's view")
    # Every record stored, aborted ones too, and the markers (one offset each).
    everything = _drain(copy.broker.bootstrap, copy.out, "read_uncommitted")
    stored = sum(len(rows) for rows in everything.values())
    ends = sum(po.end for po in info.offsets)
    markers = ends - stored
    assert markers > 0, "no transaction marker: the copy did not use transactions"
    return {
        "aborted_records": stored - RECORDS,
        "markers": markers,
        "records_per_marker": RECORDS / markers,
    }


def _run(broker: KafkaCluster, tmp_path: Path, schedule: list[tuple[int, str]]) -> None:
    copy = Copy(broker, tmp_path, uuid.uuid4().hex[:8])
    log = open_log(copy.url)
    try:
        want = _seed(log, copy.src)
        log.create_topic(TopicSpec(copy.out, PARTITIONS))
        seeded = time.monotonic()
        copy.reader.start()
        try:
            copy.start_copier()
            copy.start_copier()
            for count, what in schedule:
                copy.wait(count)
                copy.bounce(what)
            copy.finish()
        finally:
            copy.workers.close()
            copy.reader.halt()
        copied = time.monotonic()
        stats = _judge(copy, log, want)
        print(
            f"\nseed {seeded - copy.t0:.1f} s, copy {copied - seeded:.1f} s, judge "
            f"{time.monotonic() - copied:.1f} s; bounces {copy.bounces}; {stats}; "
            f"copiers started {len(copy.workers.procs)}; reader errors {dict(copy.reader.errors)}"
        )
        # One marker per partition a transaction wrote: a few hundred records per transaction.
        assert stats["records_per_marker"] < 1000, stats
    finally:
        log.close()


@pytest.mark.timeout(300)
def test_copy_100k_with_copier_and_broker_bounces(broker: KafkaCluster, tmp_path: Path) -> None:
    """Copiers killed (-9) twice and stopped once, the broker killed (-9) once."""
    _run(
        broker,
        tmp_path,
        [(12_000, "kill"), (30_000, "term"), (45_000, "broker-kill"), (75_000, "kill")],
    )


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_copy_100k_with_many_bounces(broker: KafkaCluster, tmp_path: Path) -> None:
    """Seven bounces: copiers killed and stopped, the broker killed and restarted cleanly."""
    _run(
        broker,
        tmp_path,
        [
            (8_000, "kill"),
            (18_000, "term"),
            (30_000, "broker-kill"),
            (45_000, "kill"),
            (60_000, "broker-stop"),
            (75_000, "term"),
            (88_000, "kill"),
        ],
    )
