"""The vectorized path of the inner interval join: both sides buffered as polars frames.

Each side's buffer is one frame with columns ``__key``, ``__ts`` and a struct
column (``left`` or ``right``) holding the record's user fields. A new batch
is late-checked and queued; at the next watermark or loop tick the queued
rows of each side are joined on ``__key`` with the other side's buffer,
filtered on the bound, and appended to their own buffer (left first, so a
pair of two new rows is found once, when the right rows are joined with the
grown left buffer). Joining once per loop iteration rather than once per
batch matters: a join costs a pass over the other side's buffer. Results are columnar batches with columns
``<key_field>``, ``left``, ``right`` (structs: a row reads back as
``{key_field: k, "left": {...}, "right": {...}}``, exactly the record path's
default result), ``__ts = max(left.ts, right.ts)`` and ``__key``.

Order: per flush, the pairs of new left rows, then those of new right rows; each in
the new rows' order, then the buffer's arrival order (``maintain_order="left_right"``).
So the output is deterministic for a given arrival of batches (it is not the
record path's order; both give the same pairs).
"""

from __future__ import annotations

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
        self.frames: list[pl.DataFrame | None] = [None, None]
        self.pending: list[list[pl.DataFrame]] = [[], []]
        self.min_ts: list[int] = [0, 0]
        # A side's record is evicted once wm > ts + keep[side].
        self.keep = (upper, -lower)
        self.state_keys = 0
        self._counted = 0.0

    @property
    def buffered(self) -> int:
        """How many records both sides hold."""
        return sum(f.height for f in self.frames if f is not None)

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
        mine = self.pending[port][0] if self.pending[port] else self.frames[port]
        if mine is not None and mine.schema != new.schema:
            return False
        other = self.pending[1 - port][0] if self.pending[1 - port] else self.frames[1 - port]
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
        return late if late is not None and late.height else None

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
            new = parts[0] if len(parts) == 1 else pl.concat(parts)
            other = self.frames[1 - port]
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

        first = new.get_column(TS_COL).min()
        assert isinstance(first, int)
        buf = self.frames[side]
        if buf is None or not buf.height:
            self.frames[side] = new
            self.min_ts[side] = first
        else:
            self.frames[side] = pl.concat([buf, new], rechunk=False)
            self.min_ts[side] = min(self.min_ts[side], first)

    def evict(self, wm_ms: int) -> None:
        """Drop the records that can no longer match (``wm > ts + keep``)."""
        import polars as pl

        evicted = False
        for side in (0, 1):
            buf = self.frames[side]
            if buf is None or self.min_ts[side] + self.keep[side] >= wm_ms:
                continue
            evicted = True
            buf = buf.filter(pl.col(TS_COL) >= wm_ms - self.keep[side])
            if buf.height:
                self.frames[side] = buf
                first = buf.get_column(TS_COL).min()
                assert isinstance(first, int)
                self.min_ts[side] = first
            else:
                self.frames[side] = None
        now = time.monotonic()
        if evicted and now - self._counted >= 1.0:
            # Counting keys costs a pass over the buffers: at most once a second.
            self._counted = now
            self.state_keys = sum(
                f.get_column(KEY_COL).n_unique() for f in self.frames if f is not None
            )

    def drain(self) -> Iterator[tuple[int, list[Any], list[int], list[Any]]]:
        """Yield and forget each side's buffer as ``(side, keys, ts, records)`` in arrival order.

        Call :meth:`flush` first: queued batches are not part of the buffers.
        """
        assert not self.has_pending
        for side in (0, 1):
            buf = self.frames[side]
            self.frames[side] = None
            if buf is None or not buf.height:
                continue
            yield (
                side,
                buf.get_column(KEY_COL).to_list(),
                buf.get_column(TS_COL).to_list(),
                buf.get_column(_SIDES[side]).to_list(),
            )
