"""Consumer-group membership: which partitions (tasks) this process owns.

A worker of a partitioned pipeline joins the pipeline's consumer group with a
:class:`KafkaGroupMember`, subscribed to one *anchor* topic (the pipeline's
checkpoints topic, which has one partition per task). Kafka's cooperative-sticky
assignor then spreads the tasks over the live workers and moves as few as
possible when one joins or leaves. The member never hands out records: it pauses
every partition it is assigned, so ``poll`` only serves the group protocol, and
the worker reads its sources through the log.

Callbacks run inside :meth:`KafkaGroupMember.poll`, in the worker's thread,
between two loop iterations:

* ``on_assign(partitions)``: tasks to start (restore state, then run).
* ``on_revoke(partitions)``: tasks to give up; the worker checkpoints them
  *before returning*, so the next owner resumes exactly where this one stopped.
* ``on_lost(partitions)``: tasks taken away without a chance to commit (the
  session expired, or the loop did not poll within ``max.poll.interval.ms``); the
  worker drops them without committing.

The member's ``consumer_group_metadata()`` (generation and member id) goes into
every ``send_offsets_to_transaction``: a worker that lost its partitions while
paused (a zombie) can no longer commit a transaction, the broker refuses it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, final

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from eventspine.errors import LogError
from eventspine.log.kafka._config import LOGGER, KafkaSettings, make_client

__all__ = ["KafkaGroupMember"]

Callback = Callable[[list[int]], None]


@final
class KafkaGroupMember:
    """One process's membership in a consumer group (see the module doc).

    Args:
        settings: the log's settings.
        group: the consumer group (the pipeline name).
        anchor: the topic whose partitions are the tasks.
        on_assign, on_revoke, on_lost: called with partition numbers (see the module doc).
        session_timeout_ms: how long the group waits for a silent member before
            moving its tasks (the failover time is about this plus the restore).
    """

    def __init__(
        self,
        settings: KafkaSettings,
        group: str,
        anchor: str,
        *,
        on_assign: Callback,
        on_revoke: Callback,
        on_lost: Callback,
        session_timeout_ms: int = 6000,
    ) -> None:
        self.group = group
        self.anchor = anchor
        self._on_assign = on_assign
        self._on_revoke = on_revoke
        self._on_lost = on_lost
        self._timeout = settings.timeout_s
        config: dict[str, Any] = {
            **settings.base(),
            "group.id": group,
            "partition.assignment.strategy": "cooperative-sticky",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "session.timeout.ms": session_timeout_ms,
            "heartbeat.interval.ms": max(100, session_timeout_ms // 6),
            # A worker loop that does not serve its member this long (a step blocking on
            # user code) leaves the group: its tasks move, its next commit is fenced.
            "max.poll.interval.ms": max(settings.max_poll_interval_ms, session_timeout_ms),
            "fetch.wait.max.ms": 50,
        }
        self._consumer: Consumer = make_client(Consumer, config)
        self.owned: set[int] = set()
        self.rebalances = 0
        #: called when the member leaves (the log forgets it as its group's member)
        self.on_close: Callable[[], None] | None = None
        self._closed = False
        try:
            self._consumer.subscribe(
                [anchor], on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._lost
            )
        except KafkaException as exc:
            raise LogError(f"cannot join consumer group {group!r}: {exc}") from exc

    # -- callbacks (run inside poll) -----------------------------------------------------
    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.rebalances += 1
        new = sorted(tp.partition for tp in partitions)
        if partitions:
            # Assign now (instead of after the callback) so the partitions can be paused:
            # the member only holds the membership, records are read through the log.
            consumer.incremental_assign(partitions)
            consumer.pause(partitions)
        self.owned.update(new)
        if new:
            LOGGER.info("group %s: assigned task(s) %s", self.group, new)
            self._on_assign(new)

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.rebalances += 1
        gone = sorted(tp.partition for tp in partitions if tp.partition in self.owned)
        if gone:
            LOGGER.info("group %s: revoking task(s) %s", self.group, gone)
            self._on_revoke(gone)
        self.owned.difference_update(gone)

    def _lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.rebalances += 1
        gone = sorted(tp.partition for tp in partitions if tp.partition in self.owned)
        if gone:
            LOGGER.warning(
                "group %s: lost task(s) %s (out of the group: session expired or "
                "max.poll.interval.ms exceeded)",
                self.group,
                gone,
            )
            self._on_lost(gone)
        self.owned.difference_update(gone)

    # -- the member's API ----------------------------------------------------------------
    def poll(self, timeout_s: float = 0.0) -> None:
        """Serve the group protocol (heartbeats, rebalances); run the callbacks.

        Raises:
            LogError: the consumer failed fatally.
        """
        try:
            message = self._consumer.poll(timeout_s)
        except KafkaException as exc:
            raise LogError(f"consumer group {self.group!r}: {exc}") from exc
        error = None if message is None else message.error()
        if error is None or error.code() == KafkaError._PARTITION_EOF:
            return
        if error.code() == KafkaError.INVALID_SESSION_TIMEOUT:
            raise LogError(
                f"the brokers refuse session_timeout_ms for consumer group {self.group!r} "
                f"({error.str()}): it must lie between the brokers' group.min.session.timeout.ms "
                f"(default 6000) and group.max.session.timeout.ms; change it in the log URL"
            )
        if error.fatal():
            raise LogError(f"consumer group {self.group!r}: {error.str()}")
        LOGGER.warning("group %s: %s", self.group, error.str())

    def group_metadata(self) -> Any:
        """The member's group metadata, for ``send_offsets_to_transaction``."""
        return self._consumer.consumer_group_metadata()

    def commit(self, offsets: Mapping[str, Mapping[int, int]]) -> None:
        """Commit next offsets outside a transaction (at-least-once checkpoints).

        Raises:
            LogError: the broker refused the commit (for example this member was
                removed from the group).
        """
        tps = [TopicPartition(t, p, o) for t, ps in offsets.items() for p, o in ps.items()]
        if not tps:
            return
        try:
            self._consumer.commit(offsets=tps, asynchronous=False)
        except KafkaException as exc:
            raise LogError(f"committing positions of group {self.group!r}: {exc}") from exc

    def close(self) -> None:
        """Leave the group (the revoke callback runs first); idempotent."""
        if self._closed:
            return
        self._closed = True
        if self.on_close is not None:
            self.on_close()
        try:
            self._consumer.close()
        except (KafkaException, RuntimeError) as exc:
            LOGGER.debug("closing the member of group %s: %s", self.group, exc)
