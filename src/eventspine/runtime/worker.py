"""Partitioned runs: one task per source partition, spread over workers.

A pipeline whose every source is a topic of the run's log is *partitioned*: it
runs as one **task** per partition number ``p`` (all source topics must have
the same partition count; task ``p`` reads partition ``p`` of each). A task is
a full copy of the operator graph (an :class:`~eventspine.runtime.executor.Executor`
with ``partition=p``) with its own state, watermarks and checkpoint records
(partition ``p`` of the checkpoints topic and of every changelog), so a task
can move from one process to another: its new owner restores exactly its state
and positions. Each key's state lives in the task of the partition its
records arrive on: a ``key_by`` that changes the key before keyed state is cut
into an internal repartition topic first (:mod:`eventspine.runtime.repartition`),
so each task runs its half of the graph upstream of the cut for source
partition ``p`` and downstream of it for repartition partition ``p``.

A :class:`Worker` is one process running some of the tasks:

* On Kafka (a log with ``join_group``) the workers of a pipeline form one
  consumer group, named after the pipeline, and Kafka's cooperative-sticky
  assignor gives each worker its tasks (the partitions of the checkpoints
  topic); workers can come and go at any time (see
  :mod:`eventspine.log.kafka._group`).
* Otherwise the split is static: worker ``i`` of ``n`` runs the tasks
  ``p`` with ``p % n == i``.

Every checkpoint of a worker is **one** log transaction holding the state
changes, outputs, positions and metadata of all its tasks. Before a task is
revoked, the worker checkpoints it, so its next owner resumes exactly there; a
task lost without notice (a worker paused past its session) is dropped
without a checkpoint, and the broker refuses that worker's next transaction,
since its group generation is stale. When a checkpoint fails in a group, the
worker restarts its tasks from their last committed checkpoint rather than
stop: output stays exactly-once, only work since that checkpoint is redone.
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import os
import threading
import time
from dataclasses import replace
from typing import Any

from eventspine.dataflow.pipeline import Pipeline
from eventspine.dataflow.steps import SourceStep
from eventspine.errors import ConfigError, DefinitionError, LogError, TransactionAbortedError
from eventspine.log import Log, open_log
from eventspine.runtime.checkpoint import (
    Checkpointer,
    PendingCheckpoint,
    checkpoints_spec,
    names,
    open_transaction,
)
from eventspine.runtime.executor import Executor, RunOptions, RunResult
from eventspine.runtime.metrics import Inspector, TaskMetrics
from eventspine.runtime.operator import DeadLetters
from eventspine.runtime.repartition import repartition
from eventspine.runtime.standby import Standbys, WarmChangelog
from eventspine.runtime.worker_metrics import WorkerMetrics
from eventspine.timeutil import Clock, SystemClock, to_duration_ms

__all__ = ["EXIT_STALLED", "Worker", "source_partitions"]

_log = logging.getLogger("eventspine.worker")
#: how long a worker waits before restarting its tasks after a failed checkpoint
RETRY_PAUSE_S = 0.5
#: how long an aborted checkpoint waits for the group's rebalance before it is written again
REBALANCE_WAIT_S = 5.0
#: ...and until its callbacks have been quiet this long
REBALANCE_QUIET_S = 0.5
#: the exit code of a worker the stall watchdog stopped (EX_TEMPFAIL: restart it)
EXIT_STALLED = 75


def source_partitions(pipeline: Pipeline, log: Log) -> int | None:
    """The task count of ``pipeline`` on ``log``, or ``None`` if it is not partitioned.

    A pipeline is partitioned when every source is a topic of the log.

    Raises:
        DefinitionError: the source topics have different partition counts.
    """
    counts: dict[str, int] = {}
    for step in pipeline.steps.values():
        if not isinstance(step, SourceStep):
            continue
        count = getattr(step.source, "log_partitions", None)
        if count is None:
            return None
        counts[step.name] = int(count(log))
    if not counts:
        return None
    if len(set(counts.values())) > 1:
        detail = ", ".join(f"'{n}' has {c}" for n, c in counts.items())
        raise DefinitionError(
            f"the source topics of pipeline '{pipeline.name}' must have the same number of "
            f"partitions to be read as tasks ({detail}); create them with the same "
            f"--partitions, or copy one into a topic with the right count"
        )
    return next(iter(counts.values()))


class Worker:
    """Runs the tasks of a partitioned pipeline that this process owns (see the module doc).

    Args:
        pipeline: a partitioned pipeline (every source a topic of ``options.log``).
        clock: the run's clock.
        options: as for :class:`Executor`; ``options.log`` is required.
        worker: this worker's index, for the static split (logs without groups).
        workers: how many workers share the tasks in the static split.
        partitions: the task count, when the caller already asked
            :func:`source_partitions` (else it is asked here).

    Raises:
        ConfigError: no log, or the pipeline is not partitioned.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        clock: Clock | None = None,
        options: RunOptions | None = None,
        worker: int = 0,
        workers: int = 1,
        partitions: int | None = None,
    ) -> None:
        opts = options or RunOptions()
        if opts.log is None:
            raise ConfigError("a partitioned run needs a durable log (RunOptions.log)")
        if not 0 <= worker < workers:
            raise ConfigError(f"worker index {worker} is not in 0..{workers - 1}")
        self.pipeline = pipeline
        self._closed = False
        self._member: Any = None
        self._starting: list[int] = []
        self._restoring = False
        self._in_checkpoint = False
        self._in_revoke = False
        self._standbys: Standbys | None = None
        self._follow_due = 0.0
        self.tasks: dict[int, Executor] = {}
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._own_log = isinstance(opts.log, str)
        self.log: Log = open_log(opts.log) if isinstance(opts.log, str) else opts.log
        self.options = replace(opts, log=self.log, handle_signals=False)
        self.policy = opts.checkpoint
        if partitions is None:
            try:
                partitions = source_partitions(pipeline, self.log)
            except BaseException:
                self.close()
                raise
        if partitions is None:
            self.close()
            raise ConfigError(
                f"pipeline '{pipeline.name}' cannot run as tasks: only a pipeline whose every "
                f"source is a topic of the log can be split over workers"
            )
        self.partitions = partitions
        # A key change inside the pipeline goes through an internal topic (see
        # eventspine.runtime.repartition); the tasks run the rewritten graph.
        self.pipeline = pipeline = repartition(pipeline, partitions)
        self.worker, self.workers = worker, workers
        # Metrics: each task writes its own step metrics, the inspector reads them merged.
        self.metrics = TaskMetrics({n: s.kind for n, s in pipeline.steps.items()})
        self.stats = WorkerMetrics()
        self.inspector = Inspector(pipeline.name, tasks=self.metrics, worker=self.stats)
        self.restored: dict[int, int | None] = {}
        self.dead_letters = DeadLetters()
        self.checkpoints = 0
        self.restarts = 0
        self._stop = threading.Event()
        self._interval_s = to_duration_ms(self.policy.interval) / 1000
        self._last_ckpt = self.clock.monotonic()
        self._records_since = 0

    # -- membership ----------------------------------------------------------------------
    def _join(self) -> None:
        join = getattr(self.log, "join_group", None)
        if join is None:
            owned = [p for p in range(self.partitions) if p % self.workers == self.worker]
            self._starting.extend(owned)
            self.stats.rebalanced("assign", owned)  # metrics hook
            return
        # The checkpoints topic (one partition per task) is what the group divides.
        anchor = names.checkpoints(self.pipeline.name)
        if anchor not in self.log.topics():
            self.log.create_topic(checkpoints_spec(self.pipeline.name, self.partitions))
        self._member = join(
            self.pipeline.name,
            anchor,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        if self.options.standby:
            self._standbys = Standbys(self.log, self.pipeline.name)

    def _on_assign(self, partitions: list[int]) -> None:
        self.stats.rebalanced("assign", partitions)  # metrics hook
        self._starting.extend(p for p in partitions if p not in self.tasks)

    def _on_revoke(self, partitions: list[int]) -> None:
        self.stats.rebalanced("revoke", partitions)  # metrics hook
        if any(p in self.tasks for p in partitions) and not self._in_checkpoint:
            self._in_revoke = True  # inside the member's poll: _commit must not poll it
            # The next owner resumes exactly where this worker stopped. If the commit
            # fails, checkpoint() restarts the tasks instead; the revoked ones are dropped
            # below either way and resume from their last committed checkpoint. (A revoke
            # while a checkpoint waits out a rebalance only drops: that checkpoint is
            # written again for the tasks that stay.)
            try:
                self.checkpoint()
            finally:
                self._in_revoke = False
        self._starting = [p for p in self._starting if p not in partitions]
        self._drop([p for p in partitions if p in self.tasks])

    def _on_lost(self, partitions: list[int]) -> None:
        self.stats.rebalanced("lost", partitions)  # metrics hook
        self._starting = [p for p in self._starting if p not in partitions]
        self._drop([p for p in partitions if p in self.tasks])

    def _start_pending(self) -> None:
        """Build and restore the tasks assigned but not started (a failure keeps them queued).

        In a group, one task per call: the loop serves the group (heartbeat, rebalance
        callbacks, a revocation of a task still queued) before the next restore.
        """
        while self._starting:
            p = self._starting[0]
            if p not in self.tasks:
                t0 = time.monotonic()
                task = Executor(
                    self.pipeline,
                    clock=self.clock,
                    options=self.options,
                    partition=p,
                    partitions=self.partitions,
                    metrics=self.metrics.attach(p),
                )
                warm = None if self._standbys is None else self._standbys.take(p)
                try:
                    if self.partitions > 1:
                        _refuse_shared_sinks(task)
                    self._restoring = True  # restoring a large state is slow, not stuck
                    if task.checkpointer is not None:  # metrics hook: restore progress
                        task.checkpointer.restore_progress = self.stats.restore_started(p)
                    self.restored[p] = task.start(warm)
                except BaseException:
                    task.close()
                    self.metrics.detach(p)  # metrics hook
                    raise
                finally:
                    self._restoring = False
                    self.stats.restore_ended(p)  # metrics hook
                    self._beat = time.monotonic()
                self.tasks[p] = task
                self.stats.task_started(p, task.plan.sources)  # metrics hook
                _log.info(
                    "pipeline %s: task %d started (checkpoint %s) in %.2f s%s",
                    self.pipeline.name,
                    p,
                    self.restored[p],
                    time.monotonic() - t0,
                    _warm_note(warm),
                )
            self._starting.pop(0)
            if self._member is not None:
                return  # one restore per loop pass: the group is served between restores

    def _drop(self, partitions: list[int]) -> None:
        for p in partitions:
            task = self.tasks.pop(p, None)
            if task is not None:
                self.dead_letters.entries.extend(task.plan.dead_letters.entries)
                task.close()
            self.metrics.detach(p)  # metrics hooks
            self.stats.task_dropped(p)

    # -- the loop ------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the worker to stop after the current iteration (thread-safe)."""
        self._stop.set()

    def run(self) -> RunResult:
        """Run the owned tasks until stopped (or, with bounded topics, until they end)."""
        stopped = True
        self._beat = time.monotonic()
        if self.options.stall_timeout is not None:
            limit = self.options.stall_timeout.total_seconds()
            threading.Thread(target=self._watchdog, args=(limit,), daemon=True).start()
        try:
            self._join()
            stopped = self._loop()
            if self.tasks:
                self.checkpoint()
        finally:
            self.close()
        self.inspector.finished = True
        self.inspector.checkpoints = self.checkpoints
        resumed = [r for r in self.restored.values() if r is not None]
        return RunResult(
            self.inspector,
            self.dead_letters,
            stopped,
            resumed_from=max(resumed) if resumed else None,
            checkpoints=self.checkpoints,
        )

    def _loop(self) -> bool:
        clock = self.clock
        idle_sleep = to_duration_ms(self.options.idle_sleep) / 1000
        sleep = 0.001
        max_wall = self.options.max_wall
        deadline = None if max_wall is None else clock.monotonic() + max_wall.total_seconds()
        while True:
            self._beat = time.monotonic()
            if self._stop.is_set() or (deadline is not None and clock.monotonic() >= deadline):
                return True
            if self._member is not None:
                self._member.poll(0)
            if self._starting:
                try:
                    self._start_pending()
                except LogError as exc:
                    if self._member is None:
                        raise
                    self._restart_tasks(exc)  # restoring failed (broker busy): try again
            if self._standbys is not None:
                self._tend_standbys()
            read = 0
            try:
                for task in list(self.tasks.values()):
                    read += task.iterate()
            except LogError as exc:
                if self._member is None:
                    raise
                self._restart_tasks(exc)  # e.g. the broker is restarting: redo, do not die
                continue
            self._records_since += read
            self.stats.refresh_lag(self.log)  # metrics hook: asks the log every few seconds
            static = self._member is None and not self._starting
            if static and all(t.ended for t in self.tasks.values()):
                return False  # bounded inputs ended (or this worker of a static split owns none)
            if self._due():
                self.checkpoint()
            if read:
                sleep = 0.001
            else:
                clock.sleep(sleep)
                sleep = min(sleep * 2, idle_sleep)

    def _tend_standbys(self) -> None:
        """Follow the tasks this worker does not own (each second), apply what arrived."""
        standbys = self._standbys
        assert standbys is not None
        now = time.monotonic()
        if now >= self._follow_due:
            busy = {*self.tasks, *self._starting}
            try:
                standbys.follow(p for p in range(self.partitions) if p not in busy)
            except LogError as exc:
                _log.warning("pipeline %s: standby copies paused: %s", self.pipeline.name, exc)
                self._follow_due = now + 5.0
                return
            self._follow_due = now + 1.0
        standbys.poll()

    def _watchdog(self, limit: float) -> None:
        """Exit the process if one loop pass takes longer than ``limit`` (see RunOptions)."""
        while not self._closed:
            time.sleep(min(1.0, limit / 4))
            stuck = time.monotonic() - self._beat
            if stuck > limit and not self._closed and not self._restoring:
                message = (
                    f"error: worker of pipeline '{self.pipeline.name}' is stuck: one pass of "
                    f"its loop has not finished for {stuck:.0f} s (stall timeout {limit:.0f} s; "
                    f"a Kafka client call can hang while a coordinator moves). Exiting with "
                    f"code {EXIT_STALLED} so that a supervisor restarts it; its tasks resume "
                    f"from their last committed checkpoint\n"
                )
                # Straight to the file descriptor: the stuck thread may hold sys.stderr's lock.
                with contextlib.suppress(OSError):
                    os.write(2, message.encode())
                    faulthandler.dump_traceback(file=2, all_threads=True)
                os._exit(EXIT_STALLED)

    def _due(self) -> bool:
        if self.clock.monotonic() - self._last_ckpt >= self._interval_s:
            return True
        limit = self.policy.records
        return limit is not None and self._records_since >= limit

    def checkpoint(self) -> None:
        """Commit one checkpoint of every owned task, in one log transaction.

        Raises:
            LogError: the commit failed and this worker is not in a group (in a group
                its tasks restart from their last committed checkpoint instead).
        """
        self._last_ckpt = self.clock.monotonic()
        self._records_since = 0
        if not self.tasks:
            return
        t0 = time.monotonic()  # metrics: the checkpoint's duration
        pending: list[tuple[Executor, Checkpointer, PendingCheckpoint]] = []
        for task in self.tasks.values():
            ckpt = task.checkpointer
            assert ckpt is not None  # a task always has the worker's log
            pending.append((task, ckpt, ckpt.prepare(task.watermarks())))
        self._in_checkpoint = True
        try:
            pending = self._commit(pending)
        except LogError as exc:
            self.stats.checkpoint_failed()  # metrics hook
            if self._member is None:
                raise
            self._restart_tasks(exc)
            return
        finally:
            self._in_checkpoint = False
        if not pending:
            return  # every task moved away while the checkpoint waited: nothing committed
        for _, ckpt, p in pending:
            ckpt.committed(p)
        self.checkpoints += 1
        self.stats.checkpointed(time.monotonic() - t0)  # metrics hook

    def _commit(
        self, pending: list[tuple[Executor, Checkpointer, PendingCheckpoint]]
    ) -> list[tuple[Executor, Checkpointer, PendingCheckpoint]]:
        """Write ``pending`` in one transaction; in a group, once more if it was aborted.

        A commit in a group fails when a rebalance changed the group's generation
        meanwhile (the broker refuses the positions of a stale generation), even for a
        worker whose tasks do not move. Since the transaction was aborted for certain,
        the worker serves the group until the rebalance is over, then writes the same
        checkpoint again for the tasks it still owns, instead of restarting them all.
        Returns what was committed.

        Raises:
            LogError: the commit failed (again).
        """
        try:
            with open_transaction(self.log, self.policy) as txn:
                for _, ckpt, p in pending:
                    ckpt.write(txn, p)
            return pending
        except TransactionAbortedError as exc:
            if self._member is None or self._in_revoke:
                raise  # (in a revoke callback the group cannot move on until it returns)
            self.stats.checkpoint_failed()  # metrics hook
            _log.info(
                "pipeline %s: a checkpoint was aborted (%s); writing it again after the rebalance",
                self.pipeline.name,
                exc,
            )
        self._await_rebalance()
        kept = [(t, c, p) for t, c, p in pending if self.tasks.get(t.partition or 0) is t]
        if not kept:
            return kept
        with open_transaction(self.log, self.policy) as txn:
            for _, ckpt, p in kept:
                ckpt.write(txn, p)
        return kept

    def _await_rebalance(self) -> None:
        """Serve the group until a rebalance is over, for at most ``REBALANCE_WAIT_S``.

        Over: its callbacks ran, then none for ``REBALANCE_QUIET_S`` (a cooperative
        rebalance has two rounds, each with its own callbacks).
        """
        member = self._member
        seen = member.rebalances
        changed_at: float | None = None
        deadline = time.monotonic() + REBALANCE_WAIT_S
        while (now := time.monotonic()) < deadline:
            if changed_at is not None and now - changed_at >= REBALANCE_QUIET_S:
                return
            member.poll(0.05)
            if member.rebalances != seen:
                seen, changed_at = member.rebalances, time.monotonic()

    def _restart_tasks(self, exc: LogError) -> None:
        """A group checkpoint failed: redo the owned tasks from their last checkpoint."""
        owned = sorted(self.tasks)
        self.restarts += 1
        _log.warning(
            "pipeline %s: the log failed (%s); restarting task(s) %s from their last "
            "committed checkpoint",
            self.pipeline.name,
            exc,
            sorted({*owned, *self._starting}),
        )
        self._drop(owned)
        self.clock.sleep(RETRY_PAUSE_S)
        self._starting.extend(p for p in owned if p not in self._starting)

    def close(self) -> None:
        """Close every task, leave the group, close the log if this worker opened it."""
        if self._closed:
            return
        self._closed = True
        self._drop(sorted(self.tasks))
        if self._standbys is not None:
            self._standbys.close()
        if self._member is not None:
            self._member.close()
        if self._own_log:
            self.log.close()


def _warm_note(warm: dict[str, WarmChangelog] | None) -> str:
    if warm is None:
        return ""
    records = sum(copy.records for copy in warm.values())
    return f" from a standby copy ({records} changelog records read ahead)"


def _refuse_shared_sinks(task: Executor) -> None:
    for sink in task.plan.sinks:
        if getattr(sink.writer, "prepare", None) is not None:
            raise ConfigError(
                f"sink '{sink.name}' writes files, which the tasks of a partitioned run cannot "
                f"share; write to a topic (es.topic) and export it, or give the source topics "
                f"one partition"
            )
