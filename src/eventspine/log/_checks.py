"""Checks and messages shared by every log backend, so all refuse alike, in the same words."""

from __future__ import annotations

from collections.abc import Mapping

from eventspine.errors import LogError
from eventspine.log.base import TopicSpec


def check_partition(spec: TopicSpec, partition: int) -> None:
    """Raise ``LogError`` unless ``partition`` is a partition of the topic."""
    if not isinstance(partition, int) or not 0 <= partition < spec.partitions:
        raise LogError(
            f"topic {spec.name!r} has partitions 0 to {spec.partitions - 1}; "
            f"there is no partition {partition!r}"
        )


def check_positions(spec: TopicSpec, group: str, positions: Mapping[int, int]) -> dict[int, int]:
    """Validate positions to commit and return them as a new dict.

    Raises:
        LogError: the group name is empty, a partition does not exist, or an offset is negative.
    """
    if not isinstance(group, str) or not group:
        raise LogError(f"a consumer group must be a non-empty str, not {group!r}")
    checked: dict[int, int] = {}
    for partition, offset in positions.items():
        check_partition(spec, partition)
        if not isinstance(offset, int) or offset < 0:
            raise LogError(
                f"group {group!r}: the position of {spec.name}[{partition}] must be an int >= 0, "
                f"not {offset!r}"
            )
        checked[partition] = offset
    return checked


def check_read(spec: TopicSpec, partition: int, offset: int, max_records: int) -> None:
    """Raise ``LogError`` unless the arguments of a read are well formed."""
    check_partition(spec, partition)
    if not isinstance(offset, int) or offset < 0:
        raise LogError(f"offset must be an int >= 0, not {offset!r}")
    if not isinstance(max_records, int) or max_records < 1:
        raise LogError(f"max_records must be an int >= 1, not {max_records!r}")


def check_in_range(topic: str, partition: int, offset: int, log_start: int, end: int) -> None:
    """Raise ``LogError`` unless ``log_start <= offset <= end``."""
    if offset < log_start:
        raise LogError(
            f"offset {offset} of {topic}[{partition}] was deleted by retention: the log now "
            f"starts at offset {log_start}. Read from {log_start} or later; the records "
            f"below it are gone"
        )
    if offset > end:
        raise LogError(
            f"offset {offset} is beyond the end of {topic}[{partition}]: the next record "
            f"appended will get offset {end}"
        )


def spec_difference(existing: TopicSpec, wanted: TopicSpec) -> str:
    """Return a sentence naming the settings that differ ('' if none)."""
    old, new = existing.settings(), wanted.settings()
    diffs = [f"{k}={old[k]!r} (requested {new[k]!r})" for k in old if old[k] != new[k]]
    if not diffs:
        return ""
    return (
        f"topic {existing.name!r} already exists with " + ", ".join(diffs) + "; the settings "
        "of a topic cannot change: use the existing settings or a new topic name"
    )
