"""The windowing guide's pictures are drawn from the engine's results, and still draw."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_window_pictures_draw(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("plots", ROOT / "docs" / "plots.py")
    assert spec is not None
    assert spec.loader is not None
    plots = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plots)
    # The tumbling picture shows what the engine computed: 4 s windows over the events.
    rows = plots.windows_of(plots.KINDS["tumbling"][1])
    assert [r["ids"] for r in rows] == [[0, 1, 2, 3, 4], [5, 6, 7], [8, 9, 10], [11]]
    paths = plots.main(tmp_path)
    assert [p.name for p in paths] == [f"windows-{k}.png" for k in plots.KINDS]
    assert all(p.stat().st_size > 5_000 for p in paths)
    committed = {p.name for p in (ROOT / "docs" / "img").glob("windows-*.png")}
    assert committed == {p.name for p in paths}
