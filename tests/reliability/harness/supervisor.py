"""The supervisor: runs ``eventspine run`` as a subprocess, kills it, restarts it, logs history.

Every action (start, checkpoint seen, kill, fault on/off, exit) is appended to
:class:`History` with a monotonic timestamp; ``History.dump()`` (printed by the
tests on failure) starts with the RNG seed, so a failing run can be replayed
with the same seed.

The worker is pinned to CPU 1 with ``taskset -c 1`` when available (RELIABILITY.md:
worker on CPU 1, harness on CPU 0). Checkpoints are observed with
``read_last_meta`` on a short-lived reader of the log file (opened only once the
file has its schema, closed right away).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eventspine.log import open_log
from eventspine.runtime.checkpoint import CheckpointMeta, names, read_last_meta

__all__ = [
    "EVENTSPINE",
    "OUTPUT_FILES",
    "PIPELINE_FILE",
    "Exit",
    "History",
    "Supervisor",
    "log_is_ready",
]

REPO = Path(__file__).resolve().parents[3]
EVENTSPINE = str(REPO / ".venv" / "bin" / "eventspine")
PIPELINE_FILE = Path(__file__).with_name("reference_pipeline.py")
PIPELINE_NAME = "reliability"
OUTPUT_FILES = ("stats.jsonl", "alerts.jsonl", "windows.jsonl")
_TASKSET = shutil.which("taskset")
_PIN = [_TASKSET, "-c", "1"] if _TASKSET and (os.cpu_count() or 1) > 1 else []


@dataclass
class History:
    """The harness actions of one test, with monotonic timestamps and the seed."""

    seed: int
    t0: float = field(default_factory=time.monotonic)
    events: list[tuple[float, str, str]] = field(default_factory=list)

    def note(self, action: str, detail: str = "") -> None:
        """Record one action."""
        self.events.append((time.monotonic() - self.t0, action, detail))

    def dump(self) -> str:
        """The history as text (seed first)."""
        lines = [f"seed={self.seed}"]
        lines += [f"{t:9.3f}s {a:<14} {d}" for t, a, d in self.events]
        return "\n".join(lines)


@dataclass(frozen=True)
class Exit:
    """How one worker process ended."""

    code: int | None  # None: killed by the harness
    stderr: str
    killed: bool
    seconds: float


def log_is_ready(db: Path) -> bool:
    """Whether the log file exists and has its checkpoints topic (read-only probe)."""
    if not db.exists() or db.stat().st_size == 0:
        return False
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            row = conn.execute(
                "SELECT 1 FROM topics WHERE name = ?", (names.checkpoints(PIPELINE_NAME),)
            ).fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return False
    return row is not None


class Supervisor:
    """Runs the reference pipeline on a workload directory (``in/``, ``out/``, ``state/``).

    Args:
        workdir: holds ``in/`` (the input files), ``out/`` and ``state/``.
        history: where actions are recorded.
        env: extra environment (``ES_REL_*`` knobs of the reference pipeline).
        checkpoint_ms: ``--checkpoint-interval-ms``.
        hits_log: ``EVENTSPINE_FAILPOINTS_LOG`` for every run (failpoint coverage).
    """

    def __init__(
        self,
        workdir: Path,
        history: History,
        *,
        env: Mapping[str, str] | None = None,
        checkpoint_ms: int = 100,
        hits_log: Path | None = None,
        target: str | None = None,
    ) -> None:
        self.workdir = workdir
        self.history = history
        self.env = dict(env or {})
        self.checkpoint_ms = checkpoint_ms
        self.hits_log = hits_log
        self.target = target or f"{PIPELINE_FILE}:pipeline"
        self.state_dir = workdir / "state"
        self.out_dir = workdir / "out"
        self.db = self.state_dir / "log.db"
        self.proc: subprocess.Popen[bytes] | None = None
        self._stderr_path = workdir / "stderr.txt"
        self._started = 0.0
        self.recovery_s: list[float] = []
        #: The published output files after each kill (for the prefix/aborted-read check).
        self.visible_after_kill: list[dict[str, bytes]] = []

    # -- processes -------------------------------------------------------------------
    def start(self, failpoints: str = "", extra_env: Mapping[str, str] | None = None) -> None:
        """Start the worker (``failpoints``: an ``EVENTSPINE_FAILPOINTS`` spec)."""
        assert self.proc is None, "one worker at a time"
        env = dict(os.environ)
        env.pop("EVENTSPINE_FAILPOINTS", None)
        env.update(
            {
                "ES_REL_IN": str(self.workdir / "in"),
                "ES_REL_OUT": str(self.out_dir),
                "PYTHONHASHSEED": str(random.randrange(1 << 30)),  # must not matter
            }
        )
        env.update(self.env)
        env.update(extra_env or {})
        if failpoints:
            env["EVENTSPINE_FAILPOINTS"] = failpoints
        if self.hits_log is not None:
            env["EVENTSPINE_FAILPOINTS_LOG"] = str(self.hits_log)
        cmd = [
            *_PIN,
            EVENTSPINE,
            "run",
            self.target,
            "--state-dir",
            str(self.state_dir),
            "--checkpoint-interval-ms",
            str(self.checkpoint_ms),
            "--quiet",
        ]
        self._stderr_f = self._stderr_path.open("wb")
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.DEVNULL, stderr=self._stderr_f, cwd=self.workdir
        )
        self._started = time.monotonic()
        self.history.note("start", f"pid={self.proc.pid} failpoints={failpoints or '-'}")

    def _finish(self, killed: bool) -> Exit:
        assert self.proc is not None
        code = self.proc.wait()
        self._stderr_f.close()
        err = self._stderr_path.read_text(errors="replace")
        ex = Exit(None if killed else code, err, killed, time.monotonic() - self._started)
        self.history.note("kill" if killed else "exit", f"code={code} after {ex.seconds:.2f}s")
        if err.strip() and not killed:
            self.history.note("stderr", err.strip()[-300:])
        self.proc = None
        return ex

    def kill(self) -> Exit:
        """SIGKILL the worker (if still running) and reap it."""
        assert self.proc is not None
        killed = self.proc.poll() is None
        if killed:
            self.proc.send_signal(signal.SIGKILL)
        ex = self._finish(killed)
        self.snapshot_outputs()
        return ex

    def snapshot_outputs(self) -> None:
        """Remember what a reader of the output files sees now (no worker running)."""
        seen = {}
        for name in OUTPUT_FILES:
            path = self.out_dir / name
            seen[name] = path.read_bytes() if path.exists() else b""
        self.visible_after_kill.append(seen)

    def wait(self, timeout_s: float = 60.0) -> Exit:
        """Wait for the worker to exit; a watchdog SIGKILLs it after ``timeout_s`` (a hang)."""
        assert self.proc is not None
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.history.note("watchdog", f"no exit within {timeout_s:.0f}s: SIGKILL")
            self.proc.send_signal(signal.SIGKILL)
            ex = self._finish(True)
            raise AssertionError(
                f"the worker hung (no exit within {timeout_s:.0f}s)\n{self.history.dump()}\n"
                f"stderr:\n{ex.stderr[-2000:]}"
            ) from None
        return self._finish(False)

    def run(self, failpoints: str = "", timeout_s: float = 60.0, **kw: Any) -> Exit:
        """Start the worker and wait for it to exit."""
        self.start(failpoints, **kw)
        return self.wait(timeout_s)

    # -- observation -----------------------------------------------------------------
    def last_meta(self) -> CheckpointMeta | None:
        """The last committed checkpoint (``None`` if none or the log is not ready)."""
        if not log_is_ready(self.db):
            return None
        log = open_log(f"sqlite:///{self.db}")
        try:
            return read_last_meta(log, PIPELINE_NAME)
        finally:
            log.close()

    def wait_checkpoint(self, after_id: int, timeout_s: float = 30.0) -> int | None:
        """Wait until a checkpoint with id > ``after_id`` commits; ``None`` if the worker exits."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return None
            meta = self.last_meta()
            if meta is not None and meta.id > after_id:
                self.history.note("checkpoint", f"id={meta.id}")
                return meta.id
            time.sleep(0.02)
        raise AssertionError(
            f"no checkpoint after {after_id} within {timeout_s:.0f}s\n{self.history.dump()}"
        )

    def random_kills(self, n: int, rng: random.Random, *, max_delay_s: float = 2.0) -> int:
        """Kill the worker ``n`` times, each U(50 ms, max_delay_s) after a new checkpoint.

        Every third kill (once a checkpoint exists) is timed from the start of the process
        instead, so it often lands during start-up or recovery (a crash while recovering).

        Returns:
            how many kills landed while the worker was running (the rest found it
            finished: the workload was too short for them).
        """
        landed = 0
        last = 0
        for i in range(n):
            meta = self.last_meta()
            last = 0 if meta is None else meta.id
            t_start = time.monotonic()
            self.start()
            if meta is not None and i % 3 == 2:
                delay = rng.uniform(0.05, max_delay_s)
                self.history.note("sleep", f"{delay * 1000:.0f} ms after start before kill {i + 1}")
                time.sleep(delay)
                ex = self.kill()
                if ex.killed:
                    landed += 1
                    continue
                if ex.code != 0:
                    raise AssertionError(
                        f"worker failed: {ex.stderr[-2000:]}\n{self.history.dump()}"
                    )
                return landed
            got = self.wait_checkpoint(last)
            if got is None:
                self.history.note("finished", f"before kill {i + 1}")
                ex = self.kill()
                if ex.code != 0:
                    raise AssertionError(
                        f"worker failed: {ex.stderr[-2000:]}\n{self.history.dump()}"
                    )
                return landed
            if meta is not None:
                self.recovery_s.append(time.monotonic() - t_start)
            delay = rng.uniform(0.05, max_delay_s)
            self.history.note("sleep", f"{delay * 1000:.0f} ms before kill {i + 1}")
            time.sleep(delay)
            ex = self.kill()
            if ex.killed:
                landed += 1
            elif ex.code != 0:
                raise AssertionError(f"worker failed: {ex.stderr[-2000:]}\n{self.history.dump()}")
            else:
                return landed
        return landed
