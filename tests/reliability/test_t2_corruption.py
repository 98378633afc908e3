"""T2: torn/partial writes and corrupted files, applied offline after a kill -9.

For each mutation exactly one outcome is allowed: (a) the worker resumes and the final
output == oracle with ``PRAGMA integrity_check`` = ok, or (b) it refuses to start with
exit code != 0 and an error naming the damaged file. Never (c): it runs and produces
output != oracle. ``test_t2_outcome_table`` prints the table mutation -> outcome.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from reliability.harness.logview import integrity_check
from reliability.harness.mutations import MUTATIONS, Files, backup, checkpoint_wal
from reliability.harness.scenario import make_case

_TABLE: dict[str, str] = {}


@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_t2_mutation(tmp_path: Path, seed: int, mutation: str) -> None:
    """Kill -9 mid-run, mutate one file, restart: (a) correct resume or (b) named refusal."""
    case = make_case(
        tmp_path, seed, keys=20, seqs=150, env={"ES_REL_SLOW_MS": "40"}, checkpoint_ms=50
    )
    sup = case.sup
    files = Files(sup.state_dir, sup.out_dir)
    stop, mutate = MUTATIONS[mutation]
    sup.start(stop[3:] if stop.startswith("fp:") else "")
    assert sup.wait_checkpoint(0) is not None, case.fail_message("no checkpoint")
    backup(files.db, files.old)
    case.history.note("backup", "log.db copied at the first checkpoint seen")
    if stop.startswith("fp:"):
        ex = sup.wait(60)
        assert ex.code == -9, case.fail_message(f"the failpoint did not crash the worker: {ex}")
    else:
        sup.wait_checkpoint(2)
        if stop == "kill-after-wal-checkpoint":
            how = checkpoint_wal(files.db)
            case.history.note("wal-checkpoint", f"{how}; log.db {files.db.stat().st_size} bytes")
        time.sleep(case.rng.uniform(0.0, 0.3))
        sup.kill()
    what = mutate(files, case.rng)
    case.history.note("mutate", f"{mutation}: {what}")
    if what is None:
        _TABLE[mutation] = "n/a (target file absent after the kill)"
        pytest.skip(f"{mutation}: the file it mutates does not exist after this kill")
    ex = sup.run(timeout_s=60)
    if ex.code == 0:
        rep = case.verify(check_prefixes=False)
        assert rep.ok, case.fail_message(f"(c) {mutation}: ran and produced wrong output", rep)
        _TABLE[mutation] = f"(a) resumed, output == oracle, integrity ok [{what}]"
        return
    named = [str(p) for p in (files.db, files.output, files.staging) if str(p) in ex.stderr]
    first = next((ln for ln in ex.stderr.splitlines() if ln.startswith("error:")), ex.stderr[-300:])
    assert named, case.fail_message(
        f"(b) {mutation}: refused without naming the file: {ex.stderr[-2000:]}"
    )
    assert ex.code in (1, 2), case.fail_message(f"{mutation}: exit {ex.code}: {ex.stderr[-2000:]}")
    _TABLE[mutation] = f"(b) refused, exit {ex.code}: {first[:240]} [{what}]"
    if files.db.exists() and "log.db" in first:
        case.history.note("integrity", integrity_check(files.db)[:200])


def test_t2_outcome_table() -> None:
    """Print mutation -> outcome (run with -s to see it); every mutation must have run."""
    if not _TABLE:
        pytest.skip("run together with test_t2_mutation")
    width = max(map(len, MUTATIONS))
    print("\nT2 mutation -> outcome")
    for name in MUTATIONS:
        print(f"  {name:<{width}}  {_TABLE.get(name, 'NOT RUN (failed above)')}")
    missing = [n for n in MUTATIONS if n not in _TABLE]
    assert not missing, f"mutations without an (a)/(b) outcome: {missing}"
