"""JSON Lines and CSV files: bounded or tailed sources, and sinks (details: docs/connectors.md).

Sources (:class:`JsonLinesSource`, :class:`CsvSource`):

* ``path`` is a file or a glob; each file (sorted by name) is one partition named
  ``"{step}/{basename}"`` (relative path when basenames repeat). Several workers
  share the files round-robin.
* **Offsets are 0-based line numbers.** ``Chunk.next_offset`` is the next unread
  line; ``seek(offset)`` resumes exactly there (one scan of the file). In a CSV
  file with a header, line 0 is the header.
* Empty lines (whitespace only; in CSV empty or a lone carriage return) are skipped silently
  and use up a line number.
* Bounded by default: a partition ends with its file; a last line without a
  newline is a record. ``tail=True`` never ends: empty chunks while nothing is
  new, a last line is held until its newline arrives, and a truncated or replaced
  (rotated) file is reopened from the start with a warning (a held partial line
  is decoded first; line numbers restart at 0). The set of files is fixed at open.
* Rows: each line is decoded by ``msgspec`` into a dict or a typed ``es.Event``
  (validated; a wrong field type is a ``DecodeError`` naming the field).
  Columnar (``poll(..., columnar=True)``): a block of whole lines is decoded by
  polars into a frame. Without a schema, columns and types are inferred from the
  first block and kept; a block with a new field (in its first 100 lines), a
  value that does not fit, a missing value or an empty line is decoded as rows.
  Not seen by the columnar path: a new field deeper in a later block, a number
  for a ``str`` field past line 100 of a block. Read rows for such inputs.
* A block polars cannot decode is decoded as rows: good lines are kept, each bad
  line is a ``DecodeError`` in ``Chunk.errors`` with ``position="{partition}@{line}"``
  and the raw bytes. Nothing crashes and no line is lost.
* CSV values are text unless a schema gives types; one record per line.

Sinks (:class:`JsonLinesSink`, :class:`CsvSink`) live in
:mod:`eventspine.connectors.file_sinks` (re-exported here): at-least-once on
their own, exactly-once (two-phase) when a checkpointer drives them.
"""

from __future__ import annotations

import csv
import glob
import io
import logging
import os
import re
import types
import typing
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, BinaryIO, final

import msgspec

from eventspine.connectors.file_sinks import CsvSink, JsonLinesSink
from eventspine.dataflow.ports import Chunk, OpenContext, SourceReader
from eventspine.errors import DecodeError, SourceError
from eventspine.records import is_event_type

if TYPE_CHECKING:
    import polars as pl

__all__ = ["CsvSink", "CsvSource", "JsonLinesSink", "JsonLinesSource"]

_log = logging.getLogger(__name__)
_MIN_READ = 1 << 16
_MAX_READ = 1 << 26
_DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError)


# -- line framing ----------------------------------------------------------------


class _Lines:
    """Frames one file into blocks of whole lines, counting line numbers."""

    def __init__(self, path: str, tail: bool) -> None:
        self.path = path
        self.tail = tail
        self.generation = 0
        self._f: BinaryIO | None = None
        self._ino = 0
        self._buf = b""
        self._line = 0
        self._seek: int | None = None
        self._avg = 64.0
        self._done = False

    def seek(self, line: int) -> None:
        self._seek = line
        self._done = False

    def pop_seek(self) -> int | None:
        target, self._seek = self._seek, None
        return target

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def _open(self) -> bool:
        try:
            f = open(self.path, "rb")  # noqa: SIM115  (kept open across polls; closed in close())
        except FileNotFoundError:
            if self.tail:
                return False
            raise SourceError(f"file {self.path!r} does not exist") from None
        except OSError as exc:
            raise SourceError(f"cannot open {self.path!r}: {exc}") from exc
        self._f = f
        self._ino = os.fstat(f.fileno()).st_ino
        self._buf = b""
        self._line = 0
        return True

    def next_block(self, max_lines: int) -> tuple[bytes, int, int] | None:
        """Return ``(bytes of whole lines, first line number, line count)``; ``None`` at the end."""
        if self._done:
            return None
        if self._f is None and not self._open():
            return b"", self._line, 0
        assert self._f is not None
        if self._seek is not None:
            self._skip_to(self.pop_seek() or 0)
        buf = self._buf
        cnt = buf.count(b"\n")
        eof = False
        if cnt < max_lines:
            # One read of a little less than the lines asked for (from the average line
            # length), so the block is usually cut at its last newline, not counted out.
            parts = [buf]
            want = min(max(_MIN_READ, int(self._avg * (max_lines - cnt) * 0.95)), _MAX_READ)
            while True:
                more = self._f.read(want)
                parts.append(more)
                cnt += more.count(b"\n")
                if len(more) < want:
                    eof = True
                    break
                if cnt:
                    break
                want = min(want * 2, _MAX_READ)
            buf = b"".join(parts)
        if cnt >= max_lines:
            cut, n = _after_nth_newline(buf, max_lines, cnt), max_lines
        elif eof and not self.tail:
            cut, n = len(buf), cnt + (1 if buf and not buf.endswith(b"\n") else 0)
            if n == 0:
                self._buf = b""
                self._done = True
                return None
        else:
            cut, n = buf.rfind(b"\n") + 1, cnt
            if n == 0 and eof and self.tail and self._replaced():
                _log.warning(
                    "file %r was truncated or replaced; reading it again from the start "
                    "(line numbers restart at 0)",
                    self.path,
                )
                self.close()
                self.generation += 1
                self._buf = b""
                first, self._line = self._line, 0
                if buf:  # a partial last line of the old file will never be completed
                    return buf, first, 1
                return b"", 0, 0
        self._buf = buf[cut:]
        first = self._line
        self._line += n
        if n:
            self._avg = 0.7 * self._avg + 0.3 * (cut / n)
        return buf[:cut], first, n

    def _replaced(self) -> bool:
        assert self._f is not None
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False  # rotated away and not yet recreated: keep reading the old one
        return st.st_ino != self._ino or st.st_size < self._f.tell()

    def _skip_to(self, target: int) -> None:
        assert self._f is not None
        self._f.seek(0)
        self._buf, self._line = b"", 0
        while self._line < target:
            more = self._f.read(1 << 20)
            if not more:
                if self._buf and not self.tail:  # the last line has no newline
                    self._buf, self._line = b"", self._line + 1
                return
            data = self._buf + more
            need = target - self._line
            cnt = data.count(b"\n")
            if cnt >= need:
                self._buf = data[_after_nth_newline(data, need, cnt) :]
                self._line = target
                return
            self._line += cnt
            self._buf = data[data.rfind(b"\n") + 1 :]


def _after_nth_newline(buf: bytes, n: int, total: int) -> int:
    """Return the index just after the ``n``-th newline of ``buf`` (which has ``total``)."""
    if n <= total - n:
        pos = -1
        for _ in range(n):
            pos = buf.find(b"\n", pos + 1)
        return pos + 1
    pos = len(buf)
    for _ in range(total - n + 1):
        pos = buf.rfind(b"\n", 0, pos)
    return pos + 1


# -- typed schemas -----------------------------------------------------------------


def _plan(schema: type) -> list[tuple[str, Any, bool]] | None:
    """Return ``(field, polars dtype, may be null)`` of a typed event, or ``None`` if not flat."""
    import polars as pl

    simple: dict[Any, Any] = {int: pl.Int64, float: pl.Float64, bool: pl.Boolean, str: pl.String}
    config = schema.__struct_config__  # type: ignore[attr-defined]
    if config.tag is not None or config.forbid_unknown_fields:
        return None
    hints = typing.get_type_hints(schema)
    out: list[tuple[str, Any, bool]] = []
    for f in msgspec.structs.fields(schema):
        if f.encode_name != f.name:
            return None
        tp = hints.get(f.name, f.type)
        optional = False
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            optional = len(args) < len(typing.get_args(tp))
            if len(args) != 1:
                return None
            tp = args[0]
        if tp not in simple:
            return None
        out.append((f.name, simple[tp], optional and not f.required and f.default is None))
    return out


def _check_frame(df: pl.DataFrame, plan: list[tuple[str, Any, bool]]) -> pl.DataFrame | None:
    for name, dtype, nullable in plan:
        if name not in df.columns:
            return None
        col = df.get_column(name)
        if col.dtype != dtype or (not nullable and col.null_count()):
            return None
    names = [f[0] for f in plan]
    return df if df.columns == names else df.select(names)


def _polars_errors() -> tuple[type[BaseException], ...]:
    import polars as pl

    return (pl.exceptions.PolarsError, pl.exceptions.PanicException, ValueError, TypeError)


# -- codecs ------------------------------------------------------------------------


class _JsonCodec:
    def __init__(self, schema: type | None) -> None:
        self.schema = schema
        self._dec: msgspec.json.Decoder[Any] = msgspec.json.Decoder(schema or dict)
        self._plan = _plan(schema) if schema is not None else None
        self._fixed: dict[str, Any] | None = None
        self.columnar = schema is None or self._plan is not None

    def frame(self, data: bytes, n: int) -> pl.DataFrame | None:
        import polars as pl

        try:
            if self._plan is not None:
                overrides = {c: t for c, t, _ in self._plan if t != pl.String}
                df = pl.read_ndjson(io.BytesIO(data), schema_overrides=overrides)
            elif self._fixed is None:
                df = pl.read_ndjson(io.BytesIO(data), infer_schema_length=None)
            else:
                df = pl.read_ndjson(io.BytesIO(data), schema_overrides=self._fixed)
        except _polars_errors():
            return None
        if df.height != n or not _strings_were_strings(data, df):
            return None
        if self._plan is not None:
            return _check_frame(df, self._plan)
        if self._fixed is None:
            if any(df.get_column(c).null_count() for c in df.columns):
                return None  # a missing value: rows keep the difference between absent and null
            self._fixed = dict(df.schema)
            return df
        if set(df.columns) != set(self._fixed) or any(
            df.get_column(c).null_count() for c in df.columns
        ):
            return None
        names = list(self._fixed)
        return df if df.columns == names else df.select(names)

    def rows(self, data: bytes, first: int, n: int, where: str) -> tuple[list[Any], Any, Any]:
        try:
            recs = self._dec.decode_lines(data)
            if len(recs) == n:
                return recs, None, []
        except _DECODE_ERRORS:
            pass
        out: list[Any] = []
        offs: list[int] = []
        errs: list[DecodeError] = []
        for i, line in enumerate(data.split(b"\n")):
            if not line.strip():
                continue
            try:
                out.append(self._dec.decode(line))
                offs.append(first + i)
            except _DECODE_ERRORS as exc:
                errs.append(_error(_describe(exc, self.schema), where, first + i, line))
        return out, offs, errs


def _strings_were_strings(data: bytes, df: pl.DataFrame) -> bool:
    """Whether every value of every text column was a JSON string in ``data``.

    polars turns a JSON number or object into text when its column is text (the
    supertype of a mixed column, or a text field of the schema), where the row
    decoder would keep the number or refuse the record. Counting the ``"name":"``
    occurrences in the raw block finds such values cheaply; on any doubt the
    block is decoded as rows, which is always right.
    """
    import polars as pl

    for name, dtype in df.schema.items():
        if dtype != pl.String:
            continue
        col = df.get_column(name)
        expected = col.len() - col.null_count()
        key = b'"' + name.encode() + b'":'
        if data.count(key + b'"') == expected:
            continue
        if len(re.findall(re.escape(key) + rb'\s*"', data)) != expected:
            return False
    return True


class _CsvCodec:
    def __init__(self, schema: type | None, delimiter: str, header: bool) -> None:
        self.schema = schema
        self.delimiter = delimiter
        self.header = header
        self._plan = _plan(schema) if schema is not None else None
        self.columns: list[str] | None = None
        if not header and schema is not None:
            self.columns = [f.name for f in msgspec.structs.fields(schema)]
        self.columnar = schema is None or self._plan is not None

    def parse(self, line: bytes) -> list[str]:
        text = line.decode("utf-8-sig").rstrip("\r")
        return next(csv.reader([text], delimiter=self.delimiter, strict=True), [])

    def frame(self, data: bytes, n: int) -> pl.DataFrame | None:
        import polars as pl

        if self.columns is None:
            try:
                self.columns = _default_columns(len(self.parse(data.split(b"\n", 1)[0])))
            except (UnicodeDecodeError, csv.Error):
                return None
        if data[:1] in (b"\n", b"\r") or b"\n\n" in data or b"\n\r\n" in data:
            return None  # empty lines: the row decoder skips them and keeps line numbers
        types_ = {f[0]: f[1] for f in self._plan} if self._plan is not None else {}
        schema = {c: types_.get(c, pl.String) for c in self.columns}
        try:
            df = pl.read_csv(
                io.BytesIO(data),
                has_header=False,
                schema=schema,
                separator=self.delimiter,
                empty_string_is_null=False,
                raise_if_empty=False,
            )
        except _polars_errors():
            return None
        if df.height != n:
            return None
        if self._plan is not None:
            return _check_frame(df, self._plan)
        if any(df.get_column(c).null_count() for c in df.columns):
            return None
        return df

    def rows(self, data: bytes, first: int, n: int, where: str) -> tuple[list[Any], Any, Any]:
        out: list[Any] = []
        offs: list[int] = []
        errs: list[DecodeError] = []
        for i, line in enumerate(data.split(b"\n")):
            if not line.rstrip(b"\r"):
                continue
            try:
                fields = self.parse(line)
            except (UnicodeDecodeError, csv.Error) as exc:
                errs.append(_error(_describe(exc, None), where, first + i, line))
                continue
            if self.columns is None:
                self.columns = _default_columns(len(fields))
            if len(fields) != len(self.columns):
                msg = f"expected {len(self.columns)} fields, found {len(fields)}"
                errs.append(_error(msg, where, first + i, line))
                continue
            rec: Any = dict(zip(self.columns, fields, strict=True))
            if self.schema is not None:
                try:
                    rec = msgspec.convert(rec, self.schema, strict=False)
                except msgspec.ValidationError as exc:
                    errs.append(_error(_describe(exc, self.schema), where, first + i, line))
                    continue
            out.append(rec)
            offs.append(first + i)
        consecutive = len(out) == n
        return out, (None if consecutive else offs), errs


def _default_columns(k: int) -> list[str]:
    return [f"column_{j + 1}" for j in range(k)]


def _describe(exc: BaseException, schema: type | None) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return f"invalid UTF-8 ({exc.reason} at byte {exc.start})"
    if isinstance(exc, RecursionError):
        return "the JSON value is nested too deeply"
    if isinstance(exc, msgspec.ValidationError):
        if schema is None:
            return f"the line is not a JSON object ({exc})"
        return f"the record does not match {schema.__name__}: {exc}"
    if isinstance(exc, csv.Error):
        return f"invalid CSV ({exc})"
    return f"invalid JSON ({exc})"


def _error(message: str, where: str, line: int, raw: bytes) -> DecodeError:
    source, _, partition = where.partition("|")
    return DecodeError(message, source=source, position=f"{partition}@{line}", raw=raw)


# -- readers and sources -----------------------------------------------------------------


class _FileReader:
    def __init__(
        self, partition: str, path: str, codec: _JsonCodec | _CsvCodec, tail: bool, name: str
    ) -> None:
        self.partition = partition
        self._lines = _Lines(path, tail)
        self._codec = codec
        self._where = f"{name}|{partition}"
        self._header = isinstance(codec, _CsvCodec) and codec.header
        self._header_gen = -1

    def poll(self, max_records: int, columnar: bool) -> Chunk | None:
        lines = self._lines
        if self._header and self._header_gen != lines.generation:
            target = lines.pop_seek()
            blk = lines.next_block(1)
            if blk is None:
                return None
            if blk[2] == 0:
                if target is not None:
                    lines.seek(target)
                return Chunk([], blk[1], blk[1])
            assert isinstance(self._codec, _CsvCodec)
            try:
                self._codec.columns = self._codec.parse(blk[0].rstrip(b"\n"))
            except (UnicodeDecodeError, csv.Error) as exc:
                raise SourceError(f"{self.partition}: cannot read the CSV header: {exc}") from exc
            self._header_gen = lines.generation
            if target is not None and target > 1:
                lines.seek(target)
        blk = lines.next_block(max(1, max_records))
        if blk is None:
            return None
        data, first, n = blk
        if n == 0:
            return Chunk([], first, first)
        if columnar and self._codec.columnar:
            df = self._codec.frame(data, n)
            if df is not None:
                return Chunk(df, first, first + n)
        recs, offs, errs = self._codec.rows(data, first, n, self._where)
        return Chunk(recs, first, first + n, offsets=offs, errors=errs)

    def seek(self, offset: int) -> None:
        self._lines.seek(offset)

    def close(self) -> None:
        self._lines.close()


def _expand(path: str | os.PathLike[str], tail: bool) -> list[str]:
    p = os.fspath(path)
    if glob.has_magic(p):
        files = sorted(f for f in glob.glob(p) if os.path.isfile(f))
        if not files:
            raise SourceError(f"no file matches {p!r}")
        return files
    if not tail and not os.path.isfile(p):
        raise SourceError(f"file {p!r} does not exist")
    return [p]


def _partition_names(files: Sequence[str]) -> list[str]:
    names = [os.path.basename(f) for f in files]
    if len(set(names)) == len(names):
        return names
    root = os.path.commonpath([os.path.abspath(f) for f in files])
    return [os.path.relpath(os.path.abspath(f), root) for f in files]


def _check_schema(schema: type | None) -> None:
    if schema is not None and not is_event_type(schema):
        raise TypeError(f"schema must be an es.Event subclass, not {schema!r}")


def _open_files(
    path: str | os.PathLike[str],
    tail: bool,
    context: OpenContext,
    codec: Any,
    name: str,
) -> list[SourceReader]:
    files = _expand(path, tail)
    names = _partition_names(files)
    mine = range(context.worker, len(files), context.workers)
    return [_FileReader(f"{context.step}/{names[i]}", files[i], codec(), tail, name) for i in mine]


@final
class JsonLinesSource:
    """Records from JSON Lines files (one JSON object per line); see the module doc.

    Args:
        path: a file or a glob (each file is a partition, sorted by name).
        schema: an ``es.Event`` subclass to decode and validate into (default: dicts).
        tail: follow the files as they grow (the source never ends).
        encoding: the text encoding; anything but UTF-8 is transcoded line by line.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        schema: type | None = None,
        tail: bool = False,
        encoding: str = "utf-8",
    ) -> None:
        _check_schema(schema)
        self.path = path
        self.schema = schema
        self.tail = tail
        self.encoding = encoding
        self.record_type: type = schema or dict
        self.bounded = not tail

    def open(self, context: OpenContext) -> Sequence[SourceReader]:
        """Return one reader per file this worker reads."""
        schema, enc = self.schema, self.encoding

        def codec() -> _JsonCodec | _TranscodingCodec:
            inner = _JsonCodec(schema)
            return inner if _is_utf8(enc) else _TranscodingCodec(inner, enc)

        return _open_files(self.path, self.tail, context, codec, "jsonl")

    def __repr__(self) -> str:
        return f"JsonLinesSource({os.fspath(self.path)!r}, tail={self.tail})"


@final
class CsvSource:
    """Records from CSV files, one record per line; see the module doc.

    Args:
        path: a file or a glob (each file is a partition, sorted by name).
        schema: an ``es.Event`` subclass whose field types the text values are converted to
            (default: dicts of strings).
        tail: follow the files as they grow (the source never ends).
        delimiter: the field separator.
        header: whether the first line names the columns; without it, columns are the
            schema's fields in order, or ``column_1``, ``column_2``...
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        schema: type | None = None,
        tail: bool = False,
        delimiter: str = ",",
        header: bool = True,
    ) -> None:
        _check_schema(schema)
        self.path = path
        self.schema = schema
        self.tail = tail
        self.delimiter = delimiter
        self.header = header
        self.record_type: type = schema or dict
        self.bounded = not tail

    def open(self, context: OpenContext) -> Sequence[SourceReader]:
        """Return one reader per file this worker reads."""
        s, d, h = self.schema, self.delimiter, self.header
        return _open_files(self.path, self.tail, context, lambda: _CsvCodec(s, d, h), "csv")

    def __repr__(self) -> str:
        return f"CsvSource({os.fspath(self.path)!r}, tail={self.tail})"


def _is_utf8(encoding: str) -> bool:
    return encoding.lower().replace("_", "-") in ("utf-8", "utf8")


class _TranscodingCodec:
    """Transcodes each block to UTF-8; an undecodable line becomes a DecodeError."""

    def __init__(self, inner: _JsonCodec, encoding: str) -> None:
        self._inner = inner
        self._enc = encoding
        self.columnar = inner.columnar

    def _utf8(self, data: bytes, first: int, where: str) -> tuple[bytes, list[DecodeError]]:
        try:
            return data.decode(self._enc).encode(), []
        except UnicodeDecodeError:
            pass
        out: list[bytes] = []
        errs: list[DecodeError] = []
        for i, line in enumerate(data.split(b"\n")):
            try:
                out.append(line.decode(self._enc).encode())
            except UnicodeDecodeError as exc:
                out.append(b"")  # keeps the line numbers of the lines after it
                errs.append(_error(f"invalid {self._enc} ({exc.reason})", where, first + i, line))
        return b"\n".join(out), errs

    def frame(self, data: bytes, n: int) -> pl.DataFrame | None:
        try:
            return self._inner.frame(data.decode(self._enc).encode(), n)
        except UnicodeDecodeError:
            return None

    def rows(self, data: bytes, first: int, n: int, where: str) -> tuple[list[Any], Any, Any]:
        text, errs = self._utf8(data, first, where)
        recs, offs, more = self._inner.rows(text, first, n, where)
        return recs, offs, errs + more
