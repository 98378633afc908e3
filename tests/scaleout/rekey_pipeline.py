"""The repartitioning oracle pipeline: clicks keyed by user, grouped by page.

Run by the repartition tests as real worker processes::

    REKEY_IN=clicks REKEY_OUT=views eventspine run tests/scaleout/rekey_pipeline.py:pipeline \\
        --workers 2

It reads ``$REKEY_IN`` (records ``{"user", "page", "ts"}``, partitioned by
``user``) and groups by ``page``, which is not the topic's key, so a
partitioned run re-keys through ``__es.<app>.by_page.repartition``. It writes
to ``$REKEY_OUT`` each page's running view count ``{"page", "views"}`` (one
record per click), to ``$REKEY_OUT.windows`` the count per page and tumbling
10 s window, and to ``$REKEY_OUT.late`` the clicks the window found late
(there must be none). ``REKEY_SLOW_MS`` sleeps that long per click.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import eventspine as es

WINDOW_MS = 10_000
#: the page of the records that close every window (one per input partition); not judged
FLUSH = "flush"


def pipeline() -> es.Pipeline:
    """Build the pipeline over the topics named by the environment."""
    src, out = os.environ["REKEY_IN"], os.environ["REKEY_OUT"]
    slow_s = float(os.environ.get("REKEY_SLOW_MS", "0")) / 1000
    p = es.Pipeline(os.environ.get("REKEY_APP", "rekey"))

    def views(click: dict[str, Any], ctx: es.ProcessContext) -> None:
        ctx.state["views"] = ctx.state.get("views", 0) + 1
        ctx.emit({"page": ctx.key, "views": ctx.state["views"]})
        if slow_s:
            time.sleep(slow_s)

    by_page = p.source(
        "clicks",
        es.topic(src),
        timestamps=es.EventTime("ts", max_delay=timedelta(0), idle_timeout=None),
    ).key_by("by_page", "page")
    by_page.process("views", views).sink("views_out", es.topic(out, key="page"))
    windows = by_page.window(es.Tumbling(timedelta(milliseconds=WINDOW_MS))).aggregate(
        "per_window", count=es.count()
    )
    windows.sink("windows_out", es.topic(f"{out}.windows", key="page"))
    windows.side_output("late").sink("late_out", es.topic(f"{out}.late"))
    return p


def expected_views(clicks: list[dict[str, Any]]) -> Counter[tuple[str, int]]:
    """The ``(page, views)`` records of one run (a multiset: order across users varies)."""
    seen: Counter[str] = Counter()
    out: Counter[tuple[str, int]] = Counter()
    for c in clicks:
        if c["page"] != FLUSH:
            seen[c["page"]] += 1
            out[c["page"], seen[c["page"]]] += 1
    return out


def expected_windows(clicks: list[dict[str, Any]]) -> Counter[tuple[str, int, int]]:
    """The ``(page, window_start_ms, count)`` window results once every window closed."""
    counts = Counter(
        (c["page"], c["ts"] - c["ts"] % WINDOW_MS) for c in clicks if c["page"] != FLUSH
    )
    return Counter({(page, start, n): 1 for (page, start), n in counts.items()})
