"""A seeded, deterministic workload: K keys x S sequence numbers, in JSON Lines files.

Record (one JSON object per line)::

    {"id": "k007-00042", "key": "k007", "seq": 42, "value": -17, "ts": 1700000004213}

* ``value`` is an int (so sums are exact and order-independent).
* ``ts`` = ``T0 + seq * 100 + jitter`` with ``jitter`` in ``[0, disorder_ms]``: a
  little bounded disorder per key; the pipeline's ``max_delay`` covers it, so no
  record is late and window results depend only on the input.
* Keys are split over ``partitions`` files (key ``i`` lives in file ``i % P``), so
  per-key order is the file order.
* With ``dup_rate``, a record is written again 1..5 lines later (same id): the
  pipeline's dedupe stage must drop the copy.
* With ``poison_rate``, bad lines are inserted (see :data:`POISON_KINDS`); each
  must end up in the dead-letter topic exactly once.

Every line's fate is known here (``Line.fate``: ``"out"``, ``"dup"``, ``"dead"``):
the oracle and the T10 accounting identity use it.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["POISON_KINDS", "T0_MS", "Line", "Workload", "generate"]

T0_MS = 1_700_000_000_000


def _p_invalid_json(i: int, rng: random.Random) -> bytes:
    return b'{"id": "bad-%d", "key": ' % i


def _p_invalid_utf8(i: int, rng: random.Random) -> bytes:
    return b'{"id": "bad-%d", "key": "\xff\xfe\xc3\x28"}' % i


def _p_wrong_types(i: int, rng: random.Random) -> bytes:
    return json.dumps({"id": f"bad-{i}", "key": "k000", "seq": "x", "value": [1], "ts": 0}).encode()


def _p_huge(i: int, rng: random.Random) -> bytes:
    # 1 MB, valid JSON, but no key: the key_by step cannot key it.
    return json.dumps({"id": f"bad-{i}", "pad": "x" * (1 << 20)}).encode()


def _p_nested(i: int, rng: random.Random) -> bytes:
    return b"[" * 100_000 + b"]" * 100_000


def _p_nan_literal(i: int, rng: random.Random) -> bytes:
    return b'{"id": "bad-%d", "key": "k000", "seq": 1, "value": NaN, "ts": 0}' % i


def _p_nan_string(i: int, rng: random.Random) -> bytes:
    return json.dumps(
        {"id": f"bad-{i}", "key": "k000", "seq": 1, "value": "NaN", "ts": T0_MS}
    ).encode()


def _p_raise(i: int, rng: random.Random) -> bytes:
    # A well-formed record the user function refuses (its id starts with ``poison-``).
    # (The marker is in the id: a field absent from the first block of a file is not
    # seen by the columnar JSON reader, see eventspine.connectors.files.)
    return json.dumps(
        {"id": f"poison-{i}", "key": "k000", "seq": 1, "value": 1, "ts": T0_MS}
    ).encode()


#: name -> maker of one bad line (without its newline).
POISON_KINDS: dict[str, Callable[[int, random.Random], bytes]] = {
    "invalid-json": _p_invalid_json,
    "invalid-utf8": _p_invalid_utf8,
    "wrong-types": _p_wrong_types,
    "huge-1mb": _p_huge,
    "deeply-nested": _p_nested,
    "nan-literal": _p_nan_literal,
    "nan-string": _p_nan_string,
    "user-raise": _p_raise,
}


@dataclass(frozen=True)
class Line:
    """One input line: its partition file, line number (= source offset) and fate."""

    partition: int
    offset: int
    fate: str  # "out" | "dup" | "dead"
    record: dict[str, int | str] | None  # the record for "out"/"dup"; None for poison
    poison: str | None = None


@dataclass
class Workload:
    """A generated input: its files and the fate of every line."""

    seed: int
    keys: int
    seqs: int
    partitions: int
    lines: list[list[Line]] = field(default_factory=list)  # per partition, by offset
    files: list[Path] = field(default_factory=list)

    @property
    def records(self) -> list[dict[str, int | str]]:
        """The good, first-seen records in the order the pipeline reads them per partition."""
        return [ln.record for part in self.lines for ln in part if ln.fate == "out" and ln.record]

    def fate_counts(self) -> dict[str, int]:
        """How many lines have each fate."""
        out: dict[str, int] = {}
        for part in self.lines:
            for ln in part:
                out[ln.fate] = out.get(ln.fate, 0) + 1
        return out


def generate(
    directory: Path,
    *,
    seed: int,
    keys: int = 50,
    seqs: int = 200,
    partitions: int = 2,
    disorder_ms: int = 300,
    dup_rate: float = 0.02,
    poison_rate: float = 0.0,
    poison_kinds: tuple[str, ...] | None = None,
) -> Workload:
    """Write the input files ``in-<p>.jsonl`` into ``directory``; return the workload.

    ``poison_kinds`` restricts the bad lines to these kinds (default: all, round-robin).
    """
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    wl = Workload(seed, keys, seqs, partitions)
    names = [f"k{i:03d}" for i in range(keys)]
    poison_names = sorted(poison_kinds or POISON_KINDS)
    n_bad = 0
    for p in range(partitions):
        mine = names[p::partitions]
        pending: list[tuple[int, dict[str, int | str]]] = []  # (due line, duplicate)
        raw: list[bytes] = []
        lines: list[Line] = []

        def put(
            data: bytes,
            fate: str,
            rec: dict[str, int | str] | None,
            poison: str | None,
            p: int = p,
            lines: list[Line] = lines,
            raw: list[bytes] = raw,
        ) -> None:
            lines.append(Line(p, len(raw), fate, rec, poison))
            raw.append(data)

        for seq in range(seqs):
            order = list(mine)
            rng.shuffle(order)
            for key in order:
                rec: dict[str, int | str] = {
                    "id": f"{key}-{seq:05d}",
                    "key": key,
                    "seq": seq,
                    "value": rng.randint(-1000, 1000),
                    "ts": T0_MS + seq * 100 + rng.randint(0, disorder_ms),
                }
                put(json.dumps(rec).encode(), "out", rec, None)
                if rng.random() < dup_rate:
                    pending.append((len(raw) + rng.randint(0, 4), rec))
                while pending and pending[0][0] <= len(raw):
                    dup = pending.pop(0)[1]
                    put(json.dumps(dup).encode(), "dup", dup, None)
                if rng.random() < poison_rate:
                    # Round-robin over the kinds so every kind appears in a small run.
                    kind = poison_names[n_bad % len(poison_names)]
                    put(POISON_KINDS[kind](n_bad, rng), "dead", None, kind)
                    n_bad += 1
        for _, dup in pending:
            put(json.dumps(dup).encode(), "dup", dup, None)
        path = directory / f"in-{p}.jsonl"
        path.write_bytes(b"".join(r + b"\n" for r in raw))
        wl.lines.append(lines)
        wl.files.append(path)
    return wl
