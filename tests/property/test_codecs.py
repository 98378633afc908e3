"""Decoder fuzzing (RELIABILITY T13): decode never raises anything but DecodeError; round trips."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eventspine as es
from eventspine.errors import DecodeError, SinkError
from eventspine.serde.codecs import (
    BytesCodec,
    Codec,
    JsonCodec,
    MsgpackCodec,
    StringCodec,
    decode_all,
    encode_all,
)

pytestmark = pytest.mark.timeout(120)


class Order(es.Event):
    id: int
    symbol: str
    price: float
    qty: int = 1
    tags: list[str] = msgspec.field(default_factory=list)
    note: str | None = None


CODECS: list[Codec] = [
    JsonCodec(),
    JsonCodec(dict),
    JsonCodec(Order),
    MsgpackCodec(),
    MsgpackCodec(dict),
    MsgpackCodec(Order),
    StringCodec(),
    BytesCodec(),
]
IDS = [repr(c) for c in CODECS]
FUZZ = settings(
    max_examples=60,
    deadline=timedelta(seconds=1),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

ints = st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)
# JSON has no infinity or NaN (msgspec writes them as null: documented in codecs.py).
floats = st.floats(allow_nan=False, allow_infinity=False)
scalars = st.none() | st.booleans() | ints | floats | st.text()
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)
records = st.dictionaries(st.text(), json_values, max_size=8)
orders = st.builds(
    Order,
    id=ints,
    symbol=st.text(),
    price=floats,
    qty=ints,
    tags=st.lists(st.text(), max_size=4),
    note=st.none() | st.text(),
)


def decode_or_decode_error(codec: Codec, data: bytes) -> None:
    error: DecodeError | None = None
    try:
        codec.decode(data)
    except DecodeError as exc:  # any other exception fails the test
        error = exc
    assert error is None or str(error).startswith("cannot decode the input")


@pytest.mark.parametrize("codec", CODECS, ids=IDS)
@FUZZ
@given(data=st.binary(max_size=65536))
def test_decode_arbitrary_bytes_returns_or_raises_decode_error(codec: Codec, data: bytes) -> None:
    decode_or_decode_error(codec, data)


def _near_json(value: Any) -> bytes:
    return JsonCodec().encode(value)


@pytest.mark.parametrize("codec", CODECS, ids=IDS)
@FUZZ
@given(value=json_values, cut=st.integers(min_value=0, max_value=200))
def test_decode_truncated_and_mistyped_documents(codec: Codec, value: Any, cut: int) -> None:
    # Almost-valid input reaches deeper into the decoders than random bytes do.
    data = (
        _near_json(value) if not isinstance(codec, MsgpackCodec) else MsgpackCodec().encode(value)
    )
    decode_or_decode_error(codec, data)
    decode_or_decode_error(codec, data[: len(data) * cut // 200])


HOSTILE = [
    b"[" * 200_000,
    b"{" * 200_000,
    b'{"a":' * 100_000,
    b"\x91" * 200_000,  # msgpack: arrays of one element, nested
    b"\x81\xa1a" * 100_000,  # msgpack: maps nested
    b"[" + b"1," * 2_000_000 + b"1]",  # large but valid
    b"\xdd\xff\xff\xff\xff",  # msgpack array32 claiming 4 billion elements
    b"\xdb\xff\xff\xff\xff",  # msgpack str32 claiming 4 GB
    b'"' + b"\\u0000" * 100_000 + b'"',
    b"\xff\xfe\xfd",
    b"",
]


@pytest.mark.parametrize("codec", CODECS, ids=IDS)
@pytest.mark.parametrize("data", HOSTILE, ids=range(len(HOSTILE)))
def test_decode_huge_and_deeply_nested_input(codec: Codec, data: bytes) -> None:
    decode_or_decode_error(codec, data)


@pytest.mark.parametrize(
    "codec", [JsonCodec(), JsonCodec(dict), MsgpackCodec(), MsgpackCodec(dict)]
)
@settings(max_examples=100, deadline=timedelta(seconds=1))
@given(record=records)
def test_round_trip_dict_records(codec: Codec, record: dict[str, Any]) -> None:
    assert codec.decode(codec.encode(record)) == record


@pytest.mark.parametrize("codec", [JsonCodec(Order), MsgpackCodec(Order)])
@settings(max_examples=100, deadline=timedelta(seconds=1))
@given(order=orders)
def test_round_trip_typed_events(codec: Codec, order: Order) -> None:
    assert codec.decode(codec.encode(order)) == order


@settings(max_examples=100, deadline=timedelta(seconds=1))
@given(text=st.text(), blob=st.binary())
def test_round_trip_text_and_bytes(text: str, blob: bytes) -> None:
    assert StringCodec().decode(StringCodec().encode(text)) == text
    assert BytesCodec().decode(BytesCodec().encode(blob)) == blob


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (b'{"id": "7", "symbol": "A", "price": 1.0}', "'id'"),
        (b'{"id": 7, "symbol": "A"}', "'price'"),
        (b'{"id": 7, "symbol": "A", "price": 1.0, "tags": ["x", 3]}', "'tags[1]'"),
    ],
)
def test_typed_decode_errors_name_the_field(data: bytes, field: str) -> None:
    with pytest.raises(DecodeError, match=re.escape(f"field {field}")):
        JsonCodec(Order).decode(data)
    with pytest.raises(DecodeError, match=re.escape(f"field {field}")):
        MsgpackCodec(Order).decode(MsgpackCodec().encode(JsonCodec().decode(data)))


def test_dict_codec_refuses_non_objects() -> None:
    with pytest.raises(DecodeError, match="does not match a JSON object"):
        JsonCodec(dict).decode(b"[1, 2]")
    assert JsonCodec().decode(b"[1, 2]") == [1, 2]


@pytest.mark.parametrize(
    ("codec", "value"),
    [(JsonCodec(), object()), (MsgpackCodec(), {1j}), (StringCodec(), b"x"), (BytesCodec(), "x")],
)
def test_encode_failures_are_sink_errors(codec: Codec, value: Any) -> None:
    with pytest.raises(SinkError, match="cannot encode"):
        codec.encode(value)


def _one_by_one(call: Any, values: list[Any], error: type[Exception]) -> list[Any] | None:
    try:
        return [call(v) for v in values]
    except error:
        return None


@pytest.mark.parametrize("codec", CODECS, ids=IDS)
@FUZZ
@given(
    values=st.lists(
        st.binary(max_size=64) | records.map(_near_json) | records.map(MsgpackCodec().encode),
        max_size=8,
    )
)
def test_decode_all_is_decode_one_by_one_or_none(codec: Codec, values: list[bytes]) -> None:
    # The batch path of topic sources: all decoded alike, or None when one value is bad
    # (the source then decodes one by one to name it).
    batch, one_by_one = decode_all(codec, values), _one_by_one(codec.decode, values, DecodeError)
    # Compared encoded: MessagePack floats can be NaN, and NaN != NaN.
    assert (batch is None) == (one_by_one is None)
    assert msgspec.msgpack.encode(batch) == msgspec.msgpack.encode(one_by_one)


@pytest.mark.parametrize("codec", CODECS, ids=IDS)
@FUZZ
@given(values=st.lists(records | st.text() | st.binary() | st.just(object()), max_size=6))
def test_encode_all_is_encode_one_by_one_or_none(codec: Codec, values: list[Any]) -> None:
    assert encode_all(codec, values) == _one_by_one(codec.encode, values, SinkError)
