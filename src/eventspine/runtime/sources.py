"""Driving sources: polling partitions, assigning event time, tracking watermarks.

Watermarks (ARCHITECTURE decision 3):

* Each partition's watermark is the largest event time it has delivered minus
  ``max_delay`` (bounded out-of-orderness). It advances after each batch and
  never goes back.
* A partition that has had nothing to read for ``idle_timeout`` is *idle*: it
  no longer holds back the source's watermark (the minimum over the active
  partitions).
* Only when every partition is idle does the wall clock move time: the
  watermark advances as if event time kept flowing at wall-clock speed since
  the last record. The wall clock is never used while any partition still has
  data to read, so a replay that runs slower or faster than real time gets
  exactly the same windows.
* A bounded partition that has ended has watermark +infinity.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from eventspine.dataflow.expr import Expr
from eventspine.dataflow.ports import SourceReader
from eventspine.dataflow.steps import SourceStep
from eventspine.records import OFF_COL, TS_COL, Batch, all_exactly, field_getter
from eventspine.runtime.operator import ErrorBoundary, Output
from eventspine.timeutil import MAX_TS_MS, MIN_TS_MS, Clock, to_ms

if TYPE_CHECKING:
    import polars as pl

    from eventspine.runtime.metrics import StepMetrics

__all__ = ["PartitionClock", "SourceRunner"]


class PartitionClock:
    """The event-time bookkeeping of one source partition."""

    __slots__ = ("ended", "idle_since_wall", "last_data_wall", "max_ts", "watermark")

    def __init__(self, now_ms: int) -> None:
        self.max_ts = MIN_TS_MS
        self.watermark = MIN_TS_MS
        self.last_data_wall = now_ms
        self.idle_since_wall: int | None = None
        self.ended = False


class SourceRunner:
    """Polls the readers of one source step and pushes batches downstream.

    Args:
        step: the source step spec.
        readers: the opened partitions.
        out: the step's output.
        boundary: the error policy for records that cannot be decoded or timed.
        clock: the run's clock.
        columnar: whether downstream prefers frames (readers that can, give them).
    """

    def __init__(
        self,
        step: SourceStep,
        readers: Sequence[SourceReader],
        out: Output,
        boundary: ErrorBoundary,
        metrics: StepMetrics,
        clock: Clock,
        *,
        columnar: bool,
    ) -> None:
        self.step = step
        self.name = step.name
        self.readers = list(readers)
        self.out = out
        self.boundary = boundary
        self.metrics = metrics
        self.clock = clock
        self.columnar = columnar
        now = clock.now_ms()
        self.partitions = [PartitionClock(now) for _ in self.readers]
        et = step.timestamps
        self._delay = et.max_delay_ms if et is not None else 0
        self._idle_ms = et.idle_timeout_ms if et is not None else 1
        self._event_time = et is not None
        self._ts_fn: Callable[[Any], Any] | None = None
        self._ts_field: str | None = None
        if et is not None:
            spec = et.timestamp
            if isinstance(spec, str):
                self._ts_field = spec
                self._ts_fn = field_getter(spec, step.source.record_type)
            elif isinstance(spec, Expr):
                self._ts_field = spec.field_name
                self._ts_fn = spec.to_python(step.source.record_type)
            else:
                self._ts_fn = spec
        self.watermark_ms = MIN_TS_MS
        self.positions: dict[str, int] = {}

    @property
    def ended(self) -> bool:
        """Whether every partition has ended."""
        return all(p.ended for p in self.partitions)

    def poll(self, max_records: int) -> int:
        """Read at most ``max_records`` from each partition; return how many records were read."""
        total = 0
        now = self.clock.now_ms()
        for reader, pc in zip(self.readers, self.partitions, strict=True):
            if pc.ended:
                continue
            chunk = reader.poll(max_records, self.columnar)
            if chunk is None:
                pc.ended = True
                pc.watermark = MAX_TS_MS
                continue
            for err in chunk.errors:
                self.boundary.decode_error(err, reader.partition, _err_offset(err))
            self.positions[reader.partition] = chunk.next_offset
            n = len(chunk.records)
            if not n:
                if pc.idle_since_wall is None:
                    pc.idle_since_wall = now
                continue
            pc.idle_since_wall = None
            pc.last_data_wall = now
            batch = self._to_batch(chunk.records, chunk.first_offset, chunk.offsets, reader, now)
            if not len(batch):
                continue
            mx = max(batch.ts) if not batch.is_columnar else int(batch.frame[TS_COL].max())  # type: ignore[arg-type]
            if mx > pc.max_ts:
                pc.max_ts = mx
                wm = mx - self._delay
                if wm > pc.watermark:
                    pc.watermark = wm
            total += len(batch)
            self.metrics.batch_sizes.observe(len(batch))
            self.out.emit(batch)
        return total

    def current_watermark(self, now_ms: int) -> int:
        """Return the source watermark (min over non-idle partitions; see module doc)."""
        idle_ms = self._idle_ms
        active: list[int] = []
        idle: list[PartitionClock] = []
        for pc in self.partitions:
            if pc.ended:
                continue
            if (
                idle_ms is not None
                and pc.idle_since_wall is not None
                and now_ms - pc.last_data_wall >= idle_ms
            ):
                idle.append(pc)
            else:
                active.append(pc.watermark)
        if active:
            wm = min(active)
        elif idle:
            if not self._event_time:
                wm = now_ms
            else:
                # Every live partition is idle: let event time flow with the wall clock.
                wm = max(
                    (pc.max_ts if pc.max_ts != MIN_TS_MS else pc.watermark)
                    + (now_ms - pc.last_data_wall)
                    - self._delay
                    for pc in idle
                )
                if all(pc.max_ts == MIN_TS_MS for pc in idle):
                    wm = MIN_TS_MS
        else:
            wm = MAX_TS_MS
        if wm > self.watermark_ms:
            self.watermark_ms = wm
        self.metrics.watermark_ms = self.watermark_ms
        return self.watermark_ms

    def clocks(self) -> dict[str, list[int]]:
        """The event-time state to checkpoint, per reader: ``[max_ts, watermark]``."""
        return {
            r.partition: [pc.max_ts, pc.watermark]
            for r, pc in zip(self.readers, self.partitions, strict=True)
        }

    def restore_clocks(self, clocks: dict[str, list[int]]) -> None:
        """Restore what :meth:`clocks` returned at the checkpoint resumed from."""
        for r, pc in zip(self.readers, self.partitions, strict=True):
            if r.partition in clocks:
                pc.max_ts, pc.watermark = clocks[r.partition][:2]

    def close(self) -> None:
        """Close every reader."""
        for r in self.readers:
            r.close()

    # -- event time -----------------------------------------------------------------
    def _to_batch(
        self,
        records: list[Any] | pl.DataFrame,
        first_offset: int,
        offsets: list[int] | None,
        reader: SourceReader,
        now_ms: int,
    ) -> Batch:
        rtype = self.step.source.record_type
        if isinstance(records, list):
            n = len(records)
            offs = offsets if offsets is not None else list(range(first_offset, first_offset + n))
            if not self._event_time:
                ts = [now_ms] * n
                return Batch(
                    records, ts, offsets=offs, partition=reader.partition, record_type=rtype
                )
            return self._timed_rows(records, offs, reader.partition, rtype)
        import polars as pl

        frame = records
        n = frame.height
        if offsets is not None:
            frame = frame.with_columns(pl.Series(OFF_COL, offsets, dtype=pl.Int64))
        else:
            frame = frame.with_columns(
                pl.int_range(first_offset, first_offset + n, dtype=pl.Int64).alias(OFF_COL)
            )
        if not self._event_time:
            frame = frame.with_columns(pl.lit(now_ms, dtype=pl.Int64).alias(TS_COL))
        elif self._ts_field is not None:
            col = frame.get_column(self._ts_field) if self._ts_field in frame.columns else None
            if col is None or not col.dtype.is_integer() or col.null_count():
                return self._timed_rows(
                    Batch.of_frame(
                        frame.with_columns(pl.lit(0).alias(TS_COL)), record_type=rtype
                    ).rows,
                    frame.get_column(OFF_COL).to_list(),
                    reader.partition,
                    rtype,
                )
            frame = frame.with_columns(col.cast(pl.Int64).alias(TS_COL))
        else:
            b = Batch.of_frame(frame.with_columns(pl.lit(0).alias(TS_COL)), record_type=rtype)
            return self._timed_rows(
                b.rows, frame.get_column(OFF_COL).to_list(), reader.partition, rtype
            )
        return Batch.of_frame(frame, partition=reader.partition, record_type=rtype)

    def _timed_rows(
        self, records: list[Any], offs: list[int], partition: str, rtype: type
    ) -> Batch:
        fn = self._ts_fn
        assert fn is not None
        try:
            ts = list(map(fn, records))
            if not all_exactly(ts, int):  # else they already are epoch milliseconds
                ts = list(map(_as_ms, ts))
            return Batch(records, ts, offsets=offs, partition=partition, record_type=rtype)
        except Exception:  # noqa: S110  # the per-record pass below finds and reports the culprit
            pass
        keep_rows: list[Any] = []
        keep_ts: list[int] = []
        keep_offs: list[int] = []
        probe = Batch(records, [0] * len(records), offsets=offs, partition=partition)
        for i, r in enumerate(records):
            try:
                t = _as_ms(fn(r))
            except Exception as exc:
                self.boundary.fn_name = (
                    f"the event time of step '{self.name}' ({self._describe_ts()})"
                )
                self.boundary.user_error(exc, probe, i)
                continue
            keep_rows.append(r)
            keep_ts.append(t)
            keep_offs.append(offs[i])
        return Batch(keep_rows, keep_ts, offsets=keep_offs, partition=partition, record_type=rtype)

    def _describe_ts(self) -> str:
        if self._ts_field is not None:
            return f"field '{self._ts_field}' must hold epoch milliseconds (int) or a datetime"
        return "the timestamp function must return epoch milliseconds (int) or a datetime"


def _as_ms(value: Any) -> int:
    if type(value) is int:
        return value
    if isinstance(value, datetime):
        return to_ms(value)
    if isinstance(value, float) and value == value and abs(value) < 1e17:
        return int(value)
    raise TypeError(
        f"event time {value!r} ({type(value).__name__}) is not epoch milliseconds (int) "
        f"or an aware datetime"
    )


def _err_offset(err: Any) -> int | None:
    pos = getattr(err, "position", "")
    if isinstance(pos, str) and "@" in pos:
        tail = pos.rsplit("@", 1)[1]
        return int(tail) if tail.isdigit() else None
    return None
