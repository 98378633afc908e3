"""The plug points a pipeline is built from: sources, sinks, processors, error policies.

These are narrow protocols: a connector implements ``Source``/``Sink``, a
user implements ``Processor`` (or passes a function). The runtime drives
them according to the contracts in the docstrings.
"""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, final

from eventspine.errors import DecodeError

if TYPE_CHECKING:
    import polars as pl

    from eventspine.records import Batch
    from eventspine.timeutil import Clock

__all__ = [
    "Chunk",
    "DeadLetter",
    "ErrorPolicy",
    "Fail",
    "OpenContext",
    "ProcessContext",
    "Processor",
    "Sink",
    "SinkWriter",
    "Skip",
    "Source",
    "SourceReader",
]


# -- error policies ------------------------------------------------------------


class ErrorPolicy:
    """What happens to a record that cannot be decoded or processed."""

    __slots__ = ()


@final
@dataclass(frozen=True)
class Fail(ErrorPolicy):
    """Stop the pipeline with an error naming the step, partition and offset (the default)."""


@final
@dataclass(frozen=True)
class Skip(ErrorPolicy):
    """Drop the record, count it in the step's ``skipped`` metric, and go on."""


@final
@dataclass(frozen=True)
class DeadLetter(ErrorPolicy):
    """Set the record aside in a dead-letter topic with its error, step and position.

    Args:
        topic: the dead-letter topic name.
        max_retries: how often a failing user function is retried (with backoff)
            before the record is dead-lettered; decode errors are never retried.
    """

    topic: str = "dead_letters"
    max_retries: int = 0


# -- sources -------------------------------------------------------------------


@dataclass
class Chunk:
    """What one ``SourceReader.poll`` returns.

    Attributes:
        records: decoded records (a list of dicts/events, or a frame of fields when the
            reader was asked for columns and can give them).
        first_offset: the offset of the first record; records are consecutive unless
            ``offsets`` is given.
        offsets: the explicit offset of each record, when not consecutive.
        errors: records that could not be decoded, with their position and raw bytes.
        next_offset: the position to resume from after this chunk.
    """

    records: list[Any] | pl.DataFrame
    first_offset: int
    next_offset: int
    offsets: list[int] | None = None
    errors: list[DecodeError] = field(default_factory=list)


@dataclass(frozen=True)
class OpenContext:
    """What the runtime tells a source or sink when it opens it.

    Attributes:
        step: the step name.
        clock: the clock of the run.
        worker: this worker's index; ``workers``: how many there are.
        state_dir: the run's state directory (``None`` for in-memory runs).
        log: the run's durable log (an ``eventspine.log.Log``; typed ``Any`` because
            definitions may not import the log layer), or ``None`` for runs without one.
        group: the consumer group of the run (the pipeline name): topic sources read
            and commit positions under it.
        transactional: whether a checkpointer drives the sinks (then sinks that support
            it stage their output until a checkpoint commits).
        partitions: the source partitions this task owns when the pipeline runs as one
            task per partition (``None``: all of them).
    """

    step: str
    clock: Clock
    worker: int = 0
    workers: int = 1
    state_dir: str | None = None
    log: Any = None
    group: str = ""
    transactional: bool = False
    partitions: frozenset[int] | None = None


class SourceReader(Protocol):
    """One partition of a source, opened by the runtime.

    ``poll`` is called from the runtime's loop and must not block for long
    (at most about 10 ms); it returns ``None`` once a bounded input has ended
    (and forever after), or a chunk that may be empty when nothing is ready.
    ``seek`` is called at most once, before the first ``poll``, when the run
    resumes from a checkpoint.
    """

    partition: str

    def poll(self, max_records: int, columnar: bool) -> Chunk | None:
        """Return the next records (at most ``max_records``), or ``None`` at end of input."""
        ...

    def seek(self, offset: int) -> None:
        """Resume reading at ``offset`` (the ``next_offset`` of a committed chunk)."""
        ...

    def close(self) -> None:
        """Release files and connections; called once."""
        ...


class Source(Protocol):
    """A definition of where records come from; it does no I/O until opened.

    Attributes:
        record_type: the type of the records it produces (``dict`` or an ``es.Event``).
        bounded: whether its input ends.
    """

    record_type: type
    bounded: bool

    def open(self, context: OpenContext) -> Sequence[SourceReader]:
        """Open one reader per partition this worker reads."""
        ...


# -- sinks ---------------------------------------------------------------------


class SinkWriter(Protocol):
    """An open sink.

    ``write`` is called with each batch of results in order. ``flush`` is
    driven by the runtime (at each checkpoint and at the end); after it
    returns, everything written is durable per the sink's guarantee, and a
    failure raises, which aborts the checkpoint. ``close`` is called once.
    """

    def write(self, batch: Batch) -> None:
        """Accept a batch of records (``batch.rows`` or ``batch.frame``)."""
        ...

    def flush(self) -> None:
        """Make everything written so far durable."""
        ...

    def close(self) -> None:
        """Flush and release resources."""
        ...


class Sink(Protocol):
    """A definition of where results go; it does no I/O until opened.

    Attributes:
        columnar: whether the writer prefers frames (then the runtime does not
            build Python rows for it).
    """

    columnar: bool

    def open(self, context: OpenContext) -> SinkWriter:
        """Open the writer."""
        ...


# -- process -------------------------------------------------------------------


class ProcessContext(Protocol):
    """What ``process`` functions see besides the record.

    Attributes:
        key: the key of the current record or timer.
        ts_ms: the event time of the current record, or the time of the firing timer.
        watermark_ms: the current watermark of the step.
        state: this key's state (a dict you may read and write; values must be
            picklable to survive restarts).
    """

    key: Any
    ts_ms: int
    watermark_ms: int
    state: MutableMapping[str, Any]

    @property
    def timestamp(self) -> datetime:
        """The event time as an aware UTC datetime."""
        ...

    def emit(self, record: Any, *, ts_ms: int | None = None) -> None:
        """Send a record downstream (event time defaults to the current one)."""
        ...

    def emit_to(self, side: str, record: Any) -> None:
        """Send a record to the named side output (``stream.side_output(side)``)."""
        ...

    def set_event_timer(self, at_ms: int) -> None:
        """Call ``on_timer`` for this key once the watermark reaches ``at_ms``."""
        ...

    def set_processing_timer(self, at_ms: int) -> None:
        """Call ``on_timer`` for this key once the wall clock reaches ``at_ms``."""
        ...

    def delete_timers(self) -> None:
        """Cancel this key's pending timers."""
        ...


class Processor(Protocol):
    """The power verb's user object: per-key state, timers, emit.

    ``on_record`` is called once per record, with the record's key in
    ``ctx.key``; ``on_timer`` is called when a timer set for a key fires
    (``ctx.ts_ms`` is the timer's time). Both run one at a time.
    """

    def on_record(self, record: Any, ctx: ProcessContext) -> None:
        """Handle one record."""
        ...

    def on_timer(self, ctx: ProcessContext) -> None:
        """Handle a timer."""
        ...
