"""Which partition a keyed record goes to: one rule for topic sinks and repartitioning.

Key ``k`` always lands in partition ``zlib.crc32(key_bytes(k)) % partitions``:
stable across runs, processes and machines, so a topic sink with ``key=``, the
CLI's ``produce --key-field`` and the runtime's internal repartition topics all
put one key in one partition.
"""

from __future__ import annotations

import zlib
from typing import Any

import msgspec

from eventspine.errors import SinkError

__all__ = ["key_bytes", "partition_for"]


def key_bytes(key: Any) -> bytes | None:
    """Return the bytes of a record key: UTF-8 for ``str``, as-is for bytes, else JSON.

    ``None`` stays ``None`` (unkeyed).

    Raises:
        SinkError: the key is not a str, bytes or JSON-able value.
    """
    if key is None:
        return None
    if isinstance(key, str):
        return key.encode("utf-8", "surrogatepass")
    if isinstance(key, bytes | bytearray | memoryview):
        return bytes(key)
    try:
        return msgspec.json.encode(key)
    except (TypeError, ValueError, OverflowError) as exc:
        raise SinkError(
            f"the record key {key!r} ({type(key).__name__}) cannot be encoded ({exc}); use a "
            f"str, bytes, number or other JSON-able key"
        ) from exc


def partition_for(key: bytes, partitions: int) -> int:
    """Return the partition of a keyed record: ``zlib.crc32(key) % partitions``."""
    return zlib.crc32(key) % partitions
