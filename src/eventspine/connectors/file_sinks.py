"""JSON Lines and CSV file sinks: at-least-once on their own, exactly-once under a checkpointer.

Two modes, chosen by ``OpenContext.transactional``:

* **Direct** (no log: ``transactional=False``): the file is overwritten when the
  sink is opened, records are written to it as they come, and ``flush`` fsyncs
  it. A crash leaves whatever was written: at-least-once on a rerun.
* **Two-phase** (a checkpointer drives the sink: ``transactional=True``): the file
  ``<path>`` only ever holds the output of committed checkpoints. Records go to
  ``<path>.staging`` (``write`` and ``flush`` never touch ``<path>``), then:

  - ``prepare(ckpt)`` (before the checkpoint's transaction) writes the staging
    file out and fsyncs it, and returns the intent
    ``{"committed_len": L_prev + S, "staged": S}`` (``S`` staged bytes), which the
    checkpoint commits with its metadata;
  - ``publish(ckpt)`` (after the commit) writes the staged bytes at offset
    ``L_prev`` of ``<path>``, fsyncs it, and empties the staging file;
  - ``recover(intent)`` (once, before anything is written) reconciles ``<path>``
    with the last committed intent: ``None`` (no checkpoint) is a fresh start
    (``<path>`` truncated or created, staging removed); otherwise ``<path>`` is
    cut to ``committed_len`` bytes if longer (output of a checkpoint that never
    committed), or completed from the staging file if it holds at least
    ``committed_len - staged`` bytes and the staging file holds the ``staged``
    bytes (a publish interrupted before or during its append); anything else
    raises :class:`~eventspine.errors.StorageCorruptError`. Stale staging is removed.
  - ``close()`` never publishes: what was not committed is discarded on restart.

  So after ``kill -9`` at any moment and a restart, ``<path>`` equals the output
  of an uninterrupted run, byte for byte (given a deterministic pipeline).

Durability of names (power loss, not only process crashes): the directory is
fsynced after ``<path>`` is created and after the staging file is created, so a
committed intent never refers to a file whose directory entry was lost. Removing
the staging file is not fsynced: a staging file that reappears is stale and
``recover`` removes it.

CSV: the header line is part of the first committed bytes (written with the first
records, or at the first ``prepare`` when ``columns`` are given and no record came);
after a restart with committed output it is not written again, and the columns are
read back from it when they were not given.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, BinaryIO, final

import msgspec

from eventspine.dataflow.ports import OpenContext
from eventspine.errors import SinkError, StorageCorruptError
from eventspine.records import KEY_COL, OFF_COL, TS_COL, Batch, record_fields

if TYPE_CHECKING:
    import polars as pl

__all__ = ["CsvSink", "JsonLinesSink"]

_COPY = 1 << 20


def _user_frame(batch: Batch) -> pl.DataFrame:
    frame = batch.frame
    meta = [c for c in (TS_COL, KEY_COL, OFF_COL) if c in frame.columns]
    return frame.drop(meta) if meta else frame


def _fsync_dir(path: str) -> None:
    """Make the directory entry of ``path`` durable (no-op where directories cannot be opened)."""
    parent = os.path.dirname(os.path.abspath(path))
    try:
        fd = os.open(parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a directory; nothing more can be done
    finally:
        os.close(fd)


def _crc(f: BinaryIO, n: int) -> int:
    """The CRC-32 of the first ``n`` bytes of ``f``; leaves ``f`` at its end."""
    f.seek(0)
    crc, left = 0, n
    while left:
        chunk = f.read(min(left, _COPY))
        if not chunk:
            break
        crc = zlib.crc32(chunk, crc)
        left -= len(chunk)
    f.seek(0, os.SEEK_END)
    return crc


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


class _FileWriter:
    """The byte-level writer shared by both formats (see the module docstring).

    Subclasses encode batches and call :meth:`_out` to get the handle to write to.
    """

    def __init__(self, path: str, transactional: bool) -> None:
        self.path = path
        self.staging_path = path + ".staging"
        self.transactional = transactional
        #: Bytes of ``path`` that belong to committed checkpoints (two-phase mode).
        self.committed_len = 0
        self._staged = 0  # bytes of the staging file the last prepare covered
        self._recovered = False
        self._f: BinaryIO | None = None  # direct mode: the file; two-phase: staging
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            if not transactional:
                existed = os.path.exists(path)
                self._f = open(path, "wb")  # noqa: SIM115  (closed in close())
                if not existed:
                    _fsync_dir(path)
        except OSError as exc:
            raise SinkError(f"cannot open {path!r} for writing: {exc}") from exc

    # -- writing -------------------------------------------------------------------------
    def _out(self) -> BinaryIO:
        """The handle records are written to (the staging file in two-phase mode)."""
        if self._f is not None:
            return self._f
        if not self._recovered:
            raise SinkError(
                f"sink {self.path!r} is transactional: recover() must be called before the "
                f"first write (the checkpointer does this when the run starts)"
            )
        try:
            self._f = open(self.staging_path, "w+b")  # noqa: SIM115  (closed in close())
        except OSError as exc:
            raise SinkError(f"cannot open {self.staging_path!r} for writing: {exc}") from exc
        _fsync_dir(self.staging_path)
        return self._f

    def flush(self) -> None:
        """Direct mode: write out and fsync ``path``. Two-phase: write out the staging file."""
        f = self._f
        if f is None:
            return
        try:
            f.flush()
            if not self.transactional:
                os.fsync(f.fileno())
        except OSError as exc:
            raise SinkError(f"cannot flush {self._where()!r}: {exc}") from exc

    def _where(self) -> str:
        return self.staging_path if self.transactional else self.path

    def close(self) -> None:
        """Direct mode: flush and close. Two-phase: close without publishing anything."""
        f = self._f
        if f is None or f.closed:
            return
        if not self.transactional:
            self.flush()
            f.close()
            return
        empty = f.tell() == 0
        f.close()
        if empty:
            _remove(self.staging_path)  # else left for recover() to discard

    # -- two-phase -------------------------------------------------------------------------
    def _before_prepare(self) -> None:
        """Hook: write what must be in the first committed bytes (the CSV header)."""

    def prepare(self, ckpt_id: int) -> dict[str, int]:
        """Write out and fsync the staging file; return the publish intent (JSON-able).

        Raises:
            SinkError: the staging file cannot be written (the checkpoint is aborted).
        """
        self._require_transactional("prepare")
        self._before_prepare()
        f = self._f
        staged = crc = 0
        if f is not None:
            try:
                f.flush()
                os.fsync(f.fileno())
                staged = f.tell()
                crc = _crc(f, staged)
            except OSError as exc:
                raise SinkError(f"cannot write {self.staging_path!r}: {exc}") from exc
        self._staged = staged
        # The CRC tells, on recovery, the staged bytes of this checkpoint apart from those
        # of the next epoch, which the staging file holds once this one is published.
        return {"committed_len": self.committed_len + staged, "staged": staged, "crc": crc}

    def publish(self, ckpt_id: int) -> None:
        """Append the prepared bytes to ``path`` (at its committed length), fsync, empty staging.

        Raises:
            SinkError: ``path`` cannot be written (the restart completes the publish).
        """
        self._require_transactional("publish")
        staged = self._staged
        if not staged:
            return
        f = self._f
        assert f is not None
        try:
            f.seek(0)
            self._write_at(self.committed_len, f, staged)
            f.seek(0)
            f.truncate()
        except OSError as exc:
            raise SinkError(f"cannot publish to {self.path!r}: {exc}") from exc
        self.committed_len += staged
        self._staged = 0

    def _write_at(self, offset: int, src: BinaryIO, n: int) -> None:
        """Copy ``n`` bytes of ``src`` (from its position) to ``path`` at ``offset``; fsync."""
        with open(self.path, "r+b") as dst:
            dst.seek(offset)
            left = n
            while left:
                chunk = src.read(min(left, _COPY))
                if not chunk:
                    raise OSError(f"{self.staging_path!r} ended {left} bytes early")
                dst.write(chunk)
                left -= len(chunk)
            dst.truncate()
            dst.flush()
            os.fsync(dst.fileno())

    def recover(self, intent: Any) -> None:
        """Reconcile ``path`` with the last committed intent (``None``: a fresh start).

        Raises:
            StorageCorruptError: ``path`` or its staging file does not hold the committed
                bytes (changed or damaged outside eventspine).
        """
        self._require_transactional("recover")
        try:
            if intent is None:
                existed = os.path.exists(self.path)
                with open(self.path, "wb"):
                    pass
                if not existed:
                    _fsync_dir(self.path)
                self.committed_len = 0
            else:
                crc = intent.get("crc")
                self._reconcile(
                    int(intent["committed_len"]),
                    int(intent["staged"]),
                    None if crc is None else int(crc),
                )
            _remove(self.staging_path)
        except OSError as exc:
            raise SinkError(f"cannot recover {self.path!r}: {exc}") from exc
        self._recovered = True
        self._after_recover()

    def _reconcile(self, committed: int, staged: int, crc: int | None) -> None:
        try:
            size: int | None = os.path.getsize(self.path)
        except FileNotFoundError:
            size = None
        prev = committed - staged
        if size is not None and size >= committed:
            if size > committed:
                os.truncate(self.path, committed)  # bytes of a checkpoint that never committed
        elif (size or 0) >= prev and self._staging_holds(staged, crc):
            # The publish of the last checkpoint stopped before or during its append.
            if size is None:
                with open(self.path, "wb"):
                    pass
                _fsync_dir(self.path)
            with open(self.staging_path, "rb") as src:
                self._write_at(prev, src, staged)
        else:
            have = "missing" if size is None else f"{size} bytes"
            raise StorageCorruptError(
                f"output file {self.path!r} does not match the last checkpoint: it should hold "
                f"{committed} bytes (or {prev} plus {staged} staged bytes in "
                f"{self.staging_path!r}, which has {self._staging_size()}), but it is {have}. "
                f"It was changed or damaged outside eventspine. Restore it from a backup, or "
                f"start the pipeline fresh with `eventspine state reset PIPELINE` (the output is "
                f"then rewritten from the start)"
            )
        self.committed_len = committed

    def _staging_holds(self, staged: int, crc: int | None) -> bool:
        """Whether the staging file starts with the ``staged`` bytes the checkpoint covered."""
        if self._staging_size() < staged:
            return False
        if crc is None:  # an intent written before CRCs were kept
            return True
        with open(self.staging_path, "rb") as src:
            return _crc(src, staged) == crc

    def _staging_size(self) -> int:
        try:
            return os.path.getsize(self.staging_path)
        except FileNotFoundError:
            return 0

    def _after_recover(self) -> None:
        """Hook: reload format state from the committed bytes (the CSV columns)."""

    def _require_transactional(self, what: str) -> None:
        if not self.transactional:
            raise SinkError(
                f"{what}() called on sink {self.path!r} opened without a checkpointer "
                f"(OpenContext.transactional is false)"
            )


class _JsonLinesWriter(_FileWriter):
    def __init__(self, path: str, transactional: bool) -> None:
        super().__init__(path, transactional)
        self._enc = msgspec.json.Encoder()

    def write(self, batch: Batch) -> None:
        if not len(batch):
            return
        f = self._out()
        try:
            if batch.is_columnar:
                _user_frame(batch).write_ndjson(f)
            else:
                f.write(self._enc.encode_lines(batch.rows))
        except (OSError, TypeError, ValueError) as exc:
            raise SinkError(f"cannot write to {self._where()!r}: {exc}") from exc


@final
class JsonLinesSink:
    """Write each record as one JSON object per line (frames are written by polars).

    Without a checkpointer the file is overwritten when the sink is opened and
    ``flush`` fsyncs it (at-least-once); under a checkpointer the file only holds
    committed output (exactly-once; see :mod:`eventspine.connectors.file_sinks`).
    Struct columns become nested objects; internal columns are dropped.

    Args:
        path: the output file (parent folders are created).
    """

    columnar = True

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)

    def open(self, context: OpenContext) -> _JsonLinesWriter:
        """Return the writer (direct mode truncates the file now; two-phase in ``recover``)."""
        return _JsonLinesWriter(self.path, context.transactional)

    def __repr__(self) -> str:
        return f"JsonLinesSink({self.path!r})"


class _CsvWriter(_FileWriter):
    def __init__(self, path: str, columns: list[str] | None, transactional: bool) -> None:
        super().__init__(path, transactional)
        self._columns = columns
        self._header_done = False

    def write(self, batch: Batch) -> None:
        if not len(batch):
            return
        try:
            if batch.is_columnar:
                self._write_frame(_user_frame(batch))
            else:
                self._write_rows([record_fields(r) for r in batch.rows])
        except (OSError, TypeError, ValueError) as exc:
            raise SinkError(f"cannot write to {self._where()!r}: {exc}") from exc

    def _write_frame(self, frame: pl.DataFrame) -> None:
        import polars as pl

        if self._columns is None:
            self._columns = list(frame.columns)
        cols: list[pl.Expr] = []
        for c in self._columns:
            if c not in frame.columns:
                cols.append(pl.lit(None, dtype=pl.String).alias(c))
                continue
            dtype = frame.schema[c]
            if isinstance(dtype, pl.Struct):
                cols.append(pl.col(c).struct.json_encode())
            elif dtype.is_nested():
                # JSON-encode inside a one-field struct, then cut the '{"name":' and '}' off.
                cut = len(msgspec.json.encode(c)) + 2
                text = pl.struct(pl.col(c)).struct.json_encode()
                cols.append(text.str.slice(cut).str.head(-1).alias(c))
            else:
                cols.append(pl.col(c))
        frame.select(cols).write_csv(self._out(), include_header=not self._header_done)
        self._header_done = True

    def _write_rows(self, rows: list[dict[str, Any]]) -> None:
        if self._columns is None:
            self._columns = list(rows[0])
        text = io.StringIO()
        w = csv.writer(text, lineterminator="\n")
        if not self._header_done:
            w.writerow(self._columns)
            self._header_done = True
        cols = self._columns
        w.writerows([_csv_value(r.get(c)) for c in cols] for r in rows)
        self._out().write(text.getvalue().encode())

    def _before_prepare(self) -> None:
        if not self._header_done and self._columns:
            self._write_rows([])

    def _after_recover(self) -> None:
        self._header_done = self.committed_len > 0
        if self._header_done and self._columns is None:
            with open(self.path, "rb") as f:
                first = f.readline().decode("utf-8").rstrip("\r\n")
            self._columns = next(csv.reader([first]), [])

    def close(self) -> None:
        f = self._f
        direct = not self.transactional and f is not None and not f.closed
        if direct and not self._header_done and self._columns:
            self._write_rows([])
        super().close()


def _csv_value(v: Any) -> Any:
    if v is None:
        return ""
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, dict | list | tuple | msgspec.Struct):
        return msgspec.json.encode(v).decode()
    return v


@final
class CsvSink:
    """Write records as CSV with a header line (frames are written by polars).

    The columns are ``columns`` or those of the first batch; a missing value is
    an empty field, booleans are ``true``/``false``, and nested values (struct,
    list, dict) are written as JSON text. Without a checkpointer the file is
    overwritten when the sink is opened and ``flush`` fsyncs it (at-least-once);
    under a checkpointer the file only holds committed output and the header is
    written once, with the first committed bytes (exactly-once; see
    :mod:`eventspine.connectors.file_sinks`).

    Args:
        path: the output file (parent folders are created).
        columns: the columns to write, in order (default: those of the first batch).
    """

    columnar = True

    def __init__(self, path: str | os.PathLike[str], columns: Sequence[str] | None = None) -> None:
        self.path = os.fspath(path)
        self.columns = list(columns) if columns is not None else None

    def open(self, context: OpenContext) -> _CsvWriter:
        """Return the writer (direct mode truncates the file now; two-phase in ``recover``)."""
        return _CsvWriter(self.path, self.columns, context.transactional)

    def __repr__(self) -> str:
        return f"CsvSink({self.path!r})"
