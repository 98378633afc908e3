"""The verifier: compares a run's committed outputs with the oracle; Jepsen-named anomalies.

Anomalies (each counted; a correct run has none):

* ``lost``: an expected output record is missing;
* ``duplicate``: an output record appears more than once;
* ``unexpected``: an output record the oracle does not know (e.g. a poison record
  that slipped through, or a line that is not JSON: a torn write);
* ``reordered``: a key's records are all there but not in the expected order;
* ``state-mismatch``: a record with the expected identity but other contents (the
  running aggregates diverged: state was lost or applied twice), or the final
  keyed state differs from the oracle's;
* ``seq-alert``: an alert of the pipeline's own per-key sequence checker;
* ``unseen``: input lines not covered by the last committed checkpoint's positions;
* ``aborted-read``: output visible after a kill that is not a prefix of the final
  committed output (recorded by the supervisor, see ``Report.add``).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ANOMALIES", "Report", "compare_per_key", "read_jsonl", "verify_run"]

ANOMALIES = (
    "lost",
    "duplicate",
    "unexpected",
    "reordered",
    "state-mismatch",
    "seq-alert",
    "unseen",
    "aborted-read",
)


@dataclass
class Report:
    """Anomaly counts plus a few examples of each."""

    counts: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, anomaly: str, example: str, n: int = 1) -> None:
        """Count ``n`` occurrences of ``anomaly`` (keeps the first 5 examples)."""
        assert anomaly in ANOMALIES, anomaly
        self.counts[anomaly] += n
        ex = self.examples.setdefault(anomaly, [])
        if len(ex) < 5:
            ex.append(example)

    @property
    def ok(self) -> bool:
        """Whether every anomaly count is 0."""
        return not any(self.counts.values())

    def summary(self) -> dict[str, int]:
        """Every anomaly name with its count (0 included)."""
        return {a: self.counts.get(a, 0) for a in ANOMALIES}

    def __str__(self) -> str:
        lines = [" ".join(f"{a}={n}" for a, n in self.summary().items())]
        for a, ex in self.examples.items():
            lines.extend(f"  {a}: {e}" for e in ex)
        return "\n".join(lines)


def read_jsonl(path: Path, report: Report) -> list[dict[str, Any]]:
    """Read a JSON Lines output file; a line that is not a JSON object is ``unexpected``."""
    if not path.exists():
        return []
    out: list[dict[str, Any]] = []
    for i, line in enumerate(path.read_bytes().split(b"\n")):
        if not line:
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            report.add("unexpected", f"{path.name}:{i}: not JSON: {line[:80]!r}")
            continue
        if not isinstance(rec, dict):
            report.add("unexpected", f"{path.name}:{i}: not an object: {line[:80]!r}")
            continue
        out.append(rec)
    return out


def compare_per_key(
    what: str,
    actual: list[dict[str, Any]],
    expected: Mapping[str, list[dict[str, Any]]],
    ident: Callable[[dict[str, Any]], Any],
    report: Report,
) -> None:
    """Compare ``actual`` (in output order) with the expected records of each key."""
    got: dict[str, list[dict[str, Any]]] = {}
    for rec in actual:
        got.setdefault(str(rec.get("key")), []).append(rec)
    for key in sorted(set(got) | set(expected)):
        exp = expected.get(key, [])
        act = got.get(key, [])
        if act == exp:
            continue
        exp_by = {ident(r): r for r in exp}
        seen: Counter[Any] = Counter()
        for r in act:
            i = ident(r)
            seen[i] += 1
            if i not in exp_by:
                report.add("unexpected", f"{what}: {r}")
            elif seen[i] > 1:
                report.add("duplicate", f"{what}: {r}")
            elif r != exp_by[i]:
                report.add("state-mismatch", f"{what}: got {r}, expected {exp_by[i]}")
        for i, r in exp_by.items():
            if i not in seen:
                report.add("lost", f"{what}: {r}")
        first_order = [ident(r) for r in act if ident(r) in exp_by]
        dedup = list(dict.fromkeys(first_order))
        exp_order = [i for i in (ident(r) for r in exp) if i in seen]
        if dedup != exp_order:
            report.add(
                "reordered", f"{what}: key {key}: order {dedup[:6]}... != {exp_order[:6]}..."
            )


def verify_run(
    out_dir: Path,
    expected: Any,
    *,
    report: Report | None = None,
    state: Mapping[str, Mapping[str, int]] | None = None,
    topic_records: list[dict[str, Any]] | None = None,
    input_lines: Mapping[str, int] | None = None,
    positions: Mapping[str, int] | None = None,
) -> Report:
    """Check the committed outputs of a finished run against the oracle's ``expected``.

    Args:
        out_dir: the directory of ``stats.jsonl``, ``alerts.jsonl``, ``windows.jsonl``.
        expected: an :class:`~reliability.harness.oracle.Expected`.
        report: add to this report (default: a new one).
        state: the final ``stats`` state per key, read back from the changelog (``None``:
            not checked).
        topic_records: the committed records of the ``stats-out`` topic (``None``: none).
        input_lines: lines per input partition; with ``positions`` (the last checkpoint's
            source positions) lines not covered are ``unseen``.
        positions: see ``input_lines``.
    """
    rep = report if report is not None else Report()
    compare_per_key(
        "stats",
        read_jsonl(out_dir / "stats.jsonl", rep),
        expected.stats,
        lambda r: r.get("id"),
        rep,
    )
    for a in read_jsonl(out_dir / "alerts.jsonl", rep):
        rep.add("seq-alert", f"alerts: {a}")
    compare_per_key(
        "windows",
        read_jsonl(out_dir / "windows.jsonl", rep),
        expected.windows,
        lambda r: r.get("window_start_ms"),
        rep,
    )
    if topic_records is not None:
        compare_per_key(
            "stats-out topic", topic_records, expected.stats, lambda r: r.get("id"), rep
        )
    if state is not None:
        for key in sorted(set(state) | set(expected.state)):
            got, exp = state.get(key), expected.state.get(key)
            if got != exp:
                rep.add("state-mismatch", f"state of {key}: got {got}, expected {exp}")
    if input_lines is not None and positions is not None:
        for part, n in input_lines.items():
            pos = positions.get(part, 0)
            if pos < n:
                rep.add("unseen", f"{part}: committed position {pos} < {n} lines", n - pos)
    return rep
