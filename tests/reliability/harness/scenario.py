"""One reliability scenario: a workload, its oracle, a supervisor, and the final verification."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .logview import LogView, integrity_check
from .oracle import Expected, expected
from .supervisor import OUTPUT_FILES, History, Supervisor
from .verify import Report, verify_run
from .workload import Workload, generate

__all__ = ["Case", "make_case"]


@dataclass
class Case:
    """Everything a test needs: the seed's RNG, workload, oracle, supervisor and history."""

    seed: int
    rng: random.Random
    workload: Workload
    expected: Expected
    sup: Supervisor
    history: History

    def verify(self, *, report: Report | None = None, check_prefixes: bool = True) -> Report:
        """Verify the finished run: outputs, state, positions, prefixes, integrity."""
        rep = report if report is not None else Report()
        view = LogView(self.sup.db)
        verify_run(
            self.sup.out_dir,
            self.expected,
            report=rep,
            state=view.state,
            topic_records=view.topic_records if view.has_topic else None,
            input_lines={
                f"input/{f.name}": len(ls)
                for f, ls in zip(self.workload.files, self.workload.lines, strict=True)
            },
            positions=view.positions(),
        )
        if check_prefixes:
            final = {
                n: (self.sup.out_dir / n).read_bytes() if (self.sup.out_dir / n).exists() else b""
                for n in OUTPUT_FILES
            }
            for i, seen in enumerate(self.sup.visible_after_kill):
                for name, data in seen.items():
                    if not final[name].startswith(data):
                        rep.add(
                            "aborted-read",
                            f"{name} after kill {i + 1} ({len(data)} bytes) is not a prefix of "
                            f"the final file ({len(final[name])} bytes)",
                        )
        ic = integrity_check(self.sup.db)
        self.history.note("integrity", ic)
        assert ic == "ok", f"integrity_check: {ic}\n{self.history.dump()}"
        self.history.note("verified", str(rep).splitlines()[0])
        return rep

    def fail_message(self, what: str, rep: Report | None = None) -> str:
        """A failure message with the seed, the anomalies and the history."""
        return f"{what} (seed={self.seed})\n{rep if rep is not None else ''}\n{self.history.dump()}"


def make_case(
    tmp: Path,
    seed: int,
    *,
    keys: int = 50,
    seqs: int = 200,
    poison_rate: float = 0.0,
    env: dict[str, str] | None = None,
    checkpoint_ms: int = 100,
    hits_log: Path | None = None,
    window_ms: int = 10_000,
    windows: bool | None = None,
    **kw: Any,
) -> Case:
    """Generate the workload under ``tmp/in`` and build the case.

    ``windows=False`` (default: ``RELIABILITY_NO_WINDOWS`` unset) drops the window step
    from the pipeline and the oracle.
    """
    if windows is None:
        windows = os.environ.get("RELIABILITY_NO_WINDOWS", "") != "1"
    env = dict(env or {})
    if not windows:
        env["ES_REL_NO_WINDOW"] = "1"
    wl = generate(tmp / "in", seed=seed, keys=keys, seqs=seqs, poison_rate=poison_rate, **kw)
    hist = History(seed)
    hist.note("workload", f"K={keys} S={seqs} lines={wl.fate_counts()}")
    sup = Supervisor(tmp, hist, env=env, checkpoint_ms=checkpoint_ms, hits_log=hits_log)
    exp = expected(wl, window_ms)
    if not windows:
        exp.windows.clear()
        hist.note("no-windows", "the window step is left out (RELIABILITY_NO_WINDOWS=1)")
    return Case(seed, random.Random(seed), wl, exp, sup, hist)
