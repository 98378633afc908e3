"""Draw the windowing guide's pictures from eventspine's own results.

Each picture runs a real pipeline over the same few events and draws which
events each window collected, so the pictures cannot drift from the engine.

    python docs/plots.py [OUT_DIR]      (default: docs/img)
"""

import sys
from datetime import timedelta
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

import eventspine as es

# One key, twelve events (event time in seconds); 5.5 s and 6.0 s are a burst,
# then a 4 s silence splits sessions.
TIMES = [0.4, 1.1, 1.7, 2.2, 3.6, 5.5, 6.0, 6.3, 10.2, 10.9, 11.5, 13.8]
EVENTS = [{"k": "a", "id": i, "ts": int(t * 1000)} for i, t in enumerate(TIMES)]

KINDS = {
    "tumbling": ("Tumbling(size=4 s)", es.Tumbling(timedelta(seconds=4))),
    "hopping": (
        "Hopping(size=4 s, hop=2 s)",
        es.Hopping(timedelta(seconds=4), timedelta(seconds=2)),
    ),
    "sliding": ("Sliding(size=3 s): one window per event", es.Sliding(timedelta(seconds=3))),
    "session": ("Session(gap=2 s)", es.Session(timedelta(seconds=2))),
    "count": ("Count(size=3)", es.Count(3)),
}


def windows_of(kind: object) -> list[dict[str, object]]:
    """Run a pipeline collecting the event ids of every window."""
    p = es.Pipeline("plot")
    (
        p.source("events", es.MemorySource(EVENTS), timestamps=es.EventTime("ts"))
        .key_by("by_k", "k")
        .window(kind)  # type: ignore[arg-type]
        .aggregate("w", ids=es.collect("id"))
        .sink("out", es.CollectSink())
    )
    return es.testing.run(p)["out"]


def draw(name: str, title: str, rows: list[dict[str, object]], out: Path) -> Path:
    """Draw events as dots on a time line and each window as a bar with its events."""
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.3))
    ax.scatter(TIMES, [0] * len(TIMES), color="black", zorder=3, s=18)
    for i, t in enumerate(TIMES):
        ax.annotate(
            str(i), (t, 0), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7
        )
    for level, row in enumerate(rows, start=1):
        start = int(row["window_start_ms"]) / 1000  # type: ignore[call-overload]
        end = int(row["window_end_ms"]) / 1000  # type: ignore[call-overload]
        ids = list(row["ids"])  # type: ignore[call-overload]
        ax.barh(-level, end - start, left=start, height=0.6, color="#9ecae1", edgecolor="#3182bd")
        ax.scatter([TIMES[j] for j in ids], [-level] * len(ids), color="#08519c", s=12, zorder=3)
        ax.text(end + 0.1, -level, ",".join(map(str, ids)), va="center", fontsize=7)
    ax.set_yticks([])
    ax.set_xlabel("event time (s)")
    ax.set_xlim(-0.2, 16)
    ax.set_title(f"es.{title}", fontsize=10, loc="left")
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    path = out / f"windows-{name}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(out: Path) -> list[Path]:
    """Draw every picture into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    return [draw(name, title, windows_of(kind), out) for name, (title, kind) in KINDS.items()]


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "img"
    for p in main(target):
        print(p)
