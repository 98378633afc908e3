"""Every Python snippet in README.md and docs/*.md, and every example, runs.

Snippets of one document run in order in one namespace (so a later snippet
may use what an earlier one defined), in a fresh temporary directory.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
FENCE = re.compile(r"```python\n(.*?)```", re.S)


def snippets(path: Path) -> list[str]:
    return FENCE.findall(path.read_text())


@pytest.mark.parametrize("doc", [d for d in DOCS if snippets(d)], ids=lambda p: p.name)
def test_doc_snippets_run(doc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__snippet__"}
    for i, code in enumerate(snippets(doc)):
        try:
            exec(compile(code, f"{doc.name}[{i}]", "exec"), namespace)
        except Exception as exc:
            raise AssertionError(f"{doc.name} snippet {i} failed:\n{code}") from exc


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_examples_run(example: Path, tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(example)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
