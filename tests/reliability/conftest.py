"""Fixtures of the reliability suite: the seed (printed on failure) and the failpoint hit log."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def seed(request: pytest.FixtureRequest) -> int:
    """The test's RNG seed: ``RELIABILITY_SEED`` to replay one, else random (shown on failure)."""
    value = int(os.environ.get("RELIABILITY_SEED") or random.randrange(1 << 31))
    request.node.user_properties.append(("seed", value))
    return value


@pytest.fixture(scope="session")
def hits_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ``EVENTSPINE_FAILPOINTS_LOG`` file shared by every worker of the session."""
    path = tmp_path_factory.mktemp("failpoints") / "hits.txt"
    path.touch()
    return path


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Append the seed to the report of a failed test (replay: RELIABILITY_SEED=<seed>)."""
    report = yield
    if report.failed:
        for name, value in item.user_properties:
            if name == "seed":
                report.sections.append(("seed", f"RELIABILITY_SEED={value}"))
    return report
