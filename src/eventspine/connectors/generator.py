"""Seeded synthetic streams for demos, tests and benchmarks.

:class:`GeneratorSource` produces one of three kinds of dict records:

* ``"ticks"`` (market ticks): ``symbol`` (str), ``price`` (float, a seeded random
  walk per symbol, with rare one-tick spikes of 3-8 %), ``size`` (int), ``ts``.
* ``"iot"`` (sensor readings): ``device`` (str), ``temperature`` (float, a daily
  cycle plus noise), ``humidity`` (float), ``status`` (``"ok"`` or ``"fault"``;
  a faulty reading has an implausible temperature), ``ts``.
* ``"payments"``: ``payment_id`` (int, unique across partitions), ``account``
  (str), ``amount`` (float, log-normal), ``merchant`` (str), ``country`` (str,
  usually the account's home country; about 0.5 % are suspicious: a much larger
  amount from a country that is not the account's home), ``ts``.

``ts`` is the event time in epoch milliseconds: ``start + i * step`` for the
``i``-th record of a partition, where ``step`` is ``1000 * partitions / rate``
ms, or 1 ms when ``rate`` is ``None``; ``disorder`` moves each record back by a
random amount up to that duration (so the stream is slightly out of order).
Keys are partitioned like a keyed topic: key ``k`` always goes to partition
``k % partitions``, so each key's records stay in order.

The records are a pure function of ``(kind, seed, partitions, keys, start,
rate, disorder)`` and the record's position: the same whatever the batch sizes
or columnar/rows polls. They are generated in fixed blocks with numpy (a
million ticks take about a second). Offsets are record indexes within the
partition; ``seek`` regenerates the stream up to the offset (the random walks
carry state), which costs about as much as reading that far.

``rate=None`` produces records as fast as they are polled. With a ``rate``
(records per second, over all partitions) records are released on the run's
clock (``OpenContext.clock``): record ``i`` of a partition becomes available
``i * step`` ms after the first poll; ``poll`` never sleeps.

:func:`reference_table` gives a slowly changing reference table for each kind
(e.g. symbol -> sector, lot size, valid from), for as-of joins in demos.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, final

import numpy as np

from eventspine.dataflow.ports import Chunk, OpenContext, SourceReader
from eventspine.timeutil import Clock, to_duration_ms, to_ms

if TYPE_CHECKING:
    import polars as pl

__all__ = ["KINDS", "GeneratorSource", "reference_table"]

#: The kinds of stream, and their fields in order.
KINDS: dict[str, tuple[str, ...]] = {
    "ticks": ("symbol", "price", "size", "ts"),
    "iot": ("device", "temperature", "humidity", "status", "ts"),
    "payments": ("payment_id", "account", "amount", "merchant", "country", "ts"),
}
_DEFAULT_KEYS = {"ticks": 8, "iot": 100, "payments": 1000}
_KIND_ID = {"ticks": 1, "iot": 2, "payments": 3}
_BLOCK = 16_384
_DEFAULT_START = datetime(2024, 1, 1, tzinfo=UTC)
_TICKERS = ["AAPL", "MSFT", "GOOG", "AMZN", "NVDA", "META", "TSLA", "JPM", "V", "XOM"]
_SECTORS = ["tech", "energy", "finance", "health", "consumer", "industrial"]
_COUNTRIES = ["US", "GB", "DE", "FR", "NL", "ES", "IT", "SE", "PL", "IE"]
_RISKY = ["KP", "IR", "XX", "RU", "VE"]
_STATUS = ["ok", "fault"]
_DAY_MS = 86_400_000


def _names(kind: str, keys: int) -> list[str]:
    if kind == "ticks":
        return [_TICKERS[k] if k < len(_TICKERS) else f"S{k:04d}" for k in range(keys)]
    if kind == "iot":
        return [f"dev-{k:05d}" for k in range(keys)]
    return [f"acct-{k:06d}" for k in range(keys)]


def _static(kind: str, seed: int, keys: int) -> dict[str, np.ndarray]:
    """Per-key constants shared by the stream and its reference table."""
    rng = np.random.default_rng([seed, _KIND_ID[kind], 0])
    return {
        "base": rng.uniform(20.0, 500.0, keys),  # ticks: first price
        "temp": rng.uniform(18.0, 26.0, keys),  # iot: mean temperature
        "hum": rng.uniform(30.0, 60.0, keys),  # iot: mean humidity
        "home": rng.integers(0, len(_COUNTRIES), keys),  # payments: home country
    }


@final
class GeneratorSource:
    """A seeded stream of synthetic records; see the module doc for kinds and fields.

    Args:
        kind: ``"ticks"``, ``"iot"`` or ``"payments"``.
        rate: records per second over all partitions, paced on the run's clock
            (``None``: as fast as polled).
        count: how many records in all (``None``: unbounded).
        seed: the random seed.
        partitions: how many partitions (keys are spread ``key % partitions``).
        start: the event time of the first record (aware datetime; default 2024-01-01 UTC).
        keys: how many symbols/devices/accounts (default 8, 100 and 1000).
        disorder: move records back in event time by up to this much (default none).

    Raises:
        ValueError: an unknown kind, or fewer keys than partitions.
    """

    record_type: type = dict

    def __init__(
        self,
        kind: str,
        *,
        rate: float | None = None,
        count: int | None = None,
        seed: int = 0,
        partitions: int = 1,
        start: datetime | None = None,
        keys: int | None = None,
        disorder: timedelta = timedelta(0),
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; choose one of {sorted(KINDS)}")
        keys = _DEFAULT_KEYS[kind] if keys is None else keys
        if partitions < 1 or keys < partitions:
            raise ValueError(f"need 1 <= partitions <= keys, got {partitions=} and {keys=}")
        if rate is not None and not rate > 0:
            raise ValueError(f"rate must be positive records per second, got {rate}")
        if count is not None and count < 0:
            raise ValueError(f"count must not be negative, got {count}")
        self.kind = kind
        self.rate = rate
        self.count = count
        self.seed = seed
        self.partitions = partitions
        self.start_ms = to_ms(start if start is not None else _DEFAULT_START)
        self.keys = keys
        self.disorder_ms = to_duration_ms(disorder, "disorder")
        self.bounded = count is not None
        self.fields = KINDS[kind]

    def open(self, context: OpenContext) -> Sequence[SourceReader]:
        """Return the readers of the partitions this worker reads."""
        return [
            _GeneratorReader(self, p, f"{context.step}/{p}", context.clock)
            for p in range(context.worker, self.partitions, context.workers)
        ]

    def partition_count(self, p: int) -> int | None:
        """Return how many records partition ``p`` holds (``None``: unbounded)."""
        if self.count is None:
            return None
        return self.count // self.partitions + (1 if p < self.count % self.partitions else 0)

    def __repr__(self) -> str:
        return f"GeneratorSource({self.kind!r}, count={self.count}, rate={self.rate})"


class _GeneratorReader:
    def __init__(self, src: GeneratorSource, p: int, partition: str, clock: Clock) -> None:
        self.partition = partition
        self._src = src
        self._p = p
        self._clock = clock
        self._limit = src.partition_count(p)
        self._keys = np.arange(p, src.keys, src.partitions)
        self._names = _names(src.kind, src.keys)
        self._static = _static(src.kind, src.seed, src.keys)
        self._step = 1000.0 * src.partitions / src.rate if src.rate else 1.0
        self._make: Callable[[np.random.Generator, Any, int], dict[str, Any]] = getattr(
            self, f"_{src.kind}"
        )
        self._walk = np.log(self._static["base"][self._keys])  # ticks: log price per key
        self._labels = self._make_labels()
        self._block_no = 0
        self._block: dict[str, Any] | None = None
        self._pos = 0  # the next record to deliver
        self._paced_from: tuple[int, int] | None = None  # (wall ms, offset) pacing started

    # -- SourceReader ---------------------------------------------------------------
    def poll(self, max_records: int, columnar: bool) -> Chunk | None:
        start = self._pos
        n = max_records
        if self._limit is not None:
            if start >= self._limit:
                return None
            n = min(n, self._limit - start)
        if self._src.rate is not None:
            now = self._clock.now_ms()
            if self._paced_from is None:
                self._paced_from = (now, start)
            t0, off0 = self._paced_from
            due = off0 + math.floor((now - t0) / self._step) + 1
            n = max(0, min(n, due - start))
        if n <= 0:
            return Chunk([], start, start)
        parts = []
        while n > 0:
            block = self._current()
            lo = self._pos - self._block_no * _BLOCK
            hi = min(lo + n, _BLOCK)
            parts.append((block, lo, hi))
            self._pos += hi - lo
            n -= hi - lo
        if columnar:
            import polars as pl

            frames = [self._frame(b, lo, hi) for b, lo, hi in parts]
            return Chunk(frames[0] if len(frames) == 1 else pl.concat(frames), start, self._pos)
        rows: list[dict[str, Any]] = []
        for b, lo, hi in parts:
            rows.extend(self._rows(b, lo, hi))
        return Chunk(rows, start, self._pos)

    def seek(self, offset: int) -> None:
        self._block_no, self._block = 0, None
        self._walk = np.log(self._static["base"][self._keys])
        while (self._block_no + 1) * _BLOCK <= offset:
            self._generate(self._block_no)
            self._block_no += 1
        self._pos = offset
        self._paced_from = None

    def close(self) -> None:
        self._block = None

    # -- blocks ---------------------------------------------------------------------
    def _current(self) -> dict[str, Any]:
        """Return the block holding record ``_pos`` (blocks are made in order: walks carry)."""
        want = self._pos // _BLOCK
        while self._block is None or self._block_no < want:
            if self._block is not None:
                self._block_no += 1
            self._block = self._generate(self._block_no)
        return self._block

    def _generate(self, block_no: int) -> dict[str, Any]:
        src = self._src
        rng = np.random.default_rng([src.seed, _KIND_ID[src.kind], self._p + 1, block_no])
        first = block_no * _BLOCK
        idx = np.arange(first, first + _BLOCK, dtype=np.int64)
        ts = src.start_ms + np.floor(idx * self._step).astype(np.int64)
        key_idx = rng.integers(0, len(self._keys), _BLOCK)
        block = self._make(rng, key_idx, first)
        if src.disorder_ms:
            ts = ts - rng.integers(0, src.disorder_ms + 1, _BLOCK)
        block["ts"] = ts
        return block

    def _ticks(self, rng: np.random.Generator, key_idx: Any, first: int) -> dict[str, Any]:
        steps = rng.normal(0.0, 0.0005, _BLOCK)
        # A per-key cumulative sum: each key's walk continues from its last price.
        order = np.argsort(key_idx, kind="stable")
        sk, ss = key_idx[order], steps[order]
        cs = np.cumsum(ss)
        starts = np.flatnonzero(np.r_[True, sk[1:] != sk[:-1]])
        base = np.repeat(cs[starts] - ss[starts], np.diff(np.r_[starts, len(sk)]))
        logp = np.empty(_BLOCK)
        logp[order] = self._walk[sk] + (cs - base)
        last = np.r_[starts[1:] - 1, len(sk) - 1]
        self._walk[sk[last]] = self._walk[sk[last]] + (cs[last] - base[last])
        spike = rng.random(_BLOCK) < 0.001
        jump = rng.uniform(0.03, 0.08, _BLOCK) * rng.choice([-1.0, 1.0], _BLOCK)
        price = np.exp(logp) * np.where(spike, 1.0 + jump, 1.0)
        size = rng.integers(1, 100, _BLOCK) * np.where(rng.random(_BLOCK) < 0.1, 10, 1)
        return {"symbol": self._keys[key_idx], "price": np.round(price, 4), "size": size}

    def _iot(self, rng: np.random.Generator, key_idx: Any, first: int) -> dict[str, Any]:
        dev = self._keys[key_idx]
        st = self._static
        t = self._src.start_ms + (first + np.arange(_BLOCK)) * self._step
        temp = st["temp"][dev] + 2.0 * np.sin(2 * np.pi * t / _DAY_MS) + rng.normal(0, 0.3, _BLOCK)
        hum = np.clip(st["hum"][dev] + rng.normal(0, 1.0, _BLOCK), 0.0, 100.0)
        fault = rng.random(_BLOCK) < 0.002
        temp = np.where(fault, rng.choice([-40.0, 125.0], _BLOCK), temp)
        return {
            "device": dev,
            "temperature": np.round(temp, 2),
            "humidity": np.round(hum, 1),
            "status": fault.astype(np.int64),
        }

    def _payments(self, rng: np.random.Generator, key_idx: Any, first: int) -> dict[str, Any]:
        acct = self._keys[key_idx]
        amount = rng.lognormal(3.5, 1.0, _BLOCK)
        merchant = rng.integers(0, 500, _BLOCK)
        country = self._static["home"][acct]
        abroad = rng.random(_BLOCK) < 0.03
        country = np.where(abroad, rng.integers(0, len(_COUNTRIES), _BLOCK), country)
        odd = rng.random(_BLOCK) < 0.005
        amount = np.where(odd, amount * rng.uniform(10.0, 50.0, _BLOCK), amount)
        country = np.where(odd, len(_COUNTRIES) + rng.integers(0, len(_RISKY), _BLOCK), country)
        pid = (first + np.arange(_BLOCK, dtype=np.int64)) * self._src.partitions + self._p
        return {
            "payment_id": pid,
            "account": acct,
            "amount": np.round(amount, 2),
            "merchant": merchant,
            "country": country,
        }

    def _make_labels(self) -> dict[str, list[str]]:
        kind = self._src.kind
        if kind == "ticks":
            return {"symbol": self._names}
        if kind == "iot":
            return {"device": self._names, "status": _STATUS}
        return {
            "account": self._names,
            "merchant": [f"m-{m:04d}" for m in range(500)],
            "country": _COUNTRIES + _RISKY,
        }

    def _rows(self, block: dict[str, Any], lo: int, hi: int) -> list[dict[str, Any]]:
        labels = self._labels
        names = self._src.fields
        cols: list[list[Any]] = []
        for f in names:
            vals = block[f][lo:hi].tolist()
            if f in labels:
                table = labels[f]
                vals = [table[v] for v in vals]
            cols.append(vals)
        return _BUILD[self._src.kind](cols)

    def _frame(self, block: dict[str, Any], lo: int, hi: int) -> pl.DataFrame:
        import polars as pl

        labels = self._labels
        data: dict[str, pl.Series] = {}
        for f in self._src.fields:
            arr = block[f][lo:hi]
            if f in labels:
                data[f] = pl.Series(f, labels[f], dtype=pl.String).gather(arr)
            else:
                data[f] = pl.Series(f, arr)
        return pl.DataFrame(data)


def _ticks_rows(c: list[list[Any]]) -> list[dict[str, Any]]:
    return [{"symbol": a, "price": b, "size": d, "ts": t} for a, b, d, t in zip(*c, strict=True)]


def _iot_rows(c: list[list[Any]]) -> list[dict[str, Any]]:
    return [
        {"device": a, "temperature": b, "humidity": d, "status": e, "ts": t}
        for a, b, d, e, t in zip(*c, strict=True)
    ]


def _payments_rows(c: list[list[Any]]) -> list[dict[str, Any]]:
    return [
        {"payment_id": a, "account": b, "amount": d, "merchant": e, "country": f, "ts": t}
        for a, b, d, e, f, t in zip(*c, strict=True)
    ]


# Dict literals build rows about 3x faster than dict(zip(names, values)).
_BUILD: dict[str, Callable[[list[list[Any]]], list[dict[str, Any]]]] = {
    "ticks": _ticks_rows,
    "iot": _iot_rows,
    "payments": _payments_rows,
}


def reference_table(
    kind: str,
    seed: int = 0,
    *,
    keys: int | None = None,
    start: datetime | None = None,
    versions: int = 3,
    every: timedelta = timedelta(minutes=5),
) -> list[dict[str, Any]]:
    """Return a slowly changing reference table for a generated stream (for as-of joins).

    Each key has ``versions`` rows: the first is valid from one day before ``start``
    (so every generated record finds one), the next ones from ``start + v * every``.
    Rows are sorted by ``valid_from_ts`` (epoch ms), then by key. Fields per kind:

    * ``"ticks"``: ``symbol``, ``sector``, ``lot_size``, ``valid_from_ts``.
    * ``"iot"``: ``device``, ``site``, ``model``, ``calibration``, ``valid_from_ts``.
    * ``"payments"``: ``account``, ``home_country`` (the same as in the stream for the
      same seed), ``risk_tier``, ``limit``, ``valid_from_ts``.

    Args:
        kind: the stream kind.
        seed: the seed given to the ``GeneratorSource``.
        keys: the number of keys given to the ``GeneratorSource`` (default: the kind's).
        start: the start given to the ``GeneratorSource``.
        versions: how many versions each key has.
        every: the time between versions.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose one of {sorted(KINDS)}")
    keys = _DEFAULT_KEYS[kind] if keys is None else keys
    start_ms = to_ms(start if start is not None else _DEFAULT_START)
    every_ms = to_duration_ms(every, "every")
    names = _names(kind, keys)
    static = _static(kind, seed, keys)
    rng = np.random.default_rng([seed, _KIND_ID[kind], 1])
    sector = rng.integers(0, len(_SECTORS), keys).tolist()
    rows: list[dict[str, Any]] = []
    for v in range(versions):
        valid = start_ms - _DAY_MS if v == 0 else start_ms + v * every_ms
        draw = rng.integers(0, 3, keys).tolist()
        for k, name in enumerate(names):
            row: dict[str, Any]
            if kind == "ticks":
                row = {"symbol": name, "sector": _SECTORS[sector[k]], "lot_size": 10 ** draw[k]}
            elif kind == "iot":
                row = {
                    "device": name,
                    "site": f"site-{k % 10}",
                    "model": ["T100", "T200", "T300"][sector[k] % 3],
                    "calibration": round(0.1 * (draw[k] - 1), 2),
                }
            else:
                row = {
                    "account": name,
                    "home_country": _COUNTRIES[int(static["home"][k])],
                    "risk_tier": ["low", "medium", "high"][draw[k]],
                    "limit": [1000.0, 5000.0, 20000.0][draw[k]],
                }
            row["valid_from_ts"] = valid
            rows.append(row)
    return rows
