"""The librdkafka configs a Kafka URL turns into (no broker needed)."""

import pytest

from eventspine.errors import ConfigError
from eventspine.log.kafka._config import settings_from_url


def test_buffers_bound_prefetch_and_produce_queues() -> None:
    settings = settings_from_url("kafka://h:9092")
    assert settings.consumer("g")["queued.max.messages.kbytes"] == 16384
    assert settings.producer()["queue.buffering.max.kbytes"] == 65536
    assert settings.transactional_producer("t")["queue.buffering.max.kbytes"] == 65536
    tuned = settings_from_url("kafka://h:9092?fetch_buffer_kb=512&produce_buffer_kb=1024")
    assert tuned.consumer("g")["queued.max.messages.kbytes"] == 512
    assert tuned.transactional_producer("t")["queue.buffering.max.kbytes"] == 1024


def test_user_librdkafka_settings_win_over_the_buffer_options() -> None:
    url = "kafka://h:9092?kafka.queued.max.messages.kbytes=100&kafka.queue.buffering.max.kbytes=200"
    settings = settings_from_url(url)
    assert settings.consumer("g")["queued.max.messages.kbytes"] == "100"
    assert settings.producer()["queue.buffering.max.kbytes"] == "200"


def test_readers_fetch_again_soon_after_their_queue_drains() -> None:
    # librdkafka's default (1 s) capped a reader at ~145k records/s: see _config.py.
    assert settings_from_url("kafka://h:9092").consumer("g")["fetch.queue.backoff.ms"] == 20
    tuned = settings_from_url("kafka://h:9092?kafka.fetch.queue.backoff.ms=1000")
    assert tuned.consumer("g")["fetch.queue.backoff.ms"] == "1000"


def test_max_poll_interval_is_at_least_the_session() -> None:
    assert (
        settings_from_url("kafka://h:9092?max_poll_interval_ms=6000").max_poll_interval_ms == 6000
    )
    with pytest.raises(ConfigError, match=r"max_poll_interval_ms \(5000\) must be at least"):
        settings_from_url("kafka://h:9092?max_poll_interval_ms=5000")
    with pytest.raises(ConfigError, match="fetch_buffer_kb must be an int >= 1"):
        settings_from_url("kafka://h:9092?fetch_buffer_kb=0")


def test_no_rebootstrap_unless_the_user_asks() -> None:
    # A re-bootstrap during a network cut leaves transactional producers hanging after the
    # heal (T8, tests/scaleout/test_kafka_network.py): every client is configured without.
    settings = settings_from_url("kafka://h:9092")
    for config in (
        settings.consumer("g"),
        settings.producer(),
        settings.transactional_producer("t"),
    ):
        assert config["metadata.recovery.strategy"] == "none"
        assert config["reconnect.backoff.max.ms"] == 1000  # back within 1 s of a heal
    url = "kafka://h:9092?kafka.metadata.recovery.strategy=rebootstrap"
    assert settings_from_url(url).producer()["metadata.recovery.strategy"] == "rebootstrap"
