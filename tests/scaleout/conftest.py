"""Fixtures of the scale-out tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from eventspine.log import Log, open_log


@pytest.fixture
def kafka_log(kafka_bootstrap: str) -> Iterator[Log]:
    """A ``KafkaLog`` on the test broker (the tests' view of the topics; workers open their own)."""
    log = open_log(f"kafka://{kafka_bootstrap}")
    yield log
    log.close()
