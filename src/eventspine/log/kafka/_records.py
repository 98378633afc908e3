"""Records to Kafka messages and back, and the delivery reports of produced messages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from eventspine.errors import LogError
from eventspine.log._codec import check_records
from eventspine.log.base import LogRecord, StoredRecord, TopicSpec
from eventspine.log.kafka._config import TS_HEADER

__all__ = ["Deliveries", "produce_records", "stored_record", "stored_ts", "validate_records"]

_ZERO = b"0"


def validate_records(spec: TopicSpec, partition: int, records: Sequence[LogRecord]) -> None:
    """Refuse invalid records before anything is produced, with the words of every backend.

    Raises:
        LogError: a record is invalid (the message names its index and field), or uses
            the reserved header name :data:`TS_HEADER`.
    """
    where = f"{spec.name}[{partition}]"
    check_records(where, records, keyed=spec.compacted)
    for index, record in enumerate(records):
        if record.headers and any(name == TS_HEADER for name, _ in record.headers):
            raise LogError(
                f"record {index} appended to {where} has a header named {TS_HEADER!r}, which "
                f"the Kafka log reserves for ts_ms == 0; rename it. Nothing was written"
            )


class Deliveries:
    """Collects the delivery reports of produced messages.

    Attributes:
        first: the offset of the first delivered message per ``(topic, partition)``.
        last: the offset of the last delivered message per ``(topic, partition)``.
        errors: delivery errors, in report order.
    """

    __slots__ = ("errors", "first", "last")

    def __init__(self) -> None:
        self.first: dict[tuple[str, int], int] = {}
        self.last: dict[tuple[str, int], int] = {}
        self.errors: list[KafkaError] = []

    def __call__(self, error: KafkaError | None, message: Message) -> None:
        """The ``on_delivery`` callback (runs inside ``poll``/``flush`` of the producer)."""
        if error is not None:
            self.errors.append(error)
            return
        key = (message.topic() or "", message.partition() or 0)
        offset = message.offset() or 0
        if key not in self.first:
            self.first[key] = offset
        self.last[key] = offset

    def check(self, what: str) -> None:
        """Raise ``LogError`` naming the first delivery error, if any."""
        if self.errors:
            first = self.errors[0]
            raise LogError(
                f"{what}: Kafka did not accept {len(self.errors)} record(s): {first.str()} "
                f"({first.name()})"
            )


def produce_records(
    producer: Producer,
    topic: str,
    partition: int,
    records: Sequence[LogRecord],
    deliveries: Deliveries,
    timeout: float,
    *,
    report_each: bool = True,
) -> None:
    """Hand ``records`` (already validated) to ``producer`` for ``topic[partition]``.

    Waits (serving delivery reports) while the producer's queue is full.
    ``report_each=False`` asks for the delivery report of the last record only
    (about 1 us of Python saved per record): for a transaction, whose commit fails
    if any of its records failed (librdkafka puts it in the abortable state), and
    which needs only the last offset per partition (``Deliveries.last``).

    Raises:
        LogError: the producer refused a message (for example it is fenced or closed).
    """
    produce = producer.produce
    last = records[-1] if records else None
    for record in records:
        report = deliveries if report_each or record is last else None
        ts = record.ts_ms
        headers = record.headers
        if ts == 0:
            ts = 1
            headers = (*headers, (TS_HEADER, _ZERO))
        while True:
            try:
                produce(
                    topic,
                    record.value,
                    record.key,
                    partition,
                    on_delivery=report,
                    timestamp=ts,
                    headers=list(headers) if headers else None,
                )
                break
            except BufferError:
                # librdkafka's queue is full: serve delivery reports until there is room.
                producer.poll(min(timeout, 0.1))
            except KafkaException as exc:
                raise LogError(f"producing to {topic}[{partition}] failed: {exc}") from exc


def stored_record(message: Message) -> StoredRecord:
    """Return the :class:`StoredRecord` a consumed Kafka message holds."""
    # Without deserializers librdkafka gives bytes (None for null) for keys, values
    # and header values, and a list of header pairs.
    headers = cast("list[tuple[str, bytes | None]] | None", message.headers())
    ts = message.timestamp()[1]
    if headers:
        if headers[-1][0] == TS_HEADER:
            ts = int(headers[-1][1] or _ZERO)
            headers = headers[:-1]
        stored_headers = tuple((name, value or b"") for name, value in headers)
    else:
        stored_headers = ()
    return StoredRecord(
        message.key(),
        message.value(),
        ts,
        stored_headers,
        offset=message.offset() or 0,
    )


def stored_ts(message: Message) -> int | None:
    """Return the ``ts_ms`` a message's reserved header holds (see ``produce_records``), if any."""
    headers = cast("list[tuple[str, bytes | None]] | None", message.headers())
    if headers and headers[-1][0] == TS_HEADER:
        return int(headers[-1][1] or _ZERO)
    return None
