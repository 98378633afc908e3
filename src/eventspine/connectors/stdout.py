"""Print results on standard output.

Standard output cannot take back what it printed, so :class:`StdoutSink` is
**at-least-once**: after a crash and a restart from the last checkpoint, the
records printed since that checkpoint are printed again.
"""

from __future__ import annotations

import sys
from typing import Any, Literal, TextIO, final

import msgspec

from eventspine.dataflow.ports import OpenContext
from eventspine.errors import SinkError
from eventspine.records import KEY_COL, OFF_COL, TS_COL, Batch, record_fields

__all__ = ["StdoutSink"]

_WIDTH = 14


@final
class StdoutSink:
    """Print each record on ``sys.stdout`` (at-least-once; see the module doc).

    Args:
        format: ``"jsonl"`` prints one JSON object per line (typed events as objects,
            datetimes as ISO 8601); ``"table"`` prints aligned columns under a header
            line (the columns of the first batch; long values are cut with ``…``).

    ``sys.stdout`` is looked up at each write, so redirections made after the
    pipeline was built apply. ``flush`` flushes the stream.
    """

    columnar = False

    def __init__(self, format: Literal["jsonl", "table"] = "jsonl") -> None:
        if format not in ("jsonl", "table"):
            raise ValueError(f"format must be 'jsonl' or 'table', not {format!r}")
        self.format = format

    def open(self, context: OpenContext) -> _StdoutWriter:
        """Return the writer."""
        return _StdoutWriter(self.format)

    def __repr__(self) -> str:
        return f"StdoutSink(format={self.format!r})"


class _StdoutWriter:
    def __init__(self, format: str) -> None:
        self._table = format == "table"
        self._enc = msgspec.json.Encoder()
        self._columns: list[str] | None = None

    @staticmethod
    def _out() -> TextIO:
        return sys.stdout

    def write(self, batch: Batch) -> None:
        if not len(batch):
            return
        if self._table:
            text = self._table_text(batch)
        elif batch.is_columnar:
            frame = batch.frame
            frame = frame.drop([c for c in (TS_COL, KEY_COL, OFF_COL) if c in frame.columns])
            text = frame.write_ndjson()
        else:
            try:
                text = self._enc.encode_lines(batch.rows).decode()
            except (TypeError, ValueError) as exc:
                raise SinkError(f"stdout: cannot encode a record as JSON: {exc}") from exc
        self._out().write(text)

    def _table_text(self, batch: Batch) -> str:
        rows = [record_fields(r) for r in batch.rows]
        lines: list[str] = []
        if self._columns is None:
            self._columns = list(rows[0])
            lines.append(" ".join(_cell(c) for c in self._columns))
            lines.append(" ".join("-" * _WIDTH for _ in self._columns))
        cols = self._columns
        lines.extend(" ".join(_cell(r.get(c)) for c in cols) for r in rows)
        return "\n".join(lines) + "\n"

    def flush(self) -> None:
        self._out().flush()

    def close(self) -> None:
        self.flush()


def _cell(value: Any) -> str:
    if isinstance(value, float):
        text = f"{value:.6g}"
    elif value is None:
        text = ""
    else:
        text = str(value)
    if len(text) > _WIDTH:
        text = text[: _WIDTH - 1] + "…"
    return text.rjust(_WIDTH) if isinstance(value, int | float) else text.ljust(_WIDTH)
