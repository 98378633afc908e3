"""The README's "Crash it and see" shell session runs and shows exactly-once."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_crash_it_and_see(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Crash it and see") :]
    (script,) = re.findall(r"```bash\n(.*?)```", section, re.S)[:1]
    script = script.replace("mkdir -p /tmp/crash && cd /tmp/crash", f"cd {tmp_path}")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    out = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=240, env=env, check=False
    )
    assert "identical: exactly-once" in out.stdout, out.stdout[-2000:] + out.stderr[-2000:]
    assert out.stdout.count("killed; committed so far") == 2
