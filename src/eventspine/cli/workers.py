"""``eventspine run --workers N``: start N worker processes and wait for them.

Each child is the same command line plus ``--worker-index I`` (hidden), so it
runs the tasks worker ``I`` of ``N`` owns (with ``--metrics-port P`` child ``I``
serves its metrics on port ``P + I``): on Kafka every child joins the
pipeline's consumer group (the group assigns the tasks), on the SQLite log the
split is static (task ``p`` runs in worker ``p % N``). The parent forwards
SIGINT/SIGTERM to every child, waits for all of them, and exits with the first
non-zero exit code (0 when all finished cleanly). A child that fails makes the
parent stop the others, so a half-running pipeline never goes unnoticed.

**Start-up.** On Linux, when this process runs no other thread, each child is
forked from it once the command line is parsed and eventspine is imported, and
runs ``main`` on its own command line: a second worker then adds little to the
start-up (a fresh interpreter would import everything again, about 0.3 s of
the run). Elsewhere, or with another thread running (``main`` called inside a
threaded program), each child is a fresh ``python -m eventspine.cli.main``.
Either way the pipeline module is loaded in the child. A forked child behaves
as the fresh one would: SIGINT/SIGTERM are held across the fork and reach the
default handlers (never the parent's), the parent's exit hooks are dropped,
``sys.exit`` in user code gives its code, and on the way out the child waits
for its non-daemon threads and runs its exit hooks before ``os._exit``.

Children die with the parent: on Linux each asks the kernel for SIGTERM when its
parent exits (``PR_SET_PDEATHSIG``), so a ``kill -9`` of the parent stops the
workers (with a final checkpoint each, unless a forwarded signal already had them
stopping: a second SIGTERM stops at once) instead of leaving them running
beside the next ``eventspine run`` of the same pipeline, which on SQLite has no
fencing and would duplicate output.
"""

from __future__ import annotations

import atexit
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from contextlib import suppress
from typing import Protocol, TextIO

from .run import Signals

__all__ = ["run_workers"]


def child_argv(args: list[str], index: int) -> list[str]:
    """The command line of worker ``index``: ours, plus its index; metrics port + index."""
    return [sys.executable, "-m", "eventspine.cli.main", *child_args(args, index)]


def child_args(args: list[str], index: int) -> list[str]:
    """The arguments of worker ``index`` (without the program): see :func:`child_argv`."""
    out: list[str] = []
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


class Child(Protocol):
    """What the parent needs of a worker process (``subprocess.Popen`` has it)."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    def poll(self) -> int | None: ...

    def send_signal(self, sig: int) -> None: ...

    def terminate(self) -> None: ...

    def kill(self) -> None: ...

    def wait(self, timeout: float | None = None) -> int: ...


class _Forked:
    """A worker forked from this process, with the part of ``Popen``'s interface we use."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped by someone else: its code is lost (as Popen)
                self.returncode = 0
            else:
                if pid == self.pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        # Only poll() reaps the child, so until it has seen the exit the pid is still ours
        # (a zombie at worst, which ignores the signal).
        if self.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout or 0.0)
            time.sleep(0.01)
        return code


_STOPS = {signal.SIGINT, signal.SIGTERM}


def _can_fork() -> bool:
    """Fork only on Linux, and only while this process runs no other (Python) thread."""
    return sys.platform.startswith("linux") and threading.active_count() == 1


def _start(args: list[str], index: int) -> Child:
    """Start worker ``index``: forked when :func:`_can_fork`, else a fresh interpreter."""
    parent = os.getpid()
    if not _can_fork():
        # Their own session: a terminal's Ctrl-C reaches only the parent, which forwards
        # it once (a second signal would make a child stop at once, without checkpoint).
        return subprocess.Popen(  # noqa: S603
            child_argv(args, index),
            start_new_session=True,
            preexec_fn=_die_with(parent),  # the parent runs no other thread
        )
    for stream in (sys.stdout, sys.stderr):  # else the child would print it again
        stream.flush()
    # Until the child has put back the default handlers, a signal would reach the
    # parent's handler (in the child) and be lost: hold SIGINT/SIGTERM across the fork.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, _STOPS)
    pid = os.fork()
    if pid:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        return _Forked(pid)
    code = 1
    try:
        code = _run_forked(child_args(args, index), parent, mask)
    finally:
        os._exit(code)  # never unwind into the parent's frames (they would stop siblings)


def _run_forked(args: list[str], parent: int, mask: Iterable[int]) -> int:
    """The forked child: as a fresh ``python -m eventspine.cli.main ARGS`` would run."""
    code = 1
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a pending signal lands here
        atexit._clear()  # the parent's exit hooks are the parent's
        atexit.register(logging.shutdown)  # as importing logging registers it
        os.setsid()
        arm = _die_with(parent)
        if arm is not None:
            arm()
        from .main import main  # imported already (it called us): no import cycle at load

        sys.argv = [sys.argv[0], *args]
        code = main(args)
    except SystemExit as exc:  # sys.exit() in the user's code: what the interpreter does
        code = _system_exit_code(exc)
    except KeyboardInterrupt:  # SIGINT before main's handlers (a fresh one would die of it)
        code = 130
    except BaseException:  # the child must reach os._exit, whatever happened
        with suppress(BaseException):
            traceback.print_exc()
    finally:
        # What a fresh interpreter does on its way out, which os._exit skips: wait for
        # the non-daemon threads, run the exit hooks, flush the standard streams.
        with suppress(BaseException):
            threading._shutdown()  # type: ignore[attr-defined]
        with suppress(BaseException):
            atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            with suppress(BaseException):
                stream.flush()
    return code


def _system_exit_code(exc: SystemExit) -> int:
    """The exit code the interpreter gives ``SystemExit(code)`` (printing a message)."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code & 0xFF
    with suppress(BaseException):
        sys.stderr.write(f"{exc.code}\n")
    return 1


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
    children: list[Child] = []
    forwarded: int | None = None
    code = 0
    try:
        for i in range(workers):
            # One by one: a signal meanwhile still stops those started.
            children.append(_start(sys.argv[1:], i))  # noqa: PERF401
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
    codes = [_exit_code(c.wait()) for c in children]  # all have exited
    return code or next((c for c in codes if c != 0), 0)


def _exit_code(returncode: int) -> int:
    """A child's exit code as a shell reports it (killed by signal N: 128 + N)."""
    return 128 - returncode if returncode < 0 else returncode
