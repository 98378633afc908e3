"""Codecs: records to bytes and back, for topics and other byte-oriented connectors.

A :class:`Codec` has two methods. ``encode(value) -> bytes`` is called by
sinks and raises :class:`~eventspine.errors.SinkError` when the value cannot
be represented. ``decode(data) -> value`` is called by sources on bytes from
the outside world: whatever the bytes are (truncated, binary garbage, huge,
nested ten thousand levels deep) it returns a value or raises
:class:`~eventspine.errors.DecodeError`, never anything else. For typed
events (``es.Event`` subclasses) the message of a validation failure names
the field (``field 'price': Expected `float`, got `str```).

Built-ins:

* :class:`JsonCodec` — JSON via msgspec; with ``type=`` the decoded value is
  validated and converted (``dict``: any JSON object; an ``es.Event``: its fields).
* :class:`MsgpackCodec` — the same with MessagePack (smaller and faster; not
  human-readable).
* :class:`BytesCodec` — the bytes unchanged.
* :class:`StringCodec` — UTF-8 text.

Round trip: ``decode(encode(x)) == x`` for every value the codec's type can
hold, with JSON's and MessagePack's usual limits (tuples come back as
lists; integers must fit in 64 bits; JSON has no infinity or NaN, so
:class:`JsonCodec` writes them as ``null``, as msgspec does).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Protocol, final

import msgspec

from eventspine.errors import DecodeError, SinkError

__all__ = [
    "BytesCodec",
    "Codec",
    "JsonCodec",
    "MsgpackCodec",
    "StringCodec",
    "decode_all",
    "encode_all",
]

_AT = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_MISSING = re.compile(r"missing required field `(?P<name>[^`]+)`")


class Codec(Protocol):
    """Turns values into bytes and back.

    ``decode`` must raise only :class:`~eventspine.errors.DecodeError`;
    ``encode`` only :class:`~eventspine.errors.SinkError`.

    A codec may also have ``decode_many(values) -> list | None`` and
    ``encode_many(values) -> list | None``: the whole batch, or ``None`` (or the
    same errors) when a value fails, which the caller then finds one by one.
    Sources and sinks use them when present (see :func:`decode_all`).
    """

    def encode(self, value: Any) -> bytes:
        """Return ``value`` as bytes."""
        ...

    def decode(self, data: bytes) -> Any:
        """Return the value ``data`` holds."""
        ...


class _MsgspecCodec:
    """Shared logic of the JSON and MessagePack codecs."""

    format = ""

    def __init__(self, type: type | None) -> None:  # the public keyword name
        self.type = type
        self._target: Any = Any if type is None else type

    def __repr__(self) -> str:
        name = "None" if self.type is None else self.type.__name__
        return f"{self.__class__.__name__}(type={name})"

    _enc: msgspec.json.Encoder | msgspec.msgpack.Encoder
    _dec: msgspec.json.Decoder[Any] | msgspec.msgpack.Decoder[Any]

    def encode(self, value: Any) -> bytes:
        """Return ``value`` in the codec's format (raises ``SinkError`` if it has none)."""
        try:
            return self._enc.encode(value)
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise self._encode_error(value, exc) from exc

    def decode(self, data: bytes) -> Any:
        """Return the decoded value (raises only ``DecodeError``)."""
        try:
            return self._dec.decode(data)
        except Exception as exc:  # a trust boundary: any failure on outside bytes is a DecodeError
            raise self._decode_error(exc) from exc

    def decode_many(self, values: Sequence[bytes]) -> list[Any] | None:
        """Return every value decoded, or ``None`` if any fails (see :func:`decode_all`)."""
        try:
            return list(map(self._dec.decode, values))
        except Exception:  # one bad value: the caller decodes one by one to report it
            return None

    def encode_many(self, values: Sequence[Any]) -> list[bytes] | None:
        """Return every value encoded, or ``None`` if any fails (see :func:`encode_all`)."""
        try:
            return list(map(self._enc.encode, values))
        except Exception:  # the caller encodes one by one to report it
            return None

    def _decode_error(self, exc: BaseException) -> DecodeError:
        return DecodeError(self._describe(exc))

    def _describe(self, exc: BaseException) -> str:
        if isinstance(exc, RecursionError):
            return f"the {self.format} value is nested too deeply"
        if isinstance(exc, msgspec.ValidationError):
            wanted = "a JSON object" if self.type is dict else self._type_name()
            return f"the value does not match {wanted}: {_field_message(str(exc))}"
        if isinstance(exc, msgspec.DecodeError):
            return f"invalid {self.format} ({exc})"
        return f"invalid {self.format} ({type(exc).__name__}: {exc})"

    def _type_name(self) -> str:
        return "any value" if self.type is None else self.type.__name__

    def _encode_error(self, value: Any, exc: BaseException) -> SinkError:
        return SinkError(
            f"{self!r} cannot encode a {type(value).__name__} ({exc}); records must be "
            f"dicts, es.Event instances or plain values (str, int, float, bool, None, lists, "
            f"dicts with str keys)"
        )


def decode_all(codec: Codec, values: Sequence[bytes]) -> list[Any] | None:
    """Return ``[codec.decode(v) for v in values]``, or ``None`` if a value cannot be decoded.

    The batch path of sources: the JSON and MessagePack codecs decode the lot
    in one C-level pass (``decode_many``). On ``None`` the caller decodes one by
    one, which raises the ``DecodeError`` that names the bad value.
    """
    decoded: list[Any] | None = _all(codec, "decode", values, DecodeError)
    return decoded


def encode_all(codec: Codec, values: Sequence[Any]) -> list[bytes] | None:
    """Return ``[codec.encode(v) for v in values]``, or ``None`` if a value cannot be encoded.

    The batch path of sinks, like :func:`decode_all`: on ``None`` the caller
    encodes one by one, which raises the ``SinkError`` that names the value.
    """
    encoded: list[bytes] | None = _all(codec, "encode", values, SinkError)
    return encoded


def _all(codec: Codec, verb: str, values: Sequence[Any], error: type[Exception]) -> Any:
    many = getattr(codec, f"{verb}_many", None)
    try:
        return many(values) if many is not None else list(map(getattr(codec, verb), values))
    except error:
        return None


def _field_message(text: str) -> str:
    """Rewrite msgspec's ``Expected `int`, got `str` - at `$.price``` to name the field first."""
    m = _AT.match(text)
    assert m is not None  # the pattern matches every string
    what, path = m.group("what"), m.group("path")
    if path:
        return f"field {path.lstrip('.')!r}: {what}"
    missing = _MISSING.search(what)
    if missing:
        return f"field {missing.group('name')!r} is missing ({what})"
    return what


@final
class JsonCodec(_MsgspecCodec):
    """JSON (UTF-8) via msgspec.

    Args:
        type: the type to decode into and validate against: ``None`` (any JSON
            value), ``dict`` (a JSON object) or an ``es.Event`` subclass (typed,
            validated: a wrong or missing field is a ``DecodeError`` naming it).
    """

    format = "JSON"

    def __init__(self, type: type | None = None) -> None:  # the public keyword name
        super().__init__(type)
        self._enc = msgspec.json.Encoder()
        self._dec: msgspec.json.Decoder[Any] = msgspec.json.Decoder(self._target)


@final
class MsgpackCodec(_MsgspecCodec):
    """MessagePack via msgspec; arguments as for :class:`JsonCodec`."""

    format = "MessagePack"

    def __init__(self, type: type | None = None) -> None:  # the public keyword name
        super().__init__(type)
        self._enc = msgspec.msgpack.Encoder()
        self._dec: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(self._target)


@final
class BytesCodec:
    """The bytes unchanged: ``decode`` never fails; ``encode`` accepts bytes-like values."""

    def __repr__(self) -> str:
        return "BytesCodec()"

    def encode(self, value: Any) -> bytes:
        """Return ``value`` as ``bytes`` (``bytes``, ``bytearray`` or ``memoryview``)."""
        if isinstance(value, bytes | bytearray | memoryview):
            return bytes(value)
        raise SinkError(
            f"BytesCodec() cannot encode a {type(value).__name__}; give it bytes, or use "
            f"JsonCodec() for records"
        )

    def decode(self, data: bytes) -> bytes:
        """Return ``data`` as ``bytes``."""
        return bytes(data)


@final
class StringCodec:
    """UTF-8 text: ``decode`` raises ``DecodeError`` on invalid UTF-8."""

    def __repr__(self) -> str:
        return "StringCodec()"

    def encode(self, value: Any) -> bytes:
        """Return the ``str`` ``value`` as UTF-8 (lone surrogates are a ``SinkError``)."""
        if not isinstance(value, str):
            raise SinkError(
                f"StringCodec() cannot encode a {type(value).__name__}; give it str, or use "
                f"JsonCodec() for records"
            )
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise SinkError(f"StringCodec() cannot encode the text: {exc}") from exc

    def decode(self, data: bytes) -> str:
        """Return ``data`` decoded as UTF-8."""
        try:
            return bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(f"invalid UTF-8 ({exc.reason} at byte {exc.start})") from exc
