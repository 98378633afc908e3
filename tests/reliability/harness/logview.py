"""Reading a finished run's log: last checkpoint, keyed state, topic records, dead letters.

All readers open the log, read, and close it; call them only while no worker runs.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from eventspine.log import Log, open_log, read_all
from eventspine.runtime.checkpoint import CheckpointMeta, names, read_last_meta
from eventspine.serde.state import decode_state

__all__ = ["LogView", "integrity_check"]

PIPELINE = "reliability"


def integrity_check(db: Path) -> str:
    """``PRAGMA integrity_check`` of the log file (``"ok"`` when healthy)."""
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("PRAGMA integrity_check").fetchall()
    except sqlite3.DatabaseError as exc:
        return f"error: {exc}"
    finally:
        conn.close()
    return "; ".join(str(r[0]) for r in rows)


def _read_all(log: Log, topic: str) -> list[Any]:
    info = log.topics().get(topic)
    if info is None:
        return []
    return [rec for _, rec in read_all(log, info)]


class LogView:
    """A snapshot of what a run committed to its log."""

    def __init__(self, db: Path) -> None:
        log = open_log(f"sqlite:///{db}")
        try:
            self.meta: CheckpointMeta | None = read_last_meta(log, PIPELINE)
            self.state = self._stats_state(log)
            self.topic_records = [
                json.loads(r.value) for r in _read_all(log, "stats-out") if r.value is not None
            ]
            self.has_topic = "stats-out" in log.topics()
            self.dead_letters = [
                json.loads(r.value) for r in _read_all(log, "dlq") if r.value is not None
            ]
        finally:
            log.close()

    @staticmethod
    def _stats_state(log: Log, step: str = "stats") -> dict[str, dict[str, int]]:
        latest: dict[bytes, bytes | None] = {}
        for rec in _read_all(log, names.changelog(PIPELINE, step)):
            latest[rec.key] = rec.value
        state: dict[str, dict[str, int]] = {}
        for k, v in latest.items():
            if v is None:
                continue
            key, value = decode_state(k, step=step), decode_state(v, step=step)
            if isinstance(key, tuple) and len(key) == 2 and key[0] == "key":
                st = value[0] if isinstance(value, tuple) else value
                if st:
                    state[str(key[1])] = dict(st)
        return state

    def positions(self) -> dict[str, int]:
        """The input positions (next line) per partition of the last checkpoint."""
        if self.meta is None:
            return {}
        return dict(self.meta.positions.get("input", {}))
