"""The state codec: values round-trip, and a bad entry names its step."""

from __future__ import annotations

import pytest

from eventspine.errors import StateError
from eventspine.serde.state import decode_state_items, encode_state


def test_items_round_trip_in_order() -> None:
    items = [(("key", f"k{i}"), {"n": i, "w": (i, None)}) for i in range(50)]
    encoded = [(encode_state(k, step="s"), encode_state(v, step="s")) for k, v in items]
    assert decode_state_items(encoded, step="s") == items
    assert decode_state_items([], step="s") == []


@pytest.mark.parametrize("bad", ["key", "value"])
def test_a_bad_entry_raises_state_error_naming_the_step(bad: str) -> None:
    good = encode_state(1, step="counts")
    entry = (b"not a pickle", good) if bad == "key" else (good, b"\x80\x05garbage")
    with pytest.raises(StateError, match="step 'counts': its saved state cannot be read"):
        decode_state_items([(good, good), entry], step="counts")
