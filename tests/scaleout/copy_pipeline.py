"""The copy pipeline of the Kafka copy test: one topic to another, unchanged, keys kept.

Run by ``test_kafka_copy.py`` as real worker processes (the transactional copier
of Kafka's own ``transactions_test``)::

    COPY_IN=input COPY_OUT=output eventspine run tests/scaleout/copy_pipeline.py:pipeline \\
        --log-url kafka://127.0.0.1:9092

It reads ``$COPY_IN`` (JSON records with a ``key`` field, produced keyed by it) and
writes every record as it is to ``$COPY_OUT``, keyed by ``key`` again: with as many
output partitions as input partitions, each record lands in the partition number it
was read from, in the same order. ``COPY_SLOW_MS`` (default 0, fractions allowed)
costs that long per record, paid in sleeps of at least 5 ms, so a test can bounce
copiers and brokers mid-stream. ``COPY_APP`` names the pipeline (and its group).
"""

from __future__ import annotations

import os
import time
from typing import Any

import eventspine as es

#: the shortest sleep of the throttle (shorter sleeps overshoot too much to add up)
_MIN_SLEEP_S = 0.005


class Throttle:
    """Passes records through, costing ``slow_ms`` each on average."""

    def __init__(self, slow_ms: float) -> None:
        self.slow_s = slow_ms / 1000
        self.owed_s = 0.0

    def __call__(self, record: dict[str, Any]) -> dict[str, Any]:
        self.owed_s += self.slow_s
        if self.owed_s >= _MIN_SLEEP_S:
            time.sleep(self.owed_s)
            self.owed_s = 0.0
        return record


def pipeline() -> es.Pipeline:
    """Build the copy pipeline over the topics named by the environment."""
    src, out = os.environ["COPY_IN"], os.environ["COPY_OUT"]
    slow_ms = float(os.environ.get("COPY_SLOW_MS", "0"))
    p = es.Pipeline(os.environ.get("COPY_APP", "copy"))
    records = p.source("input", es.topic(src))
    if slow_ms:
        records = records.map("throttle", Throttle(slow_ms))
    records.sink("output", es.topic(out, key="key"))
    return p
