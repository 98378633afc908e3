"""How ``eventspine run --workers N`` starts its children (cli/workers.py).

The runs themselves are tested in ``tests/scaleout/test_sqlite_workers.py``
and ``tests/integration/test_worker_metrics_cli.py``.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from eventspine.cli.workers import child_args, child_argv


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


_START = textwrap.dedent(
    """
    import sys, threading
    from eventspine.cli.workers import _start

    stop = threading.Event()
    if sys.argv[1] == "threaded":
        threading.Thread(target=stop.wait).start()
    child = _start(["run", sys.argv[2]], 0)
    code = child.wait()
    stop.set()
    print(type(child).__name__, code, flush=True)
    """
)


@pytest.mark.parametrize(
    ("parent", "how"), [("alone", "_Forked"), ("threaded", "Popen")], ids=["fork", "spawn"]
)
def test_a_child_runs_main_on_its_command_line_and_reports_its_code(parent: str, how: str) -> None:
    """Forked when the parent runs no other thread (Linux), else a fresh interpreter."""
    if how == "_Forked" and not sys.platform.startswith("linux"):
        pytest.skip("workers are forked on Linux only")
    done = subprocess.run(  # a target that does not exist: main's usage error, exit code 2
        [sys.executable, "-c", _START, parent, "no_such_module_here:pipeline"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [how, "2"], done.stderr
    # The child's own error, once (a fork must not print the parent's buffered output).
    assert done.stderr.count("error:") == 1, done.stderr
    assert "no_such_module_here" in done.stderr


def test_a_forked_child_runs_the_exit_hooks_of_its_modules(tmp_path: Path) -> None:
    """Like a fresh interpreter on its way out, though a fork leaves by ``os._exit``."""
    if not sys.platform.startswith("linux"):
        pytest.skip("workers are forked on Linux only")
    marker = tmp_path / "exited"
    module = tmp_path / "hooked.py"
    module.write_text(
        f"import atexit, pathlib\n"
        f"atexit.register(pathlib.Path({str(marker)!r}).write_text, 'yes')\n"
        f"pipeline = 42  # not a pipeline: the child fails with a usage error\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", _START, "alone", f"{module}:pipeline"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.stdout.split() == ["_Forked", "2"], done.stderr
    assert marker.read_text() == "yes"
