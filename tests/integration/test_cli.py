"""The real ``eventspine`` console script, run as a subprocess on small pipeline files."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

EVENTSPINE = str(Path(sys.executable).parent / "eventspine")
PIPELINES = Path(__file__).parent / "pipelines"

pytestmark = pytest.mark.timeout(60)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


BAD_TARGETS = {
    "missing.py:p": ["the file 'missing.py' does not exist"],
    "no_such_pkg.mod:p": ["no module named 'no_such_pkg'"],
    "just-a-name": ["is not of the form path/to/file.py:attr or package.module:attr"],
    "{simple}:nope": ["has no attribute 'nope'", "build, pipeline"],
    "{simple}:not_a_pipeline": ["is an int (42)", "expected an es.Pipeline or a function"],
    "{simple}:needs_args": ["needs argument(s) x"],
    "{simple}:returns_wrong": ["returned an int (7); expected an es.Pipeline"],
    "{broken}:pipeline": ["raised KeyError: 'missing'", "broken_import.py:6"],
}
DEMO_EVENTS = 30_000
SIMPLE = f"{PIPELINES / 'simple.py'}:pipeline"
ENDLESS = f"{PIPELINES / 'endless.py'}:pipeline"


def _write_module(cwd: Path) -> None:
    pkg = cwd / "jobs"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "numbers.py").write_text(
        "import eventspine as es\n"
        "from eventspine.connectors.memory import MemorySource, CollectSink\n"
        "def make():\n"
        "    p = es.Pipeline('mod')\n"
        "    p.source('src', MemorySource([{'x': 1}, {'x': 2}])).sink('out', CollectSink())\n"
        "    return p\n"
    )


@pytest.fixture(scope="module")
def runs(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, tuple[subprocess.CompletedProcess[str], Path]]:
    """Every non-interactive invocation, run concurrently (each process mostly waits on imports)."""
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    commands: dict[str, tuple[list[str], dict[str, str]]] = {
        "version": (["--version"], {}),
        "pipeline": (["run", SIMPLE], {}),
        "build": (["run", f"{PIPELINES / 'simple.py'}:build"], {}),
        "quiet": (["run", SIMPLE, "--quiet"], {}),
        "module": (["run", "jobs.numbers:make"], {}),
        "debug": (["run", f"{PIPELINES / 'broken_import.py'}:pipeline", "--debug"], {}),
        "bogus": (["frobnicate"], {}),
        "bad_port": (["run", SIMPLE, "--metrics-port", "http"], {}),
        "bad_env": (["run", SIMPLE], {"EVENTSPINE_FLUSH_INTERVAL_MS": "soon"}),
        "port_in_use": (["run", SIMPLE, "--metrics-port", str(busy.getsockname()[1])], {}),
        "failing": (["run", f"{PIPELINES / 'failing.py'}:pipeline"], {}),
        "max_seconds": (["run", ENDLESS, "--max-seconds", "0.5"], {}),
        "progress": (["run", ENDLESS, "--max-seconds", "1.6", "--progress"], {}),
        "demo": (["demo", "--events", str(DEMO_EVENTS), "--out", "out"], {}),
    }
    for target in BAD_TARGETS:
        t = target.format(simple=PIPELINES / "simple.py", broken=PIPELINES / "broken_import.py")
        commands["bad:" + target] = (["run", t], {})

    def one(name: str) -> tuple[subprocess.CompletedProcess[str], Path]:
        args, env = commands[name]
        cwd = tmp_path_factory.mktemp(re.sub(r"\W", "_", name))
        if name == "module":
            _write_module(cwd)
        res = subprocess.run(
            [EVENTSPINE, *args],
            cwd=cwd,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=50,
            check=False,
        )
        return res, cwd

    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            return dict(zip(commands, pool.map(one, commands), strict=True))
    finally:
        busy.close()


def test_version(runs) -> None:
    from eventspine import __version__

    res, _ = runs["version"]
    assert res.returncode == 0
    assert res.stdout.strip() == f"eventspine {__version__}"


@pytest.mark.parametrize("attr", ["pipeline", "build"])
def test_run_file_target_writes_output_and_summary(runs, attr: str) -> None:
    res, cwd = runs[attr]
    assert res.returncode == 0, res.stderr
    rows = read_jsonl(cwd / "out.jsonl")
    assert rows == [{"n": i, "twice": 2 * i} for i in range(100)]
    assert re.search(
        r"finished: read 100 records, wrote 100, skipped 0, dead-lettered 0, late 0", res.stderr
    )
    assert "\r" not in res.stderr  # stderr is a pipe: no progress line unless asked


def test_quiet_prints_nothing(runs) -> None:
    res, cwd = runs["quiet"]
    assert res.returncode == 0
    assert res.stderr == ""
    assert len(read_jsonl(cwd / "out.jsonl")) == 100


def test_module_target_is_imported_from_the_working_directory(runs) -> None:
    res, _ = runs["module"]
    assert res.returncode == 0, res.stderr
    assert "read 2 records, wrote 2" in res.stderr


@pytest.mark.parametrize("target", list(BAD_TARGETS))
def test_bad_targets_exit_2_with_one_clear_error(runs, target: str) -> None:
    res, _ = runs["bad:" + target]
    assert res.returncode == 2
    assert res.stderr.startswith("error: ")
    assert res.stderr.count("\n") == 1  # one paragraph
    assert "Traceback" not in res.stderr
    for needle in BAD_TARGETS[target]:
        assert needle in res.stderr


def test_debug_adds_the_traceback(runs) -> None:
    res, _ = runs["debug"]
    assert res.returncode == 2
    assert "Traceback (most recent call last)" in res.stderr
    assert res.stderr.rstrip().splitlines()[-1].startswith("error: loading")


def test_usage_and_setting_errors_exit_2(runs) -> None:
    res, _ = runs["bogus"]
    assert res.returncode == 2
    assert "error: argument COMMAND: invalid choice: 'frobnicate'" in res.stderr
    res, _ = runs["bad_port"]
    assert res.returncode == 2
    assert "error: --metrics-port = 'http' is invalid; expected a TCP port number" in res.stderr
    res, _ = runs["bad_env"]
    assert res.returncode == 2
    assert "EVENTSPINE_FLUSH_INTERVAL_MS = 'soon' is invalid" in res.stderr
    res, _ = runs["port_in_use"]
    assert res.returncode == 2
    assert re.search(r"cannot serve metrics on 127\.0\.0\.1:\d+", res.stderr)


def test_failing_step_exits_1_naming_step_and_position(runs) -> None:
    res, _ = runs["failing"]
    assert res.returncode == 1
    assert res.stderr.startswith("error: step 'check_seven'")
    assert "ValueError: seven is not allowed" in res.stderr
    assert "numbers/0@7" in res.stderr
    assert "Traceback" not in res.stderr


def test_max_seconds_stops_with_exit_0(runs) -> None:
    res, cwd = runs["max_seconds"]
    assert res.returncode == 0, res.stderr
    assert "stopped after --max-seconds 0.5" in res.stderr
    assert len(read_jsonl(cwd / "out.jsonl")) > 0


def test_progress_line_when_forced(runs) -> None:
    res, _ = runs["progress"]
    assert res.returncode == 0
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("endless: read")]
    assert len(lines) >= 2
    assert re.fullmatch(
        r"endless: read [\d,]+ \| written [\d,]+ \| [\d,]+/s \| wm lag \S+ \| late 0 \| dead letters 0 \| \S+",
        lines[-1],
    )


def test_sigterm_stops_cleanly_with_exit_143(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [EVENTSPINE, "run", f"{PIPELINES / 'endless.py'}:pipeline", "--flush-interval-ms", "60000"],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out = tmp_path / "out.jsonl"
        deadline = time.monotonic() + 20
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.6)  # let it process some records (nothing is flushed before a minute)
        assert out.read_text() == ""
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert len(rows) > 100
    assert [r["n"] for r in rows] == list(range(len(rows)))  # flushed on close, nothing lost
    assert (tmp_path / "out.jsonl.closed").exists()
    assert f"stopped by SIGTERM: read {len(rows):,} records, wrote {len(rows):,}" in err


def scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_metrics_endpoint_serves_increasing_counters(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [EVENTSPINE, "run", f"{PIPELINES / 'endless.py'}:pipeline", "--metrics-port", str(port)],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        assert proc.stderr is not None
        assert proc.stderr.readline().strip() == f"metrics: {url}"
        first = scrape(url)
        time.sleep(0.6)
        second = scrape(url)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 143
    labels = '{pipeline="endless",step="%s"}'
    for name in (
        "eventspine_records_in_total",
        "eventspine_records_out_total",
        "eventspine_skipped_total",
        "eventspine_dead_letters_total",
        "eventspine_late_records_total",
        "eventspine_batches_total",
        "eventspine_state_keys",
        "eventspine_batch_latency_seconds_count",
        "eventspine_batch_size_count",
    ):
        for step in ("ticks", "tag", "out"):
            assert name + labels % step in second, name
    assert second[f"eventspine_watermark_ms{labels % 'out'}"] > 1.6e12
    assert 0 <= second[f"eventspine_watermark_lag_seconds{labels % 'out'}"] < 30
    assert (
        'eventspine_batch_latency_seconds_bucket{le="+Inf",pipeline="endless",step="out"}' in second
    )
    read = "eventspine_records_out_total" + labels % "ticks"
    written = "eventspine_records_in_total" + labels % "out"
    assert second[read] > first[read]
    assert second[written] > first[written]


def test_demo_computes_bars_vwap_and_spikes_from_the_generated_ticks(runs) -> None:
    from collections import defaultdict

    from eventspine.cli.demo import SEED, SPIKE_THRESHOLD, SYMBOLS
    from eventspine.connectors.generator import GeneratorSource
    from eventspine.dataflow.ports import OpenContext
    from eventspine.timeutil import SystemClock

    events = DEMO_EVENTS
    res, cwd = runs["demo"]
    assert res.returncode == 0, res.stderr
    assert f"demo: {events:,} ticks in, results in {cwd / 'out'}/" in res.stdout
    bars = read_jsonl(cwd / "out" / "bars_1s.jsonl")
    vwaps = read_jsonl(cwd / "out" / "vwap_10s.jsonl")
    spikes = read_jsonl(cwd / "out" / "spikes.jsonl")
    for name, rows in (("bars_1s", bars), ("vwap_10s", vwaps), ("spikes", spikes)):
        assert re.search(rf"{name}\.jsonl +{len(rows):,} rows", res.stdout)

    # The same ticks, read directly from the generator, and the expected results by hand.
    (reader,) = GeneratorSource("ticks", count=events, seed=SEED, keys=SYMBOLS).open(
        OpenContext("ticks", SystemClock())
    )
    ticks = []
    while (chunk := reader.poll(10_000, False)) is not None:
        ticks.extend(chunk.records)
    assert len(ticks) == events
    by_second = defaultdict(list)
    for t in ticks:
        by_second[(t["symbol"], t["ts"] // 1000 * 1000)].append(t)
    got = {(b["symbol"], b["window_start_ms"]): b for b in bars}
    assert set(got) == set(by_second)
    for key, ts in by_second.items():
        b = got[key]
        prices = [t["price"] for t in ts]
        assert (b["open"], b["high"], b["low"], b["close"]) == (
            prices[0],
            max(prices),
            min(prices),
            prices[-1],
        )
        assert b["volume"] == sum(t["size"] for t in ts)
        assert b["trades"] == len(ts)
        assert b["sector"] in {"tech", "energy", "finance", "health", "consumer", "industrial"}
    expected_windows = {(sym, sec + k * 1000) for sym, sec in by_second for k in range(1, 11)}
    assert {(v["symbol"], v["window_end_ms"]) for v in vwaps} == expected_windows
    for v in vwaps:
        assert v["window_end_ms"] - v["window_start_ms"] == 10_000
        seconds = range(v["window_start_ms"], v["window_end_ms"], 1000)
        inside = [t for sec in seconds for t in by_second.get((v["symbol"], sec), [])]
        expected = sum(t["price"] * t["size"] for t in inside) / sum(t["size"] for t in inside)
        assert v["vwap"] == pytest.approx(expected, abs=1e-6)
    for s in spikes:
        bar = got[(s["symbol"], s["window_start_ms"])]
        assert s["price"] in (bar["high"], bar["low"])
        assert abs(s["deviation_pct"]) > SPIKE_THRESHOLD * 100
        assert s["price"] / s["baseline"] - 1 == pytest.approx(s["deviation_pct"] / 100, abs=1e-4)
