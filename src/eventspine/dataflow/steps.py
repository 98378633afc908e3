"""Step specifications: the pure data a pipeline is made of.

Every step has a unique name and the names of its inputs (``(step, port)``
pairs; ``port`` is ``"main"`` or a side output name). The runtime compiles
these specs into operators; nothing here runs user code or does I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from eventspine.dataflow.aggregations import Agg
from eventspine.dataflow.expr import Expr
from eventspine.dataflow.ports import ErrorPolicy, Processor, Sink, Source
from eventspine.dataflow.time import EmitMode, EventTime, WindowKind

__all__ = [
    "AsofJoinStep",
    "EnrichStep",
    "FilterStep",
    "FlatMapStep",
    "Input",
    "IntervalJoinStep",
    "KeyByStep",
    "MapStep",
    "ProcessStep",
    "SinkStep",
    "SourceStep",
    "SplitStep",
    "Step",
    "UnionStep",
    "WindowStep",
]

#: ``(upstream step name, output port)``; the main output port is ``"main"``.
Input = tuple[str, str]

Fn = Callable[[Any], Any]


@dataclass(frozen=True)
class Step:
    """Common fields of every step.

    Attributes:
        name: unique within the pipeline; keys state, metrics, errors and lineage.
        inputs: upstream ``(step, port)`` pairs (empty for sources).
        on_error: the step's error policy, or ``None`` for the pipeline default.
    """

    name: str
    inputs: tuple[Input, ...]
    on_error: ErrorPolicy | None

    @property
    def kind(self) -> str:
        """The verb that made the step (``"map"``, ``"window"``...)."""
        return type(self).__name__.removesuffix("Step").lower()

    @property
    def stateful(self) -> bool:
        """Whether the step keeps state across records (and so in checkpoints)."""
        return False

    @property
    def signature(self) -> str:
        """What must not change between runs that share state (for stateful steps)."""
        return self.kind


@dataclass(frozen=True)
class SourceStep(Step):
    """Read records from a source; assign event time."""

    source: Source
    timestamps: EventTime | None

    @property
    def stateful(self) -> bool:
        """Sources keep their read positions."""
        return True

    @property
    def signature(self) -> str:
        """Source positions are only meaningful for the same kind of source."""
        return f"source:{type(self.source).__name__}"


@dataclass(frozen=True)
class MapStep(Step):
    """Transform each record with a function, or set fields from expressions."""

    fn: Fn | None
    exprs: Mapping[str, Expr] = field(default_factory=dict)


@dataclass(frozen=True)
class FilterStep(Step):
    """Keep the records for which the predicate is true."""

    predicate: Fn | Expr


@dataclass(frozen=True)
class FlatMapStep(Step):
    """Turn each record into zero or more records."""

    fn: Fn


@dataclass(frozen=True)
class KeyByStep(Step):
    """Give each record a key (a field name, expression or function)."""

    key: str | Expr | Fn

    @property
    def key_field(self) -> str:
        """The name of the key in results: the field name when keyed by field, else ``"key"``."""
        if isinstance(self.key, str):
            return self.key
        if isinstance(self.key, Expr) and self.key.field_name is not None:
            return self.key.field_name
        return "key"


@dataclass(frozen=True)
class WindowStep(Step):
    """Aggregate the records of each key in event-time (or count) windows."""

    window: WindowKind
    aggs: Mapping[str, Agg[Any]]
    emit: EmitMode
    allowed_lateness_ms: int
    key_field: str

    @property
    def stateful(self) -> bool:
        """Windows keep open accumulators."""
        return True

    @property
    def signature(self) -> str:
        """The window kind and aggregations define the state layout."""
        aggs = ",".join(f"{k}={a.kind}" for k, a in sorted(self.aggs.items()))
        return f"window:{self.window.signature}:{aggs}"


@dataclass(frozen=True)
class ProcessStep(Step):
    """Run a user processor with per-key state and timers."""

    processor: Processor
    keyed: bool

    @property
    def stateful(self) -> bool:
        """Processors keep per-key state and timers."""
        return True

    @property
    def signature(self) -> str:
        """The processor class identifies the state layout."""
        return f"process:{type(self.processor).__qualname__}"


@dataclass(frozen=True)
class UnionStep(Step):
    """Merge several streams into one."""


@dataclass(frozen=True)
class SplitStep(Step):
    """Route each record to the first branch whose predicate holds (else ``default``)."""

    branches: Mapping[str, Fn | Expr]


@dataclass(frozen=True)
class IntervalJoinStep(Step):
    """Join two keyed streams on key where ``lower <= right.ts - left.ts <= upper``."""

    lower_ms: int
    upper_ms: int
    how: str
    combine: Callable[[Any, Any], Any] | None
    key_field: str

    @property
    def stateful(self) -> bool:
        """Joins buffer both sides."""
        return True

    @property
    def signature(self) -> str:
        """The bounds and join type define the buffers."""
        return f"interval_join:{self.lower_ms}:{self.upper_ms}:{self.how}"


@dataclass(frozen=True)
class AsofJoinStep(Step):
    """Join each left record with the right (table) value valid at its event time."""

    combine: Callable[[Any, Any], Any] | None
    key_field: str
    how: str

    @property
    def stateful(self) -> bool:
        """The table side is kept per key."""
        return True

    @property
    def signature(self) -> str:
        """The join type defines the state."""
        return f"asof_join:{self.how}"


@dataclass(frozen=True)
class EnrichStep(Step):
    """Call a lookup function per record, caching results per lookup key for a TTL."""

    lookup: Fn
    key: str | Expr | Fn
    into: str | None
    ttl_ms: int
    max_entries: int


@dataclass(frozen=True)
class SinkStep(Step):
    """Write records to a sink."""

    sink: Sink
