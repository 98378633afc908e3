"""The vectorized path of the inner interval join: both sides buffered as polars frames.

Each side's buffer is a list of chunks (frames with columns ``__key``,
``__ts`` and a struct column ``left`` or ``right`` holding the record's user
fields). A new batch is late-checked and queued; at the next watermark or
loop tick the queued rows of each side are joined on ``__key`` with the other
side's buffer, filtered on the bound, and appended to their own buffer (left
first, so a pair of two new rows is found once, when the right rows are
joined with the grown left buffer). Joining once per loop iteration rather
than once per batch matters: a join costs a pass over the other side's buffer.
Eviction drops whole chunks once their newest record is dead, so it costs
nothing per record.

Results are columnar batches with columns ``<key_field>``, ``left``, ``right``
(structs: a row reads back as ``{key_field: k, "left": {...}, "right": {...}}``,
exactly the record path's default result), ``__ts = max(left.ts, right.ts)``
and ``__key``. A columnar sink reads e.g. ``frame["left"].struct.field("ts")``.

Order: per flush, the pairs of new left rows, then those of new right rows; each in
the new rows' order, then the buffer's arrival order (``maintain_order="left_right"``).
So the output is deterministic for a given arrival of batches (it is not the
record path's order; both give the same pairs).

Checkpoints: ``changed[side]`` tells whether a side's chunks or queue changed
since the last :meth:`snapshot_side`, which returns the whole side (its chunks
with their newest time, and its queue) as Arrow IPC bytes; :meth:`load_side`
reads it back. A whole side per checkpoint is cheap while the buffers stay
small (they hold only the join window); chunk boundaries are kept so eviction
after a restore is the same as without one.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal

from eventspine.records import KEY_COL, OFF_COL, TS_COL
from eventspine.timeutil import MIN_TS_MS

if TYPE_CHECKING:
    import polars as pl

__all__ = ["ColumnarBuffers"]

_META = (TS_COL, KEY_COL, OFF_COL)
_SIDES = ("left", "right")
_OTHER_TS = "__ts_o"
_CHUNK_ROWS = 16_384  # batches are appended to the last chunk while it stays this small
_MAX_CHUNKS = 16  # a buffer fragmented into more polars chunks is copied into one


class ColumnarBuffers:
    """Both sides of an inner interval join as frames (see the module docstring).

    Args:
        lower: the lower bound of ``right.ts - left.ts`` (ms, inclusive).
        upper: the upper bound (ms, inclusive).
        key_field: the name of the key column in results.
    """

    def __init__(self, lower: int, upper: int, key_field: str) -> None:
        self.lower = lower
        self.upper = upper
        self.key_field = key_field
        # Per side: the buffer as chunks (frame, largest ts in it), in arrival order.
        self.chunks: list[list[tuple[pl.DataFrame, int]]] = [[], []]
        self.pending: list[list[pl.DataFrame]] = [[], []]
        # A side's record is evicted once wm > ts + keep[side].
        self.keep = (upper, -lower)
        self.state_keys = 0
        self._counted = 0.0
        #: Per side: whether its chunks or queue changed since the last snapshot.
        self.changed = [False, False]

    @property
    def buffered(self) -> int:
        """How many records both sides hold."""
        return sum(c.height for side in self.chunks for c, _ in side)

    def _frame(self, side: int) -> pl.DataFrame | None:
        """The side's buffer as one frame (without copying, unless it is badly fragmented)."""
        import polars as pl

        chunks = self.chunks[side]
        if not chunks:
            return None
        if len(chunks) == 1:
            frame = chunks[0][0]
        else:
            frame = pl.concat([c for c, _ in chunks], rechunk=False)
        if frame.n_chunks() > _MAX_CHUNKS:
            frame = frame.rechunk()
            self.chunks[side] = [(frame, max(m for _, m in chunks))]
            self.changed[side] = True
        return frame

    def push(
        self, frame: pl.DataFrame, port: int, wm_ms: int
    ) -> pl.DataFrame | Literal[False] | None:
        """Queue a new batch of side ``port`` (joined at the next :meth:`flush`).

        Returns:
            The late rows (``ts < wm_ms``, original columns) or ``None``; or ``False``
            (with nothing changed) when this batch cannot take the vectorized path,
            e.g. its schema differs from the buffered one: the caller then moves to
            the record path.
        """
        import polars as pl

        if KEY_COL not in frame.columns or self.key_field in _SIDES:
            return False
        user = [c for c in frame.columns if c not in _META]
        if not user:
            return False
        new = frame.select(KEY_COL, TS_COL, pl.struct(user).alias(_SIDES[port]))
        mine = self._sample(port)
        if mine is not None and mine.schema != new.schema:
            return False
        other = self._sample(1 - port)
        if other is not None and other.schema[KEY_COL] != new.schema[KEY_COL]:
            return False
        late: pl.DataFrame | None = None
        if wm_ms > MIN_TS_MS and new.height:
            first = new.get_column(TS_COL).min()
            if first is not None and first < wm_ms:  # type: ignore[operator]
                on_time = pl.col(TS_COL) >= wm_ms
                late = frame.filter(~on_time)
                new = new.filter(on_time)
        if new.height:
            self.pending[port].append(new)
            self.changed[port] = True
        return late if late is not None and late.height else None

    def _sample(self, side: int) -> pl.DataFrame | None:
        """Any frame of the side (all share one schema), or ``None``."""
        if self.pending[side]:
            return self.pending[side][0]
        return self.chunks[side][0][0] if self.chunks[side] else None

    @property
    def has_pending(self) -> bool:
        """Whether batches wait for :meth:`flush`."""
        return bool(self.pending[0] or self.pending[1])

    def flush(self) -> pl.DataFrame | None:
        """Join the queued batches with the buffers, buffer them, and return the new pairs.

        New left rows are joined with the buffered right side, appended to the left
        buffer, then new right rows are joined with the whole left buffer: a pair of
        two new rows is found once, in the second join.
        """
        import polars as pl

        outs: list[pl.DataFrame] = []
        for port in (0, 1):
            if not self.pending[port]:
                continue
            parts = self.pending[port]
            self.pending[port] = []
            self.changed[port] = True
            new = parts[0] if len(parts) == 1 else pl.concat(parts)
            other = self._frame(1 - port)
            if other is not None:
                pairs = self._join(new, other, port)
                if pairs.height:
                    outs.append(pairs)
            self._append(port, new)
        if not outs:
            return None
        return outs[0] if len(outs) == 1 else pl.concat(outs)

    def _join(self, new: pl.DataFrame, other: pl.DataFrame, port: int) -> pl.DataFrame:
        import polars as pl

        j = new.join(
            other.rename({TS_COL: _OTHER_TS}),
            on=KEY_COL,
            how="inner",
            maintain_order="left_right",
        )
        left_ts, right_ts = (
            (pl.col(TS_COL), pl.col(_OTHER_TS))
            if port == 0
            else (pl.col(_OTHER_TS), pl.col(TS_COL))
        )
        return j.filter((right_ts - left_ts).is_between(self.lower, self.upper)).select(
            pl.col(KEY_COL).alias(self.key_field),
            "left",
            "right",
            pl.max_horizontal(TS_COL, _OTHER_TS).alias(TS_COL),
            KEY_COL,
        )

    def _append(self, side: int, new: pl.DataFrame) -> None:
        import polars as pl

        top = new.get_column(TS_COL).max()
        assert isinstance(top, int)
        chunks = self.chunks[side]
        if chunks and chunks[-1][0].height + new.height <= _CHUNK_ROWS:
            # Small batches share a chunk (no copy), so eviction stays cheap per chunk.
            last, last_top = chunks[-1]
            chunks[-1] = (pl.concat([last, new], rechunk=False), max(last_top, top))
        else:
            chunks.append((new, top))

    def evict(self, wm_ms: int) -> None:
        """Drop the chunks whose records can no longer match (``wm > ts + keep`` for all).

        A chunk goes when its newest record is dead. Dead records inside a live chunk
        stay until then: they cannot match any record that is not late (such records
        have ``ts >= wm``), so the inner join's results do not depend on eviction time.
        """
        evicted = False
        for side in (0, 1):
            chunks = self.chunks[side]
            bound = wm_ms - self.keep[side]  # records with ts < bound are dead
            kept = [c for c in chunks if c[1] >= bound]
            if len(kept) != len(chunks):
                self.chunks[side] = kept
                self.changed[side] = evicted = True
        now = time.monotonic()
        if evicted and now - self._counted >= 1.0:
            # Counting keys costs a pass over the buffers: at most once a second.
            self._counted = now
            frames = (self._frame(side) for side in (0, 1))
            self.state_keys = sum(f.get_column(KEY_COL).n_unique() for f in frames if f is not None)

    def drain(self) -> Iterator[tuple[int, list[Any], list[int], list[Any]]]:
        """Yield and forget each side's buffer as ``(side, keys, ts, records)`` in arrival order.

        Call :meth:`flush` first: queued batches are not part of the buffers.
        """
        assert not self.has_pending
        for side in (0, 1):
            buf = self._frame(side)
            self.chunks[side] = []
            self.changed[side] = True
            if buf is None or not buf.height:
                continue
            yield (
                side,
                buf.get_column(KEY_COL).to_list(),
                buf.get_column(TS_COL).to_list(),
                buf.get_column(_SIDES[side]).to_list(),
            )

    # -- checkpoints -----------------------------------------------------------------------
    def snapshot_side(self, side: int) -> dict[str, Any]:
        """Return side ``side`` (chunks, newest times, queue) as picklable IPC bytes."""
        self.changed[side] = False
        return {
            "chunks": [(_ipc(frame), top) for frame, top in self.chunks[side]],
            "pending": [_ipc(frame) for frame in self.pending[side]],
        }

    def load_side(self, side: int, value: dict[str, Any]) -> None:
        """Restore side ``side`` from :meth:`snapshot_side` (on fresh buffers)."""
        import polars as pl

        self.chunks[side] = [(pl.read_ipc(io.BytesIO(b)), top) for b, top in value["chunks"]]
        self.pending[side] = [pl.read_ipc(io.BytesIO(b)) for b in value["pending"]]
        self.changed[side] = False


def _ipc(frame: pl.DataFrame) -> bytes:
    return frame.write_ipc(None).getvalue()
