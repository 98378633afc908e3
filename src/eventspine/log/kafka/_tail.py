"""Following many partitions at once: the :class:`~eventspine.log.base.LogTail` of a ``KafkaLog``.

One ``read_committed`` consumer, assigned (never subscribed) to every
partition followed, so a standby worker keeps warm copies of dozens of
changelog partitions with one client and one fetch loop. ``poll`` takes
only what librdkafka has already fetched (``consume`` with a zero timeout),
so it never blocks the worker's loop. Unlike the readers behind
``KafkaLog.read`` it is never re-positioned, so it keeps librdkafka's
default long-poll wait at the end of a partition instead of the readers'
short one.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Final, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from eventspine.errors import LogError
from eventspine.log.base import TailRecord
from eventspine.log.kafka._config import KafkaSettings, make_client

__all__ = ["KafkaTail"]

_T = TypeVar("_T")

#: How long the broker holds a fetch at the end of a partition (librdkafka's default).
_FETCH_WAIT_MS = 500


#: Errors that make a followed partition's position meaningless (the copy must restart).
_PARTITION_GONE: Final = frozenset(
    {
        KafkaError._AUTO_OFFSET_RESET,
        KafkaError.OFFSET_OUT_OF_RANGE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_PARTITION,
        KafkaError._UNKNOWN_TOPIC,
    }
)


class KafkaTail:
    """Follows partitions from given offsets (see the module doc).

    Transient errors (a broker restarting, a timeout) are left to librdkafka, which
    keeps fetching from the same positions; only a fatal error or a partition whose
    position no longer exists raises ``LogError``.
    """

    def __init__(self, settings: KafkaSettings) -> None:
        config = settings.consumer(f"eventspine-tail-{uuid.uuid4().hex[:12]}")
        if "fetch.wait.max.ms" not in settings.client_config:  # the user's setting wins
            config["fetch.wait.max.ms"] = _FETCH_WAIT_MS
        self._consumer = make_client(Consumer, config)

    def assign(self, positions: Mapping[tuple[str, int], int]) -> None:
        if positions:
            tps = [TopicPartition(t, p, offset) for (t, p), offset in positions.items()]
            self._call("following", lambda: self._consumer.incremental_assign(tps))

    def unassign(self, partitions: Iterable[tuple[str, int]]) -> None:
        tps = [TopicPartition(t, p) for t, p in partitions]
        if tps:
            self._call("unfollowing", lambda: self._consumer.incremental_unassign(tps))

    def poll(self, max_records: int) -> list[TailRecord]:
        out: list[TailRecord] = []
        messages = self._call("polling", lambda: self._consumer.consume(max_records, 0))
        for message in messages:
            error = message.error()
            if error is None:
                out.append(
                    (
                        message.topic() or "",
                        message.partition() or 0,
                        message.offset() or 0,
                        message.key(),
                        message.value(),
                    )
                )
            elif error.fatal() or error.code() in _PARTITION_GONE:
                raise LogError(
                    f"following {message.topic()}[{message.partition()}] failed: {error.str()}"
                )
        return out

    def close(self) -> None:
        with contextlib.suppress(KafkaException, RuntimeError):
            self._consumer.close()

    @staticmethod
    def _call(what: str, call: Callable[[], _T]) -> _T:
        try:
            return call()
        except KafkaException as exc:
            raise LogError(f"{what} changelog partitions failed: {exc}") from exc
