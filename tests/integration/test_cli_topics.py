"""The log verbs of the real ``eventspine`` command on a temporary SQLite log."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import pytest

EVENTSPINE = str(Path(sys.executable).parent / "eventspine")

pytestmark = pytest.mark.timeout(60)

PIPELINE = """
from datetime import timedelta

import eventspine as es
from eventspine.connectors.topics import topic


class Order(es.Event):
    id: int
    sym: str
    ts: int = 0


pipeline = es.Pipeline("orders_copy")
(
    pipeline.source(
        "read", topic("orders", Order, ts_field="ts"), on_error=es.DeadLetter("dlq")
    )
    .map("tag", lambda o: {"id": o.id, "sym": o.sym, "copied": True})
    .sink("out", topic("copies", key="sym"))
)
"""


class Cli:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.url = f"sqlite://{tmp}/log.db"

    def __call__(
        self, *args: str, stdin: str | None = None, code: int = 0
    ) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            [EVENTSPINE, *args, "--log", self.url],
            input=stdin,
            capture_output=True,
            text=True,
            cwd=self.tmp,
            timeout=30,
            check=False,
        )
        assert res.returncode == code, (res.returncode, res.stdout, res.stderr)
        return res

    def json_lines(self, *args: str) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self(*args).stdout.splitlines()]


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


def test_create_list_describe(cli: Cli) -> None:
    res = cli("topics", "create", "orders", "--partitions", "3", "--retention", "12h")
    assert "topic 'orders' created" in res.stdout
    assert "3 partitions, not compacted, retention 12h" in res.stdout
    assert "exists already" in cli("topics", "create", "orders", "--partitions", "3",
                                   "--retention", "12h").stdout  # fmt: skip
    cli("topics", "create", "state", "--compacted")
    (orders, state) = cli.json_lines("topics", "list", "--json")
    assert (orders["name"], orders["partitions"], orders["retention_ms"]) == (
        "orders",
        3,
        12 * 3_600_000,
    )
    assert (state["name"], state["compacted"], state["records"]) == ("state", True, 0)
    table = cli("topics", "list").stdout.splitlines()
    assert table[0].split() == ["TOPIC", "PARTITIONS", "COMPACTED", "RETENTION", "RECORDS"]
    assert table[1].split() == ["orders", "3", "no", "12h", "0"]
    (doc,) = cli.json_lines("topics", "describe", "orders", "--json")
    assert doc["partition_offsets"] == [
        {"partition": p, "log_start": 0, "end": 0} for p in range(3)
    ]
    assert doc["committed"] == {}
    assert "PARTITION  LOG_START  END  RECORDS" in cli("topics", "describe", "orders").stdout


ERRORS = [
    (("topics", "create", "orders", "--partitions", "2"), 1, "partitions=3 (requested 2)"),
    (("topics", "create", "x", "--retention", "7y"), 2, "--retention '7y' is invalid"),
    (("topics", "describe", "nope"), 1, "`eventspine topics create nope"),
    (("produce", "orders", "--file", "missing.jsonl"), 2, "cannot be opened"),
    (("tail", "orders", "--max", "0"), 2, "--max 0 is invalid"),
    (("topics", "delete", "orders"), 2, "choose from 'create', 'list', 'describe'"),
    (("state", "show", "nope"), 1, "pipeline 'nope' has no state"),
]


def test_errors_exit_2_for_usage_1_for_the_log(cli: Cli) -> None:
    cli("topics", "create", "orders", "--partitions", "3")
    for args, code, message in ERRORS:
        res = cli(*args, code=code)
        assert res.stderr.startswith("error: ")
        assert message in res.stderr, (args, res.stderr)


def test_produce_in_transactions_of_1000_and_tail(cli: Cli) -> None:
    cli("topics", "create", "orders", "--partitions", "2")
    lines = [json.dumps({"id": i, "sym": f"S{i % 5}", "at": 1000 + i}) for i in range(2500)]
    (cli.tmp / "in.jsonl").write_text("\n".join(lines) + "\n\n")
    res = cli("produce", "orders", "--key-field", "sym", "--ts-field", "at", "--file", "in.jsonl")
    assert res.stdout == "appended 2500 records to 'orders'\n"
    records = cli.json_lines("tail", "orders", "--from-beginning")
    assert len(records) == 2500
    for r in records:
        assert r["partition"] == zlib.crc32(r["key"].encode()) % 2
        assert r["value"]["sym"] == r["key"]
        assert r["ts"] == r["value"]["at"]
    by_part = [[r["value"]["id"] for r in records if r["partition"] == p] for p in (0, 1)]
    assert all(ids == sorted(ids) for ids in by_part)
    assert [r["offset"] for r in records if r["partition"] == 0] == list(range(len(by_part[0])))
    last = cli.json_lines("tail", "orders")  # default: the last 10 of each partition
    assert [len([r for r in last if r["partition"] == p]) for p in (0, 1)] == [10, 10]
    assert len(cli.json_lines("tail", "orders", "--from-beginning", "--max", "7")) == 7


def test_produce_stops_at_a_bad_line_after_appending_the_lines_before(cli: Cli) -> None:
    cli("topics", "create", "t")
    res = cli("produce", "t", stdin='{"a": 1}\n{"a": 2}\nnot json\n{"a": 4}\n', code=2)
    assert "line 3 of stdin is not JSON" in res.stderr
    assert "The 2 records before it were appended" in res.stderr
    assert [r["value"] for r in cli.json_lines("tail", "t")] == [{"a": 1}, {"a": 2}]
    res = cli("produce", "t", "--key-field", "k", stdin='{"a": 1}\n', code=2)
    assert "line 1 of stdin has no field 'k' (--key-field)" in res.stderr
    cli("topics", "create", "c", "--compacted")
    assert "give --key-field" in cli("produce", "c", stdin="{}\n", code=2).stderr


def test_unkeyed_lines_go_round_robin_and_tail_shows_any_json_value(cli: Cli) -> None:
    cli("topics", "create", "t", "--partitions", "2")
    cli("produce", "t", stdin="1\n2\n3\n")
    got = cli.json_lines("tail", "t", "--from-beginning")
    assert sorted((r["partition"], r["value"]) for r in got) == [(0, 1), (0, 3), (1, 2)]
    assert all(r["key"] is None for r in got)


def test_tail_follow_prints_new_records_until_max(cli: Cli) -> None:
    cli("topics", "create", "t")
    cli("produce", "t", stdin='{"n": 0}\n')
    follower = subprocess.Popen(
        [EVENTSPINE, "tail", "t", "--follow", "--max", "3", "--log", cli.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(0.5)
        assert follower.poll() is None  # still waiting for records 2 and 3
        cli("produce", "t", stdin='{"n": 1}\n{"n": 2}\n{"n": 3}\n')
        out, err = follower.communicate(timeout=20)
    finally:
        follower.kill()
    assert follower.returncode == 0, err
    assert [json.loads(line)["value"]["n"] for line in out.splitlines()] == [0, 1, 2]


def test_pipeline_run_then_state_show_and_dead_letter_replay(cli: Cli) -> None:
    (cli.tmp / "pipe.py").write_text(PIPELINE)
    cli("topics", "create", "orders", "--partitions", "2")
    cli(
        "produce",
        "orders",
        "--key-field",
        "sym",
        stdin='{"id": 1, "sym": "A"}\n{"id": "bad", "sym": "B"}\n{"id": 3, "sym": "B"}\n',
    )
    run = subprocess.run(
        [EVENTSPINE, "run", "pipe.py:pipeline", "--log-url", cli.url, "--max-seconds", "1.5"],
        cwd=cli.tmp,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    copies = cli.json_lines("tail", "copies", "--from-beginning")
    assert sorted(r["value"]["id"] for r in copies) == [1, 3]
    assert all(r["value"]["copied"] for r in copies)

    (state,) = cli.json_lines("state", "show", "orders_copy", "--json")
    assert state["checkpoint"]["id"] >= 1
    expected = {"0": 0, "1": 0}  # every partition's next offset, also of empty ones
    for sym in ("A", "B", "B"):
        expected[str(zlib.crc32(sym.encode()) % 2)] += 1
    assert state["committed"] == {"orders": expected}
    shown = cli("state", "show", "orders_copy").stdout
    assert "last checkpoint:" in shown
    (desc,) = cli.json_lines("topics", "describe", "orders", "--json")
    assert desc["committed"] == {"orders_copy": expected}  # the pipeline is a known group

    (letter,) = cli.json_lines("dead-letters", "list", "dlq")
    assert letter["value"]["step"] == "read"
    assert letter["value"]["error_type"] == "DecodeError"
    assert "field 'id'" in letter["value"]["error"]
    assert base64.b64decode(letter["value"]["raw"]) == b'{"id": "bad", "sym": "B"}'
    assert letter["replayed"] is False

    cli("topics", "create", "retry")
    res = cli("dead-letters", "replay", "dlq", "--to", "retry", "--step", "other")
    assert res.stdout.startswith("replayed 0 dead letters")
    res = cli("dead-letters", "replay", "dlq", "--to", "retry")
    assert res.stdout.startswith("replayed 1 dead letters from 'dlq' to 'retry'")
    res = cli("dead-letters", "replay", "dlq", "--to", "retry")
    assert res.stdout.startswith("replayed 0 dead letters")
    assert "1 replayed before" in res.stdout
    (replayed,) = cli.json_lines("tail", "retry", "--from-beginning")
    assert replayed["value"] == {"id": "bad", "sym": "B"}
    (letter,) = cli.json_lines("dead-letters", "list", "dlq")
    assert letter["replayed"] is True

    # state reset: the pipeline's internal topics go, its positions rewind, and the next
    # run starts from the beginning (the copies are appended again).
    res = cli("state", "reset", "orders_copy", "--yes")
    assert res.stdout.startswith("deleted ")
    assert not any(t.startswith("__es.orders_copy.") for t in cli("topics", "list").stdout.split())
    res = cli("state", "reset", "orders_copy", "--yes")
    assert "has no state" in res.stdout  # idempotent
    run = subprocess.run(
        [EVENTSPINE, "run", "pipe.py:pipeline", "--log-url", cli.url, "--max-seconds", "1.5"],
        cwd=cli.tmp,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    copies = cli.json_lines("tail", "copies", "--from-beginning")
    assert sorted(r["value"]["id"] for r in copies) == [1, 1, 3, 3]
