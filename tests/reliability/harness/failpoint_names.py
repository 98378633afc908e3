"""The named failpoints of the checkpoint protocol and of the SQLite log (for coverage)."""

from __future__ import annotations

import re

import eventspine.log.sqlite_file as sqlite_file
import eventspine.runtime.checkpoint as checkpoint

__all__ = ["CHECKPOINT_FAILPOINTS", "LOG_FAILPOINTS", "hits"]

_NAME = re.compile(r"``((?:ckpt|recovery|log\.sqlite)\.[a-z_]+)``")


def _names(doc: str | None) -> tuple[str, ...]:
    return tuple(dict.fromkeys(_NAME.findall(doc or "")))


#: Every failpoint named in ``eventspine.runtime.checkpoint``'s docstring.
CHECKPOINT_FAILPOINTS = _names(checkpoint.__doc__)
#: The failpoints of the SQLite log's file layer (T4).
LOG_FAILPOINTS = _names(sqlite_file.__doc__)


def hits(path: object) -> dict[str, int]:
    """Count the lines of an ``EVENTSPINE_FAILPOINTS_LOG`` file by failpoint name."""
    out: dict[str, int] = {}
    with open(str(path), encoding="utf-8") as f:
        for line in f:
            name = line.strip()
            if name:
                out[name] = out.get(name, 0) + 1
    return out
