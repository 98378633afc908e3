"""Kafka transactions: the transactional producer of a ``KafkaLog`` and ``KafkaTransaction``.

``txn.append`` produces at once, inside the Kafka transaction (records
never wait in Python memory); ``txn.commit_positions`` collects positions,
sent with ``send_offsets_to_transaction`` just before the commit. On a
normal exit: flush, send offsets, ``commit_transaction``; on an exception:
``abort_transaction``. Then the block waits until the last stable offset of
every partition it wrote has passed its records, so a read right after the
block sees the outcome (the coordinator writes the markers just after
``commit_transaction`` returns).

Failpoints (see :mod:`eventspine.failpoints`) mark each step of a commit:
``kafka.txn.after_begin`` (``begin_transaction`` returned, nothing produced yet),
``kafka.txn.after_flush`` (every record produced and acknowledged, no offsets sent),
``kafka.txn.after_send_offsets`` (positions sent, ``commit_transaction`` not called),
``kafka.txn.after_commit`` (``commit_transaction`` returned, before the wait for the
last stable offset). A crash at any of them leaves the transaction open on the
brokers (aborted by ``transaction.timeout.ms``, or by the next ``init_transactions``
of the same transactional id) or committed; never half of it.

Failures (KAFKA.md): a fenced producer (another process took over the
configured transactional id) makes the log refuse further transactions (with a
generated id, a fence is a transaction the coordinator timed out: see
``TransactionalProducer.fence``); any other
error aborts the transaction, and if even the abort fails the producer is
dropped, and the next transaction re-initializes one, which aborts whatever
the broker still holds open for this transactional id.

Positions are committed with the metadata of a consumer created with
``group.id=group`` that never joins the group (a "simple" group commit:
generation -1). A full consumer-group member, with rebalances and fencing by
generation, comes with the scale-out runtime.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Final, Self, final

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from eventspine import failpoints
from eventspine.errors import LogError, TransactionAbortedError
from eventspine.log._checks import check_partition, check_positions
from eventspine.log.base import LogRecord, TopicSpec
from eventspine.log.kafka._config import LOGGER, KafkaSettings, make_client
from eventspine.log.kafka._group import KafkaGroupMember
from eventspine.log.kafka._records import Deliveries, produce_records, validate_records

__all__ = ["KafkaTransaction", "TransactionalProducer"]

_FENCED_CODES: Final = frozenset(
    {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}
)


class TransactionalProducer:
    """Owns the transactional producer of one log: creation, fencing, re-initialization.

    One transaction at a time: :attr:`lock` is held from ``__enter__`` to ``__exit__``.
    """

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self.transactional_id = settings.transactional_id or f"eventspine-{uuid.uuid4().hex}"
        self.lock = threading.Lock()
        self.fenced: str | None = None
        self._producer: Producer | None = None
        self._groups: dict[str, Consumer] = {}
        #: group -> the member this process joined it with (its metadata fences zombies)
        self.members: dict[str, KafkaGroupMember] = {}

    def producer(self) -> Producer:
        """Return the initialized producer, creating it if needed (under :attr:`lock`)."""
        if self.fenced is not None:
            raise LogError(self.fenced)
        if self._producer is None:
            producer = make_client(
                Producer, self.settings.transactional_producer(self.transactional_id)
            )
            try:
                producer.init_transactions(self.settings.timeout_s)
            except KafkaException as exc:
                raise LogError(
                    f"cannot initialize Kafka transactions for transactional id "
                    f"{self.transactional_id!r}: {exc}"
                ) from exc
            self._producer = producer
        return self._producer

    def group_metadata(self, group: str) -> Any:
        """Return the group metadata ``send_offsets_to_transaction`` needs for ``group``.

        A joined member's metadata carries its generation, so the broker refuses the
        offsets of a member that was replaced meanwhile.
        """
        member = self.members.get(group)
        if member is not None:
            return member.group_metadata()
        return self.group_consumer(group).consumer_group_metadata()

    def group_consumer(self, group: str) -> Consumer:
        """A consumer of ``group`` that never joins it (for offsets of unjoined groups)."""
        consumer = self._groups.get(group)
        if consumer is None:
            consumer = self._groups[group] = make_client(Consumer, self.settings.consumer(group))
        return consumer

    def fence(self, exc: KafkaException) -> LogError:
        """Remember that this producer was fenced; return the error to raise.

        Only a configured transactional id is fenced for good. No other process holds
        a generated one, so its fence is the coordinator aborting a transaction open
        longer than ``transaction_timeout_ms`` (it bumps the producer epoch; e.g. across
        a broker restart): the producer is dropped, the next transaction initializes a
        new one, and a worker restarts its tasks instead of being refused forever.
        """
        if self.settings.transactional_id is None:
            self.drop()
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError) and error.code() in _FENCED_CODES:
                return LogError(
                    f"the Kafka transaction coordinator fenced this log's producer ({exc}): "
                    f"it aborted a transaction open longer than transaction_timeout_ms, so "
                    f"nothing of it is visible; the next transaction initializes a new producer"
                )
            return LogError(
                f"this log's Kafka producer failed fatally ({exc}); nothing of its open "
                f"transaction is visible, and the next transaction initializes a new producer"
            )
        self.fenced = (
            f"another process with the same Kafka transactional id {self.transactional_id!r} "
            f"took over: this log was fenced ({exc}); its transaction was not committed. Run "
            f"one process per transactional id, and open a new log to take over again"
        )
        self.drop()
        return LogError(self.fenced)

    def drop(self) -> None:
        """Forget the producer; the next transaction creates and initializes a new one."""
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(0)  # type: ignore[call-arg]  # close(timeout) exists since 2.x
            except KafkaException as exc:  # a fenced (fatal) producer reports it again here
                LOGGER.debug("closing the transactional producer: %s", exc)

    def close(self) -> None:
        """Drop the producer and the group consumers."""
        self.drop()
        groups, self._groups = self._groups, {}
        for consumer in groups.values():
            consumer.close()


def _is_fenced(exc: KafkaException) -> bool:
    error = exc.args[0] if exc.args else None
    return isinstance(error, KafkaError) and (error.code() in _FENCED_CODES or error.fatal())


_NEW: Final = "new"
_OPEN: Final = "open"
_DONE: Final = "done"


@final
class KafkaTransaction:
    """A :class:`~eventspine.log.base.LogTransaction` that is a Kafka transaction.

    Args:
        owner: the log's transactional producer.
        lookup: returns a topic's spec or raises ``TopicNotFoundError``.
        await_stable: waits until the LSO of each ``(topic, partition)`` passes an offset.
    """

    __slots__ = ("_await", "_deliveries", "_lookup", "_owner", "_positions", "_producer", "_state")

    def __init__(
        self,
        owner: TransactionalProducer,
        lookup: Callable[[str], TopicSpec],
        await_stable: Callable[[Mapping[tuple[str, int], int]], None],
    ) -> None:
        self._owner = owner
        self._lookup = lookup
        self._await = await_stable
        self._deliveries = Deliveries()
        self._positions: dict[str, dict[str, dict[int, int]]] = {}
        self._producer: Producer | None = None
        self._state: str = _NEW

    def append(self, topic: str, partition: int, records: Sequence[LogRecord]) -> None:
        """Produce ``records`` to ``topic[partition]`` inside the transaction.

        Raises:
            TopicNotFoundError: the topic does not exist.
            LogError: the partition does not exist, a record is invalid (nothing of this
                call is produced), or the transaction is not open.
        """
        producer = self._open_producer()
        spec = self._lookup(topic)
        check_partition(spec, partition)
        if records:
            validate_records(spec, partition, records)
            timeout = self._owner.settings.timeout_s
            try:
                produce_records(
                    producer,
                    topic,
                    partition,
                    records,
                    self._deliveries,
                    timeout,
                    report_each=False,
                )
            except LogError as exc:
                if isinstance(exc.__cause__, KafkaException) and _is_fenced(exc.__cause__):
                    raise self._owner.fence(exc.__cause__) from exc.__cause__
                raise

    def commit_positions(self, group: str, topic: str, positions: Mapping[int, int]) -> None:
        """Commit ``group``'s next offsets with the transaction (see ``LogTransaction``)."""
        self._open_producer()
        checked = check_positions(self._lookup(topic), group, positions)
        self._positions.setdefault(group, {}).setdefault(topic, {}).update(checked)

    def _open_producer(self) -> Producer:
        if self._state != _OPEN or self._producer is None:
            raise LogError(
                "this transaction is not open: use it inside `with log.transaction() as txn:`, "
                "and only once"
            )
        return self._producer

    def __enter__(self) -> Self:
        if self._state != _NEW:
            raise LogError("a transaction can be entered only once; call log.transaction() again")
        wait = self._owner.settings.transaction_timeout_ms / 1000
        if not self._owner.lock.acquire(timeout=wait):
            raise LogError(
                f"another transaction of this log stayed open for {wait:.0f} s: a KafkaLog runs "
                f"one transaction at a time (nested transactions are not supported)"
            )
        try:
            producer = self._owner.producer()
            producer.begin_transaction()
        except KafkaException as exc:
            self._owner.lock.release()
            raise LogError(f"cannot begin a Kafka transaction: {exc}") from exc
        except BaseException:
            self._owner.lock.release()
            raise
        self._producer = producer
        self._state = _OPEN
        failpoints.hit("kafka.txn.after_begin")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._state != _OPEN:
            return
        self._state = _DONE
        try:
            if exc_type is None:
                self._commit()
            else:
                self._abort(None)
        finally:
            self._producer = None
            self._owner.lock.release()

    def _commit(self) -> None:
        producer = self._producer
        assert producer is not None
        timeout = self._owner.settings.timeout_s
        try:
            if producer.flush(timeout) > 0:
                raise LogError(f"records were not acknowledged within {timeout:.0f} s")
            self._deliveries.check("committing a Kafka transaction")
            failpoints.hit("kafka.txn.after_flush")
            for group, topics in self._positions.items():
                offsets = [
                    TopicPartition(topic, partition, offset)
                    for topic, positions in topics.items()
                    for partition, offset in positions.items()
                ]
                metadata = self._owner.group_metadata(group)
                producer.send_offsets_to_transaction(offsets, metadata, timeout)
            failpoints.hit("kafka.txn.after_send_offsets")
            producer.commit_transaction(timeout)
        except KafkaException as error:
            if _is_fenced(error):
                raise self._owner.fence(error) from error
            self._abort(error)
        except LogError as error:
            self._abort(error)
        failpoints.hit("kafka.txn.after_commit")
        self._await(self._deliveries.last)

    def _abort(self, cause: BaseException | None) -> None:
        """Abort; with a ``cause`` (a failed commit) raise ``LogError`` saying what happened."""
        producer = self._producer
        assert producer is not None
        if self._owner.fenced is not None:  # an append found out; the producer is gone
            if cause is not None:
                raise LogError(self._owner.fenced) from cause
            return
        try:
            producer.abort_transaction(self._owner.settings.timeout_s)
        except KafkaException as error:
            if _is_fenced(error):
                raise self._owner.fence(error) from error
            # The broker still holds the transaction: a new producer's init_transactions
            # aborts it (KAFKA.md: on an indefinite error abort and re-init).
            self._owner.drop()
            LOGGER.warning("aborting a Kafka transaction failed (%s); re-initializing", error)
            if cause is not None:
                raise LogError(
                    f"committing a Kafka transaction failed ({cause}) and aborting it failed "
                    f"too ({error}): its outcome is unknown (all of it or none of it is "
                    f"visible); the next transaction re-initializes the producer"
                ) from cause
            return
        # abort_transaction purged the queued records and waited for those in flight: serve
        # their delivery reports, then wait until the abort markers passed the ones stored.
        producer.poll(0)
        self._await(self._deliveries.last)
        if cause is not None:
            raise TransactionAbortedError(
                f"committing a Kafka transaction failed: {cause}; it was aborted, so nothing "
                f"of it is visible"
            ) from cause
