"""An at-least-once checkpoint batch on Kafka: plain appends, then offsets.

:meth:`KafkaLog.non_atomic_transaction` returns a :class:`KafkaBatch`. It has
the shape of a :class:`~eventspine.log.base.LogTransaction` but is not atomic:
records are produced with the idempotent producer as they are appended, and at
the end of the ``with`` block the producer is flushed (every record
acknowledged by all in-sync replicas) *before* the positions are committed. A
crash in between leaves the records without the positions past their inputs:
they are produced again after the restart (at-least-once). No transaction
markers, no waiting for the last stable offset: this is the throughput mode.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Self, final

from eventspine.errors import LogError
from eventspine.log._checks import check_partition, check_positions
from eventspine.log.base import LogRecord, TopicSpec
from eventspine.log.kafka._records import Deliveries, validate_records

__all__ = ["KafkaBatch"]

Produce = Callable[[str, int, Sequence[LogRecord], Deliveries], None]
Flush = Callable[[], None]
Commit = Callable[[str, Mapping[str, Mapping[int, int]]], None]


@final
class KafkaBatch:
    """Appends produced at once; positions committed after every record is acknowledged.

    Args:
        lookup: returns a topic's spec or raises ``TopicNotFoundError``.
        produce: hands records to the idempotent producer.
        flush: waits until every produced record is acknowledged.
        commit: commits ``group``'s next offsets (outside any transaction).
    """

    __slots__ = (
        "_commit",
        "_deliveries",
        "_entered",
        "_flush",
        "_flushed",
        "_lookup",
        "_open",
        "_positions",
        "_produce",
    )

    def __init__(
        self, lookup: Callable[[str], TopicSpec], produce: Produce, flush: Flush, commit: Commit
    ) -> None:
        self._lookup = lookup
        self._produce = produce
        self._flush = flush
        self._commit = commit
        self._deliveries = Deliveries()
        self._positions: dict[str, dict[str, dict[int, int]]] = {}
        self._open = False
        self._entered = False
        self._flushed = False

    def append(self, topic: str, partition: int, records: Sequence[LogRecord]) -> None:
        """Produce ``records`` to ``topic[partition]`` now (acknowledged by the block's end)."""
        self._check()
        self._flushed = False
        spec = self._lookup(topic)
        check_partition(spec, partition)
        if records:
            validate_records(spec, partition, records)
            self._produce(topic, partition, records, self._deliveries)

    def commit_positions(self, group: str, topic: str, positions: Mapping[int, int]) -> None:
        """Commit ``group``'s next offsets after the records (see the module doc).

        After a :meth:`barrier` they are committed at once: the commit is the one step the
        group fences, so a worker that lost the group fails here, before it appends a
        checkpoint record; otherwise at the end of the block.
        """
        self._check()
        checked = check_positions(self._lookup(topic), group, positions)
        if self._flushed:
            self._commit(group, {topic: checked})
            return
        self._positions.setdefault(group, {}).setdefault(topic, {}).update(checked)

    def barrier(self) -> None:
        """Wait until everything appended so far is acknowledged.

        The checkpoint record is appended after this, so it never exists without
        the records it covers.

        Raises:
            LogError: a record was refused or not acknowledged in time.
        """
        self._check()
        self._settle()

    def _settle(self) -> None:
        self._flush()
        self._deliveries.check("appending a checkpoint's records")
        self._flushed = True

    def _check(self) -> None:
        if not self._open:
            raise LogError("this batch is not open: use it inside `with log.non_atomic_...():`")

    def __enter__(self) -> Self:
        if self._open or self._entered:
            raise LogError("a batch can be entered only once")
        self._open = self._entered = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._open = False
        if exc_type is not None:
            return  # what was produced stays produced: at-least-once
        self._settle()
        for group, topics in self._positions.items():
            self._commit(group, topics)
