"""Automatic repartitioning: a key change goes through an internal topic.

The task of a partitioned run (see :mod:`eventspine.runtime.worker`) holds the
state of the keys whose records arrive on its partition. When a pipeline
groups by another key than its source topics are partitioned by, the records
of one key arrive on several tasks. So before the run starts,
:func:`repartition` cuts the graph at every **boundary**: a ``key_by`` step
whose output feeds a keyed stateful step (a window, a join side, a keyed
``process``), unless the ``key_by`` is known not to change the partitioning
(its field is the ``key=`` declared on the source topic it reads directly, or
through filters only).

At a boundary ``K`` of pipeline ``P`` with ``N`` tasks:

* **upstream**, ``K`` ends in a sink step ``K.repartition.out`` writing to the
  internal topic ``__es.P.K.repartition`` (``N`` partitions, created on first
  use). Each record goes to partition ``crc32(key) % N`` (the partitioner of
  topic sinks, :mod:`eventspine.log.partitioner`), as the pickled pair
  ``(key, record)`` with its event time as ``ts_ms``; pickled like changelog
  state, so any record and key type round-trips exactly.
* **downstream**, a source step ``K.repartition`` reads the topic and feeds
  ``K``'s consumers with the records keyed as ``K`` keyed them. Task ``p`` runs
  both parts: upstream for source partition ``p``, downstream for partition
  ``p`` of the repartition topic, so the tasks stay independent.

**Exactly-once needs no new protocol.** The repartition sink is a
checkpoint-driven sink: its records are appended in the writer task's
checkpoint transaction, together with that task's source positions. The
downstream source reads committed records only and its position is part of
its task's checkpoint. A crash before a commit redoes the records on both
sides; after it, neither side redoes them.

**Watermarks from markers.** The downstream source does not take its
watermark from the record times: ``N`` writers interleave in each partition,
and one writer ahead of the others would make their records late, so results
would depend on timing. At each checkpoint where its watermark advanced, each
writer task ``w`` appends to *every* partition, after its records, a marker
``(w, watermark)`` (its watermark at the boundary; ``+inf`` when its input
ended). The downstream source keeps the latest mark per writer and its
watermark is the minimum over all ``N`` writers; markers are never delivered
as records. A record that was on time upstream is on time downstream, and a
window closes only when every writer has passed it. An idle writer's
watermark still advances (by its sources' ``idle_timeout``), so its markers
keep windows closing. The marks are checkpointed with the source's clocks
(``[max_ts, watermark, mark_0, ..., mark_N-1]``), so they survive restarts.

**Cost.** Every record crossing a boundary is written and read once more, and
reaches the downstream part one checkpoint interval later (when the writer's
checkpoint commits). A run of one partition needs no repartitioning and is
left as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, final

from eventspine.dataflow.pipeline import Pipeline
from eventspine.dataflow.steps import (
    AsofJoinStep,
    FilterStep,
    IntervalJoinStep,
    KeyByStep,
    ProcessStep,
    SinkStep,
    SourceStep,
    Step,
    WindowStep,
)
from eventspine.errors import SinkError, StateError
from eventspine.log.base import Log, LogRecord, StoredRecord, TopicSpec, append_in_transaction
from eventspine.log.partitioner import key_bytes, partition_for
from eventspine.records import Batch
from eventspine.runtime.checkpoint import repartition_spec
from eventspine.runtime.sources import SourceRunner
from eventspine.serde.state import decode_state, encode_state
from eventspine.timeutil import MAX_TS_MS, MIN_TS_MS

if TYPE_CHECKING:
    from eventspine.dataflow.ports import Chunk, OpenContext

__all__ = [
    "RepartitionRunner",
    "RepartitionSink",
    "RepartitionSource",
    "boundaries",
    "repartition",
]

#: the first item of each pickled value: a record ``(0, key, record)`` or a marker
#: ``(1, writer, watermark)``
_RECORD = 0
_MARK = 1
OUT_SUFFIX = ".repartition.out"
SOURCE_SUFFIX = ".repartition"


def boundaries(pipeline: Pipeline) -> list[str]:
    """The ``key_by`` steps of ``pipeline`` a partitioned run must repartition after."""
    steps = pipeline.steps
    consumers: dict[str, list[Step]] = {}
    for s in steps.values():
        for up, port in s.inputs:
            if port == "main":
                consumers.setdefault(up, []).append(s)
    found = []
    for s in steps.values():
        if not isinstance(s, KeyByStep):
            continue
        if not any(_keyed_state(c) for c in consumers.get(s.name, [])):
            continue  # only stateless steps and sinks follow: any task may handle any key
        if _partitioned_by(pipeline, s):
            continue
        found.append(s.name)
    return found


def _keyed_state(step: Step) -> bool:
    if isinstance(step, ProcessStep):
        return step.keyed
    return isinstance(step, WindowStep | IntervalJoinStep | AsofJoinStep)


def _partitioned_by(pipeline: Pipeline, key_by: KeyByStep) -> bool:
    """Whether ``key_by`` keys by the field its source topic declares it is keyed by."""
    if not isinstance(key_by.key, str):
        return False
    cur: Step = pipeline.steps[key_by.inputs[0][0]]
    while isinstance(cur, FilterStep):
        cur = pipeline.steps[cur.inputs[0][0]]
    return isinstance(cur, SourceStep) and getattr(cur.source, "key", None) == key_by.key


def repartition(pipeline: Pipeline, partitions: int) -> Pipeline:
    """Return ``pipeline`` cut at its boundaries for a run of ``partitions`` tasks.

    Returns ``pipeline`` itself when there is nothing to cut (no boundary, or one
    partition).
    """
    cut = boundaries(pipeline) if partitions > 1 else []
    if not cut:
        return pipeline
    from eventspine.runtime.plan import record_type_of

    old = pipeline.steps
    new: dict[str, Step] = {}
    moved: dict[str, str] = {}  # key_by step -> the repartition source replacing it downstream
    for s in old.values():
        if s.inputs and any(up in moved and port == "main" for up, port in s.inputs):
            ins = tuple(
                (moved.get(up, up) if port == "main" else up, port) for up, port in s.inputs
            )
            new[s.name] = replace(s, inputs=ins)  # rewired to read the repartition topic
        else:
            new[s.name] = s
        if s.name in cut:
            assert isinstance(s, KeyByStep)
            spec = repartition_spec(pipeline.name, s.name, partitions)
            rtype = record_type_of(pipeline, s)
            out, src = s.name + OUT_SUFFIX, s.name + SOURCE_SUFFIX
            new[out] = SinkStep(out, ((s.name, "main"),), None, RepartitionSink(spec))
            new[src] = SourceStep(src, (), None, RepartitionSource(spec, rtype, s.name), None)
            moved[s.name] = src
    result = Pipeline(pipeline.name, on_error=pipeline.on_error)
    result._steps = new  # built from validated steps: no need to add them one by one
    return result


def _writer_index(context: OpenContext) -> int:
    owned = context.partitions
    if owned is None or len(owned) != 1:
        raise StateError(
            f"step '{context.step}': a repartition topic is written by exactly one task; this "
            f"plan owns partitions {owned}"
        )
    return next(iter(owned))


def _open_topic(log: Log | None, spec: TopicSpec, step: str) -> Log:
    if log is None:
        raise StateError(f"step '{step}': repartitioning needs the run's durable log")
    info = log.topics().get(spec.name)
    if info is None:
        log.create_topic(spec)
    elif info.spec.partitions != spec.partitions:
        # The checkpoints topic refuses a new partition count first; this is a backstop.
        raise StateError(
            f"the internal topic {spec.name!r} has {info.spec.partitions} partition(s), but "
            f"the pipeline's sources now have {spec.partitions}; run with the old count, or "
            f"start fresh with `eventspine state reset`"
        )
    return log


@final
class RepartitionSink:
    """The upstream end of a boundary: writes keyed records and markers (module doc)."""

    columnar = False

    def __init__(self, spec: TopicSpec) -> None:
        self.spec = spec

    def __repr__(self) -> str:
        return f"repartition({self.spec.name!r})"

    def open(self, context: OpenContext) -> RepartitionWriter:
        """Create the topic if missing; return this task's writer."""
        log = _open_topic(context.log, self.spec, context.step)
        return RepartitionWriter(
            self.spec.name, self.spec.partitions, _writer_index(context), log, context
        )


@final
class RepartitionWriter:
    """Buffers one task's records per partition until its checkpoint drains them."""

    def __init__(
        self, topic: str, partitions: int, writer: int, log: Log, context: OpenContext
    ) -> None:
        self.topic = topic
        self.partitions = partitions
        self.writer = writer
        self._log = log
        self._context = context
        self._pending: dict[int, list[LogRecord]] = {}
        self._wm = MIN_TS_MS
        self._sent = MIN_TS_MS

    def write(self, batch: Batch) -> None:
        """Encode each record with its key; buffer it for the key's partition."""
        keys = batch.keys
        if keys is None:
            raise SinkError(f"step '{self._context.step}': records reached it without a key")
        n, step = self.partitions, self._context.step
        for row, key, ts in zip(batch.rows, keys, batch.ts, strict=True):
            try:
                kb = key_bytes(key)
            except SinkError:
                kb = encode_state(key, step=step)  # any hashable key: its stable pickle
            part = 0 if kb is None else partition_for(kb, n)
            value = encode_state((_RECORD, key, row), step=step)
            self._pending.setdefault(part, []).append(LogRecord(kb, value, ts))

    def on_watermark(self, wm_ms: int) -> None:
        """The task's watermark at the boundary advanced (sent with the next drain)."""
        self._wm = max(self._wm, wm_ms)

    def drain_log_records(self) -> list[tuple[str, int, list[LogRecord]]]:
        """Return and forget the buffered records, plus a marker per partition if due.

        Called by the checkpoint inside its transaction; a marker follows the
        records of its partition, so a reader sees them before it.
        """
        pending, self._pending = self._pending, {}
        if self._wm > self._sent:
            mark = encode_state((_MARK, self.writer, self._wm), step=self._context.step)
            ts = self._wm if self._wm < MAX_TS_MS else MAX_TS_MS
            for p in range(self.partitions):
                pending.setdefault(p, []).append(LogRecord(None, mark, ts))
            self._sent = self._wm
        return [(self.topic, p, recs) for p, recs in sorted(pending.items())]

    def flush(self) -> None:
        """Append buffered records now, only when no checkpoint drives this sink."""
        if self._context.transactional:
            return
        append_in_transaction(self._log, self.drain_log_records())

    def close(self) -> None:
        """Flush (without a checkpointer); with one, undrained records are discarded."""
        self.flush()
        self._pending = {}


@final
class RepartitionSource:
    """The downstream end of a boundary: this task's partition of the topic (module doc).

    Attributes:
        key_by: the ``key_by`` step whose keys the records carry.
    """

    bounded = False
    columnar = False

    def __init__(self, spec: TopicSpec, record_type: type | None, key_by: str) -> None:
        self.spec = spec
        self.topic = spec.name
        self.partitions = spec.partitions
        # ``object``: unknown (field getters then dispatch on each record)
        self.record_type: type = record_type if record_type is not None else object
        self.key_by = key_by

    def __repr__(self) -> str:
        return f"repartition({self.topic!r})"

    def log_partitions(self, log: Log) -> int:
        """The task count this topic was made for."""
        return self.partitions

    def open(self, context: OpenContext) -> list[RepartitionReader]:
        """Create the topic if missing; return a reader per owned partition."""
        log = _open_topic(context.log, self.spec, context.step)
        committed = log.committed(context.group, self.topic) if context.group else {}
        owned = context.partitions
        return [
            RepartitionReader(log, self.topic, p, committed.get(p))
            for p in range(self.partitions)
            if owned is None or p in owned
        ]


@final
class RepartitionReader:
    """Reads the committed records of one partition of a repartition topic."""

    def __init__(self, log: Log, topic: str, partition_id: int, committed: int | None) -> None:
        self.topic = topic
        self.partition_id = partition_id
        self.partition = f"{topic}/{partition_id}"
        self._log = log
        self._pos = committed

    def seek(self, offset: int) -> None:
        """Resume at ``offset`` (from the task's checkpoint)."""
        self._pos = offset

    def read(self, max_records: int) -> list[StoredRecord]:
        """The next committed records and markers (empty when caught up)."""
        if self._pos is None:
            self._pos = self._log.topics()[self.topic].offsets[self.partition_id].log_start
        stored = self._log.read(self.topic, self.partition_id, self._pos, max(1, max_records))
        if stored:
            self._pos = stored[-1].offset + 1
        return stored

    def poll(self, max_records: int, columnar: bool) -> Chunk:
        """Not used: :class:`RepartitionRunner` reads with :meth:`read`."""
        raise NotImplementedError("a repartition topic is read by RepartitionRunner")

    def close(self) -> None:
        """Nothing to release: the log belongs to the run."""


class RepartitionRunner(SourceRunner):
    """Drives a :class:`RepartitionSource`: keyed batches out, markers into the watermark."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        source = self.step.source
        assert isinstance(source, RepartitionSource)
        self.marks = [MIN_TS_MS] * source.partitions
        self._rtype: type | None = None if source.record_type is object else source.record_type
        self._parts: Sequence[RepartitionReader] = [
            r for r in self.readers if isinstance(r, RepartitionReader)
        ]

    @property
    def ended(self) -> bool:
        """Whether every writer's input has ended (its mark is +infinity)."""
        return all(m >= MAX_TS_MS for m in self.marks)

    def poll(self, max_records: int) -> int:
        """Read each owned partition; deliver records, apply markers; return records read."""
        total = 0
        marks = self.marks
        for reader, pc in zip(self._parts, self.partitions, strict=True):
            stored = reader.read(max_records)
            if not stored:
                continue
            self.positions[reader.partition] = stored[-1].offset + 1
            rows: list[Any] = []
            keys: list[Any] = []
            ts: list[int] = []
            offs: list[int] = []
            for rec in stored:
                if rec.value is None:
                    continue
                tag, a, b = decode_state(rec.value, step=self.name)
                if tag == _MARK:
                    if b > marks[a]:
                        marks[a] = b
                    continue
                keys.append(a)
                rows.append(b)
                ts.append(rec.ts_ms)
                offs.append(rec.offset)
            if not rows:
                continue
            pc.max_ts = max(pc.max_ts, max(ts))
            total += len(rows)
            self.metrics.batch_sizes.observe(len(rows))
            batch = Batch(
                rows,
                ts,
                keys=keys,
                offsets=offs,
                partition=reader.partition,
                record_type=self._rtype,
            )
            self.out.emit(batch)
        return total

    def current_watermark(self, now_ms: int) -> int:
        """The minimum over every writer's latest mark (never goes back)."""
        wm = min(self.marks)
        if wm > self.watermark_ms:
            self.watermark_ms = wm
        for pc in self.partitions:
            pc.watermark = self.watermark_ms
        self.metrics.watermark_ms = self.watermark_ms
        return self.watermark_ms

    def clocks(self) -> dict[str, list[int]]:
        """Each reader's ``[max_ts, watermark]`` followed by every writer's mark."""
        return {
            r.partition: [pc.max_ts, pc.watermark, *self.marks]
            for r, pc in zip(self.readers, self.partitions, strict=True)
        }

    def restore_clocks(self, clocks: dict[str, list[int]]) -> None:
        """Restore the clocks and the writers' marks of the checkpoint resumed from."""
        super().restore_clocks(clocks)
        for saved in clocks.values():
            for w, mark in enumerate(saved[2 : 2 + len(self.marks)]):
                self.marks[w] = max(self.marks[w], mark)
