"""How ``eventspine run --workers N`` starts its children (cli/workers.py).

On Linux a child is forked from the command; it must behave as the fresh
``python -m eventspine.cli.main`` it replaces (the fallback, tested here
too). The runs themselves are tested in ``tests/scaleout/test_sqlite_workers.py``
and ``tests/integration/test_worker_metrics_cli.py``.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from eventspine.cli.workers import child_args, child_argv

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="workers are forked on Linux only"
)


def test_each_child_gets_its_index_and_its_own_metrics_port() -> None:
    args = ["run", "p.py:x", "--metrics-port", "9100", "--workers", "2"]
    assert child_args(args, 1) == [
        "run",
        "p.py:x",
        "--metrics-port",
        "9101",
        "--workers",
        "2",
        "--worker-index",
        "1",
    ]
    assert child_args(["run", "p.py:x", "--metrics-port=9100"], 2)[2] == "--metrics-port=9102"
    assert child_argv(["run", "p.py:x"], 0)[:3] == [sys.executable, "-m", "eventspine.cli.main"]


# The parent: like run_workers, with the command's signal handlers installed; it
# prints (unflushed) and registers an exit hook before it starts the child.
_PARENT = textwrap.dedent(
    """
    import atexit, os, signal, sys, threading, time
    from eventspine.cli.run import Signals
    from eventspine.cli.workers import _Stopper, _start

    mode, target = sys.argv[1], sys.argv[2]
    stop = threading.Event()
    if mode == "threaded":
        threading.Thread(target=stop.wait).start()
    if mode == "signal":  # the child is slow to put its own handlers in place
        real = os.setsid
        os.setsid = lambda: (time.sleep(0.5), real())[1]
    atexit.register(print, "parent hook", flush=True)
    print("parent output", end="")  # still buffered at the fork
    signals = Signals()
    signals.executor = _Stopper()
    with signals.installed():
        child = _start(["run", target], 0)
        if mode == "signal":
            os.kill(child.pid, signal.SIGTERM)
        code = child.wait()
    stop.set()
    print("", type(child).__name__, code, flush=True)
    """
)


def _parent(mode: str, target: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _PARENT, mode, target],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("mode", "how"),
    [pytest.param("alone", "_Forked", marks=linux_only), ("threaded", "Popen")],
    ids=["fork", "spawn"],
)
def test_a_child_runs_main_on_its_command_line_and_reports_its_code(mode: str, how: str) -> None:
    """Forked when the parent runs no other thread (Linux), else a fresh interpreter."""
    done = _parent(mode, "no_such_module_here:pipeline")  # main's usage error: exit code 2
    assert done.returncode == 0, done.stderr
    # The parent's buffered output and its exit hook, once each: not again from the child.
    assert done.stdout.split() == ["parent", "output", how, "2", "parent", "hook"], done.stderr
    assert done.stderr.count("error:") == 1, done.stderr
    assert "no_such_module_here" in done.stderr


_EXITING = """
import atexit, pathlib, sys, threading, time
here = pathlib.Path(__file__).parent
atexit.register((here / "hook").write_text, "ran")
def late():
    time.sleep(0.3)
    (here / "thread").write_text("done")
threading.Thread(target=late).start()  # not a daemon: the interpreter waits for it
sys.exit(3)
"""


@pytest.mark.parametrize("mode", [pytest.param("alone", marks=linux_only), "threaded"])
def test_a_child_exits_as_an_interpreter_does(tmp_path: Path, mode: str) -> None:
    """sys.exit(3) in the user's module; its thread finishes, its exit hook runs."""
    module = tmp_path / "exiting.py"
    module.write_text(_EXITING)
    done = _parent(mode, f"{module}:pipeline")
    assert done.stdout.split()[-3:-2] == ["3"], done.stderr
    assert (tmp_path / "thread").read_text() == "done"
    assert (tmp_path / "hook").read_text() == "ran"


@linux_only
def test_a_signal_at_the_fork_stops_the_child(tmp_path: Path) -> None:
    """Sent before the child has its own handlers, it must not reach the parent's copy."""
    module = tmp_path / "slow.py"
    module.write_text("import time\ntime.sleep(5)\npipeline = 42\n")
    done = _parent("signal", f"{module}:pipeline")
    assert done.stdout.split()[-4:-2] == ["_Forked", "-15"], done.stderr
