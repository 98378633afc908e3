"""The typestate API is checked by mypy: .window() does not exist on an unkeyed stream."""

import subprocess
import sys
import textwrap
from pathlib import Path

GOOD = """
from datetime import timedelta
import eventspine as es

p = es.Pipeline("typed")
s = p.source("src", es.MemorySource([]))
w = s.key_by("k", "key").window(es.Tumbling(timedelta(seconds=1))).aggregate("n", n=es.count())
w.sink("out", es.CollectSink())
"""

BAD = """
from datetime import timedelta
import eventspine as es

p = es.Pipeline("typed")
s = p.source("src", es.MemorySource([]))
s.window(es.Tumbling(timedelta(seconds=1)))
"""


def _mypy(tmp_path: Path, code: str) -> subprocess.CompletedProcess[str]:
    f = tmp_path / "snippet.py"
    f.write_text(textwrap.dedent(code))
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--config-file",
            "/dev/null",
            str(f),
        ],
        capture_output=True,
        text=True,
        check=False,
    )


def test_window_on_keyed_stream_type_checks(tmp_path: Path) -> None:
    out = _mypy(tmp_path, GOOD)
    assert out.returncode == 0, out.stdout


def test_window_on_unkeyed_stream_does_not_type_check(tmp_path: Path) -> None:
    out = _mypy(tmp_path, BAD)
    assert out.returncode == 1
    assert '"Stream[Any]" has no attribute "window"' in out.stdout
