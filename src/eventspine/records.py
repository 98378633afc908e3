"""Records and the micro-batches that carry them.

A record is a ``dict`` or an instance of a subclass of :class:`Event` (a
``msgspec.Struct``). Users see one record at a time; inside, the runtime
moves :class:`Batch` objects, which hold the same records either as a list
of rows (for per-record Python functions) or as a columnar frame (for
vectorized steps over named fields), converting lazily between the two.

The frame representation reserves three column names for metadata:
``__ts`` (event time, epoch ms, int64), ``__key`` (the key after
``key_by``) and ``__off`` (the source offset, for error messages).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import attrgetter, itemgetter
from typing import TYPE_CHECKING, Any, final

import msgspec

if TYPE_CHECKING:
    import polars as pl

__all__ = [
    "KEY_COL",
    "OFF_COL",
    "TS_COL",
    "Batch",
    "Event",
    "all_exactly",
    "field_getter",
    "is_event_type",
    "record_fields",
]

TS_COL = "__ts"
KEY_COL = "__key"
OFF_COL = "__off"
_META = (TS_COL, KEY_COL, OFF_COL)


class Event(msgspec.Struct, kw_only=True):
    """Base class for typed events: declare fields with type annotations.

    Typed events are validated when decoded (a wrong type is a ``DecodeError``
    that names the field) and are faster to decode than dicts::

        class Tick(es.Event):
            symbol: str
            price: float
            ts: int
    """


def is_event_type(tp: object) -> bool:
    """Return whether ``tp`` is a typed event class (a ``msgspec.Struct`` subclass)."""
    return isinstance(tp, type) and issubclass(tp, msgspec.Struct)


def field_getter(name: str, record_type: type | None) -> Callable[[Any], Any]:
    """Return a fast function that reads field ``name`` of a record.

    Dict records use ``itemgetter``; typed events use ``attrgetter``. When the
    type is unknown, the getter dispatches on each record.
    """
    if record_type is dict:
        return itemgetter(name)
    if record_type is not None and is_event_type(record_type):
        return attrgetter(name)
    by_item = itemgetter(name)
    by_attr = attrgetter(name)

    def get(record: Any) -> Any:
        return by_item(record) if isinstance(record, dict) else by_attr(record)

    return get


def all_exactly(values: Sequence[Any], kind: type) -> bool:
    """Return whether every value's type is exactly ``kind`` (one C-level pass).

    ``all_exactly(ts, int)`` is false for a ``bool``, unlike ``isinstance``.
    """
    return set(map(type, values)) <= {kind}


def record_fields(record: Any) -> dict[str, Any]:
    """Return a record's fields as a dict (a typed event is converted, a dict returned as is)."""
    if isinstance(record, dict):
        return record
    if isinstance(record, msgspec.Struct):
        return msgspec.structs.asdict(record)
    raise TypeError(
        f"a record must be a dict or an es.Event, not {type(record).__name__}; "
        f"return a dict from the step's function, or subclass es.Event"
    )


@final
class Batch:
    """A micro-batch of records with their event times, keys and source offsets.

    Exactly one of ``rows``/``frame`` is the master copy at any time; the
    other is derived on first access and cached. Operators ask for the form
    they need (``batch.rows`` or ``batch.frame``) and return new batches;
    a batch is never mutated after it has been handed to another operator.

    Attributes:
        partition: the source partition the records came from, e.g. ``"ticks/0"``,
            or ``None`` when a batch mixes partitions.
        record_type: ``dict``, an :class:`Event` subclass, or ``None`` (unknown).
    """

    __slots__ = ("_frame", "_keys", "_offsets", "_rows", "_ts", "partition", "record_type")

    def __init__(
        self,
        rows: list[Any] | None = None,
        ts: list[int] | None = None,
        *,
        keys: list[Any] | None = None,
        offsets: list[int] | None = None,
        frame: pl.DataFrame | None = None,
        partition: str | None = None,
        record_type: type | None = dict,
    ) -> None:
        if (rows is None) == (frame is None):
            raise ValueError("a Batch needs rows or a frame, not both")
        self._rows = rows
        self._ts = ts
        self._keys = keys
        self._offsets = offsets
        self._frame = frame
        self.partition = partition
        self.record_type = record_type
        if rows is not None:
            if ts is None or len(ts) != len(rows):
                raise ValueError("rows and ts must have the same length")
            if keys is not None and len(keys) != len(rows):
                raise ValueError("rows and keys must have the same length")

    @classmethod
    def of_frame(
        cls, frame: pl.DataFrame, *, partition: str | None = None, record_type: type | None = dict
    ) -> Batch:
        """Return a batch whose master copy is ``frame`` (which must have a ``__ts`` column)."""
        return cls(frame=frame, partition=partition, record_type=record_type)

    def __len__(self) -> int:
        if self._rows is not None:
            return len(self._rows)
        assert self._frame is not None
        return int(self._frame.height)

    @property
    def is_columnar(self) -> bool:
        """Whether the master copy is a frame (rows would have to be built)."""
        return self._rows is None

    @property
    def is_keyed(self) -> bool:
        """Whether the records carry keys."""
        if self._rows is not None:
            return self._keys is not None
        assert self._frame is not None
        return KEY_COL in self._frame.columns

    @property
    def rows(self) -> list[Any]:
        """The records, one Python object each."""
        if self._rows is None:
            self._materialize_rows()
        assert self._rows is not None
        return self._rows

    @property
    def ts(self) -> list[int]:
        """The event times (epoch ms), parallel to :attr:`rows`."""
        if self._ts is None:
            assert self._frame is not None
            self._ts = self._frame.get_column(TS_COL).to_list()
        return self._ts

    @property
    def keys(self) -> list[Any] | None:
        """The keys, parallel to :attr:`rows`, or ``None`` before ``key_by``."""
        if self._keys is None and self._frame is not None and KEY_COL in self._frame.columns:
            self._keys = self._frame.get_column(KEY_COL).to_list()
        return self._keys

    @property
    def offsets(self) -> list[int] | None:
        """The source offsets of the records, when known (for error messages)."""
        if self._offsets is None and self._frame is not None and OFF_COL in self._frame.columns:
            self._offsets = self._frame.get_column(OFF_COL).to_list()
        return self._offsets

    @property
    def frame(self) -> pl.DataFrame:
        """The records as a columnar frame with ``__ts`` (and ``__key``, ``__off``) columns."""
        if self._frame is None:
            self._frame = self._build_frame()
        return self._frame

    def position(self, index: int) -> tuple[str | None, int | None]:
        """Return ``(partition, offset)`` of the record at ``index``, for error messages.

        An offset of -1 means unknown (a record made by a timer, not by an input record).
        """
        offsets = self.offsets
        offset = offsets[index] if offsets is not None else None
        return self.partition, (offset if offset is not None and offset >= 0 else None)

    def with_rows(
        self, rows: list[Any], ts: list[int], keys: list[Any] | None, offsets: list[int] | None
    ) -> Batch:
        """Return a new row batch from the same partition."""
        return Batch(
            rows, ts, keys=keys, offsets=offsets, partition=self.partition, record_type=None
        )

    def take(self, indices: Sequence[int]) -> Batch:
        """Return a row batch of the records at ``indices``, in that order."""
        rows, ts, keys, offs = self.rows, self.ts, self.keys, self.offsets
        return self.with_rows(
            [rows[i] for i in indices],
            [ts[i] for i in indices],
            None if keys is None else [keys[i] for i in indices],
            None if offs is None else [offs[i] for i in indices],
        )

    def with_frame(self, frame: pl.DataFrame, record_type: type | None = dict) -> Batch:
        """Return a new columnar batch from the same partition."""
        return Batch(frame=frame, partition=self.partition, record_type=record_type)

    def _build_frame(self) -> pl.DataFrame:
        import polars as pl

        assert self._rows is not None
        assert self._ts is not None
        rows = self._rows
        if rows and not isinstance(rows[0], dict):
            rows = [record_fields(r) for r in rows]
        if rows:
            names = list(rows[0])
            data: dict[str, Any] = {n: [r.get(n) for r in rows] for n in names}
        else:
            data = {}
        data[TS_COL] = self._ts
        if self._keys is not None:
            data[KEY_COL] = self._keys
        if self._offsets is not None:
            data[OFF_COL] = self._offsets
        return pl.DataFrame(data, strict=False)

    def _materialize_rows(self) -> None:
        assert self._frame is not None
        frame = self._frame
        user = [c for c in frame.columns if c not in _META]
        dicts = frame.select(user).to_dicts()
        rtype = self.record_type
        if rtype is not None and rtype is not dict and is_event_type(rtype):
            self._rows = msgspec.convert(dicts, list[rtype])  # type: ignore[valid-type]
        else:
            self._rows = dicts
        self.ts  # noqa: B018  (fills the cache)
