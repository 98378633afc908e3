"""The reference pipeline of the reliability suite (run as ``eventspine run THIS_FILE:pipeline``).

Configured by environment variables (set by the supervisor):

* ``ES_REL_IN``: the directory of the input files ``in-*.jsonl`` (one partition each);
* ``ES_REL_OUT``: the directory of the output files;
* ``ES_REL_SLOW_MS``: sleep this many ms every 100 records (a slow user function, so
  that kills land mid-run; it does not change any output);
* ``ES_REL_VARIANT``: ``""``, ``"renamed"`` (the stats step is renamed) or
  ``"window5s"`` (the window is 5 s): incompatible pipelines for T12;
* ``ES_REL_NO_WINDOW``: ``"1"`` to leave the window step out (to test the harness
  while window state cannot be checkpointed);
* ``ES_REL_TOPIC``: ``"1"`` to also write the stats to the log topic ``stats-out``
  (when the topic connector exists).

Steps: source (event time ``ts``, max_delay 1 s, no idle advance) -> ``dedupe`` (by
``id``) -> ``stats`` (per ``key``: running count/sum/min/max and a sequence check
that sends an alert to side output ``alerts`` when ``seq - last != 1``) -> sinks
``stats.jsonl`` and ``alerts.jsonl``; stats -> 10 s tumbling window count and sum
per key -> ``windows.jsonl``. Every step dead-letters failures into topic ``dlq``.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta
from typing import Any

import eventspine as es

_IN = os.environ.get("ES_REL_IN", ".")
_OUT = os.environ.get("ES_REL_OUT", ".")
_SLOW_MS = float(os.environ.get("ES_REL_SLOW_MS", "0") or 0)
_VARIANT = os.environ.get("ES_REL_VARIANT", "")
_TOPIC = os.environ.get("ES_REL_TOPIC", "") == "1"
_WINDOW = os.environ.get("ES_REL_NO_WINDOW", "") != "1"

_seen = 0


def dedupe(rec: dict[str, Any], ctx: Any) -> None:
    """Pass the first record of each id; drop later copies."""
    global _seen
    _seen += 1
    if _SLOW_MS and _seen % 100 == 0:
        time.sleep(_SLOW_MS / 1000)
    st = ctx.state
    if st.get("seen"):
        return
    st["seen"] = 1
    ctx.emit(rec)


def stats(rec: dict[str, Any], ctx: Any) -> None:
    """Per key: running count/sum/min/max, and an alert when a sequence number is skipped."""
    if str(rec.get("id")).startswith("poison-"):
        raise ValueError(f"poison record {rec.get('id')!r}")
    seq, value = rec["seq"], rec["value"]
    if type(seq) is not int or type(value) is not int:
        raise TypeError(f"seq and value must be ints, got {seq!r} and {value!r}")
    st = ctx.state
    last = st.get("last", -1)
    if seq - last != 1:
        ctx.emit_to("alerts", {"key": rec["key"], "last": last, "seq": seq})
    st["last"] = seq
    st["count"] = st.get("count", 0) + 1
    st["sum"] = st.get("sum", 0) + value
    st["min"] = min(st.get("min", value), value)
    st["max"] = max(st.get("max", value), value)
    ctx.emit(
        {
            "id": rec["id"],
            "key": rec["key"],
            "seq": seq,
            "value": value,
            "count": st["count"],
            "sum": st["sum"],
            "min": st["min"],
            "max": st["max"],
        }
    )


def build() -> es.Pipeline:
    """Build the reference pipeline from the environment (see the module docstring)."""
    p = es.Pipeline("reliability", on_error=es.DeadLetter("dlq"))
    src = p.source(
        "input",
        es.JsonLinesSource(os.path.join(_IN, "in-*.jsonl")),
        timestamps=es.EventTime("ts", max_delay=timedelta(seconds=1), idle_timeout=None),
    )
    unique = src.key_by("by_id", "id").process("dedupe", dedupe)
    stats_name = "stats_v2" if _VARIANT == "renamed" else "stats"
    out = unique.key_by("by_key", "key").process(stats_name, stats)
    out.sink("stats_file", es.JsonLinesSink(os.path.join(_OUT, "stats.jsonl")))
    out.side_output("alerts").sink(
        "alerts_file", es.JsonLinesSink(os.path.join(_OUT, "alerts.jsonl"))
    )
    if _WINDOW:
        size = timedelta(seconds=5 if _VARIANT == "window5s" else 10)
        win = (
            out.key_by("win_key", "key")
            .window(es.Tumbling(size))
            .aggregate("win10s", n=es.count(), total=es.sum("value"))
        )
        win.sink("windows_file", es.JsonLinesSink(os.path.join(_OUT, "windows.jsonl")))
    if _TOPIC:
        try:
            from eventspine.connectors.topics import topic
        except ImportError:  # the topic connector is optional for this suite
            pass
        else:
            out.sink("stats_topic", topic("stats-out", key="key"))
    return p


pipeline = build()
