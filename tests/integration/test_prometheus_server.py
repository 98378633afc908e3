"""A real Prometheus server scrapes a real ``eventspine run`` worker; its API has the series.

The server binary comes from Debian's ``prometheus`` package: fetched on first use
with ``apt-get download`` and unpacked with ``dpkg-deb`` (no root needed) into the
git-ignored ``.cache/prometheus/``, then reused. Without apt (not Debian, or no
package index), the test is skipped. The server listens on loopback only, scrapes
the worker every second, and is stopped at the end of the test.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eventspine.log import open_log
from scaleout.cluster import EVENTSPINE, ROOT, make_input

pytestmark = pytest.mark.timeout(180)

CACHE = ROOT / ".cache" / "prometheus"
BINARY = CACHE / "prometheus"


def prometheus_binary() -> Path:
    """The cached server binary; fetch it from Debian's package on first use (or skip)."""
    if BINARY.exists():
        return BINARY
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        pytest.skip("no apt-get/dpkg-deb to fetch Debian's prometheus package")
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        got = subprocess.run(
            ["apt-get", "download", "prometheus"],  # apt-get from PATH
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        debs = list(Path(tmp).glob("prometheus_*.deb"))
        if got.returncode != 0 or not debs:
            pytest.skip(f"cannot download Debian's prometheus package: {got.stderr[-500:]}")
        subprocess.run(
            ["dpkg-deb", "-x", str(debs[0]), str(Path(tmp) / "x")],
            check=True,
            timeout=120,
        )
        part = CACHE / "prometheus.part"
        shutil.copy2(Path(tmp) / "x" / "usr" / "bin" / "prometheus", part)
        part.chmod(0o755)
        part.replace(BINARY)  # atomic: a concurrent run never sees half a binary
    return BINARY


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"{what} exited with {proc.returncode}"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        assert time.monotonic() < deadline, f"{what} does not listen on {port}"
        time.sleep(0.1)


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[int]:
    """A worker of the scale-out pipeline on an SQLite log; yields its metrics port."""
    url = f"sqlite:///{tmp_path / 'log.db'}"
    log = open_log(url)
    try:
        make_input(log, "orders", records=2000, keys=20, partitions=2)
    finally:
        log.close()
    port = free_port()
    env = {**os.environ, "SCALE_IN": "orders", "SCALE_OUT": "stats", "SCALE_APP": "prom"}
    with (tmp_path / "worker.err").open("wb") as err:
        proc = subprocess.Popen(
            [
                *(EVENTSPINE, "run", "tests/scaleout/pipeline.py:pipeline", "--log-url", url),
                *("--metrics-port", str(port), "--checkpoint-interval-ms", "200", "--quiet"),
            ],
            cwd=ROOT,
            env=env,
            stderr=err,
        )
    try:
        wait_port(port, proc, "the worker")
        yield port
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 143, (tmp_path / "worker.err").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture
def prometheus(tmp_path: Path, worker: int) -> Iterator[str]:
    """A Prometheus server scraping ``worker`` every second; yields its API address."""
    binary = prometheus_binary()
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: eventspine\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{worker}']\n"
    )
    with (tmp_path / "prometheus.err").open("wb") as err:
        proc = subprocess.Popen(
            [
                str(binary),
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            cwd=tmp_path,
            stderr=err,
        )
    try:
        wait_port(port, proc, "prometheus")
        api = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while not ready(api):  # it listens before its storage is open (503 until then)
            assert proc.poll() is None, (tmp_path / "prometheus.err").read_text()[-3000:]
            assert time.monotonic() < deadline, (tmp_path / "prometheus.err").read_text()[-3000:]
            time.sleep(0.2)
        yield api
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def ready(api: str) -> bool:
    """Whether the server answers ``/-/ready`` with 200."""
    try:
        with urllib.request.urlopen(f"{api}/-/ready", timeout=5) as resp:
            return bool(resp.status == 200)
    except OSError:  # refused, or HTTPError 503 while starting
        return False


def query(api: str, promql: str) -> list[dict[str, Any]]:
    """The result vector of an instant query."""
    url = f"{api}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=10) as resp:  # our loopback server
        body = json.loads(resp.read())
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def test_prometheus_scrapes_the_worker_series(prometheus: str) -> None:
    checks = {
        'up{job="eventspine"}': lambda v: v == [1.0],
        "sum(eventspine_tasks_owned)": lambda v: v == [2.0],
        "eventspine_consumer_lag_records": lambda v: len(v) == 2 and v == [0.0, 0.0],
        "eventspine_checkpoints_total": lambda v: len(v) == 1 and v[0] > 0,
        "eventspine_restores_total": lambda v: v == [2.0],
        'eventspine_rebalance_tasks_total{event="assign"}': lambda v: v == [2.0],
        'eventspine_state_keys{step="stats"}': lambda v: v == [20.0],
    }
    deadline = time.monotonic() + 90
    values: dict[str, list[float]] = {}
    while True:
        values = {
            q: [float(r["value"][1]) for r in sorted(query(prometheus, q), key=str)] for q in checks
        }
        if all(check(values[q]) for q, check in checks.items()):
            break
        assert time.monotonic() < deadline, values
        time.sleep(1)
    lag = query(prometheus, "eventspine_consumer_lag_records")
    assert {(r["metric"]["topic"], r["metric"]["partition"]) for r in lag} == {
        ("orders", "0"),
        ("orders", "1"),
    }
    assert {r["metric"]["pipeline"] for r in lag} == {"prom"}
