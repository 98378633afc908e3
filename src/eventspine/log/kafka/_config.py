"""Settings of a ``KafkaLog``: the URL form, and the librdkafka configs made from them.

Also the one place that knows how a :class:`~eventspine.log.base.LogRecord`
maps onto a Kafka message (the ``ts_ms == 0`` header, see :data:`TS_HEADER`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

from confluent_kafka import KafkaException

from eventspine.errors import ConfigError

__all__ = ["TS_HEADER", "KafkaSettings", "make_client", "settings_from_url"]

_C = TypeVar("_C")

#: librdkafka replaces a produce timestamp of 0 by the current time, so a record with
#: ``ts_ms == 0`` is sent with Kafka timestamp 1 and this header (value ``b"0"``), which
#: the reader removes again. Appending a record with a header of this name is refused.
TS_HEADER = "eventspine.ts"

LOGGER = logging.getLogger("eventspine.log.kafka")

_CLIENT_PREFIX = "kafka."
_TOPIC_PREFIX = "topic."
_INT_OPTIONS = {
    "replication_factor": 1,
    "transaction_timeout_ms": 1,
    "request_timeout_ms": 1,
    "max_readers": 1,
    "session_timeout_ms": 1,
    "max_poll_interval_ms": 1,
    "fetch_buffer_kb": 1,
    "produce_buffer_kb": 1,
}
_USAGE = (
    "kafka://host:port[,host:port...]?option=value; options: replication_factor, "
    "transactional_id, transaction_timeout_ms, request_timeout_ms, max_readers, "
    "session_timeout_ms, max_poll_interval_ms, fetch_buffer_kb, produce_buffer_kb, "
    "kafka.<librdkafka setting> (e.g. kafka.security.protocol=SASL_SSL) and "
    "topic.<topic config> (e.g. topic.min.insync.replicas=2)"
)


@dataclass(frozen=True)
class KafkaSettings:
    """Everything a ``KafkaLog`` is configured with (see ``KafkaLog`` for the meaning).

    Raises:
        ConfigError: a value is out of range or two timeouts do not fit together.
    """

    bootstrap: str
    replication_factor: int = 1
    transactional_id: str | None = None
    transaction_timeout_ms: int = 15_000
    request_timeout_ms: int = 10_000
    max_readers: int = 8
    session_timeout_ms: int = 6_000
    max_poll_interval_ms: int = 300_000
    fetch_buffer_kb: int = 16_384
    produce_buffer_kb: int = 65_536
    client_config: Mapping[str, str] = field(default_factory=dict)
    topic_config: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.bootstrap or not isinstance(self.bootstrap, str):
            raise ConfigError(
                f"Kafka bootstrap servers must be 'host:port[,...]', not {self.bootstrap!r}"
            )
        for name in _INT_OPTIONS:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"KafkaLog {name} must be an int >= 1, not {value!r}")
        if self.request_timeout_ms >= self.transaction_timeout_ms:
            raise ConfigError(
                f"KafkaLog request_timeout_ms ({self.request_timeout_ms}) must be below "
                f"transaction_timeout_ms ({self.transaction_timeout_ms}): a stuck request must "
                f"fail before the broker aborts the transaction under it"
            )
        if self.max_poll_interval_ms < self.session_timeout_ms:
            raise ConfigError(
                f"KafkaLog max_poll_interval_ms ({self.max_poll_interval_ms}) must be at least "
                f"session_timeout_ms ({self.session_timeout_ms}) (a librdkafka rule)"
            )
        if self.transactional_id == "":
            raise ConfigError("KafkaLog transactional_id must not be empty (None generates one)")

    @property
    def timeout_s(self) -> float:
        """The client request timeout in seconds (bounds every blocking call)."""
        return self.request_timeout_ms / 1000

    def base(self) -> dict[str, Any]:
        """Return the config every client shares (user ``kafka.*`` settings win)."""
        return {
            "bootstrap.servers": self.bootstrap,
            "client.id": "eventspine",
            "socket.timeout.ms": self.request_timeout_ms,
            "logger": LOGGER,
            # No re-bootstrap when every known broker is unreachable (librdkafka's default
            # since 2.10 starts one ~0.5 s into a network cut). After it, the transaction
            # coordinator is "decommissioned" and send_offsets_to_transaction hangs past its
            # timeout once the network heals (librdkafka #5511, #5456): T8 in
            # tests/scaleout/test_kafka_network.py. Without it the clients simply reconnect
            # to the brokers they know; set kafka.metadata.recovery.strategy=rebootstrap if
            # every broker's address can change while a worker runs.
            "metadata.recovery.strategy": "none",
            # Reconnect within 1 s once a broker is back (Kafka's Java clients' default;
            # librdkafka backs off up to 10 s, which a healed network cut waited out).
            "reconnect.backoff.max.ms": 1000,
            **self.client_config,
        }

    def producer(self) -> dict[str, Any]:
        """Config of the idempotent producer behind ``Log.append``."""
        return {
            **self.base(),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "message.timeout.ms": self.request_timeout_ms,
            "request.timeout.ms": self.request_timeout_ms,
            # Bounded memory while the broker is slow or unreachable: a full queue makes
            # ``produce`` wait (serving delivery reports) instead of growing.
            "queue.buffering.max.kbytes": self.produce_buffer_kb,
            **self._user("queue.buffering.max.kbytes"),
        }

    def transactional_producer(self, transactional_id: str) -> dict[str, Any]:
        """Config of the transactional producer behind ``Log.transaction``."""
        return {
            **self.producer(),
            "transactional.id": transactional_id,
            "transaction.timeout.ms": self.transaction_timeout_ms,
        }

    def consumer(self, group: str) -> dict[str, Any]:
        """Config of an assign-only ``read_committed`` consumer (never joins ``group``)."""
        return {
            **self.base(),
            "group.id": group,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "error",
            # A fetch long-polls the broker this long at the end of a partition, and a
            # re-positioned read or an offsets request on the same connection waits for it
            # (librdkafka's default 500 ms made every seek cost 0.5-1 s).
            "fetch.wait.max.ms": 50,
            # Backpressure: librdkafka stops fetching a partition whose queue of prefetched
            # records holds this much, and fetches again as the pipeline reads them (the
            # effect of pause/resume). Without it each partition prefetches up to 64 MiB.
            "queued.max.messages.kbytes": self.fetch_buffer_kb,
            # Once the queue holds queued.min.messages (100,000) or queued.max.messages.kbytes
            # (fetch_buffer_kb), librdkafka waits this long before it checks again and
            # fetches: 1 s by default, which capped a reader at ~145k records/s (and W1 at
            # ~88k/s) on a partition with all its records ready.
            "fetch.queue.backoff.ms": 20,
            **self._user(
                "fetch.wait.max.ms", "queued.max.messages.kbytes", "fetch.queue.backoff.ms"
            ),
        }

    def _user(self, *names: str) -> dict[str, str]:
        """The user's ``kafka.*`` settings among ``names`` (they win over the defaults)."""
        return {k: v for k, v in self.client_config.items() if k in names}


def settings_from_url(url: str) -> KafkaSettings:
    """Parse ``kafka://host:port[,host:port]?option=value&...`` (see :data:`_USAGE`).

    Raises:
        ConfigError: no host, an unknown option or a bad value.
    """
    parts = urlsplit(url)
    bootstrap = unquote(parts.netloc)
    if parts.scheme != "kafka" or not bootstrap or parts.path not in ("", "/"):
        raise ConfigError(f"log URL {url!r} is not a Kafka URL; write {_USAGE}")
    ints: dict[str, int] = {}
    txn_id: str | None = None
    client: dict[str, str] = {}
    topic: dict[str, str] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in _INT_OPTIONS:
            if not value.isdigit():
                raise ConfigError(f"log URL {url!r}: {name} must be an integer, not {value!r}")
            ints[name] = int(value)
        elif name == "transactional_id":
            txn_id = value
        elif name.startswith(_CLIENT_PREFIX) and len(name) > len(_CLIENT_PREFIX):
            client[name.removeprefix(_CLIENT_PREFIX)] = value
        elif name.startswith(_TOPIC_PREFIX) and len(name) > len(_TOPIC_PREFIX):
            topic[name.removeprefix(_TOPIC_PREFIX)] = value
        else:
            raise ConfigError(f"log URL {url!r}: unknown option {name!r}; write {_USAGE}")
    return KafkaSettings(  # an option left out keeps the dataclass default
        bootstrap,
        transactional_id=txn_id,
        client_config=client,
        topic_config=topic,
        **ints,
    )


def make_client(factory: Callable[[dict[str, Any]], _C], config: dict[str, Any]) -> _C:
    """Create a librdkafka client; a setting it refuses is a ``ConfigError``."""
    try:
        return factory(config)
    except KafkaException as exc:
        raise ConfigError(
            f"librdkafka refused the Kafka client settings: {exc.args[0].str()}; check the "
            f"kafka.* options of the log URL (or KafkaLog(client_config=...))"
        ) from exc
