"""The operator contract every compiled step implements, and the error boundary.

The executor is push-based and single-threaded: a source batch is pushed
through the graph depth-first (``on_batch``), then watermarks are
propagated in topological order (``on_watermark``), so results emitted while
handling a watermark reach downstream operators before the watermark does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from eventspine.dataflow.ports import DeadLetter, ErrorPolicy, Fail, Skip
from eventspine.errors import DecodeError, StepError
from eventspine.records import Batch
from eventspine.runtime.metrics import StepMetrics
from eventspine.timeutil import MIN_TS_MS

__all__ = ["DeadLetterEntry", "DeadLetters", "ErrorBoundary", "Operator", "Output"]


class Output:
    """Where an operator sends its results: the main output and named side outputs.

    The executor connects outputs to downstream operators. A side output nobody
    consumes is still counted (``records_out{port=...}``), never silently lost.
    """

    __slots__ = ("_counted", "_metrics", "_side", "_targets", "name")

    def __init__(self, name: str, metrics: StepMetrics, *, counted_by_owner: bool = False) -> None:
        self.name = name
        self._metrics = metrics
        self._counted = counted_by_owner
        self._targets: list[tuple[Operator, int]] = []
        self._side: dict[str, list[tuple[Operator, int]]] = {}

    def connect(self, port: str, target: Operator, target_port: int) -> None:
        """Deliver this output's ``port`` to ``target``'s input ``target_port``."""
        if port == "main":
            self._targets.append((target, target_port))
        else:
            self._side.setdefault(port, []).append((target, target_port))

    def has_side(self, port: str) -> bool:
        """Whether a downstream step consumes side output ``port``."""
        return port in self._side

    def emit(self, batch: Batch) -> None:
        """Send a batch to every consumer of the main output."""
        if not len(batch):
            return
        if not self._counted:
            self._metrics.records_out += len(batch)
        for op, port in self._targets:
            op.receive(batch, port)

    def emit_side(self, port: str, batch: Batch) -> None:
        """Send a batch to the consumers of side output ``port``."""
        if not len(batch):
            return
        self._metrics.count_side(port, len(batch))
        for op, in_port in self._side.get(port, ()):
            op.receive(batch, in_port)


class Operator:
    """A compiled step. Subclasses override the ``on_*`` hooks they need.

    Contract:
        * ``on_batch(batch, port)`` is called for every batch from input ``port``
          (0 for single-input steps; 0 = left, 1 = right for joins).
        * ``on_watermark(wm_ms)`` is called when the minimum watermark of the
          operator's inputs advances; it never goes back. At end of input it is
          called with ``MAX_TS_MS``, then ``on_end()``.
        * ``on_tick(now_ms)`` is called on every loop iteration with the wall clock
          (for processing-time timers); it must be cheap when there is nothing to do.
        * Hooks run one at a time; they emit through ``self.out``.
    """

    def __init__(self, name: str, metrics: StepMetrics) -> None:
        self.name = name
        self.metrics = metrics
        self.out = Output(name, metrics)
        self.watermark_ms = MIN_TS_MS

    def receive(self, batch: Batch, port: int) -> None:
        """Count and time a batch, then hand it to :meth:`on_batch`."""
        m = self.metrics
        m.records_in += len(batch)
        m.batches += 1
        t0 = m.timer()
        self.on_batch(batch, port)
        m.observe_latency(t0)

    def on_batch(self, batch: Batch, port: int) -> None:
        """Handle a batch (default: pass it through)."""
        self.out.emit(batch)

    def on_watermark(self, wm_ms: int) -> None:
        """React to the watermark advancing (default: nothing)."""

    def on_tick(self, now_ms: int) -> None:
        """React to the wall clock (default: nothing)."""

    def on_end(self) -> None:
        """All inputs have ended; flush what is left (default: nothing)."""

    def emit_late(self, batch: Batch, indices: list[int]) -> None:
        """Count the records at ``indices`` as late and send them to side output ``late``."""
        if not indices:
            return
        self.metrics.late += len(indices)
        self.out.emit_side("late", batch.take(indices))

    # -- state for checkpoints -------------------------------------------------------
    #: Whether the operator keeps state that must survive a restart.
    stateful = False

    def snapshot_changes(self) -> list[tuple[Any, Any]]:
        """Return the state entries changed since the previous call, as ``(key, value)``.

        Called by the checkpoint, between batches, after the operator has handled
        everything before it. ``value`` is ``None`` for an entry that no longer
        exists. Keys and values must be picklable; keys must be hashable and
        stable across processes (no ``id()``). The granularity is the operator's
        choice (per key, per key and window, or one entry for all of it): the
        checkpoint writes each entry to a compacted changelog, so restoring reads
        only the latest value of each key.
        """
        return []

    def restore(self, entries: list[tuple[Any, Any]]) -> None:
        """Rebuild state from the latest value of every entry (called once, before any batch).

        ``entries`` holds what :meth:`snapshot_changes` returned across all
        checkpoints, reduced to the latest non-``None`` value per key. After
        ``restore`` the next ``snapshot_changes`` reports only new changes.
        """
        if entries:
            raise AssertionError(f"{type(self).__name__} keeps no state but was given some")


@dataclass(frozen=True)
class DeadLetterEntry:
    """A record set aside by ``DeadLetter``: what it was, where from, and why."""

    step: str
    topic: str
    partition: str | None
    offset: int | None
    error_type: str
    error: str
    record: Any = None
    raw: bytes | None = None
    attempts: int = 1


@dataclass
class DeadLetters:
    """The dead letters of a run (made durable by the durable-mode log)."""

    entries: list[DeadLetterEntry] = field(default_factory=list)

    def add(self, entry: DeadLetterEntry) -> None:
        """Keep one entry."""
        self.entries.append(entry)


class ErrorBoundary:
    """Applies a step's error policy to a failure of user code or of decoding.

    ``Fail`` raises :class:`StepError` (or the :class:`DecodeError`) naming the
    step, function and position; ``Skip`` counts; ``DeadLetter`` keeps the
    record, error and position.
    """

    __slots__ = ("_dead", "_metrics", "fn_name", "policy", "step")

    def __init__(
        self,
        step: str,
        policy: ErrorPolicy,
        dead: DeadLetters,
        metrics: StepMetrics,
        fn: Callable[..., Any] | None = None,
    ) -> None:
        self.step = step
        self.policy = policy
        self._dead = dead
        self._metrics = metrics
        self.fn_name = _fn_name(fn)

    def user_error(self, exc: Exception, batch: Batch, index: int) -> None:
        """Handle ``exc`` raised by user code on ``batch.rows[index]`` (returns if not fatal)."""
        partition, offset = batch.position(index)
        record = batch.rows[index]
        if isinstance(self.policy, Fail):
            raise StepError(
                self.step, self.fn_name, exc, partition=partition, offset=offset, record=record
            ) from exc
        self._set_aside(type(exc).__name__, str(exc), partition, offset, record, None)

    def decode_error(self, err: DecodeError, partition: str, offset: int | None) -> None:
        """Handle a record a source could not decode (returns if not fatal)."""
        if isinstance(self.policy, Fail):
            raise DecodeError(
                f"{err}. Give the source on_error=es.Skip() or es.DeadLetter(...) to set such "
                f"records aside",
                source=self.step,
                position=f"{partition}@{offset}" if offset is not None else partition,
                raw=err.raw,
            ) from err
        self._set_aside("DecodeError", str(err), partition, offset, None, err.raw)

    def _set_aside(
        self,
        error_type: str,
        message: str,
        partition: str | None,
        offset: int | None,
        record: Any,
        raw: bytes | None,
    ) -> None:
        if isinstance(self.policy, Skip):
            self._metrics.skipped += 1
            return
        assert isinstance(self.policy, DeadLetter)
        self._metrics.dead_lettered += 1
        self._dead.add(
            DeadLetterEntry(
                self.step, self.policy.topic, partition, offset, error_type, message, record, raw
            )
        )


def _fn_name(fn: Callable[..., Any] | None) -> str:
    if fn is None:
        return "the step"
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    module = getattr(fn, "__module__", None)
    return f"{module}.{name}()" if module and module != "builtins" else f"{name}()"
