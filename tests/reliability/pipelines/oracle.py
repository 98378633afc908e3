"""The crash-smoke pipeline: per-key running stats with a sequence check, and 10 s counts.

Run by ``tests/reliability/test_crash_smoke.py`` through the real CLI::

    ORACLE_DIR=D eventspine run tests/reliability/pipelines/oracle.py:pipeline --state-dir S

It reads ``D/input.jsonl`` (records ``{"key", "seq", "value", "ts"}``, integer values,
event time ``ts`` in epoch ms) and writes:

* ``D/stats.jsonl``: per record, the key's running ``count``/``sum``/``min``/``max``
  after it; before it, an alert ``{"key", "alert": "seq_gap", "last", "seq"}`` when
  ``seq - last != 1`` (the first record of a key expects ``seq == 1``).
* ``D/counts.jsonl``: the count of records per key and tumbling 10 s window.

``ORACLE_SLOW_EVERY`` (default 0: never) makes the step sleep 2 ms every that
many records, so a test has time to kill the run at random points.
``pipeline`` is a function, so importing this file reads no environment.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import eventspine as es


class RunningStats:
    """Keeps ``count``/``sum``/``min``/``max`` and the last ``seq`` per key."""

    def __init__(self, slow_every: int) -> None:
        self.slow_every = slow_every

    def on_record(self, record: dict[str, Any], ctx: es.ProcessContext) -> None:
        st = ctx.state
        last = st.get("last", 0)
        seq, value = record["seq"], record["value"]
        if seq - last != 1:
            ctx.emit({"key": ctx.key, "alert": "seq_gap", "last": last, "seq": seq})
        st["last"] = seq
        st["count"] = st.get("count", 0) + 1
        st["sum"] = st.get("sum", 0) + value
        st["min"] = value if "min" not in st else min(st["min"], value)
        st["max"] = value if "max" not in st else max(st["max"], value)
        ctx.emit(
            {
                "key": ctx.key,
                "seq": seq,
                "count": st["count"],
                "sum": st["sum"],
                "min": st["min"],
                "max": st["max"],
            }
        )
        if self.slow_every and seq % self.slow_every == 0:
            time.sleep(0.002)

    def on_timer(self, ctx: es.ProcessContext) -> None:
        """No timers are set."""


def pipeline() -> es.Pipeline:
    """Build the pipeline over the files in ``$ORACLE_DIR``."""
    folder = Path(os.environ["ORACLE_DIR"])
    slow_every = int(os.environ.get("ORACLE_SLOW_EVERY", "0"))
    p = es.Pipeline("oracle")
    keyed = p.source(
        "input",
        es.JsonLinesSource(folder / "input.jsonl"),
        timestamps=es.EventTime("ts", max_delay=timedelta(seconds=1), idle_timeout=None),
    ).key_by("by_key", "key")
    keyed.process("stats", RunningStats(slow_every)).sink(
        "stats_out", es.JsonLinesSink(folder / "stats.jsonl")
    )
    # ORACLE_WINDOW_PATH=record: a 1 ms allowed lateness (no record here is late) makes the
    # step take the record-at-a-time window operator instead of the vectorized one.
    lateness = timedelta(milliseconds=1 if os.environ.get("ORACLE_WINDOW_PATH") == "record" else 0)
    windows = keyed.window(es.Tumbling(timedelta(seconds=10)), allowed_lateness=lateness)
    windows.aggregate("counts", n=es.count()).sink(
        "counts_out", es.JsonLinesSink(folder / "counts.jsonl")
    )
    return p
