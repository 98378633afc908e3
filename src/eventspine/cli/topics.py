"""``eventspine topics ...``, ``produce`` and ``tail``: the durable log's topics from a shell.

Every verb takes ``--log URL`` (default: the ``log_url`` setting, else
``log.db`` in the state directory, ``sqlite://.eventspine/log.db``; see
``docs/cli.md``). Errors: a bad
option or setting exits 2, a refused or failed log operation (a missing
topic, settings that differ, a damaged file) exits 1.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import msgspec

from eventspine.connectors.topics import key_bytes, partition_for
from eventspine.errors import ConfigError, TopicNotFoundError
from eventspine.log import Log, LogRecord, StoredRecord, TopicInfo, TopicSpec, open_log
from eventspine.settings import Settings

from .run import ForcedStop

__all__ = ["add_log_option", "open_cli_log", "record_json", "register"]

Verb = Callable[[argparse.Namespace], int]
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d)")
_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_PRODUCE_TXN = 1000
_JSON = msgspec.json.Encoder()


def register(sub: Any) -> None:
    """Add ``topics``, ``produce`` and ``tail`` to the subcommands of ``eventspine``."""
    topics = sub.add_parser("topics", help="create, list and describe topics of the durable log")
    topics.set_defaults(verb=_needs_subcommand(topics))
    tsub = topics.add_subparsers(dest="topics_command", metavar="SUBCOMMAND")

    create = tsub.add_parser("create", help="create a topic (nothing if it exists alike)")
    create.add_argument("name", metavar="NAME")
    create.add_argument("--partitions", type=int, default=1, metavar="N", help="(1)")
    create.add_argument("--compacted", action="store_true", help="keep the latest record per key")
    create.add_argument(
        "--retention", metavar="D", help="delete records older than D: 7d, 12h, 30m"
    )
    add_log_option(create)
    create.set_defaults(verb=_create)

    lst = tsub.add_parser("list", help="list topics with their partitions and record counts")
    lst.add_argument("--json", action="store_true", help="print one JSON object per topic")
    add_log_option(lst)
    lst.set_defaults(verb=_list)

    desc = tsub.add_parser("describe", help="settings, offsets and committed positions of a topic")
    desc.add_argument("name", metavar="NAME")
    desc.add_argument(
        "--group", action="append", default=[], metavar="G", help="also show group G's positions"
    )
    desc.add_argument("--json", action="store_true", help="print one JSON object")
    add_log_option(desc)
    desc.set_defaults(verb=_describe)

    produce = sub.add_parser("produce", help="append JSON lines to a topic")
    produce.add_argument("name", metavar="NAME")
    produce.add_argument("--key-field", metavar="F", help="the record key is field F")
    produce.add_argument("--ts-field", metavar="F", help="event time: field F (epoch ms)")
    produce.add_argument("--file", default="-", metavar="F", help="read F instead of stdin (-)")
    add_log_option(produce)
    produce.set_defaults(verb=_produce)

    tail = sub.add_parser("tail", help="print the records of a topic as JSON lines")
    tail.add_argument("name", metavar="NAME")
    tail.add_argument(
        "--from-beginning", action="store_true", help="start at the log start (default: last 10)"
    )
    tail.add_argument("--follow", action="store_true", help="wait for new records (Ctrl-C stops)")
    tail.add_argument("--max", type=int, metavar="N", help="stop after N records")
    add_log_option(tail)
    tail.set_defaults(verb=_tail)


def add_log_option(p: argparse.ArgumentParser) -> None:
    """Add ``--log URL`` and ``--debug`` to a verb's parser."""
    p.add_argument("--log", metavar="URL", help="the log (default: <state_dir>/log.db)")
    p.add_argument("--debug", action="store_true", help="show tracebacks with errors")


@contextmanager
def open_cli_log(args: argparse.Namespace) -> Iterator[tuple[Log, str]]:
    """Open the log ``--log`` (or the ``log_url`` setting) names; yield it and its URL."""
    url = Settings.load({"log_url": args.log}).log
    log = open_log(url)
    try:
        yield log, url
    finally:
        log.close()


def require_topic(log: Log, name: str, url: str) -> TopicInfo:
    """Return the topic's info, or raise ``TopicNotFoundError`` with a CLI hint."""
    info = log.topics().get(name)
    if info is None:
        raise TopicNotFoundError(
            f"topic {name!r} does not exist in {url}; create it with "
            f"`eventspine topics create {name} --log {url}`"
        )
    return info


def parse_duration(text: str, option: str) -> timedelta:
    """Parse ``7d``, ``12h``, ``30m``, ``10s`` or ``500ms`` (raises ``ConfigError``)."""
    m = _DURATION.fullmatch(text.strip())
    if m is None or int(m.group(1)) == 0:
        raise ConfigError(
            f"{option} {text!r} is invalid; expected a positive whole number with a unit: "
            f"ms, s, m, h or d (for example 7d, 12h, 30m)"
        )
    return timedelta(milliseconds=int(m.group(1)) * _UNITS[m.group(2)])


def record_json(partition: int, rec: StoredRecord) -> dict[str, Any]:
    """Return a record as a JSON-able dict: partition, offset, ts, key and value.

    A value that is JSON is embedded as it is (``"value"``); other UTF-8 text is
    ``"value_text"``, other bytes ``"value_base64"``; a tombstone is ``"value": null``.
    Keys likewise: ``"key"`` (UTF-8 text) or ``"key_base64"``.
    """
    out: dict[str, Any] = {"partition": partition, "offset": rec.offset, "ts": rec.ts_ms}
    out.update(_bytes_field("key", rec.key, json_ok=False))
    out.update(_bytes_field("value", rec.value, json_ok=True))
    return out


def _bytes_field(name: str, data: bytes | None, *, json_ok: bool) -> dict[str, Any]:
    if data is None:
        return {name: None}
    if json_ok:
        try:
            return {name: msgspec.json.decode(data)}
        except msgspec.DecodeError:
            pass
    try:
        return {(f"{name}_text" if json_ok else name): data.decode("utf-8")}
    except UnicodeDecodeError:
        import base64

        return {f"{name}_base64": base64.b64encode(data).decode()}


def _needs_subcommand(p: argparse.ArgumentParser) -> Verb:
    def verb(args: argparse.Namespace) -> int:
        p.print_help(sys.stderr)
        return 2

    return verb


def _out() -> TextIO:
    return sys.stdout


def _create(args: argparse.Namespace) -> int:
    retention = None if args.retention is None else parse_duration(args.retention, "--retention")
    spec = TopicSpec(args.name, args.partitions, args.compacted, retention)
    with open_cli_log(args) as (log, url):
        existed = args.name in log.topics()
        log.create_topic(spec)
    verb = "exists already with these settings" if existed else "created"
    _out().write(f"topic {args.name!r} {verb} in {url}: {_settings_text(spec)}\n")
    return 0


def _settings_text(spec: TopicSpec) -> str:
    retention = "forever" if spec.retention_ms is None else _duration_text(spec.retention_ms)
    return (
        f"{spec.partitions} partition{'s' if spec.partitions != 1 else ''}, "
        f"{'compacted' if spec.compacted else 'not compacted'}, retention {retention}"
    )


def _duration_text(ms: int) -> str:
    for unit in ("d", "h", "m", "s"):
        if ms % _UNITS[unit] == 0:
            return f"{ms // _UNITS[unit]}{unit}"
    return f"{ms}ms"


def _topic_json(info: TopicInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        **info.spec.settings(),
        "records": sum(p.end - p.log_start for p in info.offsets),
        "partition_offsets": [
            {"partition": p.partition, "log_start": p.log_start, "end": p.end} for p in info.offsets
        ],
    }


def _list(args: argparse.Namespace) -> int:
    with open_cli_log(args) as (log, url):
        topics = log.topics()
    out = _out()
    if args.json:
        for info in topics.values():
            out.write(_JSON.encode(_topic_json(info)).decode() + "\n")
        return 0
    if not topics:
        out.write(f"no topics in {url}\n")
        return 0
    width = max(len(n) for n in topics)
    out.write(f"{'TOPIC':<{width}}  PARTITIONS  COMPACTED  RETENTION  RECORDS\n")
    for name, info in topics.items():
        spec = info.spec
        retention = "-" if spec.retention_ms is None else _duration_text(spec.retention_ms)
        records = sum(p.end - p.log_start for p in info.offsets)
        out.write(
            f"{name:<{width}}  {spec.partitions:>10}  {'yes' if spec.compacted else 'no':>9}  "
            f"{retention:>9}  {records:>7}\n"
        )
    return 0


def known_groups(topics: dict[str, TopicInfo]) -> list[str]:
    """Return the pipelines that have a checkpoints topic (they are the consumer groups)."""
    from eventspine.runtime.checkpoint import names

    found = []
    for name in topics:
        if name.startswith("__es.") and name.endswith(".checkpoints"):
            pipeline = name[len("__es.") : -len(".checkpoints")]
            if names.checkpoints(pipeline) == name:
                found.append(pipeline)
    return sorted(found)


def _describe(args: argparse.Namespace) -> int:
    with open_cli_log(args) as (log, url):
        topics = log.topics()
        info = require_topic(log, args.name, url)
        groups = sorted(set(known_groups(topics)) | set(args.group))
        committed = {g: log.committed(g, args.name) for g in groups}
    committed = {g: pos for g, pos in committed.items() if pos}
    out = _out()
    if args.json:
        doc = _topic_json(info)
        doc["committed"] = {g: {str(p): o for p, o in pos.items()} for g, pos in committed.items()}
        out.write(_JSON.encode(doc).decode() + "\n")
        return 0
    out.write(f"topic {info.name!r} in {url}\n  {_settings_text(info.spec)}")
    if info.spec.retention_bytes is not None:
        out.write(f", at most {info.spec.retention_bytes} bytes per partition")
    out.write("\n\n  PARTITION  LOG_START  END  RECORDS\n")
    for p in info.offsets:
        out.write(f"  {p.partition:>9}  {p.log_start:>9}  {p.end:>3}  {p.end - p.log_start:>7}\n")
    out.write("\n  committed positions (next offset to read, by group):\n")
    if not committed:
        out.write("    none (groups are the pipelines of this log, or --group G)\n")
    for g, pos in committed.items():
        lag = sum(info.offsets[p].end - o for p, o in pos.items())
        text = " ".join(f"{p}={o}" for p, o in pos.items())
        out.write(f"    {g}: {text} (lag {lag})\n")
    return 0


@contextmanager
def _input(path: str) -> Iterator[BinaryIO]:
    if path == "-":
        yield sys.stdin.buffer
        return
    try:
        f = Path(path).open("rb")  # noqa: SIM115  # closed below
    except OSError as exc:
        raise ConfigError(f"--file {path!r} cannot be opened: {exc.strerror}") from exc
    with f:
        yield f


def _produce(args: argparse.Namespace) -> int:
    with open_cli_log(args) as (log, url), _input(args.file) as src:
        spec = require_topic(log, args.name, url).spec
        if spec.compacted and args.key_field is None:
            raise ConfigError(
                f"topic {args.name!r} is compacted, so every record needs a key; give --key-field F"
            )
        pending: dict[int, list[LogRecord]] = {}
        buffered = total = 0
        for lineno, line in enumerate(src, 1):
            value = line.strip()
            if not value:
                continue
            try:
                rec = _produce_record(args, value, lineno, total)
            except ConfigError:
                _append_all(log, args.name, pending)  # the message says the lines before are in
                raise
            part = partition_for(rec.key, spec.partitions) if rec.key is not None else None
            pending.setdefault(total % spec.partitions if part is None else part, []).append(rec)
            buffered += 1
            total += 1
            if buffered == _PRODUCE_TXN:
                _append_all(log, args.name, pending)
                pending, buffered = {}, 0
        _append_all(log, args.name, pending)
    _out().write(f"appended {total} record{'s' if total != 1 else ''} to {args.name!r}\n")
    return 0


def _produce_record(args: argparse.Namespace, value: bytes, lineno: int, done: int) -> LogRecord:
    where = f"line {lineno} of {'stdin' if args.file == '-' else args.file}"
    try:
        obj = msgspec.json.decode(value)
    except msgspec.DecodeError as exc:
        raise ConfigError(
            f"{where} is not JSON ({exc}); each line must be one JSON value. The {done} "
            f"records before it were appended"
        ) from None
    key: bytes | None = None
    ts = int(time.time() * 1000)
    for option, name in (("--key-field", args.key_field), ("--ts-field", args.ts_field)):
        if name is None:
            continue
        if not isinstance(obj, dict) or name not in obj:
            raise ConfigError(
                f"{where} has no field {name!r} ({option}); the {done} records before it "
                f"were appended"
            )
        if option == "--key-field":
            key = key_bytes(obj[name])
        elif type(obj[name]) is int:
            ts = obj[name]
        else:
            raise ConfigError(f"{where}: field {name!r} must hold epoch milliseconds (an int)")
    return LogRecord(key, value, ts)


def _append_all(log: Log, topic: str, pending: dict[int, list[LogRecord]]) -> None:
    if not pending:
        return
    with log.transaction() as txn:
        for part, recs in sorted(pending.items()):
            txn.append(topic, part, recs)


def _tail(args: argparse.Namespace) -> int:
    if args.max is not None and args.max < 1:
        raise ConfigError(f"--max {args.max} is invalid; expected a whole number >= 1")
    out = _out()
    printed = 0
    try:
        with open_cli_log(args) as (log, url):
            info = require_topic(log, args.name, url)
            pos = [
                p.log_start if args.from_beginning else max(p.log_start, p.end - 10)
                for p in info.offsets
            ]
            while True:
                got = 0
                for part, offset in enumerate(pos):
                    limit = 1000 if args.max is None else min(1000, args.max - printed)
                    recs = log.read(args.name, part, offset, limit)
                    for rec in recs:
                        out.write(_JSON.encode(record_json(part, rec)).decode() + "\n")
                    if recs:
                        pos[part] = recs[-1].offset + 1
                    got += len(recs)
                    printed += len(recs)
                    if args.max is not None and printed >= args.max:
                        return 0
                if not got:
                    if not args.follow:
                        return 0
                    out.flush()
                    time.sleep(0.1)
    except ForcedStop as exc:  # Ctrl-C while following: a normal way to stop
        return exc.exit_code
    except BrokenPipeError:  # piped into `head`: stop quietly, like other Unix tools
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 0
