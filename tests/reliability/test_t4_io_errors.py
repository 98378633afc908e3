"""T4: fail the N-th I/O of the SQLite log (SQLite's own test loop), then restart and verify.

The failpoints ``log.sqlite.*`` (in ``eventspine.log.sqlite_file``, the one class holding
all SQL) raise ``sqlite3.OperationalError("disk I/O error ...")`` at their N-th hit. For
N = 1, 2, ...: the run must stop with a clear error naming the log file (exit 1, no
hang); then, with the fault off, a restart must finish with output == oracle and
``integrity_check`` = ok. The loop stops at the first N the run completes without
reaching (the fault is past the end of the run).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from reliability.harness.scenario import make_case

# PR tier: the first few of each; nightly: up to 30.
_PR = {
    "log.sqlite.before_commit": (1, 2, 3, 4, 5, 6),
    "log.sqlite.insert_batch": (1, 2, 5),
    "log.sqlite.begin": (1, 4),
    "log.sqlite.after_commit": (3,),
}


def _fail_nth(tmp_path: Path, seed: int, hits_log: Path, point: str, n: int) -> bool:
    """Return False when the run completed without reaching the N-th hit."""
    case = make_case(
        tmp_path / f"{point}-{n}",
        seed,
        keys=10,
        seqs=80,
        checkpoint_ms=50,
        hits_log=hits_log,
        env={"ES_REL_SLOW_MS": "40"},  # about 6 checkpoints: several commits to fail
    )
    ex = case.sup.run(f"{point}=raise@{n}", timeout_s=60)
    if ex.code == 0:
        case.history.note("not-reached", f"{point}@{n}: the run ended first")
        return False
    assert ex.code == 1, case.fail_message(f"{point}@{n}: exit {ex.code}: {ex.stderr[-2000:]}")
    clear = "disk I/O error" in ex.stderr and str(case.sup.db) in ex.stderr
    assert clear, case.fail_message(
        f"{point}@{n}: the error does not say what failed where: {ex.stderr[-2000:]}"
    )
    ex = case.sup.run(timeout_s=60)
    assert ex.code == 0, case.fail_message(f"restart after {point}@{n} failed: {ex.stderr[-2000:]}")
    rep = case.verify()
    assert rep.ok, case.fail_message(f"after {point}@{n}", rep)
    return True


@pytest.mark.parametrize("point", list(_PR))
def test_t4_fail_nth_io(tmp_path: Path, seed: int, hits_log: Path, point: str) -> None:
    """For the listed N: fail the N-th hit of ``point``; clear error; restart == oracle."""
    failed = 0
    for n in _PR[point]:
        if not _fail_nth(tmp_path, seed, hits_log, point, n):
            break
        failed += 1
    # The run has more I/O than the largest listed N: every listed N must have failed it.
    assert failed == len(_PR[point]), f"only N <= {failed} reached {point} (seed={seed})"


@pytest.mark.slow
@pytest.mark.parametrize("point", list(_PR))
def test_t4_fail_nth_io_nightly(tmp_path: Path, seed: int, hits_log: Path, point: str) -> None:
    """N = 1..30 (or until the run completes first)."""
    for n in range(1, 31):
        if not _fail_nth(tmp_path, seed, hits_log, point, n):
            assert n > 1, f"{point} was never reached (seed={seed})"
            break
