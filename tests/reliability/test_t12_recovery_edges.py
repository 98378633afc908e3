"""T12: recovery edge cases (Quix/Bytewax bugs), each with a 60 s no-progress watchdog.

* crash in the first epoch (inside the first checkpoint's transaction);
* recovery from exactly 0 and exactly 1 changelog record;
* a source already at its end on restart (crash after the final checkpoint committed,
  before its publish);
* restarting a finished run produces nothing new;
* a state directory written by an incompatible pipeline (a renamed stateful step, a
  changed window size) is refused with a StateError naming the step and the fix.

Crash *during* recovery and before the first checkpoint are T1
(``test_t1_crash_during_recovery``, ``test_t1_crash_before_first_checkpoint``).
Every ``Supervisor.run`` has a watchdog: a worker that does not exit within 60 s is
killed and the test fails ("no progress").
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reliability.harness.logview import LogView
from reliability.harness.scenario import Case, make_case
from reliability.harness.supervisor import OUTPUT_FILES

WATCHDOG_S = 60.0
SIGKILL_EXIT = -9


def _ok(case: Case, ex_code: int | None, stderr: str, what: str) -> None:
    assert ex_code == 0, case.fail_message(f"{what}: exit {ex_code}: {stderr[-2000:]}")


def _finish(case: Case) -> None:
    ex = case.sup.run(timeout_s=WATCHDOG_S)
    _ok(case, ex.code, ex.stderr, "final run")
    rep = case.verify()
    assert rep.ok, case.fail_message("anomalies", rep)


def _outputs(case: Case) -> dict[str, bytes | None]:
    files = {n: case.sup.out_dir / n for n in OUTPUT_FILES}
    return {n: p.read_bytes() if p.exists() else None for n, p in files.items()}


def test_t12_crash_in_first_epoch(tmp_path: Path, seed: int) -> None:
    """SIGKILL inside the first checkpoint's transaction: the restart starts fresh."""
    case = make_case(tmp_path, seed, keys=10, seqs=100, env={"ES_REL_SLOW_MS": "20"})
    ex = case.sup.run("ckpt.after_state_write=crash@1", timeout_s=WATCHDOG_S)
    assert ex.code == SIGKILL_EXIT, case.fail_message(f"no crash: exit {ex.code}")
    assert case.sup.last_meta() is None, case.fail_message("the aborted checkpoint is visible")
    _finish(case)


@pytest.mark.parametrize("records", [0, 1])
def test_t12_recover_from_n_changelog_records(tmp_path: Path, seed: int, records: int) -> None:
    """A checkpoint whose changelogs hold 0 or 1 record; crash after it; restart == oracle."""
    case = make_case(tmp_path, seed, keys=1, seqs=records, dup_rate=0.0)
    ex = case.sup.run("ckpt.after_publish=crash@1", timeout_s=WATCHDOG_S)
    assert ex.code == SIGKILL_EXIT, case.fail_message(f"no crash: exit {ex.code}")
    view = LogView(case.sup.db)
    assert view.meta is not None, case.fail_message("no checkpoint committed")
    assert len(view.state) == records, case.fail_message(f"changelog state {view.state}")
    _finish(case)


def test_t12_source_at_end_on_restart(tmp_path: Path, seed: int) -> None:
    """Only the final checkpoint (interval 10 min); crash after its commit, before publish."""
    case = make_case(tmp_path, seed, keys=10, seqs=100, checkpoint_ms=600_000)
    ex = case.sup.run("ckpt.after_commit_before_ack=crash@1", timeout_s=WATCHDOG_S)
    assert ex.code == SIGKILL_EXIT, case.fail_message(f"no crash: exit {ex.code}")
    meta = case.sup.last_meta()
    lines = {
        f"input/{f.name}": len(ls)
        for f, ls in zip(case.workload.files, case.workload.lines, strict=True)
    }
    at_end = meta is not None and meta.positions["input"] == lines
    assert at_end, case.fail_message(
        f"the final checkpoint should have the sources at their end: {meta}"
    )
    _finish(case)


def test_t12_restart_finished_run_changes_nothing(tmp_path: Path, seed: int) -> None:
    """Run to the end, run again: byte-identical outputs, still == oracle."""
    case = make_case(tmp_path, seed, keys=10, seqs=100)
    _finish(case)
    before = _outputs(case)
    _finish(case)
    after = _outputs(case)
    assert before == after, case.fail_message("a restart of a finished run changed the output")


@pytest.mark.parametrize(("variant", "step"), [("renamed", "stats"), ("window5s", "win10s")])
def test_t12_incompatible_state_refused(tmp_path: Path, seed: int, variant: str, step: str) -> None:
    """State written by another pipeline version: StateError naming the step and the fix."""
    if variant == "window5s" and os.environ.get("RELIABILITY_NO_WINDOWS") == "1":
        pytest.skip("the window step is left out (RELIABILITY_NO_WINDOWS=1)")
    case = make_case(tmp_path, seed, keys=10, seqs=100, env={"ES_REL_SLOW_MS": "20"})
    case.sup.start()
    assert case.sup.wait_checkpoint(0) is not None, case.fail_message("no checkpoint")
    case.sup.kill()
    ex = case.sup.run(timeout_s=WATCHDOG_S, extra_env={"ES_REL_VARIANT": variant})
    assert ex.code == 1, case.fail_message(
        f"{variant}: exit {ex.code} (want 1): {ex.stderr[-2000:]}"
    )
    msg = ex.stderr
    clear = f"'{step}'" in msg and "eventspine state reset reliability" in msg
    assert clear, case.fail_message(
        f"{variant}: the error does not name step {step!r} and the fix: {msg[-2000:]}"
    )
    not_a_bug = "Traceback" not in msg and "bug" not in msg
    assert not_a_bug, case.fail_message(f"reported as a bug: {msg}")
    _finish(case)  # the old version still resumes from the same state
