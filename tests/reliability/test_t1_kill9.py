"""T1: kill -9 at random points and at every named failpoint; output == oracle, 0 anomalies.

RELIABILITY.md T1. The worker is ``eventspine run`` on the reference pipeline
(``harness/reference_pipeline.py``); the supervisor SIGKILLs it U(50 ms, 2 s) after a
checkpoint committed, restarts it, and finally lets it finish. Failpoint runs crash the
worker (``crash`` = SIGKILL of itself) at one named step of the checkpoint or recovery
protocol. Replay a failure with ``RELIABILITY_SEED=<seed>``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from reliability.harness.failpoint_names import CHECKPOINT_FAILPOINTS, LOG_FAILPOINTS, hits
from reliability.harness.scenario import Case, make_case

#: Recovery after a restart must reach its first new checkpoint within this bound (PR size).
RECOVERY_BOUND_S = 10.0
SIGKILL_EXIT = -9


def _finish(case: Case, fast: bool = False) -> None:
    # ``fast``: the slow-down of the reference pipeline only spaces out the kills; it
    # changes no output, so the last run goes at full speed.
    ex = case.sup.run(extra_env={"ES_REL_SLOW_MS": "0"} if fast else None)
    assert ex.code == 0, case.fail_message(f"the final run failed:\n{ex.stderr[-3000:]}")
    rep = case.verify()
    assert rep.ok, case.fail_message("anomalies", rep)


def _kill_random(case: Case, kills: int, min_landed: int) -> None:
    landed = case.sup.random_kills(kills, case.rng)
    case.history.note("kills", f"{landed} of {kills} landed mid-run")
    # Fewer kills mid-run means the workload was too short: the test would prove little.
    assert landed >= min_landed, case.fail_message(f"only {landed} kills landed mid-run")
    _finish(case, fast=True)
    worst = max(case.sup.recovery_s, default=0.0)
    assert worst <= RECOVERY_BOUND_S, case.fail_message(f"recovery took {worst:.1f}s")


def test_t1_random_kills(tmp_path: Path, seed: int, hits_log: Path) -> None:
    """20 kill -9 at random times (K=50, S=200), then a clean finish: output == oracle."""
    case = make_case(tmp_path, seed, env={"ES_REL_SLOW_MS": "400", "ES_REL_TOPIC": "1"})
    _kill_random(case, 20, min_landed=15)


@pytest.mark.slow
def test_t1_random_kills_nightly(tmp_path: Path, seed: int) -> None:
    """200 kill -9 at random times on a larger workload (nightly)."""
    case = make_case(
        tmp_path, seed, keys=200, seqs=400, env={"ES_REL_SLOW_MS": "40", "ES_REL_TOPIC": "1"}
    )
    _kill_random(case, 200, min_landed=150)


def _small(tmp_path: Path, seed: int, hits_log: Path) -> Case:
    return make_case(
        tmp_path,
        seed,
        keys=20,
        seqs=150,
        env={"ES_REL_SLOW_MS": "40", "ES_REL_TOPIC": "1"},
        checkpoint_ms=50,
        hits_log=hits_log,
    )


def _crash_with(case: Case, spec: str, hits_log: Path) -> None:
    name, at = spec.split("=")[0], int(spec.rpartition("@")[2])
    before = hits(hits_log).get(name, 0)
    ex = case.sup.run(spec)
    reached = hits(hits_log).get(name, 0) - before
    assert reached >= at, case.fail_message(f"{name} was hit {reached}x, not >= {at}x")
    assert ex.code == SIGKILL_EXIT, case.fail_message(
        f"{spec}: expected the failpoint to SIGKILL the worker, exit {ex.code}: {ex.stderr[-2000:]}"
    )


@pytest.mark.parametrize("name", CHECKPOINT_FAILPOINTS)
def test_t1_failpoint_crash(tmp_path: Path, seed: int, hits_log: Path, name: str) -> None:
    """Crash at one named failpoint (mid-run, @3; recovery ones on a restart), then finish."""
    case = _small(tmp_path, seed, hits_log)
    if name.startswith("recovery."):
        case.sup.start()
        assert case.sup.wait_checkpoint(0) is not None, case.fail_message("no checkpoint")
        case.sup.kill()
        _crash_with(case, f"{name}=crash@1", hits_log)
    else:
        _crash_with(case, f"{name}=crash@3", hits_log)
    _finish(case)


def test_t1_crash_during_recovery(tmp_path: Path, seed: int, hits_log: Path) -> None:
    """Compound failure: a kill, then crashes inside two successive recoveries, then finish."""
    case = _small(tmp_path, seed, hits_log)
    case.sup.start()
    case.sup.wait_checkpoint(0)
    case.sup.wait_checkpoint(2)
    case.sup.kill()
    _crash_with(case, "recovery.mid_replay=crash@1", hits_log)
    _crash_with(case, "recovery.after_restore=crash@1", hits_log)
    _crash_with(case, "ckpt.after_commit_before_ack=crash@1", hits_log)
    _finish(case)


def test_t1_crash_before_first_checkpoint(tmp_path: Path, seed: int, hits_log: Path) -> None:
    """Crash before the first checkpoint ever (Bytewax #181): the restart starts fresh."""
    case = _small(tmp_path, seed, hits_log)
    _crash_with(case, "ckpt.before_begin=crash@1", hits_log)
    assert case.sup.last_meta() is None, case.fail_message("a checkpoint committed")
    _finish(case)


def test_t1_every_failpoint_hit(hits_log: Path) -> None:
    """Coverage: every failpoint named in checkpoint.py (and the log's) was hit in this session."""
    seen = hits(hits_log)
    if not any(n in seen for n in CHECKPOINT_FAILPOINTS):
        pytest.skip("run together with the failpoint tests (tests/reliability)")
    missing = [n for n in CHECKPOINT_FAILPOINTS if not seen.get(n)]
    assert not missing, f"failpoints never hit: {missing}; hits: {seen}"
    # The log's failpoints are hit by every run that logs hits (T4 makes them fail).
    missing_log = [n for n in LOG_FAILPOINTS if not seen.get(n)]
    assert not missing_log, f"log failpoints never hit: {missing_log}"
