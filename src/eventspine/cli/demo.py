"""The ``eventspine demo`` pipeline: synthetic market ticks -> bars, VWAP, sectors, spike alerts.

What it computes (every result is a JSON Lines file under the output folder)::

    ticks (GeneratorSource: 50 symbols, seeded random walks, rare one-tick spikes of 3-8 %)
      ├─ 1 s tumbling window per symbol: open/high/low/close/volume/trades
      │    └─ as-of join with the reference table (symbol -> sector, lot size)  -> bars_1s.jsonl
      │         ├─ decaying window per symbol: mean close, 30 s half-life (the baseline)
      │         └─ as-of join bar <- baseline, keep bars whose high or low is more than
      │            4 % away from the baseline                                  -> spikes.jsonl
      └─ 10 s hopping window every 1 s per symbol: sum(price*size) / sum(size)   -> vwap_10s.jsonl

The baseline of a bar is evaluated at the bar's event time (its window end
minus 1 ms), so it includes the bar's own close, which weighs about 1/43 of
a 30 s half-life mean of 1 s closes. The same ``--events`` give the same
files whatever the batch sizes.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from typing import Any

from eventspine.dataflow.aggregations import count, first, last, max_, mean, min_, sum_
from eventspine.dataflow.expr import col
from eventspine.dataflow.pipeline import Pipeline
from eventspine.dataflow.time import Decaying, EventTime, ExponentialDecay, Hopping, Tumbling
from eventspine.runtime.executor import RunResult

__all__ = ["SPIKE_THRESHOLD", "build_demo", "describe_outputs"]

SEED = 42
SYMBOLS = 50  # each symbol ticks ~20 times per event-time second: bars see the injected spikes
# A bar is a spike when its high or low is 4 % away from the baseline: the generator's
# spikes are 3-8 %, while a symbol's random walk rarely strays 4 % from its 30 s mean.
SPIKE_THRESHOLD = 0.04

_OUTPUTS = {
    "bars_1s.jsonl": "1 s OHLC bars per symbol, with sector and lot size",
    "vwap_10s.jsonl": "10 s volume-weighted average price per symbol, every second",
    "spikes.jsonl": "bars more than 4 % away from the 30 s decaying mean close",
}


def build_demo(events: int, out_dir: str) -> Pipeline:
    """Build the demo pipeline over ``events`` generated ticks, writing under ``out_dir``."""
    from eventspine.connectors.files import JsonLinesSink
    from eventspine.connectors.generator import GeneratorSource, reference_table
    from eventspine.connectors.memory import MemorySource

    def out(name: str) -> JsonLinesSink:
        return JsonLinesSink(os.path.join(out_dir, name))

    p = Pipeline("demo")
    ticks = p.source(
        "ticks",
        GeneratorSource("ticks", count=events, seed=SEED, keys=SYMBOLS),
        timestamps=EventTime("ts"),
    )
    # price * size in integer units of 1e-4 (prices have 4 decimals): integer sums are
    # exact, so the VWAPs do not depend on the order in which batches were added up.
    notional = (col("price") * 10_000 + 0.5).cast(int) * col("size")
    by_symbol = ticks.map("with_notional", notional_e4=notional).key_by("ticks_by_symbol", "symbol")

    sectors = p.source(
        "sectors",
        MemorySource(reference_table("ticks", seed=SEED, keys=SYMBOLS)),
        timestamps=EventTime("valid_from_ts"),
    ).key_by("sectors_by_symbol", "symbol")
    bars = (
        by_symbol.window(Tumbling(timedelta(seconds=1)))
        .aggregate(
            "bars_1s",
            open=first("price"),
            high=max_("price"),
            low=min_("price"),
            close=last("price"),
            volume=sum_("size"),
            trades=count(),
        )
        .key_by("bars_by_symbol", "symbol")
        .asof_join("bars_with_sector", sectors, combine=_with_sector)
        .key_by("enriched_by_symbol", "symbol")
    )
    bars.sink("bars_out", out("bars_1s.jsonl"))

    baseline = (
        bars.window(Decaying(ExponentialDecay(half_life=timedelta(seconds=30))))
        .aggregate("baseline_30s", baseline=mean("close"))
        .key_by("baseline_by_symbol", "symbol")
    )
    (
        bars.asof_join("bar_vs_baseline", baseline, how="inner", combine=_deviation)
        .filter("spikes", lambda r: abs(r["deviation_pct"]) > SPIKE_THRESHOLD * 100)
        .sink("spikes_out", out("spikes.jsonl"))
    )

    (
        by_symbol.window(Hopping(timedelta(seconds=10), timedelta(seconds=1)))
        .aggregate("vwap_sums", notional_e4=sum_("notional_e4"), volume=sum_("size"))
        .map("vwap_10s", _vwap)
        .sink("vwap_out", out("vwap_10s.jsonl"))
    )
    return p


def _with_sector(bar: dict[str, Any], ref: dict[str, Any] | None) -> dict[str, Any]:
    """A bar with the sector and lot size valid at its time (``None`` if none yet)."""
    return {
        **bar,
        "sector": ref["sector"] if ref is not None else None,
        "lot_size": ref["lot_size"] if ref is not None else None,
    }


def _vwap(sums: dict[str, Any]) -> dict[str, Any]:
    """The window's volume-weighted average price."""
    return {
        "symbol": sums["symbol"],
        "window_start_ms": sums["window_start_ms"],
        "window_end_ms": sums["window_end_ms"],
        "vwap": round(sums["notional_e4"] / sums["volume"] / 10_000, 6),
        "volume": sums["volume"],
    }


def _deviation(bar: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """The bar's largest move away from its baseline (high above or low below)."""
    b = base["baseline"]
    up, down = bar["high"] / b - 1, bar["low"] / b - 1
    dev, price = (up, bar["high"]) if abs(up) >= abs(down) else (down, bar["low"])
    return {
        "symbol": bar["symbol"],
        "sector": bar["sector"],
        "window_start_ms": bar["window_start_ms"],
        "window_end_ms": bar["window_end_ms"],
        "price": price,
        "baseline": round(b, 4),
        "deviation_pct": round(100 * dev, 2),
    }


def describe_outputs(out_dir: str, result: RunResult) -> str:
    """A short report of what the demo computed and where the files are."""
    ticks = result.inspector.metrics("ticks").records_out
    lines = [f"demo: {ticks:,} ticks in, results in {os.path.abspath(out_dir)}/"]
    for name, what in _OUTPUTS.items():
        path = os.path.join(out_dir, name)
        rows = _count_lines(path)
        lines.append(f"  {name:<16} {rows:>9,} rows  {what}")
    top = _largest_spike(os.path.join(out_dir, "spikes.jsonl"))
    if top is not None:
        when = datetime.fromtimestamp(top["window_start_ms"] / 1000, tz=UTC)
        lines.append(
            f"  largest spike: {top['symbol']} ({top['sector']}) {top['deviation_pct']:+.2f} % "
            f"vs baseline {top['baseline']} in the second starting {when:%Y-%m-%d %H:%M:%S} UTC"
        )
    return "\n".join(lines) + "\n"


def _count_lines(path: str) -> int:
    try:
        with open(path, "rb") as fh:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
    except FileNotFoundError:
        return 0


def _largest_spike(path: str) -> dict[str, Any] | None:
    best: dict[str, Any] | None = None
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                row = json.loads(line)
                if best is None or abs(row["deviation_pct"]) > abs(best["deviation_pct"]):
                    best = row
    except FileNotFoundError:
        return None
    return best
