"""The buffering transaction shared by the memory and SQLite backends.

A transaction only collects appends and positions; the backend applies them
all in one step when the ``with`` block exits normally. Buffering keeps the
backends identical (offsets are assigned at commit by both) and keeps the
SQLite write lock held only for the commit itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Final, NamedTuple, Self, final

from eventspine.errors import LogError
from eventspine.log._checks import check_partition, check_positions
from eventspine.log.base import LogRecord, TopicSpec


class Pending(NamedTuple):
    """What a transaction commits: appends per ``(topic, partition)`` and positions."""

    appends: dict[tuple[str, int], list[LogRecord]]
    positions: dict[tuple[str, str], dict[int, int]]


_NEW: Final = "new"
_OPEN: Final = "open"
_DONE: Final = "done"


@final
class BufferedTransaction:
    """A :class:`~eventspine.log.base.LogTransaction` that buffers until commit.

    Args:
        lookup: returns a topic's spec or raises ``TopicNotFoundError``.
        commit: applies a :class:`Pending` atomically, or raises and applies nothing.
    """

    __slots__ = ("_commit", "_lookup", "_pending", "_state")

    def __init__(
        self, lookup: Callable[[str], TopicSpec], commit: Callable[[Pending], None]
    ) -> None:
        self._lookup = lookup
        self._commit = commit
        self._pending = Pending({}, {})
        self._state: str = _NEW

    def append(self, topic: str, partition: int, records: Sequence[LogRecord]) -> None:
        """Buffer ``records`` for ``topic[partition]`` (see ``LogTransaction.append``)."""
        self._check_open()
        check_partition(self._lookup(topic), partition)
        self._pending.appends.setdefault((topic, partition), []).extend(records)

    def commit_positions(self, group: str, topic: str, positions: Mapping[int, int]) -> None:
        """Buffer ``group``'s next offsets for ``topic`` (see ``LogTransaction``)."""
        self._check_open()
        checked = check_positions(self._lookup(topic), group, positions)
        self._pending.positions.setdefault((group, topic), {}).update(checked)

    def _check_open(self) -> None:
        if self._state != _OPEN:
            raise LogError(
                "this transaction is not open: use it inside `with log.transaction() as txn:`, "
                "and only once"
            )

    def __enter__(self) -> Self:
        if self._state != _NEW:
            raise LogError("a transaction can be entered only once; call log.transaction() again")
        self._state = _OPEN
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._state != _OPEN:
            return
        pending, self._pending = self._pending, Pending({}, {})
        self._state = _DONE
        if exc_type is None:
            self._commit(pending)
