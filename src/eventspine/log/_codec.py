"""The batch format shared by the log backends, and record validation.

One append becomes one or more **batches**. A batch body is the msgpack
array of its records, each record the array ``[key, value, ts_ms, headers,
offset]`` (exactly :class:`StoredRecord` encoded ``array_like``), so
decoding a body yields ``StoredRecord`` objects in C with no per-record
Python code. Offsets are stored per record (1 to 9 bytes each) rather than
implied by the batch's base offset: reads need no fix-up pass, and a
compacted batch keeps its gaps.

Stored form (the ``payload`` of an SQLite row)::

    byte 0      format version (1)
    bytes 1-4   CRC-32 (zlib) of the body, little endian
    bytes 5-    body

The memory backend keeps the decoded records and only uses the body's
length as the batch size, so both backends split, size and retain batches
identically.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Sequence
from operator import itemgetter
from typing import NamedTuple

import msgspec

from eventspine.errors import LogError
from eventspine.log.base import LogRecord, StoredRecord

FORMAT_VERSION = 1
HEADER = struct.Struct("<BI")
#: At most this many records per batch (bounds the work of a read from the middle).
MAX_BATCH_RECORDS = 4096
#: A batch body above this size is split in halves (one record may exceed it).
MAX_BATCH_BYTES = 4 << 20

_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(list[StoredRecord])
#: Decodes a body's keys, offsets and ts without copying values or headers (compaction).
_KEYS_DECODER = msgspec.msgpack.Decoder(
    list[tuple[bytes | None, msgspec.Raw, int, msgspec.Raw, int]]
)
_NIL = b"\xc0"  # msgpack nil: the value of a tombstone
_FIELDS = ("key", "value", "ts_ms", "headers", "offset")
_PATH = re.compile(r"\$\[(\d+)\](?:\[(\d+)\])?")
_TS = itemgetter(2)
_KEY = itemgetter(0)
_INT64_MAX = (1 << 63) - 1
_INT64_MIN = -(1 << 63)
_RECORD: tuple[type, ...] = (LogRecord,)  # (a tuple: mypy trusts the annotation)


class EncodedBatch(NamedTuple):
    """A batch ready to store.

    Attributes:
        payload: the stored form (header and body), written in place.
        size: the body's length in bytes (what size retention counts).
        records: the decoded records, if asked for (the memory backend keeps them).
    """

    base_offset: int
    last_offset: int
    max_ts: int
    payload: bytearray
    size: int
    records: list[StoredRecord] | None


class BadBatchError(ValueError):
    """A stored batch failed a check; the backend turns it into ``StorageCorruptError``."""


_Row = tuple[bytes | None, bytes | None, int, tuple[tuple[str, bytes], ...], int]


def encode_records(
    where: str, records: Sequence[LogRecord], base_offset: int, *, keyed: bool, decode: bool
) -> list[EncodedBatch]:
    """Validate and encode ``records`` as batches starting at ``base_offset``.

    Args:
        where: ``topic[partition]``, for error messages.
        records: the records, in order (non-empty).
        base_offset: the offset of the first record.
        keyed: every record must have a key (compacted topics).
        decode: also return the records as ``StoredRecord`` objects.

    Raises:
        LogError: a record is invalid; the message names its index and field.
    """
    try:
        rows: list[_Row] = [
            (r.key, r.value, r.ts_ms, r.headers, o)
            for o, r in zip(range(base_offset, base_offset + len(records)), records, strict=True)
        ]
    except AttributeError:
        bad = next(i for i, r in enumerate(records) if not isinstance(r, LogRecord))
        raise LogError(
            f"record {bad} appended to {where} is a {type(records[bad]).__name__}, "
            f"not an eventspine.log.LogRecord; nothing was written"
        ) from None
    batches: list[EncodedBatch] = []
    for start in range(0, len(rows), MAX_BATCH_RECORDS):
        chunk = rows[start : start + MAX_BATCH_RECORDS]
        _encode_rows(where, chunk, start, keyed, decode, batches)
    return batches


def check_records(where: str, records: Sequence[LogRecord], *, keyed: bool) -> None:
    """Validate ``records`` as :func:`encode_records` does, without encoding them.

    For backends that store records in their own format (Kafka). Records of
    plain types without headers pass one cheap check; any other record takes
    the full check, with the same error messages.

    Raises:
        LogError: a record is invalid; the message names its index and field.
    """
    if records and _plain_records(records, keyed):
        return
    encode_records(where, records, 0, keyed=keyed, decode=False)


def _plain_records(records: Sequence[LogRecord], keyed: bool) -> bool:
    for r in records:
        if not isinstance(r, _RECORD):
            return False
        key, value, ts = r.key, r.value, r.ts_ms
        if (
            (type(key) is not bytes and (key is not None or keyed))
            or (value is not None and type(value) is not bytes)
            or type(ts) is not int
            or not _INT64_MIN <= ts <= _INT64_MAX
            or r.headers
        ):
            return False
    return True


def _encode_rows(
    where: str, rows: list[_Row], first: int, keyed: bool, decode: bool, out: list[EncodedBatch]
) -> None:
    payload = bytearray(HEADER.size)
    try:
        _ENCODER.encode_into(rows, payload, HEADER.size)
    except (TypeError, OverflowError) as exc:
        raise LogError(
            f"a record appended to {where} cannot be stored: {exc}; keys and values must be "
            f"bytes or None, ts_ms an int64, headers a tuple of (str, bytes); nothing was written"
        ) from None
    size = len(payload) - HEADER.size
    if size > MAX_BATCH_BYTES and len(rows) > 1:
        half = len(rows) // 2
        _encode_rows(where, rows[:half], first, keyed, decode, out)
        _encode_rows(where, rows[half:], first + half, keyed, decode, out)
        return
    max_ts: int = max(map(_TS, rows))
    records = None
    with memoryview(payload) as view, view[HEADER.size :] as body:
        if decode or max_ts > _INT64_MAX or not _plain(rows):
            try:
                records = _DECODER.decode(body)
            except msgspec.ValidationError as exc:
                raise LogError(_invalid_message(where, str(exc), first)) from None
        HEADER.pack_into(payload, 0, FORMAT_VERSION, zlib.crc32(body))
    if keyed and None in map(_KEY, rows):
        bad = first + next(i for i, row in enumerate(rows) if row[0] is None)
        raise LogError(
            f"record {bad} appended to {where} has no key, but the topic is compacted "
            f"and compaction keeps the latest record per key; nothing was written"
        )
    out.append(EncodedBatch(rows[0][4], rows[-1][4], max_ts, payload, size, records))


def _plain(rows: list[_Row]) -> bool:
    """Return whether every record is trivially valid (the fast path of validation).

    Records with headers, or anything unusual, take the full check: decoding
    the body, which also names the first bad field.
    """
    for key, value, ts, headers, _ in rows:
        if (
            (key is not None and type(key) is not bytes)
            or (value is not None and type(value) is not bytes)
            or type(ts) is not int
            or headers
        ):
            return False
    return True


def _invalid_message(where: str, detail: str, first: int) -> str:
    match = _PATH.search(detail)
    if match is None:
        return f"a record appended to {where} is invalid: {detail}; nothing was written"
    index = first + int(match.group(1))
    field = _FIELDS[int(match.group(2))] if match.group(2) is not None else "record"
    reason = detail.split(" - at ", 1)[0]
    return (
        f"record {index} appended to {where} is invalid: {field}: {reason}; keys and values "
        f"must be bytes or None, ts_ms an int64, headers a tuple of (str, bytes); "
        f"nothing was written"
    )


def encode_stored(records: list[StoredRecord]) -> EncodedBatch:
    """Re-encode already stored records (after compaction), keeping their offsets."""
    payload = bytearray(HEADER.size)
    _ENCODER.encode_into(records, payload, HEADER.size)
    with memoryview(payload) as view, view[HEADER.size :] as body:
        HEADER.pack_into(payload, 0, FORMAT_VERSION, zlib.crc32(body))
    max_ts = max(r.ts_ms for r in records)
    size = len(payload) - HEADER.size
    return EncodedBatch(records[0].offset, records[-1].offset, max_ts, payload, size, records)


class KeyEntry(NamedTuple):
    """What compaction needs to know about one stored record."""

    key: bytes | None
    offset: int
    ts_ms: int
    tombstone: bool


def unframe(payload: bytes, base_offset: int, last_offset: int, count: int) -> list[StoredRecord]:
    """Check and decode a stored batch.

    Raises:
        BadBatchError: the version is unknown, the CRC does not match, or the
            records do not match the batch's offsets and count.
    """
    body = _checked_body(payload)
    try:
        records = _DECODER.decode(body)
    except msgspec.DecodeError as exc:
        raise BadBatchError(f"undecodable records ({exc})") from None
    if len(records) != count or not records:
        raise BadBatchError("records do not match the batch's offsets")
    _check_offsets(records[0].offset, records[-1].offset, base_offset, last_offset)
    return records


def unframe_keys(payload: bytes, base_offset: int, last_offset: int, count: int) -> list[KeyEntry]:
    """Check a stored batch like :func:`unframe`; return its records' keys, offsets and ts only.

    Values are not copied (a batch holding one large state value costs its CRC only).

    Raises:
        BadBatchError: as :func:`unframe`.
    """
    body = _checked_body(payload)
    try:
        rows = _KEYS_DECODER.decode(body)
    except msgspec.DecodeError as exc:
        raise BadBatchError(f"undecodable records ({exc})") from None
    if len(rows) != count or not rows:
        raise BadBatchError("records do not match the batch's offsets")
    _check_offsets(rows[0][4], rows[-1][4], base_offset, last_offset)
    return [
        KeyEntry(key, offset, ts, len(value) == 1 and bytes(value) == _NIL)
        for key, value, ts, _headers, offset in rows
    ]


def _checked_body(payload: bytes) -> memoryview:
    if len(payload) < HEADER.size:
        raise BadBatchError(f"the batch is {len(payload)} bytes, shorter than its header")
    version, crc = HEADER.unpack_from(payload)
    if version != FORMAT_VERSION:
        raise BadBatchError(f"unknown batch format version {version} (expected 1)")
    body = memoryview(payload)[HEADER.size :]
    if zlib.crc32(body) != crc:
        raise BadBatchError("CRC-32 mismatch")
    return body


def _check_offsets(first: int, last: int, base_offset: int, last_offset: int) -> None:
    if first != base_offset or last != last_offset:
        raise BadBatchError("records do not match the batch's offsets")
