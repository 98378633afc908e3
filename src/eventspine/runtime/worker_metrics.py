"""Worker-level metrics: owned tasks, rebalances, restores, checkpoints, consumer lag.

A :class:`WorkerMetrics` belongs to one :class:`~eventspine.runtime.worker.Worker`.
The worker's thread reports events to it, one call per event (tasks assigned or
taken away, a restore starting and ending, a checkpoint committed or failed);
the Prometheus collector and the progress line read it from their own threads
(:meth:`WorkerMetrics.snapshot`, :meth:`WorkerMetrics.lag`), which copy under a
lock. Nothing here runs per record or per batch.

**Consumer lag** of a source partition is its end offset (on Kafka the last
stable offset, what a ``read_committed`` reader reaches) minus the task's
position (the next offset it reads). Positions are read live from the task's
readers; end offsets are asked of the log by :meth:`WorkerMetrics.refresh_lag`,
which the worker calls every loop pass but which asks the log at most every
:data:`LAG_REFRESH_S` seconds (and right after a task started), never on a
scrape. So the lag can lag by that long: records appended since the last
refresh are not counted yet.

**Restore progress**: while a task restores its state, its checkpointer reports
each changelog batch it replays to a :class:`RestoreProgress`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, final

from eventspine.errors import LogError

if TYPE_CHECKING:
    from eventspine.log.base import Log, TopicInfo
    from eventspine.runtime.sources import SourceRunner

__all__ = [
    "LAG_REFRESH_S",
    "PartitionLag",
    "RestoreProgress",
    "WorkerMetrics",
    "WorkerSnapshot",
]

_log = logging.getLogger("eventspine.worker")

#: the most often (seconds) a worker asks the log for its source partitions' end offsets
LAG_REFRESH_S = 5.0

RebalanceEvent = Literal["assign", "revoke", "lost"]
REBALANCE_EVENTS: tuple[RebalanceEvent, ...] = ("assign", "revoke", "lost")


@final
class RestoreProgress:
    """The restore of one task's state: changelog offsets to replay and replayed so far.

    Its checkpointer calls :meth:`plan` once the changelogs' offsets are known, then
    :meth:`reached` after each batch it replays (a hook: see ``Checkpointer.recover``).
    """

    __slots__ = ("_ends", "_reached", "expected", "records", "started")

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.records = 0
        #: changelog offsets to replay in all (records, if compaction left no gaps)
        self.expected = 0
        self._ends: dict[str, int] = {}
        self._reached: dict[str, int] = {}

    def plan(self, topics: Mapping[str, TopicInfo], partition: int, changelogs: list[str]) -> None:
        """Expect to replay partition ``partition`` of each changelog, start to end."""
        for name in changelogs:
            info = topics.get(name)
            if info is not None and partition < len(info.offsets):
                po = info.offsets[partition]
                self._reached[name] = po.log_start
                self._ends[name] = po.end
                self.expected += max(0, po.end - po.log_start)

    def reached(self, changelog: str, next_offset: int, records: int) -> None:
        """``records`` more records replayed; ``changelog`` continues at ``next_offset``."""
        self.records += records
        self._reached[changelog] = next_offset

    @property
    def remaining(self) -> int:
        """Changelog offsets still to replay."""
        reached = dict(self._reached)
        return sum(max(0, end - reached.get(n, end)) for n, end in list(self._ends.items()))


@dataclass(frozen=True)
class PartitionLag:
    """The consumer lag of one source partition a task reads."""

    topic: str
    partition: int
    position: int
    end: int

    @property
    def lag(self) -> int:
        """Records (offsets) between the position and the end; never negative."""
        return max(0, self.end - self.position)


@dataclass(frozen=True)
class WorkerSnapshot:
    """A copy of a worker's metrics at one moment (see :class:`WorkerMetrics`)."""

    tasks_owned: int
    tasks_running: int
    rebalances: Mapping[RebalanceEvent, int]
    task_moves: Mapping[RebalanceEvent, int]
    last_rebalance_s: float | None
    restores: int
    restoring: int
    restore_records: int
    restore_remaining: int
    restore_expected: int
    last_restore_s: float | None
    checkpoints: int
    checkpoint_failures: int
    last_checkpoint_s: float | None
    last_checkpoint_time_s: float | None

    @property
    def restore_fraction(self) -> float | None:
        """The share of the running restores already replayed (``None``: no restore)."""
        if not self.restoring:
            return None
        if not self.restore_expected:
            return 0.0
        return 1 - self.restore_remaining / self.restore_expected


class _Reader:
    """What the lag needs of one source reader: its partition and where it is."""

    __slots__ = ("name", "partition", "positions", "reader", "topic")

    def __init__(self, runner: SourceRunner, reader: object, topic: str, partition: int) -> None:
        self.positions = runner.positions  # the runner's live dict: name -> next offset
        self.reader = reader
        self.name: str = getattr(reader, "partition", f"{topic}/{partition}")
        self.topic = topic
        self.partition = partition

    def position(self) -> int | None:
        pos = self.positions.get(self.name)
        if pos is None:
            pos = getattr(self.reader, "position", None)  # seeked or committed, not polled yet
        return pos


@final
class WorkerMetrics:
    """The worker-level metrics of one worker process (see the module doc)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owned: set[int] = set()
        self._running: set[int] = set()
        self._rebalances = dict.fromkeys(REBALANCE_EVENTS, 0)
        self._moves = dict.fromkeys(REBALANCE_EVENTS, 0)
        self._last_rebalance: float | None = None
        self._restoring: dict[int, RestoreProgress] = {}
        self._restores = 0
        self._restored_records = 0
        self._last_restore: float | None = None
        self._checkpoints = 0
        self._checkpoint_failures = 0
        self._last_checkpoint: float | None = None
        self._last_checkpoint_time: float | None = None
        self._readers: dict[int, list[_Reader]] = {}
        self._ends: dict[tuple[str, int], tuple[int, int]] = {}  # (log_start, end)
        self._next_refresh = 0.0

    # -- events, from the worker's thread --------------------------------------------------
    def rebalanced(self, event: RebalanceEvent, tasks: Sequence[int]) -> None:
        """Tasks were assigned to this worker, or revoked or lost (static split: assign)."""
        if not tasks:
            return
        with self._lock:
            self._rebalances[event] += 1
            self._moves[event] += len(tasks)
            self._last_rebalance = time.time()
            if event == "assign":
                self._owned.update(tasks)
            else:
                self._owned.difference_update(tasks)

    def restore_started(self, task: int) -> RestoreProgress:
        """A task starts restoring its state; report its progress to the result."""
        progress = RestoreProgress()
        with self._lock:
            self._restoring[task] = progress
        return progress

    def restore_ended(self, task: int) -> None:
        """The task's restore ended (done or failed); idempotent."""
        with self._lock:
            progress = self._restoring.pop(task, None)
            if progress is None:
                return
            self._restored_records += progress.records
            self._restores += 1
            self._last_restore = time.monotonic() - progress.started

    def task_started(self, task: int, sources: Sequence[SourceRunner]) -> None:
        """The task runs: follow its topic readers' positions for the lag."""
        readers: list[_Reader] = []
        for src in sources:
            for reader in src.readers:
                topic = getattr(reader, "topic", None)
                pid = getattr(reader, "partition_id", None)
                if isinstance(topic, str) and isinstance(pid, int):
                    readers.append(_Reader(src, reader, topic, pid))
        with self._lock:
            self._readers[task] = readers
            self._running.add(task)
            self._next_refresh = 0.0  # show the new task's lag at the next refresh

    def task_dropped(self, task: int) -> None:
        """The task stopped running in this worker (moved away, restarted, closed)."""
        with self._lock:
            self._readers.pop(task, None)
            self._running.discard(task)

    def checkpointed(self, seconds: float) -> None:
        """A checkpoint of the worker's tasks committed; it took ``seconds``."""
        with self._lock:
            self._checkpoints += 1
            self._last_checkpoint = seconds
            self._last_checkpoint_time = time.time()

    def checkpoint_failed(self) -> None:
        """A checkpoint's transaction failed (aborted: nothing of it was committed)."""
        with self._lock:
            self._checkpoint_failures += 1

    def refresh_lag(self, log: Log) -> None:
        """Ask ``log`` for the end offsets of the running tasks' source partitions.

        At most every :data:`LAG_REFRESH_S` (so it is cheap to call every loop pass); a
        failing log is ignored, the last known ends stay.
        """
        now = time.monotonic()
        if now < self._next_refresh:
            return
        self._next_refresh = now + LAG_REFRESH_S
        with self._lock:
            wanted = {(r.topic, r.partition) for rs in self._readers.values() for r in rs}
        if not wanted:
            return
        try:
            topics = log.topics()
        except LogError as exc:
            _log.debug("consumer lag: cannot list the log's end offsets: %s", exc)
            return
        ends: dict[tuple[str, int], tuple[int, int]] = {}
        for topic, partition in wanted:
            info = topics.get(topic)
            if info is not None and partition < len(info.offsets):
                po = info.offsets[partition]
                ends[topic, partition] = (po.log_start, po.end)
        with self._lock:
            self._ends = ends

    # -- reads, from any thread --------------------------------------------------------------
    def lag(self) -> list[PartitionLag]:
        """The lag of every source partition of the running tasks whose end is known."""
        with self._lock:
            readers = [r for rs in self._readers.values() for r in rs]
            ends = dict(self._ends)
        out: list[PartitionLag] = []
        for r in readers:
            bounds = ends.get((r.topic, r.partition))
            if bounds is None:
                continue
            pos = r.position()
            out.append(
                PartitionLag(r.topic, r.partition, bounds[0] if pos is None else pos, bounds[1])
            )
        out.sort(key=lambda x: (x.topic, x.partition))
        return out

    def total_lag(self) -> int:
        """The lag summed over :meth:`lag`."""
        return sum(p.lag for p in self.lag())

    def snapshot(self) -> WorkerSnapshot:
        """A consistent copy of the counters and gauges (the lag: :meth:`lag`)."""
        with self._lock:
            restoring = list(self._restoring.values())
            return WorkerSnapshot(
                tasks_owned=len(self._owned),
                tasks_running=len(self._running),
                rebalances=dict(self._rebalances),
                task_moves=dict(self._moves),
                last_rebalance_s=self._last_rebalance,
                restores=self._restores,
                restoring=len(restoring),
                restore_records=self._restored_records + sum(p.records for p in restoring),
                restore_remaining=sum(p.remaining for p in restoring),
                restore_expected=sum(p.expected for p in restoring),
                last_restore_s=self._last_restore,
                checkpoints=self._checkpoints,
                checkpoint_failures=self._checkpoint_failures,
                last_checkpoint_s=self._last_checkpoint,
                last_checkpoint_time_s=self._last_checkpoint_time,
            )
