"""Test pipelines like functions: ``eventspine.testing.run(pipeline, inputs=...)``.

``run`` replaces the pipeline's sources by in-memory ones (by source step
name) and its sinks by collecting ones, runs it to the end with a
:class:`~eventspine.timeutil.ManualClock` (so nothing sleeps), and returns
what each sink received::

    out = es.testing.run(pipeline, inputs={"ticks": [{"symbol": "A", "ts": 0, "price": 1.0}]})
    assert out["bars"] == [...]

Inputs may contain :class:`Idle` markers: when the source reaches one, it
has nothing to read while the manual clock advances by the given duration,
which is how a test shows windows closing when a stream goes quiet.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, final

from eventspine.connectors.memory import CollectSink
from eventspine.dataflow.pipeline import Pipeline
from eventspine.dataflow.ports import Chunk, OpenContext, SourceReader
from eventspine.dataflow.steps import SinkStep, SourceStep
from eventspine.errors import DefinitionError
from eventspine.runtime.executor import Executor, RunOptions
from eventspine.runtime.metrics import Inspector
from eventspine.runtime.operator import DeadLetterEntry
from eventspine.timeutil import Clock, ManualClock, to_duration_ms

__all__ = ["Idle", "ManualClock", "TestResult", "run"]


@final
@dataclass(frozen=True)
class Idle:
    """In test inputs: the source has nothing to read while the clock advances ``duration``."""

    duration: timedelta


@final
class TestResult(Mapping[str, list[Any]]):
    """What each sink received, by sink step name, plus the run's metrics and dead letters.

    Attributes:
        timestamps: sink name -> event time (epoch ms) of each record.
        dead_letters: records set aside by ``es.DeadLetter`` policies.
        inspector: the final metrics of every step.
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        outputs: dict[str, list[Any]],
        timestamps: dict[str, list[int]],
        dead_letters: list[DeadLetterEntry],
        inspector: Inspector,
    ) -> None:
        self._outputs = outputs
        self.timestamps = timestamps
        self.dead_letters = dead_letters
        self.inspector = inspector

    def __getitem__(self, sink: str) -> list[Any]:
        try:
            return self._outputs[sink]
        except KeyError:
            raise KeyError(
                f"no sink named {sink!r}; the pipeline's sinks are {sorted(self._outputs)}"
            ) from None

    def __iter__(self) -> Any:
        return iter(self._outputs)

    def __len__(self) -> int:
        return len(self._outputs)

    def __repr__(self) -> str:
        return f"TestResult({ {k: len(v) for k, v in self._outputs.items()} })"


def run(
    pipeline: Pipeline,
    inputs: Mapping[str, Sequence[Any]] | None = None,
    *,
    clock: Clock | None = None,
    partitions: Mapping[str, int] | None = None,
    batch_size: int | None = None,
) -> TestResult:
    """Run ``pipeline`` on in-memory inputs and return each sink's records.

    Args:
        pipeline: the pipeline under test (it is not modified).
        inputs: source step name -> records (and :class:`Idle` markers). Sources not
            named keep their own definition (e.g. a seeded generator).
        clock: the clock (default: a new :class:`ManualClock`).
        partitions: source step name -> number of partitions to split its input into.
        batch_size: force a fixed micro-batch size (default: adaptive).

    Raises:
        DefinitionError: an input names no source step of the pipeline.
    """
    clk = clock if clock is not None else ManualClock()
    given = dict(inputs or {})
    sources = {n for n, s in pipeline.steps.items() if isinstance(s, SourceStep)}
    unknown = set(given) - sources
    if unknown:
        raise DefinitionError(
            f"inputs name no source step: {', '.join(sorted(unknown))}; "
            f"the pipeline's sources are {', '.join(sorted(sources))}"
        )
    test_pipeline = Pipeline(pipeline.name, on_error=pipeline.on_error)
    collectors: dict[str, CollectSink] = {}
    for name, step in pipeline.steps.items():
        if isinstance(step, SourceStep) and name in given:
            n = (partitions or {}).get(name, 1)
            step = replace(
                step,
                source=ScriptedSource(
                    given[name], clk, partitions=n, record_type=step.source.record_type
                ),
            )
        elif isinstance(step, SinkStep):
            collectors[name] = CollectSink()
            step = replace(step, sink=collectors[name])
        test_pipeline._add(step)
    opts = RunOptions(handle_signals=False)
    if batch_size is not None:
        opts = replace(opts, min_batch=batch_size, max_batch=batch_size)
    result = Executor(test_pipeline, clock=clk, options=opts).run()
    return TestResult(
        {n: c.records for n, c in collectors.items()},
        {n: c.timestamps for n, c in collectors.items()},
        list(result.dead_letters.entries),
        result.inspector,
    )


@final
class ScriptedSource:
    """A bounded in-memory source whose input may contain :class:`Idle` markers."""

    bounded = True

    def __init__(
        self, items: Sequence[Any], clock: Clock, *, partitions: int = 1, record_type: type = dict
    ) -> None:
        self.items = list(items)
        self.clock = clock
        self.partitions = partitions
        self.record_type = record_type

    def open(self, context: OpenContext) -> list[SourceReader]:
        """One reader per partition; records are dealt round-robin, markers go to every one."""
        n = self.partitions
        per: list[list[Any]] = [[] for _ in range(n)]
        i = 0
        for item in self.items:
            if isinstance(item, Idle):
                for p in per:
                    p.append(item)
            else:
                per[i % n].append(item)
                i += 1
        return [_ScriptReader(f"{context.step}/{k}", per[k], self.clock) for k in range(n)]


class _ScriptReader:
    def __init__(self, partition: str, items: list[Any], clock: Clock) -> None:
        self.partition = partition
        self._items = items
        self._pos = 0
        self._offset = 0
        self._clock = clock
        self._idle_until: float | None = None

    def poll(self, max_records: int, columnar: bool) -> Chunk | None:
        if self._idle_until is not None:
            if self._clock.monotonic() < self._idle_until:
                return Chunk([], self._offset, self._offset)
            self._idle_until = None
        if self._pos >= len(self._items):
            return None
        item = self._items[self._pos]
        if isinstance(item, Idle):
            self._pos += 1
            self._idle_until = self._clock.monotonic() + to_duration_ms(item.duration) / 1000
            return Chunk([], self._offset, self._offset)
        out: list[Any] = []
        while (
            self._pos < len(self._items)
            and len(out) < max_records
            and not isinstance(self._items[self._pos], Idle)
        ):
            out.append(self._items[self._pos])
            self._pos += 1
        first = self._offset
        self._offset += len(out)
        return Chunk(out, first, self._offset)

    def seek(self, offset: int) -> None:
        raise NotImplementedError("scripted test inputs always start from the beginning")

    def close(self) -> None:
        pass
