"""T10: poison pills -> dead-letter topic, combined with kill -9.

1 % bad lines (invalid JSON, invalid UTF-8, wrong types, a 1 MB record without a key,
100,000-deep nested JSON, a NaN literal, a "NaN" string value, a record the user
function refuses) in a pipeline with ``on_error=es.DeadLetter("dlq")``, killed 3 times.
Checks, per input partition and line (= offset): every line is exactly one of output,
filtered (a duplicate id dropped by the dedupe stage) or dead letter; every dead letter
carries its position, error and raw bytes or record; no dead letter twice; the good
records' output == oracle.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

from reliability.harness.logview import LogView
from reliability.harness.scenario import Case, make_case
from reliability.harness.verify import Report, read_jsonl
from reliability.harness.workload import POISON_KINDS


def _poison_id(line: bytes) -> str | None:
    try:
        rec = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return str(rec.get("id")) if isinstance(rec, dict) else None


def _accounting(case: Case, dead: list[dict[str, Any]], problems: list[str]) -> dict[str, int]:
    """Classify every input line by what the run committed; compare with its known fate."""
    wl = case.workload
    parts = {f"input/{f.name}": i for i, f in enumerate(wl.files)}
    by_id: dict[str, list[tuple[int, int]]] = {}
    raw_lines = [f.read_bytes().split(b"\n") for f in wl.files]
    for p, lines in enumerate(wl.lines):
        for ln in lines:
            rid = ln.record["id"] if ln.record is not None else _poison_id(raw_lines[p][ln.offset])
            if rid is not None:
                by_id.setdefault(str(rid), []).append((p, ln.offset))
    dlq_at: dict[tuple[int, int], int] = {}
    for d in dead:
        for f in ("step", "error_type", "error"):
            if not d.get(f):
                problems.append(f"dead letter without {f}: {str(d)[:200]}")
        if d.get("raw") is None and d.get("record") is None:
            problems.append(f"dead letter without raw bytes or record: {str(d)[:200]}")
        where: tuple[int, int] | None = None
        if d.get("partition") in parts and isinstance(d.get("offset"), int):
            where = (parts[d["partition"]], d["offset"])
        else:
            problems.append(
                f"dead letter without a source position (step {d.get('step')}): "
                f"{str(d.get('record'))[:120]}"
            )
            rec = d.get("record")
            rid = rec.get("id") if isinstance(rec, dict) else None
            cands = by_id.get(str(rid), [])
            where = next((c for c in cands if c not in dlq_at), cands[0] if cands else None)
        if where is None:
            problems.append(f"dead letter of no input line: {str(d)[:200]}")
            continue
        dlq_at[where] = dlq_at.get(where, 0) + 1
        if d.get("raw") is not None and where[1] < len(wl.lines[where[0]]):
            raw = base64.b64decode(d["raw"])
            if raw != raw_lines[where[0]][where[1]]:
                problems.append(f"dead letter raw bytes differ from line {where}: {raw[:60]!r}")
    out_ids: dict[str, int] = {}
    rep = Report()
    for rec in read_jsonl(case.sup.out_dir / "stats.jsonl", rep):
        out_ids[str(rec.get("id"))] = out_ids.get(str(rec.get("id")), 0) + 1
    tally = {"lines": 0, "output": 0, "filtered": 0, "dead": 0}
    for p, lines in enumerate(wl.lines):
        for ln in lines:
            tally["lines"] += 1
            n_dead = dlq_at.get((p, ln.offset), 0)
            in_out = ln.fate == "out" and ln.record is not None and str(ln.record["id"]) in out_ids
            got = "dead" if n_dead else "out" if in_out else "dup"
            if n_dead > 1:
                problems.append(f"line {p}:{ln.offset} dead-lettered {n_dead}x (duplicate)")
            if n_dead and in_out:
                problems.append(f"line {p}:{ln.offset} both output and dead-lettered")
            if got != ln.fate:
                problems.append(
                    f"line {p}:{ln.offset} ({ln.poison or 'good'}) expected {ln.fate}, got {got}"
                )
            tally[{"out": "output", "dup": "filtered", "dead": "dead"}[got]] += 1
    return tally


def test_t10_poison_pills_with_kills(tmp_path: Path, seed: int) -> None:
    """inputs = outputs + filtered + dead letters, per partition by offset, across 3 kills."""
    case = make_case(
        tmp_path, seed, keys=30, seqs=150, poison_rate=0.01, env={"ES_REL_SLOW_MS": "300"}
    )
    kinds = {ln.poison for part in case.workload.lines for ln in part if ln.poison}
    assert kinds == set(POISON_KINDS), f"workload lacks poison kinds {set(POISON_KINDS) - kinds}"
    landed = case.sup.random_kills(3, case.rng)
    ex = case.sup.run(timeout_s=120)
    assert ex.code == 0, case.fail_message(f"final run failed: {ex.stderr[-2000:]}")
    view = LogView(case.sup.db)
    problems: list[str] = []
    tally = _accounting(case, view.dead_letters, problems)
    case.history.note("accounting", f"{tally} after {landed} kills")
    rep = case.verify()
    expected = case.workload.fate_counts()
    assert tally["lines"] == tally["output"] + tally["filtered"] + tally["dead"]
    ok = not problems and rep.ok
    assert ok, case.fail_message(
        f"T10: {len(problems)} accounting problems (expected {expected}, got {tally}):\n"
        + _summarize(problems),
        rep,
    )


def _summarize(problems: list[str]) -> str:
    """Problems grouped by kind (the text before the first digit or brace), 3 examples each."""
    groups: dict[str, list[str]] = {}
    for p in problems:
        kind = re.sub(r"\d+:\d+|\{.*|'.*", "", p).strip()
        groups.setdefault(kind, []).append(p)
    out = []
    for kind, items in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        out.append(f"  {len(items):5d} x {kind}")
        out.extend(f"          e.g. {i[:200]}" for i in items[:3])
    return "\n".join(out)


def test_t10_string_in_an_int_column_spares_the_good_records(tmp_path: Path, seed: int) -> None:
    """A ``"NaN"`` string where ints are expected is dead-lettered alone: the good records
    of the same block keep their int values (no kills; one small block, deterministic)."""
    case = make_case(
        tmp_path,
        seed,
        keys=4,
        seqs=25,
        poison_rate=0.1,  # 100 lines: no bad line at all has a probability of 3e-5
        poison_kinds=("nan-string",),
        partitions=1,
        windows=False,
    )
    assert case.workload.fate_counts().get("dead"), "no bad line generated"
    ex = case.sup.run(timeout_s=60)
    assert ex.code == 0, case.fail_message(f"run failed: {ex.stderr[-2000:]}")
    problems: list[str] = []
    _accounting(case, LogView(case.sup.db).dead_letters, problems)
    wrong = [p for p in problems if "without a source position" not in p]
    assert not wrong, case.fail_message("good records harmed by a bad one:\n" + _summarize(wrong))
