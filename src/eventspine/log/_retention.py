"""Retention and compaction rules shared by the log backends.

Both backends apply exactly these functions to their batches, so they
retain and compact identically. Rules, per partition, in this order, each
time :meth:`Log.enforce_retention` runs:

1. **Compaction** (compacted topics, only if records were appended since
   the last compaction): a record survives if it is the latest record of its
   key; a surviving tombstone is also dropped once its ``ts_ms`` is older
   than ``tombstone_retention`` before the partition's newest ``ts_ms``.
   Survivors keep their offsets (gaps, as in Kafka); empty batches vanish.
   The log start does not move.
2. **Time retention**: the oldest batches are deleted while the newest
   ``ts_ms`` of the batch is older than ``retention`` before the newest
   ``ts_ms`` of the partition (after compaction; event time, the wall
   clock plays no part). The batch holding the newest record stays.
3. **Size retention**: the oldest batches are deleted while the partition
   holds more than ``retention_bytes`` (batch body bytes); the newest batch
   always stays.

Retention deletes whole batches, as Kafka deletes whole segments: a record
may outlive its limit while it shares a batch with newer records. The log
start then moves just past the last deleted record.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from operator import attrgetter
from typing import NamedTuple

from eventspine.log.base import StoredRecord, TopicSpec

_KEY = attrgetter("key")
_OFFSET = attrgetter("offset")


class BatchSummary(NamedTuple):
    """What retention needs to know about one batch."""

    last_offset: int
    max_ts: int
    size: int


def latest_offsets(batches: Iterable[list[StoredRecord]]) -> dict[bytes | None, int]:
    """Return the offset of the latest record of every key, batches given oldest first."""
    latest: dict[bytes | None, int] = {}
    for records in batches:
        latest.update(zip(map(_KEY, records), map(_OFFSET, records), strict=True))
    return latest


def compact_batch(
    records: list[StoredRecord], latest: dict[bytes | None, int], tombstone_cutoff_ts: int
) -> list[StoredRecord] | None:
    """Return the survivors of ``records`` (``None`` if all survive).

    Args:
        records: one batch.
        latest: from :func:`latest_offsets` over the whole partition.
        tombstone_cutoff_ts: tombstones with ``ts_ms`` below this are dropped.
    """
    kept = [
        r
        for r in records
        if latest[r.key] == r.offset and (r.value is not None or r.ts_ms >= tombstone_cutoff_ts)
    ]
    return None if len(kept) == len(records) else kept


def expired_prefix(batches: Sequence[BatchSummary], spec: TopicSpec) -> int:
    """Return how many of the oldest ``batches`` retention deletes.

    Args:
        batches: the partition's batches, oldest first (after compaction).
        spec: the topic's settings.
    """
    count = 0
    retention_ms = spec.retention_ms
    if retention_ms is not None and batches:
        cutoff = max(b.max_ts for b in batches) - retention_ms
        while count < len(batches) and batches[count].max_ts < cutoff:
            count += 1
    if spec.retention_bytes is not None:
        total = sum(b.size for b in batches[count:])
        while count < len(batches) - 1 and total > spec.retention_bytes:
            total -= batches[count].size
            count += 1
    return count
