"""Topics on Kafka: a ``TopicSpec`` as topic configs and back, create and describe.

A spec maps onto configs every broker understands:

=========================  ==============================================
``compacted``              ``cleanup.policy=compact`` (``compact,delete``
                           with a retention), else ``delete``
``retention``              ``retention.ms`` (``-1`` = keep forever)
``retention_bytes``        ``retention.bytes`` (``-1`` = no limit)
``tombstone_retention``    ``delete.retention.ms``
=========================  ==============================================

Every topic created here also gets ``message.timestamp.type=CreateTime``
and ``message.timestamp.after.max.ms`` = 2^63-1: the record timestamp is the
event time (``ts_ms``), and event times may lie in the future (Kafka 4
refuses CreateTime more than 1 h ahead by default).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from datetime import timedelta

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported without __all__
    AdminClient,
    ConfigResource,
    NewTopic,
)

from eventspine.errors import LogError, TopicNotFoundError
from eventspine.log._checks import spec_difference
from eventspine.log.base import TopicSpec
from eventspine.log.kafka._config import KafkaSettings

__all__ = [
    "create_topic",
    "delete_topic",
    "describe_topics",
    "is_internal",
    "topic_configs",
]

_LONG_MAX = str((1 << 63) - 1)
_GONE = frozenset({KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC})
_DESCRIBED = ("cleanup.policy", "retention.ms", "retention.bytes", "delete.retention.ms")


def is_internal(name: str) -> bool:
    """Return whether ``name`` is a broker-internal topic (``__consumer_offsets``, ...).

    eventspine's own internal topics (``__es.*``: checkpoints, changelogs) are not.
    """
    return name.startswith("__") and not name.startswith("__es.")


def topic_configs(spec: TopicSpec, extra: Mapping[str, str]) -> dict[str, str]:
    """Return the topic configs of ``spec``; ``extra`` (``topic.*`` options) are added first."""
    retained = spec.retention is not None or spec.retention_bytes is not None
    policy = ("compact,delete" if retained else "compact") if spec.compacted else "delete"
    return {
        **extra,
        "cleanup.policy": policy,
        "retention.ms": str(-1 if spec.retention_ms is None else spec.retention_ms),
        "retention.bytes": str(-1 if spec.retention_bytes is None else spec.retention_bytes),
        "delete.retention.ms": str(spec.tombstone_retention_ms),
        "message.timestamp.type": "CreateTime",
        "message.timestamp.after.max.ms": _LONG_MAX,
    }


def spec_from_configs(name: str, partitions: int, configs: Mapping[str, str]) -> TopicSpec:
    """Return the spec a topic's configs describe (time retention only with ``delete``)."""
    policy = {p.strip() for p in configs.get("cleanup.policy", "delete").split(",")}
    retention_ms = int(configs.get("retention.ms", "-1"))
    retention_bytes = int(configs.get("retention.bytes", "-1"))
    deleting = "delete" in policy
    return TopicSpec(
        name,
        partitions=partitions,
        compacted="compact" in policy,
        retention=timedelta(milliseconds=retention_ms) if deleting and retention_ms >= 0 else None,
        retention_bytes=retention_bytes if deleting and retention_bytes >= 0 else None,
        tombstone_retention=timedelta(milliseconds=int(configs.get("delete.retention.ms", "0"))),
    )


def _partition_counts(
    admin: AdminClient, names: Iterable[str] | None, timeout: float
) -> dict[str, int]:
    """Return partition counts of the existing topics among ``names`` (all if ``None``)."""
    try:
        if names is None:
            metadata = admin.list_topics(timeout=timeout).topics
        else:
            metadata = {}
            for name in names:
                metadata.update(admin.list_topics(topic=name, timeout=timeout).topics)
    except KafkaException as exc:
        raise LogError(f"cannot list the topics of the Kafka cluster: {exc}") from exc
    counts: dict[str, int] = {}
    for name, meta in metadata.items():
        if meta.error is None:
            counts[name] = len(meta.partitions)
        elif meta.error.code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
            raise LogError(f"cannot describe Kafka topic {name!r}: {meta.error.str()}")
    return counts


def describe_topics(
    admin: AdminClient,
    names: Iterable[str] | None,
    timeout: float,
    known: Mapping[str, TopicSpec] | None = None,
) -> dict[str, TopicSpec]:
    """Return the specs of the existing topics among ``names`` (every topic if ``None``).

    Internal topics are left out; missing topics are absent from the result. Specs in
    ``known`` are taken as they are when the partition count matches (a spec never
    changes once created), so only new topics cost a ``describe_configs``.

    Raises:
        LogError: the cluster could not be asked.
    """
    counts = {
        n: c for n, c in _partition_counts(admin, names, timeout).items() if not is_internal(n)
    }
    specs: dict[str, TopicSpec] = {}
    for name, count in counts.items():
        spec = (known or {}).get(name)
        if spec is not None and spec.partitions == count:
            specs[name] = spec
    resources = [ConfigResource("topic", name) for name in counts if name not in specs]
    if not resources:
        return specs
    try:
        futures = admin.describe_configs(resources, request_timeout=timeout)
        for resource, future in futures.items():
            try:
                entries = future.result(timeout=timeout + 5)
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                if isinstance(error, KafkaError) and error.code() in _GONE:
                    continue  # deleted between the listing and now (another client's topic)
                raise
            configs = {k: entries[k].value for k in _DESCRIBED if k in entries}
            specs[resource.name] = spec_from_configs(resource.name, counts[resource.name], configs)
    except (KafkaException, TimeoutError) as exc:
        raise LogError(f"cannot read the configs of Kafka topics {sorted(counts)}: {exc}") from exc
    return specs


def create_topic(admin: AdminClient, spec: TopicSpec, settings: KafkaSettings) -> None:
    """Create ``spec`` (or check that it exists alike) and wait until it is usable.

    Raises:
        LogError: the topic exists with other settings (naming them), or the broker
            refused (for example a replication factor above the number of brokers).
    """
    timeout = settings.timeout_s
    new = NewTopic(
        spec.name,
        num_partitions=spec.partitions,
        replication_factor=settings.replication_factor,
        config=topic_configs(spec, settings.topic_config),
    )
    future = admin.create_topics([new], operation_timeout=timeout, request_timeout=timeout)
    try:
        future[spec.name].result(timeout=timeout + 5)
    except TimeoutError as exc:
        raise LogError(
            f"Kafka did not answer the creation of topic {spec.name!r} within {timeout + 5:.0f} s"
        ) from exc
    except KafkaException as exc:
        error = exc.args[0]
        if not isinstance(error, KafkaError) or error.code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise LogError(
                f"Kafka refused to create topic {spec.name!r} ({spec.partitions} partitions, "
                f"replication factor {settings.replication_factor}): {exc}"
            ) from exc
        existing = _describe_created(admin, spec.name, timeout)
        if existing is None:
            raise LogError(f"Kafka topic {spec.name!r} exists but cannot be described") from exc
        if difference := spec_difference(existing, spec):
            raise LogError(difference) from None
    _wait_usable(admin, spec, timeout)


def _describe_created(admin: AdminClient, name: str, timeout: float) -> TopicSpec | None:
    """Describe a topic another client just created (its metadata may still be on the way).

    Two workers of a new pipeline create its internal topics at the same moment: the
    loser's ``TOPIC_ALREADY_EXISTS`` can come before the metadata lists the topic.
    """
    deadline = time.monotonic() + timeout
    while True:
        existing = describe_topics(admin, [name], timeout).get(name)
        if existing is not None or time.monotonic() >= deadline:
            return existing
        time.sleep(0.1)


def delete_topic(admin: AdminClient, name: str, timeout: float) -> None:
    """Delete a topic and wait until the metadata no longer lists it.

    The brokers drop every group's committed offsets of a deleted topic themselves.

    Raises:
        TopicNotFoundError: the topic does not exist.
        LogError: the cluster refused or did not finish within ``timeout``.
    """
    future = admin.delete_topics([name], operation_timeout=timeout, request_timeout=timeout)
    try:
        future[name].result(timeout=timeout + 5)
    except TimeoutError as exc:
        raise LogError(f"Kafka did not answer the deletion of topic {name!r} in time") from exc
    except KafkaException as exc:
        error = exc.args[0]
        if isinstance(error, KafkaError) and error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
            raise TopicNotFoundError(f"topic {name!r} does not exist; nothing to delete") from exc
        raise LogError(f"Kafka refused to delete topic {name!r}: {exc}") from exc
    deadline = time.monotonic() + timeout
    delay = 0.01
    while name in _partition_counts(admin, [name], timeout):
        if time.monotonic() > deadline:
            raise LogError(f"Kafka topic {name!r} is still listed {timeout:.0f} s after deletion")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def _wait_usable(admin: AdminClient, spec: TopicSpec, timeout: float) -> None:
    """Poll the metadata until every partition of a new topic has a leader."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        try:
            meta = admin.list_topics(topic=spec.name, timeout=timeout).topics.get(spec.name)
        except KafkaException:
            meta = None
        if (
            meta is not None
            and meta.error is None
            and len(meta.partitions) == spec.partitions
            and all(p.leader >= 0 for p in meta.partitions.values())
        ):
            return
        if time.monotonic() > deadline:
            raise LogError(
                f"Kafka topic {spec.name!r} was created but its partitions got no leader "
                f"within {timeout:.0f} s; check the brokers"
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
