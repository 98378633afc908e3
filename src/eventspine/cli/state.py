"""``eventspine state ...`` and ``eventspine dead-letters ...``: a pipeline's durable leftovers.

``state show`` reads the pipeline's last checkpoint record and its changelog
topics (names in :class:`eventspine.runtime.checkpoint.names`). ``state
reset`` needs topic deletion from the log. ``dead-letters`` reads the JSON
records the checkpoint writes to a dead-letter topic
(:func:`eventspine.runtime.checkpoint.dead_letter_value`) and replays their
original bytes.

**Replay markers.** ``dead-letters replay`` appends, in the same transaction
as the replayed records, one marker record to the dead-letter topic: header
``eventspine.replay`` and the JSON value ``{"replay": {"to", "step",
"through": {partition: last offset}, "count", "time"}}``. A dead letter is
already replayed when a marker with its step (or ``step: null``: all steps)
has ``through[partition] >= offset``; later replays skip it and ``list``
shows ``"replayed": true``. Readers of dead-letter topics skip records with
that header.
"""

from __future__ import annotations

import argparse
import base64
import sys
import time
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec

from eventspine.errors import ConfigError, LogError
from eventspine.log import Log, LogRecord, StoredRecord, TopicInfo, read_all
from eventspine.runtime.checkpoint import names, read_last_meta

from .topics import add_log_option, known_groups, open_cli_log, record_json, require_topic

__all__ = ["REPLAY_HEADER", "register"]

#: The header that marks a replay marker record in a dead-letter topic.
REPLAY_HEADER = "eventspine.replay"
_JSON = msgspec.json.Encoder()


def register(sub: Any) -> None:
    """Add ``state`` and ``dead-letters`` to the subcommands of ``eventspine``."""
    state = sub.add_parser("state", help="show or reset a pipeline's checkpoints and state")
    ssub = state.add_subparsers(dest="state_command", metavar="SUBCOMMAND")
    state.set_defaults(verb=lambda args: _usage(state))
    show = ssub.add_parser("show", help="last checkpoint, source positions, state sizes")
    show.add_argument("pipeline", metavar="PIPELINE")
    show.add_argument("--json", action="store_true", help="print one JSON object")
    add_log_option(show)
    show.set_defaults(verb=_show)
    reset = ssub.add_parser("reset", help="delete a pipeline's state and positions")
    reset.add_argument("pipeline", metavar="PIPELINE")
    reset.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    add_log_option(reset)
    reset.set_defaults(verb=_reset)

    dl = sub.add_parser("dead-letters", help="list or replay the records of a dead-letter topic")
    dsub = dl.add_subparsers(dest="dead_letters_command", metavar="SUBCOMMAND")
    dl.set_defaults(verb=lambda args: _usage(dl))
    lst = dsub.add_parser("list", help="print dead letters as JSON lines")
    lst.add_argument("topic", metavar="TOPIC")
    lst.add_argument("--max", type=int, metavar="N", help="print at most N")
    add_log_option(lst)
    lst.set_defaults(verb=_list)
    replay = dsub.add_parser("replay", help="append the original records to a topic, once")
    replay.add_argument("topic", metavar="TOPIC")
    replay.add_argument("--to", required=True, metavar="TOPIC", help="the topic to append to")
    replay.add_argument("--step", metavar="S", help="only the dead letters of step S")
    add_log_option(replay)
    replay.set_defaults(verb=_replay)


def _usage(p: argparse.ArgumentParser) -> int:
    p.print_help(sys.stderr)
    return 2


# -- state -------------------------------------------------------------------------------


def _changelogs(pipeline: str, topics: dict[str, TopicInfo]) -> dict[str, TopicInfo]:
    prefix = names.prefix(pipeline)
    found = {}
    for name, info in topics.items():
        if name.startswith(prefix) and name.endswith(".changelog"):
            step = name[len(prefix) : -len(".changelog")]
            if names.changelog(pipeline, step) == name:
                found[step] = info
    return found


def _state_doc(log: Log, pipeline: str, url: str) -> dict[str, Any]:
    topics = log.topics()
    if names.checkpoints(pipeline) not in topics:
        known = ", ".join(known_groups(topics)) or "none"
        raise LogError(
            f"pipeline {pipeline!r} has no state in {url} (pipelines with state there: {known}); "
            f"check the name (es.Pipeline(name)) and --log"
        )
    doc: dict[str, Any] = {"pipeline": pipeline, "log": url, "checkpoint": None, "tasks": {}}
    # A partitioned pipeline keeps one checkpoint per task: partition p of the topic.
    for task in range(topics[names.checkpoints(pipeline)].spec.partitions):
        meta = read_last_meta(log, pipeline, task)
        if meta is None:
            continue
        summary = {
            "id": meta.id,
            "time": meta.time,
            "records_read": meta.records_read,
            "positions": meta.positions,
            "watermarks": meta.watermarks,
            "sinks": meta.sinks,
        }
        doc["tasks"][str(task)] = summary
        if task == 0:
            doc["checkpoint"] = summary
    doc["committed"] = {
        name: {str(p): o for p, o in pos.items()}
        for name in topics
        if not name.startswith("__es.") and (pos := log.committed(pipeline, name))
    }
    # The consumer lag of each committed position: the partition's end minus it.
    doc["lag"] = {
        name: {p: max(0, topics[name].offsets[int(p)].end - o) for p, o in pos.items()}
        for name, pos in doc["committed"].items()
    }
    state: dict[str, Any] = {}
    for step, info in sorted(_changelogs(pipeline, topics).items()):
        latest: dict[bytes | None, bool] = {}
        count = 0
        for _, rec in read_all(log, info):
            latest[rec.key] = rec.value is not None
            count += 1
        state[step] = {
            "topic": info.name,
            "records": count,
            "keys": sum(latest.values()),
            "offsets": [[p.log_start, p.end] for p in info.offsets],
        }
    doc["state"] = state
    return doc


def _show(args: argparse.Namespace) -> int:
    with open_cli_log(args) as (log, url):
        doc = _state_doc(log, args.pipeline, url)
    out = sys.stdout
    if args.json:
        out.write(_JSON.encode(doc).decode() + "\n")
        return 0
    out.write(f"pipeline {args.pipeline!r} in {url}\n")
    tasks = doc["tasks"]
    if not tasks:
        out.write("  no checkpoint committed yet\n")
    for task, ckpt in tasks.items():
        label = "last checkpoint" if len(tasks) == 1 else f"task {task}: last checkpoint"
        out.write(
            f"  {label}: {ckpt['id']} at {ckpt['time']} "
            f"({ckpt['records_read']} records read)\n  source positions (next offset):\n"
        )
        for step, positions in ckpt["positions"].items():
            text = " ".join(f"{p}={o}" for p, o in positions.items()) or "none"
            out.write(f"    {step}: {text}\n")
    for name, pos in doc["committed"].items():
        text = " ".join(f"{p}={o}" for p, o in pos.items())
        lag = doc["lag"][name]
        lags = " ".join(f"{p}={n}" for p, n in lag.items())
        out.write(
            f"  committed positions of topic {name!r}: {text}\n"
            f"    lag (end offset - position): {lags} (total {sum(lag.values()):,})\n"
        )
    out.write("  state (changelog topics):\n")
    if not doc["state"]:
        out.write("    none\n")
    for step, s in doc["state"].items():
        out.write(f"    {step}: {s['keys']} keys, {s['records']} records in {s['topic']}\n")
    return 0


def _reset(args: argparse.Namespace) -> int:
    with open_cli_log(args) as (log, url):
        topics = log.topics()
        internal = [n for n in topics if n.startswith(names.prefix(args.pipeline))]
        delete = log.delete_topic
        if not internal:
            sys.stdout.write(f"pipeline {args.pipeline!r} has no state in {url}\n")
            return 0
        if not args.yes:
            if not sys.stdin.isatty():
                raise ConfigError("state reset discards state: confirm with --yes")
            answer = input(f"delete {len(internal)} topics of {args.pipeline!r}? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                sys.stdout.write("nothing deleted\n")
                return 0
        rewind = {
            name: {p: info.offsets[p].log_start for p in pos}
            for name, info in topics.items()
            if name not in internal and (pos := log.committed(args.pipeline, name))
        }
        for name in internal:
            delete(name)
        with log.transaction() as txn:
            for name, positions in rewind.items():
                txn.commit_positions(args.pipeline, name, positions)
    sys.stdout.write(
        f"deleted {len(internal)} topics of {args.pipeline!r}; its sources start again at "
        f"the log start of {len(rewind)} topics\n"
    )
    return 0


# -- dead letters ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Marker:
    step: str | None
    through: dict[int, int]

    def covers(self, step: Any, partition: int, offset: int) -> bool:
        return (self.step is None or self.step == step) and self.through.get(
            partition, -1
        ) >= offset


def _scan(log: Log, info: TopicInfo) -> tuple[list[tuple[int, StoredRecord, Any]], list[_Marker]]:
    letters: list[tuple[int, StoredRecord, Any]] = []
    markers: list[_Marker] = []
    for part, rec in read_all(log, info):
        try:
            value = msgspec.json.decode(rec.value or b"null")
        except msgspec.DecodeError:
            value = None
        if any(name == REPLAY_HEADER for name, _ in rec.headers):
            body = value.get("replay") if isinstance(value, dict) else None
            if isinstance(body, dict) and isinstance(body.get("through"), dict):
                through = {int(p): int(o) for p, o in body["through"].items()}
                markers.append(_Marker(body.get("step"), through))
            continue
        letters.append((part, rec, value))
    return letters, markers


def _list(args: argparse.Namespace) -> int:
    if args.max is not None and args.max < 1:
        raise ConfigError(f"--max {args.max} is invalid; expected a whole number >= 1")
    with open_cli_log(args) as (log, url):
        letters, markers = _scan(log, require_topic(log, args.topic, url))
    for n, (part, rec, value) in enumerate(letters):
        if args.max is not None and n >= args.max:
            break
        doc = record_json(part, rec)
        step = value.get("step") if isinstance(value, dict) else None
        doc["replayed"] = any(m.covers(step, part, rec.offset) for m in markers)
        sys.stdout.write(_JSON.encode(doc).decode() + "\n")
    return 0


def _original(value: Any) -> bytes | None:
    """Return the bytes to replay: the raw input, else the JSON of the record."""
    if not isinstance(value, dict):
        return None
    raw = value.get("raw")
    if isinstance(raw, str):
        try:
            return base64.b64decode(raw, validate=True)
        except ValueError:
            return None
    if value.get("record") is not None:
        return _JSON.encode(value["record"])
    return None


def _replay(args: argparse.Namespace) -> int:
    with open_cli_log(args) as (log, url):
        source = require_topic(log, args.topic, url)
        target = require_topic(log, args.to, url).spec
        letters, markers = _scan(log, source)
        todo: list[LogRecord] = []
        done = unusable = 0
        by_part: dict[int, list[LogRecord]] = {}
        for part, rec, value in letters:
            step = value.get("step") if isinstance(value, dict) else None
            if args.step is not None and step != args.step:
                continue
            if any(m.covers(step, part, rec.offset) for m in markers):
                done += 1
                continue
            data = _original(value)
            if data is None:
                unusable += 1
                continue
            out = LogRecord(None, data, rec.ts_ms)
            todo.append(out)
            by_part.setdefault(zlib.crc32(data) % target.partitions, []).append(out)
        if todo and target.compacted:
            raise LogError(
                f"topic {args.to!r} is compacted, so every record needs a key, and dead letters "
                f"keep no key; replay into a topic that is not compacted"
            )
        if todo:
            marker = {
                "replay": {
                    "to": args.to,
                    "step": args.step,
                    "through": {str(p.partition): p.end - 1 for p in source.offsets},
                    "count": len(todo),
                    "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                }
            }
            now_ms = int(time.time() * 1000)  # like the dead letters: retention keeps it with them
            record = LogRecord(None, _JSON.encode(marker), now_ms, ((REPLAY_HEADER, b"1"),))
            with log.transaction() as txn:
                for part, recs in sorted(by_part.items()):
                    txn.append(args.to, part, recs)
                txn.append(args.topic, 0, [record])
    sys.stdout.write(
        f"replayed {len(todo)} dead letters from {args.topic!r} to {args.to!r}"
        f" ({done} replayed before, {unusable} without a record to replay)\n"
    )
    return 0
