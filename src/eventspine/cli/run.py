"""Running one pipeline from the command line: signals, metrics endpoint, progress, summary.

Signals: the first SIGINT/SIGTERM asks the executor to stop at the end of
the current micro-batch; sources and sinks are then closed (sinks flushed)
and the exit code is ``128 + signal`` (130, 143). A second signal, or a
signal while the pipeline is still loading, stops at once.
"""

from __future__ import annotations

import dataclasses
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from types import FrameType
from typing import Protocol, TextIO

from eventspine import failpoints
from eventspine.dataflow.pipeline import Pipeline
from eventspine.errors import ConfigError
from eventspine.log import open_log
from eventspine.runtime.checkpoint import CheckpointPolicy
from eventspine.runtime.executor import Executor, RunOptions, RunResult
from eventspine.runtime.worker import Worker, source_partitions
from eventspine.settings import Settings

from .progress import ProgressLine, format_summary

__all__ = ["ForcedStop", "RunRequest", "Signals", "execute"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class ForcedStop(BaseException):
    """A signal arrived while loading, or a second one while stopping: stop at once.

    A ``BaseException`` so that no ``except Exception`` in user code swallows it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """``128 + signal number``, as shells report a signal death."""
        return 128 + self.signum


class Stoppable(Protocol):
    """What a signal stops: an executor, a worker, or the parent of ``--workers``."""

    def stop(self) -> None:
        """Ask it to stop at the end of the current iteration."""
        ...


class Signals:
    """Remembers which signal stopped the run and forwards it to the executor."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.executor: Stoppable | None = None

    def handler(self, signum: int, frame: FrameType | None) -> None:
        """The SIGINT/SIGTERM handler (runs in the main thread between bytecodes)."""
        if self.received is not None or self.executor is None:
            self.received = signum
            raise ForcedStop(signum)
        self.received = signum
        self.executor.stop()

    @contextmanager
    def installed(self) -> Iterator[Signals]:
        """Install the handlers for the duration of the block (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        old = {s: signal.signal(s, self.handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, h in old.items():
                signal.signal(s, h)


@dataclass(frozen=True)
class RunRequest:
    """What the ``run`` (or ``demo``) command asked for."""

    settings: Settings
    max_seconds: float | None = None
    progress: bool | None = None  # None: when stderr is a terminal
    quiet: bool = False
    worker: int = 0
    workers: int = 1
    exactly_once: bool = True
    stall_timeout_s: float | None = 120.0
    standby: bool = False


def execute(
    pipeline: Pipeline, req: RunRequest, signals: Signals, stderr: TextIO | None = None
) -> tuple[int, RunResult]:
    """Compile and run ``pipeline``; return the exit code and the result.

    Raises:
        ConfigError: the metrics port cannot be bound.
        DefinitionError: the pipeline is invalid.
        EventspineError: the run failed (StepError, DecodeError, SourceError...).
    """
    err = stderr if stderr is not None else sys.stderr
    s = req.settings
    failpoints.configure(s.failpoints, s.failpoints_log or None)
    options = RunOptions(
        latency_budget=timedelta(milliseconds=s.latency_budget_ms),
        flush_interval=timedelta(milliseconds=s.flush_interval_ms),
        state_dir=s.state_dir,
        log=s.log,
        checkpoint=CheckpointPolicy(
            interval=timedelta(milliseconds=s.checkpoint_interval_ms),
            exactly_once=req.exactly_once,
        ),
        handle_signals=False,  # the CLI handles them, to remember which signal it was
        max_wall=None if req.max_seconds is None else timedelta(seconds=req.max_seconds),
        stall_timeout=None if not req.stall_timeout_s else timedelta(seconds=req.stall_timeout_s),
        standby=req.standby,
    )
    log = open_log(s.log)
    try:
        return _execute(pipeline, req, signals, err, dataclasses.replace(options, log=log))
    finally:
        log.close()


def _execute(
    pipeline: Pipeline, req: RunRequest, signals: Signals, err: TextIO, options: RunOptions
) -> tuple[int, RunResult]:
    executor: Executor | Worker
    partitions = source_partitions(pipeline, options.log)
    if partitions is not None:
        executor = Worker(
            pipeline,
            options=options,
            worker=req.worker,
            workers=req.workers,
            partitions=partitions,
        )
    elif req.workers > 1:
        raise ConfigError(
            f"pipeline '{pipeline.name}' cannot run on {req.workers} workers: only a pipeline "
            f"whose every source is a topic of the log is split into tasks; run one worker, "
            f"or feed the pipeline from topics (eventspine produce ...)"
        )
    else:
        executor = Executor(pipeline, options=options)
    s = req.settings
    server = None
    if s.metrics_port is not None:
        from eventspine.runtime.prometheus import serve_metrics

        try:
            server = serve_metrics(executor.inspector, s.metrics_port)
        except OSError as exc:
            _abandon(executor)
            raise ConfigError(
                f"cannot serve metrics on 127.0.0.1:{s.metrics_port}: {exc.strerror or exc}; "
                f"choose a free port with --metrics-port or EVENTSPINE_METRICS_PORT"
            ) from exc
        if not req.quiet:
            err.write(f"metrics: {server.url}\n")
            err.flush()
    show = req.progress if req.progress is not None else _isatty(err)
    progress = ProgressLine(executor.inspector, err, in_place=_isatty(err)) if show else None
    signals.executor = executor
    try:
        if progress is not None:
            progress.start()
        result = executor.run()
    finally:
        signals.executor = None
        if progress is not None:
            progress.stop()
        if server is not None:
            server.close()
    code = EXIT_OK
    if result.stopped and signals.received is not None:
        how = f"stopped by {signal.Signals(signals.received).name}"
        code = 128 + signals.received
    elif result.stopped:
        how = f"stopped after --max-seconds {req.max_seconds:g}"
    else:
        how = "finished"
    if not req.quiet:
        err.write(format_summary(executor.inspector.totals(), how=how) + "\n")
        err.flush()
    return code, result


def _abandon(executor: Executor | Worker) -> None:
    """Close the sources and sinks the executor opened, when it will not run."""
    if isinstance(executor, Worker):
        executor.close()
        return
    for src in executor.plan.sources:
        src.close()
    for sink in executor.plan.sinks:
        sink.close()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
