"""Compiling a pipeline definition into a graph of operators.

* Consecutive stateless steps (map, filter, flat_map, key_by) whose output
  has exactly one consumer are fused into one :class:`FusedChain`.
* Sources are asked for columnar batches when every consumer of the source
  can use them (a fused chain of expression steps, or a vectorized window).
* Operators are listed in topological order, which is the order watermarks
  are propagated in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from eventspine.dataflow.pipeline import Pipeline
from eventspine.dataflow.ports import ErrorPolicy, OpenContext
from eventspine.dataflow.steps import (
    EnrichStep,
    FilterStep,
    FlatMapStep,
    KeyByStep,
    MapStep,
    SinkStep,
    SourceStep,
    SplitStep,
    Step,
    UnionStep,
)
from eventspine.errors import DefinitionError
from eventspine.runtime.metrics import StepMetrics
from eventspine.runtime.operator import DeadLetters, ErrorBoundary, Operator, Output
from eventspine.runtime.repartition import RepartitionRunner, RepartitionSource
from eventspine.runtime.routing import EnrichOperator, SinkOperator, SplitOperator
from eventspine.runtime.sources import SourceRunner
from eventspine.runtime.stateless import FusedChain, Stage, make_stage

if TYPE_CHECKING:
    from eventspine.timeutil import Clock

__all__ = ["Plan", "compile_pipeline", "record_type_of"]

_STATELESS = (MapStep, FilterStep, FlatMapStep, KeyByStep)


@dataclass
class Plan:
    """A compiled pipeline, ready for the executor.

    Attributes:
        sources: one runner per source step.
        operators: every other operator, in topological order.
        sinks: the sink operators (also in ``operators``).
        metrics: per step name (fused steps keep their own metrics).
        inputs: for each operator, the operators (or source runners) feeding it.
    """

    pipeline: Pipeline
    sources: list[SourceRunner]
    operators: list[Operator]
    sinks: list[SinkOperator]
    metrics: dict[str, StepMetrics]
    dead_letters: DeadLetters
    inputs: dict[int, list[Any]] = field(default_factory=dict)


def record_type_of(pipeline: Pipeline, step: Step) -> type | None:
    """The record type flowing out of ``step`` when it is still the source's type.

    ``None`` when unknown (after a map by function); ``object`` from a repartition
    source also means unknown.
    """
    cur = step
    while True:
        if isinstance(cur, SourceStep):
            rtype: type = cur.source.record_type
            return None if rtype is object else rtype
        if isinstance(cur, (FilterStep, KeyByStep)) and cur.inputs:
            cur = pipeline.steps[cur.inputs[0][0]]
            continue
        if isinstance(cur, MapStep) and cur.exprs:
            return dict
        return None


def compile_pipeline(
    pipeline: Pipeline,
    clock: Clock,
    *,
    open_context: Callable[[str], OpenContext],
    flush_s: float = 1.0,
    operator_factories: dict[type, Callable[..., Operator]] | None = None,
    metrics: dict[str, StepMetrics] | None = None,
) -> Plan:
    """Validate ``pipeline`` and build its operators (sources and sinks are opened here).

    ``metrics`` (per step name) is shared by the tasks of a partitioned run, so they
    count into the same figures; by default the plan gets its own.
    """
    pipeline.validate()
    steps = pipeline.steps
    consumers: dict[tuple[str, str], list[str]] = {}
    for s in steps.values():
        for up in s.inputs:
            consumers.setdefault(up, []).append(s.name)

    if metrics is None:
        metrics = {n: StepMetrics(n, s.kind) for n, s in steps.items()}
    dead = DeadLetters()

    def policy(s: Step) -> ErrorPolicy:
        return s.on_error if s.on_error is not None else pipeline.on_error

    def boundary(s: Step, fn: Any = None) -> ErrorBoundary:
        return ErrorBoundary(s.name, policy(s), dead, metrics[s.name], fn)

    # 1. Fuse stateless chains: a stateless step joins its upstream's chain when the
    #    upstream is stateless and this step is its only consumer.
    chain_of: dict[str, str] = {}  # step name -> head step name of its chain
    chains: dict[str, list[Step]] = {}
    for s in steps.values():
        if not isinstance(s, _STATELESS):
            continue
        up_name, up_port = s.inputs[0]
        if (
            isinstance(steps[up_name], _STATELESS)
            and up_port == "main"
            and consumers.get((up_name, "main")) == [s.name]
            and up_name in chain_of
        ):
            head = chain_of[up_name]
        else:
            head = s.name
            chains[head] = []
        chain_of[s.name] = head
        chains[head].append(s)

    # 2. Build operators.
    ops: dict[str, Operator] = {}  # by the name of the LAST step they implement
    op_for_step: dict[str, Operator] = {}
    factories = operator_factories or {}
    for members in chains.values():
        stages: list[Stage] = []
        for m in members:
            fn = _user_fn(m)
            rtype = record_type_of(pipeline, steps[m.inputs[0][0]])
            stages.append(
                make_stage(m, rtype, boundary(m, fn if callable(fn) else None), metrics[m.name])
            )
        # Each stage counts its own records in and out, so the chain itself counts nothing.
        chain = FusedChain(members[-1].name, metrics[members[-1].name], stages)
        for m in members:
            op_for_step[m.name] = chain
        ops[members[-1].name] = chain

    sinks: list[SinkOperator] = []
    sources: list[SourceRunner] = []
    for s in steps.values():
        if s.name in op_for_step or isinstance(s, SourceStep):
            continue
        sm = metrics[s.name]
        op: Operator
        if isinstance(s, SinkStep):
            writer = s.sink.open(open_context(s.name))
            op = SinkOperator(s.name, sm, writer, flush_s)
            sinks.append(op)
        elif isinstance(s, UnionStep):
            op = Operator(s.name, sm)
        elif isinstance(s, SplitStep):
            op = SplitOperator(s, sm, boundary(s), record_type_of(pipeline, steps[s.inputs[0][0]]))
        elif isinstance(s, EnrichStep):
            rtype = record_type_of(pipeline, steps[s.inputs[0][0]])
            op = EnrichOperator(s, sm, boundary(s, s.lookup), rtype, clock)
        elif type(s) in factories:
            op = factories[type(s)](s, sm, boundary(s), clock)
        else:
            raise DefinitionError(
                f"step '{s.name}': {s.kind} steps are not supported by this runtime yet"
            )
        op_for_step[s.name] = op
        ops[s.name] = op

    # 3. Sources (opened here) and the columnar decision.
    upstream_of: dict[str, Operator | SourceRunner] = dict(op_for_step)
    for s in steps.values():
        if not isinstance(s, SourceStep):
            continue
        readers = s.source.open(open_context(s.name))
        downstream = [op_for_step[c] for c in consumers.get((s.name, "main"), [])]
        columnar = bool(downstream) and all(
            getattr(d, "prefers_columnar", False) or _chain_vectorizable(d) for d in downstream
        )
        out = Output(s.name, metrics[s.name])
        runner_type = RepartitionRunner if isinstance(s.source, RepartitionSource) else SourceRunner
        runner = runner_type(
            s, readers, out, boundary(s), metrics[s.name], clock, columnar=columnar
        )
        sources.append(runner)
        upstream_of[s.name] = runner

    # 4. Wire outputs: every (step, port) consumed by a step inside another operator.
    inputs: dict[int, list[Any]] = {}
    for s in steps.values():
        if isinstance(s, SourceStep):
            continue
        target = op_for_step[s.name]
        for port_index, (up_name, up_port) in enumerate(s.inputs):
            upstream = upstream_of[up_name]
            if upstream is target:
                continue  # fused inside the same chain
            upstream.out.connect(up_port, target, port_index)
            inputs.setdefault(id(target), []).append(upstream)

    # 5. Topological order of the operators (sources first, not listed).
    order: list[Operator] = []
    seen: set[int] = set()
    all_ops = list(dict.fromkeys(op_for_step.values()))

    def visit(op: Operator) -> None:
        if id(op) in seen:
            return
        seen.add(id(op))
        for up in inputs.get(id(op), []):
            if isinstance(up, Operator):
                visit(up)
        order.append(op)

    for op in all_ops:
        visit(op)
    return Plan(pipeline, sources, order, sinks, metrics, dead, inputs)


def _user_fn(step: Step) -> Any:
    """The user function of a stateless step, for error messages (``None`` for expressions)."""
    for attr in ("fn", "predicate", "key"):
        value = getattr(step, attr, None)
        if value is not None:
            return value
    return None


def _chain_vectorizable(op: Operator) -> bool:
    if isinstance(op, FusedChain):
        return all(st.vector is not None for st in op.stages)
    return False
