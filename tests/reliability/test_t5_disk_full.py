"""T5: disk full. The state directory is a 2 MiB tmpfs; the run must stop with a clear
disk-full error (no hang, no partial checkpoint); after the tmpfs is remounted bigger,
a restart finishes with output == oracle.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from reliability.harness.logview import integrity_check
from reliability.harness.scenario import make_case


def _mount(target: Path, size: str) -> None:
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)],
        check=True,
        capture_output=True,
    )


def test_t5_disk_full_then_more_space(tmp_path: Path, seed: int) -> None:
    """ENOSPC in the log: clear error, committed state intact; with space: output == oracle."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    case = make_case(
        tmp_path, seed, keys=100, seqs=200, checkpoint_ms=100, env={"ES_REL_TOPIC": "1"}
    )
    state = case.sup.state_dir
    state.mkdir(parents=True)
    try:
        _mount(state, "2m")
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    try:
        case.history.note("fault-on", "state dir on a 2 MiB tmpfs")
        ex = case.sup.run(timeout_s=60)
        assert ex.code == 1, case.fail_message(f"expected a disk-full failure, exit {ex.code}")
        clear = "full" in ex.stderr.lower() and str(case.sup.db) in ex.stderr
        assert clear, case.fail_message(
            f"the error does not say the disk is full and where: {ex.stderr[-2000:]}"
        )
        before = case.sup.last_meta()
        case.history.note("after-fault", f"last checkpoint {None if before is None else before.id}")
        assert integrity_check(case.sup.db) == "ok", case.fail_message("integrity after ENOSPC")
        subprocess.run(["mount", "-o", "remount,size=256m", str(state)], check=True)
        case.history.note("fault-off", "tmpfs remounted with 256 MiB")
        ex = case.sup.run(timeout_s=60)
        assert ex.code == 0, case.fail_message(f"restart failed: {ex.stderr[-2000:]}")
        rep = case.verify()
        assert rep.ok, case.fail_message("anomalies after disk full", rep)
    finally:
        subprocess.run(["umount", "-l", str(state)], check=False, capture_output=True)
