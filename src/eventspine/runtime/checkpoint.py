"""Checkpoints: source positions, state changes and outputs, committed atomically.

A checkpoint is taken between loop iterations, when every batch read so far
has been handled and watermarks have been propagated. In one log transaction
(one SQLite transaction on the embedded log) it appends:

* each stateful operator's changed state entries to its compacted changelog
  topic ``__es.<pipeline>.<step>.changelog``;
* the records staged by topic sinks, and the dead letters since the last
  checkpoint;
* the consumer positions of topic sources (``commit_positions``);
* one metadata record to ``__es.<pipeline>.checkpoints``: the checkpoint id,
  the pipeline's signature, every source partition's position and clock,
  every operator's watermark, and each file sink's publish intent.

File sinks are two-phase: they stage their bytes before the transaction
(``prepare``) and publish them after it commits (``publish``); on restart
``recover`` completes or rolls back what the last committed checkpoint says.
So after a crash at any point, the committed output is that of the last
committed checkpoint, and the run resumes from exactly there.

Failpoints (see :mod:`eventspine.failpoints`) mark each step of the protocol:
``ckpt.before_begin``, ``ckpt.after_state_write``, ``ckpt.after_output_append``,
``ckpt.before_commit``, ``ckpt.after_commit_before_ack``, ``ckpt.after_publish``,
``recovery.before_restore``, ``recovery.mid_replay``, ``recovery.after_restore``.
"""

from __future__ import annotations

import base64
import gc
import logging
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec

from eventspine import failpoints
from eventspine.errors import StateError
from eventspine.log.base import LogRecord, TopicInfo, TopicSpec, fold_latest, read_range
from eventspine.runtime.operator import DeadLetterEntry, Operator
from eventspine.serde.state import decode_state_items, encode_state
from eventspine.timeutil import Clock, to_duration_ms

if TYPE_CHECKING:
    from eventspine.log.base import Log, LogTransaction
    from eventspine.runtime.plan import Plan
    from eventspine.runtime.standby import WarmChangelog
    from eventspine.runtime.worker_metrics import RestoreProgress

__all__ = [
    "CheckpointMeta",
    "CheckpointPolicy",
    "Checkpointer",
    "PendingCheckpoint",
    "checkpoints_spec",
    "names",
    "open_transaction",
    "read_last_meta",
    "repartition_spec",
]

_log = logging.getLogger("eventspine.checkpoint")

_META_FORMAT = 1
#: The key of every checkpoint record (the checkpoints topic is compacted).
META_KEY = b"checkpoint"
#: How often (seconds, at a checkpoint) retention and compaction are applied to the log.
RETENTION_EVERY_S = 60.0
#: how many checkpoint durations a run keeps (for benchmarks and inspection)
DURATIONS_KEPT = 10_000


@dataclass(frozen=True)
class CheckpointPolicy:
    """When checkpoints are taken.

    Attributes:
        interval: at most this long between checkpoints (wall clock).
        records: also after this many records read since the last one (``None``: no limit).
        exactly_once: commit each checkpoint as one atomic log transaction (the default).
            ``False`` is at-least-once: on Kafka the outputs are produced without a
            transaction and the positions committed after them, so a crash between the two
            replays the records since the last checkpoint (duplicated output, and state
            changes counted again). Faster on Kafka; the same as ``True`` on SQLite.
    """

    interval: timedelta = timedelta(seconds=1)
    records: int | None = None
    exactly_once: bool = True


class names:  # a namespace of naming rules, used as names.changelog(...)
    """How internal topics are named (one place, shared by the CLI)."""

    @staticmethod
    def prefix(pipeline: str) -> str:
        """The prefix of every internal topic of ``pipeline``."""
        return f"__es.{pipeline}."

    @staticmethod
    def checkpoints(pipeline: str) -> str:
        """The topic holding one metadata record per checkpoint."""
        return f"__es.{pipeline}.checkpoints"

    @staticmethod
    def changelog(pipeline: str, step: str) -> str:
        """The compacted topic holding a stateful step's state."""
        return f"__es.{pipeline}.{step}.changelog"

    @staticmethod
    def repartition(pipeline: str, step: str) -> str:
        """The topic a partitioned run re-keys through after ``key_by`` step ``step``."""
        return f"__es.{pipeline}.{step}.repartition"


class CheckpointMeta(msgspec.Struct, kw_only=True):
    """The metadata record of one committed checkpoint (JSON in the log)."""

    format: int = _META_FORMAT
    id: int
    time: str
    pipeline: str
    signature: dict[str, str]
    positions: dict[str, dict[str, int]]
    clocks: dict[str, dict[str, list[int]]]
    watermarks: dict[str, int]
    sinks: dict[str, Any]
    records_read: int = 0


#: Records for one partition: ``(topic, partition, records)``.
_Appends = list[tuple[str, int, list[LogRecord]]]


@dataclass
class _Staged:
    """Everything :meth:`Checkpointer.write` appends, kept to write it again."""

    state: _Appends
    outputs: _Appends
    positions: list[tuple[str, dict[int, int]]]
    meta: LogRecord


@dataclass
class PendingCheckpoint:
    """A checkpoint between :meth:`Checkpointer.prepare` and :meth:`Checkpointer.committed`.

    The first :meth:`Checkpointer.write` takes the state changes and outputs out of the
    operators and sinks and keeps them here, so a transaction that was aborted for certain
    (:class:`~eventspine.errors.TransactionAbortedError`) can be written again, unchanged,
    in a new one, as long as the task has not processed anything since.
    """

    id: int
    started: float
    watermarks: dict[str, int]
    intents: dict[str, Any]
    staged: _Staged | None = None


class Checkpointer:
    """Takes checkpoints of a compiled plan into a log, and restores from them.

    A plan that runs one *task* of a partitioned pipeline (see
    :mod:`eventspine.runtime.worker`) has ``partition=p`` of ``partitions``: its
    metadata records go to partition ``p`` of the checkpoints topic and its state to
    partition ``p`` of each changelog, so tasks checkpoint and restore independently.
    """

    def __init__(
        self,
        log: Log,
        plan: Plan,
        clock: Clock,
        policy: CheckpointPolicy,
        *,
        partition: int = 0,
        partitions: int = 1,
    ) -> None:
        self.log = log
        self.partition = partition
        self.partitions = partitions
        self.plan = plan
        self.clock = clock
        self.policy = policy
        self.pipeline = plan.pipeline.name
        self.checkpoint_id = 0
        self.restored_from: int | None = None
        self._restored: CheckpointMeta | None = None
        self._interval_s = to_duration_ms(policy.interval) / 1000
        self._last = clock.monotonic()
        self._last_retention = self._last
        self._records_since = 0
        self._records_total = 0
        self._dead_sent = 0
        self.dead_letters_committed = 0
        self._dead_topics: set[str] = set()  # dead-letter topics known to exist
        self.stateful: list[Operator] = [op for op in plan.operators if op.stateful]
        steps = plan.pipeline.steps
        lost = [
            op.name
            for op in plan.operators
            if not op.stateful and op.name in steps and steps[op.name].stateful
        ]
        if lost:
            raise StateError(
                f"step(s) {', '.join(lost)} of pipeline '{self.pipeline}' keep state that this "
                f"version cannot checkpoint yet, so a restart would lose it; run without a "
                f"durable log (log=None / --log-url memory://) or change the step"
            )
        self.signature = _signature(plan)
        #: how many checkpoints this run committed
        self.count = 0
        #: the durations of the latest checkpoints (bounded: a run may last months)
        self.durations_s: deque[float] = deque(maxlen=DURATIONS_KEPT)
        #: set by a worker before ``recover`` to follow the restore (metrics)
        self.restore_progress: RestoreProgress | None = None

    # -- topics ------------------------------------------------------------------------
    def ensure_topics(self) -> dict[str, TopicInfo]:
        """Create the internal topics this pipeline needs (idempotent).

        Returns:
            the topics as listed before any was created (a topic created here is empty),
            so recovery needs no second listing.
        """
        n = self.partitions
        specs = [checkpoints_spec(self.pipeline, n)]
        specs += [
            TopicSpec(names.changelog(self.pipeline, op.name), n, compacted=True)
            for op in self.stateful
        ]
        existing = self.log.topics()
        for spec in specs:
            info = existing.get(spec.name)
            if info is None:
                self.log.create_topic(spec)
            elif info.spec.partitions != n:
                raise StateError(
                    f"the internal topic {spec.name!r} of pipeline '{self.pipeline}' has "
                    f"{info.spec.partitions} partition(s), but the pipeline's sources now have "
                    f"{n}: its state is split by source partition and cannot be reused. Run "
                    f"with the old partition count, or start fresh with "
                    f"`eventspine state reset {self.pipeline}`"
                )
        return existing

    # -- recovery ----------------------------------------------------------------------

    def recover(self, warm: Mapping[str, WarmChangelog] | None = None) -> int | None:
        """Restore state, positions, clocks and sinks from the last checkpoint.

        Args:
            warm: a standby copy of this task's changelogs, by step (see
                :mod:`eventspine.runtime.standby`): state is read from it and from the
                changelog records after it, instead of from the whole changelog.

        Returns:
            the checkpoint id resumed from, or ``None`` on a fresh start.

        Raises:
            StateError: the state was written by an incompatible pipeline.
        """
        topics = self.ensure_topics()
        settle = getattr(self.log, "await_settled", None)
        if settle is not None:
            # A previous owner that died inside a transaction hides what was committed after
            # it until the broker aborts it: wait, or this restore would resume from an
            # older checkpoint than the last committed one (see KafkaLog.await_settled).
            mine = [names.checkpoints(self.pipeline)]
            mine += [names.changelog(self.pipeline, op.name) for op in self.stateful]
            settle([(t, self.partition) for t in mine if t in topics])
            topics = self.log.topics()  # the ends now include what was in doubt
        meta = read_last_meta(self.log, self.pipeline, self.partition, topics)
        failpoints.hit("recovery.before_restore")
        if meta is not None:
            # Refuse before any output file is touched (recovering a sink truncates it).
            self._check_signature(meta)
            orphans = set(meta.sinks) - {s.name for s in self.plan.sinks}
            if orphans:
                raise StateError(
                    f"checkpoint {meta.id} of pipeline '{self.pipeline}' holds the output of "
                    f"sink(s) {', '.join(sorted(orphans))} that this pipeline no longer has "
                    f"(renamed or removed). Run the version that wrote it, or start fresh with "
                    f"`eventspine state reset {self.pipeline}`"
                )
        for sink in self.plan.sinks:
            recover = getattr(sink.writer, "recover", None)
            if recover is not None:
                recover(None if meta is None else meta.sinks.get(sink.name))
        if meta is None:
            if self.stateful and self._starts_at_group_positions():
                # No checkpoint record, yet the group committed positions: an at-least-once
                # checkpoint commits them after its state changes are acknowledged and
                # before its record (a crash in between), or retention deleted the records
                # of a long-stopped pipeline. The readers start at those positions, so the
                # state they need is in the changelogs: restore it, never resume on none.
                _log.warning(
                    "pipeline %s: task %d has no checkpoint record but committed positions; "
                    "resuming from them with the state in its changelogs (an at-least-once "
                    "checkpoint cut short, or its checkpoint records expired)",
                    self.pipeline,
                    self.partition,
                )
                self._restore_state(topics, warm)
            return None
        self._restore_state(topics, warm)
        by_name = {src.name: src for src in self.plan.sources}
        for step, positions in meta.positions.items():
            src = by_name[step]
            for reader in src.readers:
                if reader.partition in positions:
                    reader.seek(positions[reader.partition])
                    src.positions[reader.partition] = positions[reader.partition]
            src.restore_clocks(meta.clocks.get(step, {}))
            if step in meta.watermarks:
                src.watermark_ms = meta.watermarks[step]
        for op in self.plan.operators:
            wm = meta.watermarks.get(op.name)
            if wm is not None:
                op.watermark_ms = wm
        self.checkpoint_id = meta.id
        self.restored_from = meta.id
        self._restored = meta
        self._records_total = meta.records_read
        failpoints.hit("recovery.after_restore")
        return meta.id

    def _restore_state(
        self, topics: Mapping[str, TopicInfo], warm: Mapping[str, WarmChangelog] | None
    ) -> None:
        if self.restore_progress is not None:  # metrics hook
            changelogs = [names.changelog(self.pipeline, op.name) for op in self.stateful]
            self.restore_progress.plan(topics, self.partition, changelogs)
        with _gc_paused():
            for op in self.stateful:
                copy = None if warm is None else warm.get(op.name)
                op.restore(self._read_changelog(op.name, topics, copy))

    def _starts_at_group_positions(self) -> bool:
        """Whether a topic source's reader starts at a position the group committed."""
        return any(
            getattr(reader, "partition_id", None) is not None
            and getattr(reader, "position", None) is not None
            for src in self.plan.sources
            for reader in src.readers
        )

    def restored_watermarks(self) -> dict[str, int]:
        """The operator watermarks of the checkpoint resumed from (empty on a fresh start)."""
        return {} if self._restored is None else dict(self._restored.watermarks)

    def _check_signature(self, meta: CheckpointMeta) -> None:
        old, new = meta.signature, self.signature
        for step, sig in old.items():
            if step not in new:
                raise StateError(
                    f"the state of pipeline '{self.pipeline}' (checkpoint {meta.id}) has a "
                    f"stateful step '{step}' ({sig}) that this pipeline no longer has (renamed or "
                    f"removed). Run the pipeline version that wrote it, or start fresh with "
                    f"`eventspine state reset {self.pipeline}` (this discards its state and "
                    f"positions)"
                )
            if new[step] != sig:
                raise StateError(
                    f"step '{step}' of pipeline '{self.pipeline}' changed since checkpoint "
                    f"{meta.id}: it was {sig}, it is now {new[step]}; its saved state cannot be "
                    f"used. Run the version that wrote it, or start fresh with "
                    f"`eventspine state reset {self.pipeline}`"
                )

    def _read_changelog(
        self, step: str, topics: Mapping[str, TopicInfo], warm: WarmChangelog | None
    ) -> list[tuple[Any, Any]]:
        topic = names.changelog(self.pipeline, step)
        latest: dict[bytes, bytes | None] = {}
        info = topics.get(topic)
        if info is None:
            return []  # created by this recovery: nothing to replay
        po = info.offsets[self.partition]
        start = po.log_start
        if warm is not None and po.log_start <= warm.next_offset <= po.end:
            start, latest = warm.next_offset, warm.latest  # the standby copy: read the rest
        progress = self.restore_progress  # metrics hook
        if progress is not None:
            progress.reached(topic, start, 0)
        for next_offset, count in fold_latest(
            self.log, topic, self.partition, start, po.end, latest
        ):
            failpoints.hit("recovery.mid_replay")
            if progress is not None:
                progress.reached(topic, next_offset, count)
        return decode_state_items(((k, v) for k, v in latest.items() if v is not None), step=step)

    # -- checkpoints -------------------------------------------------------------------
    def note_records(self, n: int) -> None:
        """Count records read since the last checkpoint (for the record-count policy)."""
        self._records_since += n
        self._records_total += n

    def due(self) -> bool:
        """Whether the policy asks for a checkpoint now."""
        if self.clock.monotonic() - self._last >= self._interval_s:
            return True
        limit = self.policy.records
        return limit is not None and self._records_since >= limit

    def checkpoint(self, watermarks: Mapping[str, int]) -> int:
        """Commit one checkpoint; return its id.

        Args:
            watermarks: the current watermark of every source and operator, by name.
        """
        pending = self.prepare(watermarks)
        with open_transaction(self.log, self.policy) as txn:
            self.write(txn, pending)
        return self.committed(pending)

    def prepare(self, watermarks: Mapping[str, int]) -> PendingCheckpoint:
        """Phase 1: flush every sink and stage two-phase ones; return what ``write`` needs."""
        t0 = self.clock.monotonic()
        ckpt = self.checkpoint_id + 1
        failpoints.hit("ckpt.before_begin")
        intents: dict[str, Any] = {}
        for sink in self.plan.sinks:
            # The SinkWriter contract: what a sink was given is durable (per its guarantee)
            # before the positions past those records commit. Two-phase sinks only stage here.
            sink.flush()
            prepare = getattr(sink.writer, "prepare", None)
            if prepare is not None:
                intents[sink.name] = prepare(ckpt)
        return PendingCheckpoint(ckpt, t0, dict(watermarks), intents)

    def write(self, txn: LogTransaction, pending: PendingCheckpoint) -> None:
        """Phase 2: append state changes, outputs, positions and metadata to ``txn``.

        Several tasks of one worker write into the same transaction, so one commit
        covers them all. Called again with the same ``pending`` (after an aborted
        transaction) it appends the same records again.
        """
        staged = pending.staged
        if staged is None:
            staged = pending.staged = self._stage(pending)
        for topic, partition, records in staged.state:
            txn.append(topic, partition, records)
        failpoints.hit("ckpt.after_state_write")
        for topic, partition, records in staged.outputs:
            txn.append(topic, partition, records)
        failpoints.hit("ckpt.after_output_append")
        # An at-least-once batch is not atomic: make everything above durable before the
        # record that says it is (an atomic transaction has no barrier; none is needed).
        barrier = getattr(txn, "barrier", None)
        if barrier is not None:
            barrier()
        for topic, positions in staged.positions:
            txn.commit_positions(self.pipeline, topic, positions)
        txn.append(names.checkpoints(self.pipeline), self.partition, [staged.meta])
        failpoints.hit("ckpt.before_commit")

    def _stage(self, pending: PendingCheckpoint) -> _Staged:
        """Take the state changes and outputs since the last checkpoint (see ``write``)."""
        state: _Appends = []
        for op in self.stateful:
            changes = op.snapshot_changes()
            if changes:
                state.append(
                    (
                        names.changelog(self.pipeline, op.name),
                        self.partition,
                        [
                            LogRecord(
                                encode_state(k, step=op.name),
                                None if v is None else encode_state(v, step=op.name),
                                0,
                            )
                            for k, v in changes
                        ],
                    )
                )
        outputs: _Appends = []
        for sink in self.plan.sinks:
            drain = getattr(sink.writer, "drain_log_records", None)
            if drain is not None:
                outputs.extend((t, p, list(recs)) for t, p, recs in drain())
        outputs.extend(self._dead_letter_records(pending.id))
        meta = self._meta(pending.id, pending.watermarks, pending.intents)
        return _Staged(
            state,
            outputs,
            self._topic_positions(),
            LogRecord(META_KEY, msgspec.json.encode(meta), self.clock.now_ms()),
        )

    def committed(self, pending: PendingCheckpoint) -> int:
        """Phase 3, after the transaction committed: publish staged output; return the id."""
        ckpt = pending.id
        failpoints.hit("ckpt.after_commit_before_ack")
        # Committed dead letters live in the log now; keep memory bounded on long runs.
        self.dead_letters_committed += self._dead_sent
        del self.plan.dead_letters.entries[: self._dead_sent]
        self._dead_sent = 0
        for sink in self.plan.sinks:
            publish = getattr(sink.writer, "publish", None)
            if publish is not None:
                publish(ckpt)
        failpoints.hit("ckpt.after_publish")
        self.checkpoint_id = ckpt
        if self.clock.monotonic() - self._last_retention >= RETENTION_EVERY_S:
            # Retention and compaction keep changelogs and topics bounded; cheap when idle.
            self.log.enforce_retention()
            self._last_retention = self.clock.monotonic()
        self._last = self.clock.monotonic()
        self._records_since = 0
        self.durations_s.append(self._last - pending.started)
        self.count += 1
        return ckpt

    def _meta(
        self, ckpt: int, watermarks: Mapping[str, int], intents: dict[str, Any]
    ) -> CheckpointMeta:
        positions: dict[str, dict[str, int]] = {}
        clocks: dict[str, dict[str, list[int]]] = {}
        for src in self.plan.sources:
            positions[src.name] = dict(src.positions)
            clocks[src.name] = src.clocks()
        return CheckpointMeta(
            id=ckpt,
            time=datetime.now(UTC).isoformat(timespec="milliseconds"),
            pipeline=self.pipeline,
            signature=self.signature,
            positions=positions,
            clocks=clocks,
            watermarks=dict(watermarks),
            sinks=intents,
            records_read=self._records_total,
        )

    def _dead_letter_records(self, ckpt: int) -> _Appends:
        entries = self.plan.dead_letters.entries
        new = entries[self._dead_sent :]
        if not new:
            return []
        by_topic: dict[str, list[LogRecord]] = {}
        for e in new:
            by_topic.setdefault(e.topic, []).append(
                LogRecord(e.step.encode(), dead_letter_value(e, ckpt), self.clock.now_ms())
            )
        missing = set(by_topic) - self._dead_topics
        if missing:
            existing = self.log.topics()
            for topic in missing - set(existing):
                self.log.create_topic(TopicSpec(topic))
            self._dead_topics |= missing
        self._dead_sent = len(entries)
        return [(topic, 0, records) for topic, records in by_topic.items()]

    def _topic_positions(self) -> list[tuple[str, dict[int, int]]]:
        out: list[tuple[str, dict[int, int]]] = []
        for src in self.plan.sources:
            by_topic: dict[str, dict[int, int]] = {}
            for reader in src.readers:
                topic = getattr(reader, "topic", None)
                pid = getattr(reader, "partition_id", None)
                if topic is None or pid is None or reader.partition not in src.positions:
                    continue
                by_topic.setdefault(topic, {})[pid] = src.positions[reader.partition]
            out.extend(by_topic.items())
        return out


def dead_letter_value(e: DeadLetterEntry, ckpt: int) -> bytes:
    """Encode a dead letter as the JSON object stored in the dead-letter topic."""
    record: Any = None
    if e.record is not None:
        try:
            record = msgspec.to_builtins(e.record)
            msgspec.json.encode(record)
        except (TypeError, msgspec.EncodeError):
            record = repr(e.record)
    return msgspec.json.encode(
        {
            "step": e.step,
            "partition": e.partition,
            "offset": e.offset,
            "error_type": e.error_type,
            "error": e.error,
            "raw": None if e.raw is None else base64.b64encode(e.raw).decode(),
            "record": record,
            "attempts": e.attempts,
            "checkpoint": ckpt,
        }
    )


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a restore builds its state.

    A restore allocates millions of objects (decoded keys, values, accumulators)
    and none of them is garbage yet, but each allocation burst makes the
    collector traverse every live object again, those of the worker's other
    tasks included: with 700k live entries, decoding 166k entries took 1.2 s
    instead of 0.3-0.4 s. Reference counting still frees everything as usual;
    the collector resumes (as it was) when the block ends.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def checkpoints_spec(pipeline: str, partitions: int = 1) -> TopicSpec:
    """The checkpoints topic of ``pipeline`` (one partition per task).

    Compacted, with one key for every record: each partition keeps at least its last
    checkpoint record for as long as the pipeline exists. (A time retention would delete
    it from a pipeline stopped longer than that, which would then start over.)
    """
    return TopicSpec(names.checkpoints(pipeline), partitions, compacted=True)


def repartition_spec(pipeline: str, step: str, partitions: int) -> TopicSpec:
    """The repartition topic after ``key_by`` step ``step`` (one partition per task)."""
    return TopicSpec(names.repartition(pipeline, step), partitions)


def open_transaction(log: Log, policy: CheckpointPolicy) -> LogTransaction:
    """The transaction a checkpoint commits in: atomic, or the log's at-least-once batch.

    A log whose atomic transactions cost more than plain appends (Kafka) offers
    ``non_atomic_transaction()``; the others commit atomically either way.
    """
    if not policy.exactly_once:
        relaxed = getattr(log, "non_atomic_transaction", None)
        if relaxed is not None:
            txn: LogTransaction = relaxed()
            return txn
    return log.transaction()


def read_last_meta(
    log: Log, pipeline: str, partition: int = 0, topics: Mapping[str, TopicInfo] | None = None
) -> CheckpointMeta | None:
    """Return the last committed checkpoint metadata of ``pipeline`` in ``log``, if any.

    ``partition`` is the task's partition (0 for a pipeline that is not partitioned);
    ``topics`` is a listing of the log the caller already has (default: list it here).
    On Kafka the last offsets of a partition are transaction markers, not records, so
    the tail is read from a few offsets back (more if those were all markers).
    """
    topic = names.checkpoints(pipeline)
    info = (log.topics() if topics is None else topics).get(topic)
    if info is None or len(info.offsets) <= partition:
        return None
    po = info.offsets[partition]
    value: bytes | None = None
    back = 4
    while value is None:
        start = max(po.log_start, po.end - back)
        for recs in read_range(log, topic, partition, start, po.end, 64):
            for rec in recs:
                if rec.value is not None:
                    value = rec.value
        if start == po.log_start:
            break
        back *= 8
    if value is None:
        return None
    try:
        return msgspec.json.decode(value, type=CheckpointMeta)
    except msgspec.DecodeError as exc:
        raise StateError(
            f"the last checkpoint record of pipeline '{pipeline}' cannot be read ({exc}); it was "
            f"written by an incompatible eventspine version. Start fresh with "
            f"`eventspine state reset {pipeline}`"
        ) from exc


def _signature(plan: Plan) -> dict[str, str]:
    sig: dict[str, str] = {}
    for name, step in plan.pipeline.steps.items():
        if step.stateful:
            sig[name] = step.signature
    return sig
