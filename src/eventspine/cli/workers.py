"""``eventspine run --workers N``: start N worker processes and wait for them.

Each child is the same command line plus ``--worker-index I`` (hidden), so it
runs the tasks worker ``I`` of ``N`` owns (with ``--metrics-port P`` child ``I``
serves its metrics on port ``P + I``): on Kafka every child joins the
pipeline's consumer group (the group assigns the tasks), on the SQLite log the
split is static (task ``p`` runs in worker ``p % N``). The parent forwards
SIGINT/SIGTERM to every child, waits for all of them, and exits with the first
non-zero exit code (0 when all finished cleanly). A child that fails makes the
parent stop the others, so a half-running pipeline never goes unnoticed.

Children die with the parent: on Linux each asks the kernel for SIGTERM when its
parent exits (``PR_SET_PDEATHSIG``), so a ``kill -9`` of the parent stops the
workers (with a final checkpoint each, unless a forwarded signal already had them
stopping: a second SIGTERM stops at once) instead of leaving them running
beside the next ``eventspine run`` of the same pipeline, which on SQLite has no
fencing and would duplicate output.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import TextIO

from .run import Signals

__all__ = ["run_workers"]


def child_argv(args: list[str], index: int) -> list[str]:
    """The command line of worker ``index``: ours, plus its index; metrics port + index."""
    out = [sys.executable, "-m", "eventspine.cli.main"]
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--metrics-port" and i + 1 < len(args) and args[i + 1].isdigit():
            out += [arg, str(int(args[i + 1]) + index)]
            i += 2
            continue
        if arg.startswith("--metrics-port=") and arg.split("=", 1)[1].isdigit():
            out.append(f"--metrics-port={int(arg.split('=', 1)[1]) + index}")
        else:
            out.append(arg)
        i += 1
    return [*out, "--worker-index", str(index)]


_PR_SET_PDEATHSIG = 1


def _die_with(parent: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGTERM when ``parent`` exits (Linux)."""
    if not sys.platform.startswith("linux"):
        return None

    def arm() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the request took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return arm


class _Stopper:
    """Marks that a signal asked the workers to stop (the loop forwards it)."""

    def __init__(self) -> None:
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True


def run_workers(workers: int, signals: Signals, err: TextIO) -> int:
    """Run ``workers`` children of this command line; return the combined exit code."""
    stopper = _Stopper()
    signals.executor = stopper
    children: list[subprocess.Popen[bytes]] = []
    forwarded: int | None = None
    code = 0
    try:
        for i in range(workers):
            # Their own session: a terminal's Ctrl-C reaches only the parent, which forwards
            # it once (a second signal would make a child stop at once, without checkpoint).
            child = subprocess.Popen(  # noqa: S603
                child_argv(sys.argv[1:], i),
                start_new_session=True,
                preexec_fn=_die_with(os.getpid()),  # the parent runs no other thread
            )
            children.append(child)  # one by one: a signal meanwhile still stops those started
        pids = ", ".join(str(c.pid) for c in children)
        err.write(f"started {workers} workers (pids {pids})\n")
        err.flush()
        while any(c.poll() is None for c in children):
            if stopper.stopped and signals.received is not None and forwarded is None:
                forwarded = signals.received
                for c in children:
                    if c.poll() is None:
                        c.send_signal(forwarded)
            failed = [c.returncode for c in children if c.returncode not in (None, 0)]
            if failed and forwarded is None:
                code = _exit_code(failed[0])
                forwarded = signal.SIGTERM
                for c in children:
                    if c.poll() is None:
                        c.terminate()
            time.sleep(0.05)
    finally:
        signals.executor = None
        for c in children:
            if c.poll() is None:
                c.kill()
                c.wait()
    codes = [_exit_code(c.returncode) for c in children]
    return code or next((c for c in codes if c != 0), 0)


def _exit_code(returncode: int) -> int:
    """A child's exit code as a shell reports it (killed by signal N: 128 + N)."""
    return 128 - returncode if returncode < 0 else returncode
