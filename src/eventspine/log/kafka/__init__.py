"""The ``Log`` port on Apache Kafka: :class:`KafkaLog` and its URL form.

``open_log("kafka://host:port[,host:port]?option=value")`` (options in
``docs/kafka.md``) or ``KafkaLog("host:port", ...)``. This package is the
only place that imports ``confluent_kafka``, and ``eventspine.log`` imports
it only when a Kafka URL is opened.

How the port maps onto Kafka:

* a topic is a Kafka topic (spec as topic configs, see ``_topics``);
* ``append`` uses an idempotent producer (``acks=all``) and returns the
  first offset from the delivery reports;
* ``read`` uses assign-only ``read_committed`` consumers; ``end`` is the
  last stable offset (see ``_reader``);
* ``transaction`` is a Kafka transaction; ``commit_positions`` is
  ``send_offsets_to_transaction`` (see ``_txn``);
* ``enforce_retention`` does nothing: compaction and retention are the
  broker's, and eventual.

Differences from the memory and SQLite logs, all inherent to Kafka:
transaction markers, and the records of aborted transactions, take offsets
(gaps, and ``end`` moves even for an aborted transaction); time retention
is measured by the broker's wall clock against the record timestamps
(``ts_ms``), not from the newest record; both compaction and retention act
on closed segments only, whenever the broker gets to it.
"""

from __future__ import annotations

from eventspine.log.kafka._config import KafkaSettings, settings_from_url
from eventspine.log.kafka._log import KafkaLog

__all__ = ["KafkaLog", "KafkaSettings", "open_kafka_log"]


def open_kafka_log(url: str) -> KafkaLog:
    """Return the :class:`KafkaLog` a ``kafka://`` URL names (no I/O until first use).

    Raises:
        ConfigError: the URL is malformed or has an unknown option.
    """
    return KafkaLog.from_settings(settings_from_url(url))
