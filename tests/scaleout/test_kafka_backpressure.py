"""Backpressure on Kafka: a slow pipeline prefetches at most its fetch buffer.

A worker reads by pulling, and each partition reader's librdkafka queue stops
fetching once it holds ``fetch_buffer_kb`` (``docs/kafka.md``, "Backpressure
and memory"). The test runs the same slow copy pipeline over 60 MiB of input
twice, with the default buffer (16 MiB) and with librdkafka's own 64 MiB, and compares the
workers' resident memory once they have run for a while: the bounded worker
must stay tens of MiB below the unbounded one, which holds most of the input.
"""

from __future__ import annotations

import json
import random
import string
import time
import uuid
from pathlib import Path

from eventspine.log import Log
from eventspine.log.base import LogRecord, TopicSpec

from .cluster import T0, Workers, wait_output

RECORDS = 60_000
PAD = 1000  # bytes of padding per record: 60,000 records are about 60 MiB
MIB = 1 << 20


def _rss(pid: int) -> int:
    """The resident memory of process ``pid`` in bytes (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def _seed(log: Log, topic: str) -> None:
    log.create_topic(TopicSpec(topic, 1))
    rng = random.Random(11)
    letters = string.ascii_letters + string.digits
    pads = ["".join(rng.choices(letters, k=PAD)) for _ in range(64)]
    batch: list[LogRecord] = []
    for i in range(RECORDS):
        rec = {"key": f"k{i % 100}", "seq": i, "pad": pads[i % 64] + str(i)}
        batch.append(LogRecord(rec["key"].encode(), json.dumps(rec).encode(), T0 + i))
        if len(batch) == 2000:
            log.append(topic, 0, batch)
            batch = []


def _rss_after_a_while(log: Log, bootstrap: str, src: str, buffer_kb: int | None, tmp: Path) -> int:
    """Run the slow copy pipeline with ``fetch_buffer_kb=buffer_kb``; return its RSS mid-run."""
    tag = f"{buffer_kb or 'default'}-{uuid.uuid4().hex[:6]}"
    out = f"bp-out-{tag}"
    env = {
        "COPY_IN": src,
        "COPY_OUT": out,
        "COPY_SLOW_MS": "2",  # 500 records/s: the input outlasts the test by far
        "COPY_APP": f"bp-{tag}",
    }
    tmp.mkdir()
    url = f"kafka://{bootstrap}" + ("" if buffer_kb is None else f"?fetch_buffer_kb={buffer_kb}")
    workers = Workers(url, env, tmp, target="tests/scaleout/copy_pipeline.py:pipeline")
    try:
        proc = workers.start()
        wait_output(log, out, 300, workers, timeout=90)
        # The reader has been fetching for seconds: over loopback the unbounded one
        # has long prefetched everything librdkafka lets it.
        time.sleep(4)
        assert proc.poll() is None, workers.stderr()
        rss = _rss(proc.pid)
        assert len(log.read(out, 0, 0, RECORDS)) < RECORDS // 2, "the pipeline is not slow"
        assert workers.stop(proc) == 143, workers.stderr()
        return rss
    finally:
        workers.close()


def test_a_slow_pipeline_prefetches_at_most_its_fetch_buffer(
    kafka_log: Log, kafka_bootstrap: str, tmp_path: Path
) -> None:
    src = f"bp-in-{uuid.uuid4().hex[:8]}"
    _seed(kafka_log, src)
    bounded = _rss_after_a_while(kafka_log, kafka_bootstrap, src, None, tmp_path / "bounded")
    unbounded = _rss_after_a_while(kafka_log, kafka_bootstrap, src, 65536, tmp_path / "unbounded")
    print(f"RSS {bounded // MIB} vs {unbounded // MIB} MiB")
    assert unbounded - bounded > 30 * MIB, (
        f"RSS with the default fetch_buffer_kb: {bounded / MIB:.0f} MiB, "
        f"with 65536: {unbounded / MIB:.0f} MiB; the bound should save most of 60 MiB"
    )
