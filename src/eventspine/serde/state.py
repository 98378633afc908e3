"""Encoding operator state for checkpoints.

State values are Python objects of many shapes: numbers, tuples used as
dict keys, accumulators, Apache DataSketches sketches, user objects kept by
``process`` steps. They are encoded with :mod:`pickle` (protocol 5), as
Bytewax does for its snapshots, because msgpack cannot round-trip tuples,
sets or sketches. The bytes only ever live in eventspine's own log (a local
SQLite file, or a Kafka changelog topic of the same application), which is
trusted like the process itself; they are never read from user input. The
log adds a CRC per batch, so damaged state is detected before it is
unpickled.
"""

from __future__ import annotations

import pickle
from typing import Any

from eventspine.errors import StateError

__all__ = ["decode_state", "encode_state"]

_PROTOCOL = 5


def encode_state(value: Any, *, step: str) -> bytes:
    """Return ``value`` as bytes.

    Raises:
        StateError: the value cannot be encoded (e.g. it holds a lambda or an
            open file); the message names the step and what to change.
    """
    try:
        return pickle.dumps(value, protocol=_PROTOCOL)
    except Exception as exc:
        raise StateError(
            f"step '{step}': its state cannot be saved in a checkpoint ({type(exc).__name__}: "
            f"{exc}); keep only plain data (numbers, strings, lists, dicts, dataclasses) in "
            f"state and accumulators, not functions, locks or open files"
        ) from exc


def decode_state(data: bytes, *, step: str) -> Any:
    """Return the value encoded by :func:`encode_state`.

    Raises:
        StateError: the bytes cannot be decoded (written by an incompatible version).
    """
    try:
        return pickle.loads(data)  # noqa: S301  # our own checkpoint bytes, CRC-checked by the log
    except Exception as exc:
        raise StateError(
            f"step '{step}': its saved state cannot be read ({type(exc).__name__}: {exc}); it "
            f"was written by an incompatible version of the pipeline or of eventspine. Start "
            f"fresh with `eventspine state reset` (this discards the state) or run the version "
            f"that wrote it"
        ) from exc
