"""The single-process executor: the loop that moves micro-batches through a plan.

One iteration: poll every source partition for whatever is ready (at most
``batch_size`` records, adapted so a batch takes about ``latency_budget``
to process), push each batch through the operator graph, advance watermarks
in topological order, and tick processing-time timers (sink operators flush on
their interval then). With a log, a checkpoint is taken when its policy says so.
When nothing was read the loop sleeps briefly (1 ms, backing off
to 10 ms) so an idle pipeline costs almost no CPU yet reacts within
milliseconds. With a log, every sink is also flushed at each checkpoint, before
the positions past its records commit. Bounded inputs end the run: the watermark goes to +infinity,
every open window is flushed, sinks are flushed and closed.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from types import FrameType
from typing import TYPE_CHECKING, Any

from eventspine.dataflow.pipeline import Pipeline
from eventspine.dataflow.ports import OpenContext
from eventspine.log import Log, open_log
from eventspine.runtime.checkpoint import Checkpointer, CheckpointPolicy
from eventspine.runtime.metrics import Inspector, StepMetrics
from eventspine.runtime.operator import DeadLetters, Operator
from eventspine.runtime.plan import Plan, compile_pipeline
from eventspine.timeutil import MAX_TS_MS, MIN_TS_MS, Clock, SystemClock, to_duration_ms

if TYPE_CHECKING:
    from eventspine.runtime.standby import WarmChangelog

__all__ = ["RunOptions", "RunResult", "Executor", "run", "stop_on_signals"]


@dataclass(frozen=True)
class RunOptions:
    """How to run a pipeline.

    Attributes:
        latency_budget: the target processing time of one micro-batch; batches grow
            under load until they take about this long, and shrink when they take longer.
        max_batch: the largest batch read from one partition at once.
        min_batch: the smallest; slow records (a slow call per record) shrink batches to
            this, so a loop pass, and with it a checkpoint, still comes every few records.
        flush_interval: how often sinks are flushed while running.
        idle_sleep: the longest sleep when no source has data.
        state_dir: the run's state directory (for sources/sinks that need one).
        handle_signals: stop cleanly on SIGINT/SIGTERM (main thread only).
        max_wall: stop after this long (``None``: run until the inputs end or a signal).
        log: the durable log: a URL (``"sqlite:///path/log.db"``, ``"memory://"``) or an
            open ``eventspine.log.Log``. With a log the run takes checkpoints and resumes
            from the last one; ``None`` keeps everything in memory (no recovery).
        checkpoint: when checkpoints are taken (only with a log).
        stall_timeout: a partitioned run's worker exits (code 75) when one pass of its
            loop has not finished for this long, for example a Kafka client call that
            never returns while a coordinator moves; a supervisor restarts it and its
            tasks resume from their last checkpoint. ``None``: wait forever.
        standby: in a Kafka group, each worker also keeps warm copies of the state of
            the tasks it does not own, so a task that moves to it after a failure
            restores in a fraction of the time (see :mod:`eventspine.runtime.standby`).
            Costs memory (each worker holds every task's encoded state) and CPU.
    """

    latency_budget: timedelta = timedelta(milliseconds=20)
    max_batch: int = 200_000
    min_batch: int = 64
    flush_interval: timedelta = timedelta(seconds=1)
    idle_sleep: timedelta = timedelta(milliseconds=10)
    state_dir: str | None = None
    handle_signals: bool = True
    max_wall: timedelta | None = None
    log: Any = None
    checkpoint: CheckpointPolicy = field(default_factory=CheckpointPolicy)
    stall_timeout: timedelta | None = timedelta(minutes=2)
    standby: bool = False


@dataclass(frozen=True)
class RunResult:
    """What a finished run reports.

    Attributes:
        inspector: the final metrics.
        dead_letters: the records set aside by ``DeadLetter`` policies.
        stopped: ``True`` if a signal or ``max_wall`` stopped the run before its inputs ended.
        resumed_from: the checkpoint the run resumed from (``None``: a fresh start).
        checkpoints: how many checkpoints the run committed.
    """

    inspector: Inspector
    dead_letters: DeadLetters
    stopped: bool
    resumed_from: int | None = None
    checkpoints: int = 0


class Executor:
    """Runs one compiled plan to completion (or until stopped).

    With ``partition=p`` (of ``partitions``) the plan is one *task* of a partitioned
    pipeline: its topic sources read only partition ``p`` and its checkpoints cover
    only that partition's state. A :class:`~eventspine.runtime.worker.Worker` drives
    such tasks with :meth:`start`, :meth:`iterate` and its own checkpoints.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        clock: Clock | None = None,
        options: RunOptions | None = None,
        operator_factories: dict[type, Callable[..., Operator]] | None = None,
        partition: int | None = None,
        partitions: int = 1,
        metrics: dict[str, StepMetrics] | None = None,
    ) -> None:
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.partition = partition
        self.options = options or RunOptions()
        opts = self.options
        self._own_log = isinstance(opts.log, str)
        self.log: Log | None = open_log(opts.log) if isinstance(opts.log, str) else opts.log

        def ctx(step: str) -> OpenContext:
            return OpenContext(
                step,
                self.clock,
                state_dir=opts.state_dir,
                log=self.log,
                group=pipeline.name,
                transactional=self.log is not None,
                partitions=None if partition is None else frozenset({partition}),
            )

        self.plan: Plan = compile_pipeline(
            pipeline,
            self.clock,
            open_context=ctx,
            flush_s=to_duration_ms(opts.flush_interval) / 1000,
            operator_factories=operator_factories
            if operator_factories is not None
            else default_factories(),
            metrics=metrics,
        )
        self.inspector = Inspector(pipeline.name, self.plan.metrics)
        self.checkpointer: Checkpointer | None = (
            None
            if self.log is None
            else Checkpointer(
                self.log,
                self.plan,
                self.clock,
                opts.checkpoint,
                partition=partition or 0,
                partitions=partitions,
            )
        )
        self.ended = False
        self._stop = threading.Event()
        self._batch = opts.min_batch
        self._budget_s = to_duration_ms(opts.latency_budget) / 1000
        self._op_wm: dict[int, int] = {}

    def stop(self) -> None:
        """Ask the loop to stop at the end of the current iteration (thread-safe)."""
        self._stop.set()

    def run(self) -> RunResult:
        """Run until every input has ended, or until stopped; return the result."""
        opts = self.options
        ckpt = self.checkpointer
        resumed: int | None = None
        with stop_on_signals(self.stop, opts.handle_signals):
            stopped = False
            try:
                resumed = self.start()
                stopped = self._loop()
                if ckpt is not None:
                    # The final checkpoint: at end of input it commits the flushed windows;
                    # after a signal it saves everything handled so far.
                    ckpt.checkpoint(self.watermarks())
            finally:
                self.close()
        return self.result(stopped, resumed)

    def result(self, stopped: bool, resumed: int | None) -> RunResult:
        """The run's result (after it finished or was stopped)."""
        ckpt = self.checkpointer
        self.inspector.finished = True
        self.inspector.checkpoints = 0 if ckpt is None else ckpt.count
        return RunResult(
            self.inspector,
            self.plan.dead_letters,
            stopped,
            resumed_from=resumed,
            checkpoints=0 if ckpt is None else ckpt.count,
        )

    def start(self, warm: Mapping[str, WarmChangelog] | None = None) -> int | None:
        """Recover from the last checkpoint (with a log); return its id or ``None``.

        ``warm``: a standby copy of the task's changelogs (see ``Checkpointer.recover``).
        """
        ckpt = self.checkpointer
        if ckpt is None:
            return None
        resumed = ckpt.recover(warm)
        restored = ckpt.restored_watermarks()
        for op in self.plan.operators:
            if op.name in restored:
                self._op_wm[id(op)] = op.watermark_ms
        return resumed

    def close(self) -> None:
        """Close sources, sinks and the log (idempotent)."""
        if getattr(self, "_closed", False):
            return
        self._closed = True
        for src in self.plan.sources:
            src.close()
        for sink in self.plan.sinks:
            sink.close()
        if self._own_log and self.log is not None:
            self.log.close()

    def watermarks(self) -> dict[str, int]:
        """The current watermark of every source and operator, by step name."""
        wms = {src.name: src.watermark_ms for src in self.plan.sources}
        for op in self.plan.operators:
            wms[op.name] = self._op_wm.get(id(op), MIN_TS_MS)
        return wms

    # -- the loop ------------------------------------------------------------------
    def _loop(self) -> bool:
        clock = self.clock
        opts = self.options
        idle_sleep = to_duration_ms(opts.idle_sleep) / 1000
        sleep = 0.001
        deadline = (
            None if opts.max_wall is None else clock.monotonic() + opts.max_wall.total_seconds()
        )
        ckpt = self.checkpointer
        while True:
            if self._stop.is_set():
                return True
            if deadline is not None and clock.monotonic() >= deadline:
                return True
            read = self.iterate()
            if self.ended:
                return False
            if ckpt is not None and ckpt.due():
                ckpt.checkpoint(self.watermarks())
            if read:
                sleep = 0.001
            else:
                clock.sleep(sleep)
                sleep = min(sleep * 2, idle_sleep)

    def iterate(self) -> int:
        """One pass of the loop: poll, push, advance watermarks, tick; return records read.

        When every input has ended, the windows are flushed and :attr:`ended` is set.
        """
        plan = self.plan
        t0 = time.perf_counter()
        read = 0
        for src in plan.sources:
            read += src.poll(self._batch)
        if read:
            # Only reading and pushing the batch counts: window closes have a fixed cost
            # per iteration, and counting them would shrink batches and multiply closes.
            self._adapt(read, time.perf_counter() - t0)
        now = self.clock.now_ms()
        self._advance_watermarks(now)
        for op in plan.operators:
            op.on_tick(now)
        if not self.ended and all(src.ended for src in plan.sources):
            self._finish()
            self.ended = True
        if self.checkpointer is not None:
            self.checkpointer.note_records(read)
        return read

    def _adapt(self, read: int, elapsed: float) -> None:
        """Grow or shrink the batch size so one iteration takes about the latency budget."""
        if read < self._batch // 2:  # file readers cut at line ends: ~95 % of asked is "full"
            return  # the source gave what it had; batch size was not the limit
        opts = self.options
        if elapsed < self._budget_s / 2:
            self._batch = min(self._batch * 2, opts.max_batch)
        elif elapsed > self._budget_s:
            self._batch = max(self._batch // 2, opts.min_batch)

    def _advance_watermarks(self, now_ms: int) -> None:
        plan = self.plan
        wm_of: dict[int, int] = {}
        for src in plan.sources:
            wm_of[id(src)] = src.current_watermark(now_ms)
        for op in plan.operators:
            ups = plan.inputs.get(id(op), [])
            wm = min((wm_of.get(id(u), MIN_TS_MS) for u in ups), default=MIN_TS_MS)
            prev = self._op_wm.get(id(op), MIN_TS_MS)
            if wm > prev:
                self._op_wm[id(op)] = wm
                op.watermark_ms = wm
                op.metrics.watermark_ms = wm
                op.on_watermark(wm)
            wm_of[id(op)] = self._op_wm.get(id(op), MIN_TS_MS)

    def _finish(self) -> None:
        """All inputs ended: close every window, flush every sink."""
        plan = self.plan
        for op in plan.operators:
            if self._op_wm.get(id(op), MIN_TS_MS) < MAX_TS_MS:
                self._op_wm[id(op)] = MAX_TS_MS
                op.watermark_ms = MAX_TS_MS
                op.on_watermark(MAX_TS_MS)
            op.on_end()
        if self.checkpointer is None:
            for sink in plan.sinks:
                sink.flush()


@contextmanager
def stop_on_signals(stop: Callable[[], None], enabled: bool = True) -> Iterator[None]:
    """Within the block, SIGINT/SIGTERM call ``stop`` (main thread only; else a no-op)."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        stop()

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def default_factories() -> dict[type, Callable[..., Operator]]:
    """The operator factories for stateful steps (windows, joins, process)."""
    from eventspine.runtime.registry import factories

    return factories()


def run(
    pipeline: Pipeline,
    *,
    clock: Clock | None = None,
    options: RunOptions | None = None,
) -> RunResult:
    """Run ``pipeline`` in this process until its inputs end (or SIGINT/SIGTERM).

    With a log, a pipeline whose every source is a topic runs as one task per
    partition (see :mod:`eventspine.runtime.worker`), as ``eventspine run`` does;
    this process then owns all the tasks (or, on Kafka, those its group assigns).

    Raises:
        DefinitionError: the pipeline is invalid.
        StepError: user code failed and the step's policy is ``Fail()``.
        DecodeError: a record could not be decoded and the policy is ``Fail()``.
    """
    opts = options or RunOptions()
    if opts.log is None:
        return Executor(pipeline, clock=clock, options=opts).run()
    from dataclasses import replace

    from eventspine.runtime.worker import Worker, source_partitions

    own = isinstance(opts.log, str)
    log: Log = open_log(opts.log) if own else opts.log
    try:
        opts = replace(opts, log=log)
        partitions = source_partitions(pipeline, log)
        if partitions is None:
            return Executor(pipeline, clock=clock, options=opts).run()
        worker = Worker(pipeline, clock=clock, options=opts, partitions=partitions)
        with stop_on_signals(worker.stop, opts.handle_signals):
            return worker.run()
    finally:
        if own:
            log.close()
