"""The scale-out oracle pipeline: keyed running stats from one topic to another.

Run by the scale-out tests as real worker processes::

    SCALE_IN=orders SCALE_OUT=stats eventspine run tests/scaleout/pipeline.py:pipeline \\
        --log-url kafka://127.0.0.1:9092

It reads ``$SCALE_IN`` (records ``{"key", "seq", "value", "ts"}``, produced keyed by
``key``) and writes to ``$SCALE_OUT``, per record, the key's running ``count``,
``sum``, ``min`` and ``max`` after it, and before it an alert
``{"key", "alert": "seq_gap", "last", "seq"}`` when ``seq - last != 1``. A second
sink ``$SCALE_OUT.windows`` gets the count per key and tumbling 10 s window.
``SCALE_SLOW_MS`` (default 0) sleeps that long per record, so a test has time to
kill or rebalance workers mid-stream. ``SCALE_REPARTITION=1`` does not declare the
input keyed by ``key``, so the ``key_by`` goes through a repartition topic (same
output). The expected output of any input is
computed by :func:`expected`, so every test judges against the same oracle.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from datetime import timedelta
from typing import Any

import eventspine as es


class RunningStats:
    """Keeps ``count``/``sum``/``min``/``max`` and the last ``seq`` per key."""

    def __init__(self, slow_ms: float) -> None:
        self.slow_s = slow_ms / 1000

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
        ctx.emit({"key": ctx.key, "seq": seq, **{k: st[k] for k in ("count", "sum", "min", "max")}})
        if self.slow_s:
            time.sleep(self.slow_s)

    def on_timer(self, ctx: es.ProcessContext) -> None:
        """No timers are set."""


def pipeline() -> es.Pipeline:
    """Build the pipeline over the topics named by the environment."""
    src, out = os.environ["SCALE_IN"], os.environ["SCALE_OUT"]
    slow_ms = float(os.environ.get("SCALE_SLOW_MS", "0"))
    p = es.Pipeline(os.environ.get("SCALE_APP", "scaleout"))
    # The input is produced keyed by "key": declared, the run reads it as it is;
    # SCALE_REPARTITION=1 leaves it undeclared, so key_by goes through a repartition topic.
    declared = None if os.environ.get("SCALE_REPARTITION") == "1" else "key"
    keyed = p.source(
        "input",
        es.topic(src, key=declared),
        timestamps=es.EventTime("ts", max_delay=timedelta(seconds=1), idle_timeout=None),
    ).key_by("by_key", "key")
    keyed.process("stats", RunningStats(slow_ms)).sink("stats_out", es.topic(out, key="key"))
    keyed.window(es.Tumbling(timedelta(seconds=10))).aggregate("counts", count=es.count()).sink(
        "counts_out", es.topic(f"{out}.windows", key="key")
    )
    return p


def expected(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``stats`` output of one uninterrupted run, in per-key order."""
    out: list[dict[str, Any]] = []
    state: dict[str, dict[str, Any]] = defaultdict(dict)
    for r in records:
        st = state[r["key"]]
        last = st.get("last", 0)
        if r["seq"] - last != 1:
            out.append({"key": r["key"], "alert": "seq_gap", "last": last, "seq": r["seq"]})
        st["last"] = r["seq"]
        st["count"] = st.get("count", 0) + 1
        st["sum"] = st.get("sum", 0) + r["value"]
        st["min"] = min(st.get("min", r["value"]), r["value"])
        st["max"] = max(st.get("max", r["value"]), r["value"])
        out.append(
            {"key": r["key"], "seq": r["seq"], **{k: st[k] for k in ("count", "sum", "min", "max")}}
        )
    return out
