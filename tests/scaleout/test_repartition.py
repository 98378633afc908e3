"""Automatic repartitioning: grouping by another key than the topic's gives exact results.

The pipeline (``tests/scaleout/rekey_pipeline.py``) reads clicks partitioned by
user and groups them by page, so a partitioned run re-keys them through the
internal topic ``__es.<app>.by_page.repartition``. Every test judges the
committed output against the oracle of one run: one running count per click
and page, one count per page and window, nothing late.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from eventspine.log import Log, open_log
from eventspine.log.base import LogRecord, TopicSpec
from eventspine.log.partitioner import key_bytes, partition_for
from eventspine.runtime.checkpoint import CheckpointPolicy
from eventspine.runtime.executor import RunOptions
from eventspine.runtime.worker import Worker

from .cluster import EVENTSPINE, ROOT, read_topic
from .rekey_pipeline import FLUSH, WINDOW_MS, expected_views, expected_windows, pipeline

T0 = 1_700_000_040_000  # a multiple of the window size
FLUSH_TS = T0 + 10 * 3_600_000


def make_clicks(log: Log, topic: str, *, clicks: int, partitions: int) -> list[dict[str, Any]]:
    """Append clicks partitioned by user, then one flush record per partition; return them."""
    log.create_topic(TopicSpec(topic, partitions))
    out = [{"user": f"u{i % 41}", "page": f"/p{i % 7}", "ts": T0 + i * 20} for i in range(clicks)]
    by_part: dict[int, list[LogRecord]] = {}
    for c in out:
        kb = key_bytes(c["user"])
        assert kb is not None
        by_part.setdefault(partition_for(kb, partitions), []).append(
            LogRecord(kb, json.dumps(c).encode(), c["ts"])
        )
    for p, recs in by_part.items():
        log.append(topic, p, recs)
    flush(log, topic, partitions, FLUSH_TS)
    return out


def flush(log: Log, topic: str, partitions: int, ts: int) -> None:
    """A record at ``ts`` in every partition: every writer's watermark passes ``ts``."""
    value = json.dumps({"user": FLUSH, "page": FLUSH, "ts": ts}).encode()
    for p in range(partitions):
        log.append(topic, p, [LogRecord(None, value, ts)])


def views_of(log: Log, topic: str) -> Counter[tuple[str, int]]:
    return Counter((r["page"], r["views"]) for r in read_topic(log, topic) if r["page"] != FLUSH)


def windows_of(log: Log, topic: str) -> Counter[tuple[str, int, int]]:
    return Counter(
        (r["page"], r["window_start_ms"], r["count"])
        for r in read_topic(log, f"{topic}.windows")
        if r["page"] != FLUSH
    )


def run_rounds(url: str, splits: int, done: Any, *, rounds: int = 12) -> None:
    """Run the workers of a static ``splits``-way split in turn until ``done()``."""
    options = RunOptions(
        log=url,
        max_wall=timedelta(seconds=1),
        handle_signals=False,
        checkpoint=CheckpointPolicy(interval=timedelta(milliseconds=100)),
    )
    for _ in range(rounds):
        for i in range(splits):
            Worker(pipeline(), options=options, worker=i, workers=splits).run()
        if done():
            return
    raise AssertionError(f"not done after {rounds} rounds of {splits} worker(s)")


def _use(monkeypatch: pytest.MonkeyPatch, app: str, src: str, out: str) -> None:
    monkeypatch.setenv("REKEY_APP", app)
    monkeypatch.setenv("REKEY_IN", src)
    monkeypatch.setenv("REKEY_OUT", out)


def _complete(log: Log, name: str, views: Counter[Any], windows: Counter[Any]) -> bool:
    out = f"views-{name}"
    return views_of(log, out) == views and windows_of(log, out) == windows


def test_grouping_by_another_key_equals_a_one_partition_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """4 partitions keyed by user, grouped by page: one count per page (and window) as with 1."""
    url = f"sqlite:///{tmp_path / 'log.db'}"
    log = open_log(url)
    try:
        results = {}
        for name, partitions, splits in (("one", 1, 1), ("four", 4, 1), ("split", 4, 2)):
            clicks = make_clicks(log, f"clicks-{name}", clicks=1500, partitions=partitions)
            _use(monkeypatch, f"app-{name}", f"clicks-{name}", f"views-{name}")
            want_views, want_windows = expected_views(clicks), expected_windows(clicks)

            run_rounds(url, splits, lambda: _complete(log, name, want_views, want_windows))  # noqa: B023
            assert not read_topic(log, f"views-{name}.late")
            results[name] = (views_of(log, f"views-{name}"), windows_of(log, f"views-{name}"))
        assert results["four"] == results["one"] == results["split"]
        topics = log.topics()
        assert topics["__es.app-four.by_page.repartition"].spec.partitions == 4
        assert "__es.app-one.by_page.repartition" not in topics  # one partition: no re-keying
    finally:
        log.close()


def test_windows_close_only_when_every_writer_passed_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writer 0 runs an hour ahead of writer 1: nothing of writer 1 is late downstream."""
    url = f"sqlite:///{tmp_path / 'log.db'}"
    log = open_log(url)
    _use(monkeypatch, "marks", "clicks", "views")
    try:
        log.create_topic(TopicSpec("clicks", 2))

        def append(p: int, times: range) -> list[dict[str, Any]]:
            rows = [{"user": f"w{p}", "page": f"/p{i % 5}", "ts": t} for i, t in enumerate(times)]
            log.append(
                "clicks", p, [LogRecord(None, json.dumps(r).encode(), r["ts"]) for r in rows]
            )
            return rows

        ahead = append(0, range(T0, T0 + 3_600_000, 1000))  # an hour of clicks
        behind = append(1, range(T0, T0 + 25_000, 500))  # 25 s of clicks
        # Writer 1's watermark is at T0 + 25 s: only the windows [T0, +10 s) and
        # [T0 + 10 s, +20 s) may close, although writer 0 is an hour ahead.
        early = expected_windows([c for c in ahead + behind if c["ts"] < T0 + 2 * WINDOW_MS])
        run_rounds(url, 1, lambda: windows_of(log, "views") == early, rounds=8)
        Worker(
            pipeline(),
            options=RunOptions(log=url, max_wall=timedelta(seconds=1.5), handle_signals=False),
        ).run()
        assert windows_of(log, "views") == early  # no later window closed
        # Writer 1 catches up (its clicks are behind writer 0's, not late), then both end.
        behind += append(1, range(T0 + 25_000, T0 + 3_600_000, 5000))
        flush(log, "clicks", 2, FLUSH_TS)
        everything = ahead + behind
        run_rounds(url, 1, lambda: windows_of(log, "views") == expected_windows(everything))
        assert views_of(log, "views") == expected_views(everything)
        assert read_topic(log, "views.late") == []
    finally:
        log.close()


def _start(url: str, env: dict[str, str], err: Path) -> subprocess.Popen[bytes]:
    with err.open("ab") as stderr:
        return subprocess.Popen(
            [
                EVENTSPINE,
                "run",
                "tests/scaleout/rekey_pipeline.py:pipeline",
                "--log-url",
                url,
                "--workers",
                "2",
                "--checkpoint-interval-ms",
                "200",
                "--quiet",
            ],
            cwd=ROOT,
            env={**os.environ, **env},
            stderr=stderr,
        )


def _children(err: Path) -> list[int]:
    """The pids of the workers the last ``eventspine run --workers 2`` started."""
    deadline = time.monotonic() + 30
    while "started 2 workers" not in err.read_text():
        assert time.monotonic() < deadline, err.read_text()
        time.sleep(0.05)
    line = err.read_text().rsplit("started 2 workers (pids ", 1)[1].split(")", 1)[0]
    return [int(pid) for pid in line.split(", ")]


def _kill9(proc: subprocess.Popen[bytes], err: Path) -> None:
    """kill -9 the parent and its workers (each runs in its own session)."""
    for pid in [proc.pid, *_children(err)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()


def _stop(proc: subprocess.Popen[bytes], err: Path) -> None:
    """SIGTERM the parent: it forwards it and exits when every worker has (kill -9 if not)."""
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(60)
    except subprocess.TimeoutExpired:
        _kill9(proc, err)
        raise
    assert code == 143, err.read_text()[-3000:]


def _wait(log: Log, out: str, clicks: list[dict[str, Any]], proc: Any, err: Path) -> None:
    want_views, want_windows = expected_views(clicks), expected_windows(clicks)
    deadline = time.monotonic() + 90
    while views_of(log, out) != want_views or windows_of(log, out) != want_windows:
        assert proc.poll() is None, err.read_text()
        got = views_of(log, out)
        assert not got - want_views, f"unexpected/duplicate: {list(got - want_views)[:5]}"
        assert time.monotonic() < deadline, err.read_text()[-3000:]
        time.sleep(0.3)
    time.sleep(1.0)  # a duplicate would show up late: give it time to be committed
    assert views_of(log, out) == want_views
    assert windows_of(log, out) == want_windows
    assert read_topic(log, f"{out}.late") == []


def test_kill9_of_two_workers_and_restart_gives_the_oracle(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    log = open_log(url)
    err = tmp_path / "workers.err"
    env = {"REKEY_IN": "clicks", "REKEY_OUT": "views", "REKEY_SLOW_MS": "2"}
    try:
        clicks = make_clicks(log, "clicks", clicks=3000, partitions=4)
        proc = _start(url, env, err)
        deadline = time.monotonic() + 60
        while sum(views_of(log, "views").values()) < 600:
            assert proc.poll() is None, err.read_text()
            assert time.monotonic() < deadline, err.read_text()
            time.sleep(0.1)
        _kill9(proc, err)
        assert sum(views_of(log, "views").values()) < 2500, "killed too late: slow it down"
        proc = _start(url, env, err)
        try:
            _wait(log, "views", clicks, proc, err)
        finally:
            _stop(proc, err)
    finally:
        log.close()


@pytest.mark.kafka
def test_two_kafka_workers_regroup_like_the_oracle(kafka_bootstrap: str, tmp_path: Path) -> None:
    url = f"kafka://{kafka_bootstrap}"
    log = open_log(url)
    tag = uuid.uuid4().hex[:8]
    err = tmp_path / "workers.err"
    env = {"REKEY_IN": f"clicks-{tag}", "REKEY_OUT": f"views-{tag}", "REKEY_APP": f"rekey-{tag}"}
    try:
        clicks = make_clicks(log, f"clicks-{tag}", clicks=2000, partitions=4)
        proc = _start(url, env, err)
        try:
            _wait(log, f"views-{tag}", clicks, proc, err)
        finally:
            _stop(proc, err)
        assert log.topics()[f"__es.rekey-{tag}.by_page.repartition"].spec.partitions == 4
    finally:
        log.close()
