"""The oracle: the exact expected outputs of the reference pipeline, in pure Python, no I/O.

It follows the definitions, not the implementation: per key, the first record of
each id in file order; running count/sum/min/max after each; one alert per
sequence gap; per key and 10 s tumbling window (aligned to epoch 0) the count
and sum of values, in window order. Output order *across* keys is not part of
the contract (see docs/guarantees.md), so every expected output is a list per key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .workload import Workload

__all__ = ["Expected", "expected"]


@dataclass(frozen=True)
class Expected:
    """Expected outputs per key, and the final ``stats`` state per key."""

    stats: dict[str, list[dict[str, Any]]]
    alerts: dict[str, list[dict[str, Any]]]
    windows: dict[str, list[dict[str, Any]]]
    state: dict[str, dict[str, int]]


def expected(wl: Workload, window_ms: int = 10_000) -> Expected:
    """Compute the expected outputs of the reference pipeline on ``wl``."""
    stats: dict[str, list[dict[str, Any]]] = {}
    alerts: dict[str, list[dict[str, Any]]] = {}
    state: dict[str, dict[str, int]] = {}
    wins: dict[str, dict[int, list[int]]] = {}
    for part in wl.lines:
        for ln in part:
            if ln.fate != "out":
                continue
            rec = ln.record
            assert rec is not None
            key, seq, value, ts = (
                str(rec["key"]),
                int(rec["seq"]),
                int(rec["value"]),
                int(rec["ts"]),
            )
            st = state.setdefault(key, {})
            last = st.get("last", -1)
            if seq - last != 1:
                alerts.setdefault(key, []).append({"key": key, "last": last, "seq": seq})
            st["last"] = seq
            st["count"] = st.get("count", 0) + 1
            st["sum"] = st.get("sum", 0) + value
            st["min"] = min(st.get("min", value), value)
            st["max"] = max(st.get("max", value), value)
            stats.setdefault(key, []).append(
                {"id": rec["id"], "key": key, "seq": seq, "value": value}
                | {k: st[k] for k in ("count", "sum", "min", "max")}
            )
            start = ts - ts % window_ms
            acc = wins.setdefault(key, {}).setdefault(start, [0, 0])
            acc[0] += 1
            acc[1] += value
    windows = {
        key: [
            {
                "key": key,
                "window_start_ms": s,
                "window_end_ms": s + window_ms,
                "n": n,
                "total": total,
            }
            for s, (n, total) in sorted(by_start.items())
        ]
        for key, by_start in wins.items()
    }
    return Expected(stats, alerts, windows, state)
