"""The named failpoints of the checkpoint protocol, the SQLite log and Kafka transactions."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import eventspine.log as log_pkg
import eventspine.log.sqlite_file as sqlite_file
import eventspine.runtime.checkpoint as checkpoint

__all__ = ["CHECKPOINT_FAILPOINTS", "KAFKA_TXN_FAILPOINTS", "LOG_FAILPOINTS", "hits"]

_NAME = re.compile(r"``((?:ckpt|recovery|log\.sqlite|kafka\.txn|kafka\.batch)\.[a-z_]+)``")


def _names(doc: str | None) -> tuple[str, ...]:
    return tuple(dict.fromkeys(_NAME.findall(doc or "")))


#: Every failpoint named in ``eventspine.runtime.checkpoint``'s docstring.
CHECKPOINT_FAILPOINTS = _names(checkpoint.__doc__)
#: The failpoints of the SQLite log's file layer (T4).
LOG_FAILPOINTS = _names(sqlite_file.__doc__)
#: The failpoints of a Kafka checkpoint transaction (``eventspine.log.kafka._txn``). Its
#: docstring is parsed from the source: importing the module needs confluent-kafka.
KAFKA_TXN_FAILPOINTS = _names(
    ast.get_docstring(
        ast.parse((Path(log_pkg.__file__).parent / "kafka" / "_txn.py").read_text("utf-8"))
    )
)


def hits(path: object) -> dict[str, int]:
    """Count the lines of an ``EVENTSPINE_FAILPOINTS_LOG`` file by failpoint name."""
    out: dict[str, int] = {}
    with open(str(path), encoding="utf-8") as f:
        for line in f:
            name = line.strip()
            if name:
                out[name] = out.get(name, 0) + 1
    return out
