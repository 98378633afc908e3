"""The one exception tree of eventspine.

Every error eventspine raises on purpose is an :class:`EventspineError`.
Errors from drivers and third-party libraries are translated at the adapter
edge with ``raise ... from exc``, so callers only ever catch these::

    EventspineError
    ├── DefinitionError        the pipeline definition is invalid (raised while building)
    ├── ConfigError            a setting, URL or command-line value is invalid
    ├── StepError              user code raised while processing a record
    ├── DecodeError            bytes could not be decoded into a record
    ├── SourceError            a source failed to read (file missing, broker unreachable)
    ├── SinkError              a sink failed to write
    ├── LogError               the durable log refused or failed an operation
    │   ├── TopicNotFoundError
    │   ├── StorageCorruptError   a file is damaged; the message names the file
    │   └── TransactionAbortedError  a commit failed and was aborted: none of it is visible
    ├── StateError             state could not be restored or does not match the pipeline
    └── StoppedError           the run was stopped (SIGINT/SIGTERM) before it finished

Every message is one paragraph that says what happened, where (step,
partition@offset, field, file) and how to fix it.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ConfigError",
    "DecodeError",
    "DefinitionError",
    "EventspineError",
    "LogError",
    "SinkError",
    "SourceError",
    "StateError",
    "StepError",
    "StorageCorruptError",
    "StoppedError",
    "TopicNotFoundError",
    "TransactionAbortedError",
]


class EventspineError(Exception):
    """The root of every error eventspine raises on purpose."""


class DefinitionError(EventspineError):
    """The pipeline definition is invalid; raised while the pipeline is built."""


class ConfigError(EventspineError):
    """A setting, URL or command-line value is invalid."""


class StepError(EventspineError):
    """User code raised while a step processed a record.

    Attributes:
        step: the name of the step whose function raised.
        function: the qualified name of the user function.
        partition: the source partition of the record (``None`` if unknown).
        offset: the source offset of the record (``None`` if unknown).
        record: a short ``repr`` of the record (at most 200 characters).
    """

    def __init__(
        self,
        step: str,
        function: str,
        error: BaseException,
        *,
        partition: str | None = None,
        offset: int | None = None,
        record: Any = None,
    ) -> None:
        self.step = step
        self.function = function
        self.error = error
        self.partition = partition
        self.offset = offset
        self.record = _short_repr(record)
        where = f" at {partition}@{offset}" if partition is not None else ""
        super().__init__(
            f"step '{step}': {function} raised {type(error).__name__}: {error} "
            f"while processing the record{where}: {self.record}. Fix the function, or give "
            f"the step on_error=es.Skip() or es.DeadLetter(...) to set such records aside."
        )


class DecodeError(EventspineError):
    """Bytes could not be decoded into a record.

    Attributes:
        source: the source or codec that failed.
        position: ``partition@offset`` or ``file:line`` of the bad input, when known.
        raw: the raw bytes (kept for dead letters).
    """

    def __init__(
        self, message: str, *, source: str = "", position: str = "", raw: bytes = b""
    ) -> None:
        self.source = source
        self.position = position
        self.raw = raw
        where = f" at {position}" if position else ""
        prefix = f"{source}: " if source else ""
        super().__init__(f"{prefix}cannot decode the input{where}: {message}")


class SourceError(EventspineError):
    """A source failed to read."""


class SinkError(EventspineError):
    """A sink failed to write."""


class LogError(EventspineError):
    """The durable log refused or failed an operation."""


class TopicNotFoundError(LogError):
    """A topic does not exist in the log."""


class StorageCorruptError(LogError):
    """A storage file is damaged; the message names the file and what to do."""


class TransactionAbortedError(LogError):
    """A transaction's commit failed and the transaction was aborted for certain.

    None of it is visible, so writing the same records again in a new transaction
    cannot duplicate them (unlike a commit whose outcome is unknown).
    """


class StateError(EventspineError):
    """State could not be restored, or was written by an incompatible pipeline."""


class StoppedError(EventspineError):
    """The run was stopped by a signal before its inputs were exhausted."""


def _short_repr(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
