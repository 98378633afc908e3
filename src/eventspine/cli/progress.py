r"""The live progress line and the end-of-run summary, both read from the :class:`Inspector`.

The progress line is redrawn in place (``\r``) about twice a second by a
daemon thread when stderr is a terminal; forced on a non-terminal
(``--progress``) each refresh is a new line. The thread only reads counters
(plain ints updated by the run loop), so it never slows the pipeline down
beyond the GIL switches of two short reads per second.
"""

from __future__ import annotations

import threading
import time
from typing import Any, TextIO

from eventspine.runtime.metrics import Inspector

__all__ = ["ProgressLine", "format_summary", "format_duration"]


class ProgressLine:
    """A background thread printing ``read/written/rate/lag/late/dead`` to ``stream``.

    In a partitioned run it also shows the consumer lag and the restores in progress
    when there are any (see :func:`worker_text`).

    Args:
        inspector: the running pipeline's metrics.
        stream: where to draw (stderr).
        interval: seconds between redraws.
        in_place: redraw over the same line (a terminal) instead of printing new lines.
    """

    def __init__(
        self, inspector: Inspector, stream: TextIO, *, interval: float = 0.5, in_place: bool
    ) -> None:
        self.inspector = inspector
        self.stream = stream
        self.interval = interval
        self.in_place = in_place
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="eventspine-progress", daemon=True)
        self._last_read = 0
        self._last_t = time.monotonic()
        self._drawn = False

    def start(self) -> None:
        """Start redrawing."""
        self._thread.start()

    def stop(self) -> None:
        """Stop redrawing and erase the line (idempotent)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        if self.in_place and self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.draw()

    def draw(self) -> None:
        """Write the current line once."""
        line = self.line()
        if self.in_place:
            self.stream.write("\r\x1b[K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self._drawn = True

    def line(self) -> str:
        """The progress text (also used by tests)."""
        totals = self.inspector.totals()
        now = time.monotonic()
        read = int(totals["read"])
        dt = now - self._last_t
        rate = (read - self._last_read) / dt if dt > 0 else 0.0
        self._last_read, self._last_t = read, now
        lag = watermark_lag_s(self.inspector)
        lag_text = "-" if lag is None else format_duration(lag)
        return (
            f"{self.inspector.pipeline}: read {read:,} | written {int(totals['written']):,} | "
            f"{rate:,.0f}/s | wm lag {lag_text} | {worker_text(self.inspector)}"
            f"late {int(totals['late']):,} | "
            f"dead letters {int(totals['dead_lettered']):,} | "
            f"{format_duration(totals['elapsed_s'])}"
        )


def worker_text(inspector: Inspector) -> str:
    """``lag 12,345 | restoring 2 tasks 45% | `` for a worker, each part only when non-zero.

    The lag is the consumer lag summed over the worker's source partitions (records
    not read yet); the percentage is the share of the running restores' changelogs
    replayed so far.
    """
    worker = inspector.worker
    if worker is None:
        return ""
    parts: list[str] = []
    lag = worker.total_lag()
    if lag:
        parts.append(f"lag {lag:,}")
    snap = worker.snapshot()
    fraction = snap.restore_fraction
    if fraction is not None:
        tasks = "task" if snap.restoring == 1 else "tasks"
        parts.append(f"restoring {snap.restoring} {tasks} {fraction:.0%}")
    return "".join(f"{part} | " for part in parts)


def watermark_lag_s(inspector: Inspector, now_s: float | None = None) -> float | None:
    """Wall clock minus the pipeline's output watermark (the smallest sink watermark).

    Returns ``None`` before any watermark exists (or after the input ended).
    """
    snap = inspector.snapshot()
    sinks = [
        s.watermark_ms for s in snap.values() if s.kind == "sink" and s.watermark_ms is not None
    ]
    marks = sinks or [s.watermark_ms for s in snap.values() if s.watermark_ms is not None]
    if not marks:
        return None
    now = time.time() if now_s is None else now_s
    return now - min(marks) / 1000


def format_duration(seconds: float) -> str:
    """``0.4s``, ``12.3s``, ``4.5m``, ``3.2h``, ``2.1d``: short and readable."""
    s = abs(seconds)
    sign = "-" if seconds < 0 else ""
    if s < 120:
        return f"{sign}{s:.1f}s"
    if s < 7200:
        return f"{sign}{s / 60:.1f}m"
    if s < 172_800:
        return f"{sign}{s / 3600:.1f}h"
    return f"{sign}{s / 86_400:.1f}d"


def format_summary(totals: dict[str, Any], *, how: str) -> str:
    """The end-of-run summary, e.g. ``finished: read 1,000 records, wrote 10, ... (5,000/s)``."""
    elapsed = float(totals["elapsed_s"])
    read = int(totals["read"])
    rate = read / elapsed if elapsed > 0 else 0.0
    return (
        f"{how}: read {read:,} records, wrote {int(totals['written']):,}, "
        f"skipped {int(totals['skipped']):,}, dead-lettered {int(totals['dead_lettered']):,}, "
        f"late {int(totals['late']):,} in {format_duration(elapsed)} ({rate:,.0f} records/s)"
    )
