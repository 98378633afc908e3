"""In-memory sources and sinks, for tests and for data already in Python."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from operator import itemgetter
from typing import Any, final

from eventspine.dataflow.ports import Chunk, OpenContext, SourceReader
from eventspine.records import Batch

__all__ = ["CollectSink", "MemorySource"]


@final
class MemorySource:
    """A bounded source over records held in memory.

    Args:
        records: the records (dicts or ``es.Event`` instances), in arrival order.
        partitions: split the records round-robin into this many partitions
            (each keeps the relative order of its records).
        record_type: the type of the records (default: ``dict``, or the type of the
            first record when it is an ``es.Event``).
    """

    bounded = True

    def __init__(
        self,
        records: Iterable[Any],
        *,
        partitions: int = 1,
        record_type: type | None = None,
    ) -> None:
        self.records = list(records)
        if partitions < 1:
            raise ValueError("partitions must be at least 1")
        self.partitions = partitions
        if record_type is None:
            record_type = type(self.records[0]) if self.records else dict
            if not isinstance(self.records[0] if self.records else {}, dict) and not hasattr(
                record_type, "__struct_fields__"
            ):
                record_type = dict
        self.record_type: type = record_type

    def open(self, context: OpenContext) -> Sequence[SourceReader]:
        """Return one reader per partition."""
        n = self.partitions
        return [
            _MemoryReader(f"{context.step}/{i}", self.records[i::n], self.record_type)
            for i in range(n)
        ]

    def __repr__(self) -> str:
        return f"MemorySource({len(self.records)} records, partitions={self.partitions})"


class _MemoryReader:
    def __init__(self, partition: str, records: list[Any], record_type: type) -> None:
        self.partition = partition
        self._records = records
        self._pos = 0
        self._type = record_type

    def poll(self, max_records: int, columnar: bool) -> Chunk | None:
        if self._pos >= len(self._records):
            return None
        start = self._pos
        part = self._records[start : start + max_records]
        self._pos += len(part)
        if columnar and self._type is dict and part:
            return Chunk(_columns(part), start, self._pos)
        return Chunk(part, start, self._pos)

    def seek(self, offset: int) -> None:
        self._pos = offset

    def close(self) -> None:
        pass


def _columns(rows: list[dict[str, Any]]) -> Any:
    """Build a frame from dict rows column by column (much faster than row by row)."""
    import polars as pl

    names = list(rows[0])
    try:
        # strict: a column mixing types (1 and "a") is refused, not turned into text.
        return pl.DataFrame({n: list(map(itemgetter(n), rows)) for n in names}, strict=True)
    except (KeyError, TypeError, pl.exceptions.PolarsError):
        return rows


@final
class CollectSink:
    """A sink that keeps every record in a list (``sink.records``), for tests.

    Records are kept as Python objects; the event time of each is in ``sink.timestamps``.
    """

    columnar = False

    def __init__(self) -> None:
        self.records: list[Any] = []
        self.timestamps: list[int] = []

    def open(self, context: OpenContext) -> _CollectWriter:
        """Return a writer appending to this sink's lists."""
        return _CollectWriter(self)

    def __repr__(self) -> str:
        return f"CollectSink({len(self.records)} records)"


class _CollectWriter:
    def __init__(self, sink: CollectSink) -> None:
        self._sink = sink

    def write(self, batch: Batch) -> None:
        self._sink.records.extend(batch.rows)
        self._sink.timestamps.extend(batch.ts)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass
