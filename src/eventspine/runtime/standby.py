"""Standby tasks: warm copies of the state of tasks another worker owns.

When a worker dies, its tasks move to the survivors, and each new owner
restores the task's state from the changelogs before it can produce again:
seconds for a few hundred thousand keys. With standby tasks
(``RunOptions.standby``, ``eventspine run --standby``) every worker of a
group also follows the changelog partitions of the tasks it does **not**
own, keeping the latest value per key in memory, as raw bytes. When it is
assigned such a task, it restores from that copy and reads only the
changelog records committed since its last poll.

The copy is read with ``read_committed`` and only from changelogs, so it
holds exactly what a full restore would read, just earlier; recovery then
continues from the copy's next offset to the changelog's end, the same
end a full restore stops at (:meth:`Checkpointer.recover`). Where the copy
is no use (the changelog's log start moved past it, or its offset is past
the end, as after a state reset) recovery reads the changelog from the
start as usual.

Cost: memory for the encoded state of every task the worker does not own
(so each worker holds the whole pipeline's state), and the CPU to read
every changelog record once more per worker. Kafka Streams calls these
standby replicas; here the count is fixed at "every other worker".
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from eventspine.errors import LogError
from eventspine.log.base import Log, LogTail, open_tail
from eventspine.runtime.checkpoint import names

__all__ = ["Standbys", "WarmChangelog"]

_log = logging.getLogger("eventspine.worker")
_SUFFIX = ".changelog"
#: how often to look for changelog topics while none exists yet
RELIST_S = 2.0


@dataclass
class WarmChangelog:
    """The latest value per key of one changelog partition, read up to ``next_offset``."""

    next_offset: int
    latest: dict[bytes, bytes | None] = field(default_factory=dict)
    records: int = 0


class Standbys:
    """The standby tasks of one worker: which partitions it follows, and their copies."""

    def __init__(self, log: Log, pipeline: str) -> None:
        self.log = log
        self.pipeline = pipeline
        self.warm: dict[int, dict[str, WarmChangelog]] = {}
        self._tail: LogTail | None = None
        self._steps: dict[str, str] = {}  # changelog topic -> step
        self._listed_at = float("-inf")

    def follow(self, partitions: Iterable[int]) -> None:
        """Follow exactly these partitions (start new copies, drop the others).

        Until the pipeline's changelog topics exist (a worker can start before the first
        task created them), a call looks for them again every ``RELIST_S``.
        """
        wanted = set(partitions)
        for p in [p for p in self.warm if p not in wanted]:
            self.take(p)
        new = sorted(wanted - set(self.warm))
        now = time.monotonic()
        if not new and (self._steps or now - self._listed_at < RELIST_S):
            return
        self._listed_at = now
        prefix = names.prefix(self.pipeline)
        topics = {
            name: info
            for name, info in self.log.topics().items()
            if name.startswith(prefix) and name.endswith(_SUFFIX)
        }
        self._steps = {name: name[len(prefix) : -len(_SUFFIX)] for name in topics}
        positions: dict[tuple[str, int], int] = {}
        for p in sorted(wanted):
            copies = self.warm.setdefault(p, {})
            for name, info in topics.items():
                step = self._steps[name]
                if step not in copies and p < len(info.offsets):
                    start = info.offsets[p].log_start
                    copies[step] = WarmChangelog(start)
                    positions[name, p] = start
        if self._tail is None:
            self._tail = open_tail(self.log)
        self._tail.assign(positions)

    def take(self, partition: int) -> dict[str, WarmChangelog] | None:
        """Stop following ``partition``; return its copies by step (``None`` if none)."""
        copies = self.warm.pop(partition, None)
        if copies is not None and self._tail is not None:
            try:
                self._tail.unassign((names.changelog(self.pipeline, s), partition) for s in copies)
            except LogError as exc:  # the copy read so far is still good: keep it
                _log.warning("pipeline %s: standby copies dropped: %s", self.pipeline, exc)
                self.close()
        return copies

    def poll(self, max_records: int = 20_000) -> int:
        """Apply the changelog records that have arrived; return how many.

        A failing log drops every copy (they are rebuilt by the next :meth:`follow`).
        """
        if self._tail is None or not self.warm:
            return 0
        try:
            records = self._tail.poll(max_records)
        except LogError as exc:
            _log.warning("pipeline %s: standby copies dropped: %s", self.pipeline, exc)
            self.close()
            return 0
        steps, warm = self._steps, self.warm
        for topic, partition, offset, key, value in records:
            copies = warm.get(partition)
            step = steps.get(topic)
            if copies is None or step is None or key is None:
                continue  # unassigned meanwhile, or not a changelog record
            copy = copies.get(step)
            if copy is not None and offset >= copy.next_offset:
                copy.latest[key] = value
                copy.next_offset = offset + 1
                copy.records += 1
        return len(records)

    def close(self) -> None:
        """Drop every copy and close the tail."""
        self.warm.clear()
        tail, self._tail = self._tail, None
        if tail is not None:
            tail.close()
