"""The pipeline API: a pure graph of named steps, built through typestate handles.

``Stream`` -> ``.key_by`` -> ``KeyedStream`` -> ``.window`` -> ``WindowedStream``
-> ``.aggregate``. A handle only offers the verbs that make sense for it
(``.window()`` does not exist on an unkeyed stream, and a type checker says
so). Building a pipeline does no I/O and runs no user code; every mistake
that can be found here is a :class:`~eventspine.errors.DefinitionError`
naming the step and the fix.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from typing import Any, Generic, Literal, TypeVar, final, overload

from eventspine.dataflow.aggregations import Agg
from eventspine.dataflow.expr import Expr
from eventspine.dataflow.ports import ErrorPolicy, Fail, Processor, Sink, Source
from eventspine.dataflow.steps import (
    AsofJoinStep,
    EnrichStep,
    FilterStep,
    FlatMapStep,
    Input,
    IntervalJoinStep,
    KeyByStep,
    MapStep,
    ProcessStep,
    SinkStep,
    SourceStep,
    SplitStep,
    Step,
    UnionStep,
    WindowStep,
)
from eventspine.dataflow.time import Decaying, EmitMode, EventTime, OnClose, WindowKind
from eventspine.errors import DefinitionError
from eventspine.timeutil import to_duration_ms

__all__ = ["KeyedStream", "Pipeline", "Stream", "WindowedStream"]

T = TypeVar("T")
U = TypeVar("U")

_NAME = re.compile(r"^[a-z0-9_-]+$")
_DECAYING_AGGS = {"count", "sum", "mean"}


@final
class Pipeline:
    """A named graph of steps. Build it, then run it with ``eventspine run`` or ``es.run``.

    Args:
        name: the pipeline (application) name; keys its state directory and, on
            Kafka, its consumer group and topic names. ``[a-z0-9_-]+``.
        on_error: the default error policy of every step (``es.Fail()``).
    """

    def __init__(self, name: str, *, on_error: ErrorPolicy | None = None) -> None:
        _check_name(name, "pipeline")
        self.name = name
        self.on_error: ErrorPolicy = on_error if on_error is not None else Fail()
        if not isinstance(self.on_error, ErrorPolicy):
            raise DefinitionError(
                f"pipeline '{name}': on_error must be es.Fail(), es.Skip() or "
                f"es.DeadLetter(...), not {on_error!r}"
            )
        self._steps: dict[str, Step] = {}

    @property
    def steps(self) -> Mapping[str, Step]:
        """The steps in the order they were added (a read-only view)."""
        return dict(self._steps)

    def source(
        self,
        name: str,
        source: Source,
        *,
        timestamps: EventTime | None = None,
        on_error: ErrorPolicy | None = None,
    ) -> Stream[Any]:
        """Add a source.

        Args:
            name: the step name.
            source: where records come from (``es.JsonLinesSource(...)``,
                ``es.MemorySource(...)``...).
            timestamps: how records get their event time; ``None`` means processing time
                (the wall clock when the record is read).
            on_error: what to do with records that cannot be decoded.
        """
        if not callable(getattr(source, "open", None)):
            raise DefinitionError(
                f"step '{name}': {source!r} is not a source; pass es.JsonLinesSource(...), "
                f"es.MemorySource(...) or another object with an open() method"
            )
        if timestamps is not None and not isinstance(timestamps, EventTime):
            raise DefinitionError(
                f"step '{name}': timestamps must be es.EventTime(...), not {timestamps!r}"
            )
        self._add(SourceStep(name, (), on_error, source, timestamps))
        return Stream(self, (name, "main"))

    def union(self, name: str, *streams: Stream[Any]) -> Stream[Any]:
        """Merge streams into one (records keep their event times; keys are dropped)."""
        if len(streams) < 2:
            raise DefinitionError(f"step '{name}': union needs at least two streams")
        for s in streams:
            self._check_owned(s, name)
        self._add(UnionStep(name, tuple(s._input for s in streams), None))
        return Stream(self, (name, "main"))

    def validate(self) -> None:
        """Check the whole graph: at least one source and one sink, every step reaches a sink.

        Raises:
            DefinitionError: naming the first problem found and its fix.
        """
        if not any(isinstance(s, SourceStep) for s in self._steps.values()):
            raise DefinitionError(f"pipeline '{self.name}' has no source; add one with .source()")
        sinks = [s for s in self._steps.values() if isinstance(s, SinkStep)]
        if not sinks:
            raise DefinitionError(
                f"pipeline '{self.name}' has no sink, so it would compute nothing visible; "
                f"end a stream with .sink(name, es.StdoutSink()) or another sink"
            )
        reaching: set[str] = set()
        frontier = [s.name for s in sinks]
        while frontier:
            cur = frontier.pop()
            if cur in reaching:
                continue
            reaching.add(cur)
            frontier.extend(up for up, _port in self._steps[cur].inputs)
        dead = [n for n in self._steps if n not in reaching]
        if dead:
            raise DefinitionError(
                f"pipeline '{self.name}': step(s) {', '.join(dead)} lead to no sink; "
                f"add a .sink(...) after them or remove them"
            )

    def __repr__(self) -> str:
        return f"Pipeline({self.name!r}, steps={list(self._steps)})"

    # -- internals ------------------------------------------------------------
    def _add(self, step: Step) -> None:
        _check_name(step.name, "step")
        if step.name in self._steps:
            raise DefinitionError(
                f"pipeline '{self.name}': a step named '{step.name}' already exists; "
                f"every step needs a unique name (it keys state, metrics and errors)"
            )
        if step.on_error is not None and not isinstance(step.on_error, ErrorPolicy):
            raise DefinitionError(
                f"step '{step.name}': on_error must be es.Fail(), es.Skip() or "
                f"es.DeadLetter(...), not {step.on_error!r}"
            )
        self._steps[step.name] = step

    def _check_owned(self, stream: Stream[Any], name: str) -> None:
        if not isinstance(stream, Stream) or stream._pipeline is not self:
            raise DefinitionError(
                f"step '{name}': {stream!r} is not a stream of pipeline '{self.name}'"
            )


def _check_name(name: object, what: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise DefinitionError(
            f"{what} name {name!r} is invalid: use lowercase letters, digits, '_' and '-' "
            f"(e.g. 'parse_ticks'); names key state, metrics and errors"
        )


def _check_fn(name: str, fn: object, what: str) -> None:
    if not callable(fn):
        raise DefinitionError(f"step '{name}': {what} must be callable, not {fn!r}")


class Stream(Generic[T]):
    """An unkeyed stream of records (a handle on one step's output)."""

    __slots__ = ("_input", "_pipeline")

    def __init__(self, pipeline: Pipeline, input_: Input) -> None:
        self._pipeline = pipeline
        self._input = input_

    def __repr__(self) -> str:
        step, port = self._input
        return f"<{type(self).__name__} of step '{step}'{'' if port == 'main' else ':' + port}>"

    @property
    def pipeline(self) -> Pipeline:
        """The pipeline this stream belongs to."""
        return self._pipeline

    def _then(self, step: Step) -> None:
        self._pipeline._add(step)

    @overload
    def map(
        self, name: str, fn: Callable[[T], U], /, *, on_error: ErrorPolicy | None = None
    ) -> Stream[U]: ...

    @overload
    def map(
        self, name: str, /, *, on_error: ErrorPolicy | None = None, **fields: Expr
    ) -> Stream[dict[str, Any]]: ...

    def map(
        self,
        name: str,
        fn: Callable[[T], Any] | None = None,
        /,
        *,
        on_error: ErrorPolicy | None = None,
        **fields: Any,
    ) -> Stream[Any]:
        """Transform each record: ``map("f", fn)`` or set fields ``map("f", total=col("a") + 1)``.

        Field expressions run vectorized on large batches; a function runs per record.
        """
        if (fn is None) == (not fields):
            raise DefinitionError(
                f"step '{name}': map takes either a function or field expressions "
                f"(map('{name}', fn) or map('{name}', out=es.col('x') * 2)), not both or neither"
            )
        if fn is not None:
            _check_fn(name, fn, "the map function")
        for field_name, e in fields.items():
            if not isinstance(e, Expr):
                raise DefinitionError(
                    f"step '{name}': field '{field_name}' must be an expression such as "
                    f"es.col('x') * 2 or es.lit(0), not {e!r}"
                )
        self._then(MapStep(name, (self._input,), on_error, fn, dict(fields)))
        return Stream(self._pipeline, (name, "main"))

    def filter(
        self,
        name: str,
        predicate: Callable[[T], bool] | Expr,
        *,
        on_error: ErrorPolicy | None = None,
    ) -> Stream[T]:
        """Keep the records for which ``predicate`` is true (a function or an expression)."""
        if not isinstance(predicate, Expr):
            _check_fn(name, predicate, "the filter predicate")
        self._then(FilterStep(name, (self._input,), on_error, predicate))
        return Stream(self._pipeline, (name, "main"))

    def flat_map(
        self,
        name: str,
        fn: Callable[[T], Iterable[U]],
        *,
        on_error: ErrorPolicy | None = None,
    ) -> Stream[U]:
        """Turn each record into zero or more records (``fn`` returns an iterable)."""
        _check_fn(name, fn, "the flat_map function")
        self._then(FlatMapStep(name, (self._input,), on_error, fn))
        return Stream(self._pipeline, (name, "main"))

    def key_by(
        self,
        name: str,
        key: str | Expr | Callable[[T], Any],
        *,
        on_error: ErrorPolicy | None = None,
    ) -> KeyedStream[T]:
        """Key the records by a field name, an expression or a function."""
        if isinstance(key, str):
            if not key:
                raise DefinitionError(f"step '{name}': key_by needs a field name")
        elif not isinstance(key, Expr):
            _check_fn(name, key, "the key")
        self._then(KeyByStep(name, (self._input,), on_error, key))
        return KeyedStream(self._pipeline, (name, "main"))

    def split(self, name: str, **branches: Callable[[T], bool] | Expr) -> dict[str, Stream[T]]:
        """Route each record to the first branch whose predicate holds; others go to ``default``.

        Returns:
            a dict of branch name -> stream, including ``"default"``.
        """
        if not branches:
            raise DefinitionError(f"step '{name}': split needs at least one branch=predicate")
        if "default" in branches:
            raise DefinitionError(
                f"step '{name}': 'default' is the branch of records no predicate matched; "
                f"name your branches otherwise"
            )
        for b, pred in branches.items():
            _check_name(b, "branch")
            if not isinstance(pred, Expr):
                _check_fn(name, pred, f"branch '{b}'")
        self._then(SplitStep(name, (self._input,), None, dict(branches)))
        out = {b: Stream[T](self._pipeline, (name, b)) for b in branches}
        out["default"] = Stream(self._pipeline, (name, "default"))
        return out

    def process(
        self,
        name: str,
        processor: Processor | Callable[[T, Any], None],
        *,
        on_error: ErrorPolicy | None = None,
    ) -> Stream[Any]:
        """Run a processor (``on_record(record, ctx)``, ``on_timer(ctx)``) or a function.

        On an unkeyed stream all records share one state; key the stream first for
        per-key state and timers.
        """
        self._then(
            ProcessStep(
                name, (self._input,), on_error, _as_processor(name, processor), keyed=self._keyed
            )
        )
        return Stream(self._pipeline, (name, "main"))

    def enrich(
        self,
        name: str,
        lookup: Callable[[Any], Any],
        *,
        key: str | Expr | Callable[[T], Any],
        into: str | None = None,
        ttl: timedelta = timedelta(minutes=5),
        max_entries: int = 100_000,
        on_error: ErrorPolicy | None = None,
    ) -> Stream[Any]:
        """Call ``lookup(lookup_key)`` per record, caching answers per key for ``ttl``.

        The answer is stored in field ``into`` of the record, or, when ``into`` is
        ``None``, merged into it (the answer must then be a dict).
        """
        _check_fn(name, lookup, "the lookup function")
        ttl_ms = to_duration_ms(ttl, "ttl")
        if ttl_ms < 0 or max_entries < 1:
            raise DefinitionError(f"step '{name}': ttl must be >= 0 and max_entries >= 1")
        self._then(
            EnrichStep(name, (self._input,), on_error, lookup, key, into, ttl_ms, max_entries)
        )
        return Stream(self._pipeline, (name, "main"))

    def side_output(self, side: str) -> Stream[Any]:
        """The stream of a named side output of this step (e.g. ``"late"`` of a window)."""
        step, port = self._input
        if port != "main":
            raise DefinitionError(f"side_output() applies to a step's main stream, not {self!r}")
        _check_name(side, "side output")
        return Stream(self._pipeline, (step, side))

    def sink(self, name: str, sink: Sink) -> None:
        """Write the records to ``sink`` (``es.JsonLinesSink(...)``, ``es.StdoutSink()``...)."""
        if not callable(getattr(sink, "open", None)):
            raise DefinitionError(
                f"step '{name}': {sink!r} is not a sink; pass es.JsonLinesSink(...), "
                f"es.StdoutSink() or another object with an open() method"
            )
        self._then(SinkStep(name, (self._input,), None, sink))

    @property
    def _keyed(self) -> bool:
        return False


class KeyedStream(Stream[T]):
    """A stream whose records carry a key: windows, joins and per-key state apply."""

    __slots__ = ()

    @property
    def _keyed(self) -> bool:
        return True

    @property
    def key_field(self) -> str:
        """The name the key takes in window and join results."""
        step = self._pipeline._steps[self._input[0]]
        assert isinstance(step, KeyByStep)
        return step.key_field

    def window(
        self,
        kind: WindowKind,
        *,
        emit: EmitMode | None = None,
        allowed_lateness: timedelta = timedelta(0),
    ) -> WindowedStream[T]:
        """Group each key's records into windows of ``kind`` (then call ``.aggregate``).

        Args:
            kind: ``es.Tumbling``, ``es.Hopping``, ``es.Sliding``, ``es.Session``,
                ``es.Count`` or ``es.Decaying``.
            emit: when results are emitted (default ``es.OnClose()``).
            allowed_lateness: how long after a window closed a late record still
                updates it (a corrected result is emitted again); later records go
                to the ``"late"`` side output.
        """
        if not isinstance(kind, WindowKind):
            raise DefinitionError(
                f"window() takes a window kind such as es.Tumbling(timedelta(seconds=1)), "
                f"not {kind!r}"
            )
        mode = emit if emit is not None else OnClose()
        if not isinstance(mode, EmitMode):
            raise DefinitionError(f"emit must be es.OnClose(), es.OnChange(), ... not {emit!r}")
        lateness_ms = to_duration_ms(allowed_lateness, "allowed_lateness")
        if lateness_ms < 0:
            raise DefinitionError(f"allowed_lateness must not be negative, not {allowed_lateness}")
        return WindowedStream(self, kind, mode, lateness_ms)

    def interval_join(
        self,
        name: str,
        other: KeyedStream[Any],
        *,
        within: timedelta | None = None,
        between: tuple[timedelta, timedelta] | None = None,
        how: Literal["inner", "left", "right", "outer"] = "inner",
        combine: Callable[[Any, Any], Any] | None = None,
    ) -> Stream[Any]:
        """Join with ``other`` on key where the right record is within a time bound of the left.

        Args:
            name: the step name.
            other: the right-hand keyed stream.
            within: symmetric bound: ``|right.ts - left.ts| <= within`` (inclusive).
            between: asymmetric bounds ``(lower, upper)``: ``lower <= right.ts - left.ts <= upper``.
            how: ``"inner"``; ``"left"``/``"right"``/``"outer"`` also emit unmatched records
                (with ``None`` on the other side) once the bound has passed the watermark.
            combine: ``(left, right) -> record``; default ``{key, "left": l, "right": r}``.
        """
        if not isinstance(other, KeyedStream):
            raise DefinitionError(
                f"step '{name}': interval_join needs a keyed stream on both sides"
            )
        self._pipeline._check_owned(other, name)
        if (within is None) == (between is None):
            raise DefinitionError(
                f"step '{name}': give either within=timedelta(...) or between=(lower, upper)"
            )
        if within is not None:
            w = to_duration_ms(within, "within")
            if w < 0:
                raise DefinitionError(f"step '{name}': within must not be negative")
            lower, upper = -w, w
        else:
            assert between is not None
            lower = to_duration_ms(between[0], "between lower bound")
            upper = to_duration_ms(between[1], "between upper bound")
            if lower > upper:
                raise DefinitionError(f"step '{name}': between=(lower, upper) needs lower <= upper")
        if how not in ("inner", "left", "right", "outer"):
            raise DefinitionError(f"step '{name}': how must be inner, left, right or outer")
        if combine is not None:
            _check_fn(name, combine, "combine")
        self._then(
            IntervalJoinStep(
                name,
                (self._input, other._input),
                None,
                lower,
                upper,
                how,
                combine,
                self.key_field,
            )
        )
        return Stream(self._pipeline, (name, "main"))

    def asof_join(
        self,
        name: str,
        table: KeyedStream[Any],
        *,
        how: Literal["inner", "left"] = "left",
        combine: Callable[[Any, Any], Any] | None = None,
    ) -> Stream[Any]:
        """Join each record with the latest ``table`` record of its key at or before its event time.

        A record is emitted once the table's watermark has passed its event time, so
        the answer does not depend on arrival order. With ``how="left"`` a record with
        no table value yet is joined with ``None``.
        """
        if not isinstance(table, KeyedStream):
            raise DefinitionError(f"step '{name}': asof_join needs a keyed table stream")
        self._pipeline._check_owned(table, name)
        if how not in ("inner", "left"):
            raise DefinitionError(f"step '{name}': how must be inner or left")
        if combine is not None:
            _check_fn(name, combine, "combine")
        self._then(
            AsofJoinStep(name, (self._input, table._input), None, combine, self.key_field, how)
        )
        return Stream(self._pipeline, (name, "main"))


@final
class WindowedStream(Generic[T]):
    """A keyed stream grouped into windows; finish it with :meth:`aggregate`."""

    __slots__ = ("_emit", "_kind", "_lateness_ms", "_stream")

    def __init__(
        self, stream: KeyedStream[T], kind: WindowKind, emit: EmitMode, lateness_ms: int
    ) -> None:
        self._stream = stream
        self._kind = kind
        self._emit = emit
        self._lateness_ms = lateness_ms

    def aggregate(self, name: str, **aggs: Agg[Any]) -> Stream[dict[str, Any]]:
        """Compute named aggregations per key and window.

        Each result is a dict with the key (under the ``key_by`` field name, or
        ``"key"``), ``window_start_ms``, ``window_end_ms`` and one field per
        aggregation; update modes add ``final`` (``False`` for updates). Late
        records go to the side output ``"late"``.
        """
        if not aggs:
            raise DefinitionError(
                f"step '{name}': aggregate needs at least one aggregation, e.g. "
                f"aggregate('{name}', n=es.count(), total=es.sum('price'))"
            )
        for out, a in aggs.items():
            if not isinstance(a, Agg):
                raise DefinitionError(
                    f"step '{name}': '{out}' must be an aggregation such as es.count() or "
                    f"es.sum('price'), not {a!r}"
                )
        key_field = self._stream.key_field
        reserved = {key_field, "window_start_ms", "window_end_ms", "final"}
        clash = reserved & set(aggs)
        if clash:
            raise DefinitionError(
                f"step '{name}': output name(s) {', '.join(sorted(clash))} are used by the "
                f"result itself; choose other names"
            )
        if isinstance(self._kind, Decaying):
            bad = [o for o, a in aggs.items() if a.kind not in _DECAYING_AGGS]
            if bad:
                raise DefinitionError(
                    f"step '{name}': a Decaying window computes weighted count, sum and mean "
                    f"only; '{bad[0]}' is {aggs[bad[0]].kind}"
                )
        self._stream._then(
            WindowStep(
                name,
                (self._stream._input,),
                None,
                self._kind,
                dict(aggs),
                self._emit,
                self._lateness_ms,
                key_field,
            )
        )
        return Stream(self._stream._pipeline, (name, "main"))


class _FunctionProcessor:
    """Adapts a plain ``fn(record, ctx)`` to the Processor protocol."""

    def __init__(self, fn: Callable[[Any, Any], None]) -> None:
        self.fn = fn

    def on_record(self, record: Any, ctx: Any) -> None:
        self.fn(record, ctx)

    def on_timer(self, ctx: Any) -> None:
        """A function processor sets no timers, so none fire."""


def _as_processor(name: str, p: object) -> Processor:
    if callable(getattr(p, "on_record", None)):
        return p  # type: ignore[return-value]  # structurally a Processor
    if callable(p):
        return _FunctionProcessor(p)
    raise DefinitionError(
        f"step '{name}': process takes a function fn(record, ctx) or an object with "
        f"on_record(record, ctx) and on_timer(ctx), not {p!r}"
    )
