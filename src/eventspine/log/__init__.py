"""The durable log: the ``Log`` port, its backends, and ``open_log(url)``.

URLs (see ``docs/log.md``):

``memory://``
    a private in-memory log (:class:`MemoryLog`).
``memory://name``
    the in-memory log ``name``, shared by every opener in this process.
``sqlite:///abs/path`` and ``sqlite://rel/path``
    an SQLite log (:class:`SqliteLog`). Three slashes: an absolute path;
    two: a path relative to the current directory. A path ending in ``.db``
    names the database file; any other path names a directory and the file
    is ``log.db`` inside it (``sqlite://.eventspine`` is the default
    location ``./.eventspine/log.db``). Query options: ``synchronous=NORMAL``
    (default) or ``FULL``, ``busy_timeout_ms=5000``, ``check=quick`` (default),
    ``full`` or ``none``: what is verified when the file is opened.
``kafka://host:port[,host:port]?option=value``
    a :class:`~eventspine.log.kafka.KafkaLog` (options in ``docs/kafka.md``).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import cast, get_args
from urllib.parse import parse_qsl, unquote, urlsplit

from eventspine.errors import ConfigError
from eventspine.log.base import (
    Log,
    LogRecord,
    LogTransaction,
    PartitionOffsets,
    StoredRecord,
    TopicInfo,
    TopicSpec,
    read_all,
    read_range,
)
from eventspine.log.memory import MemoryLog
from eventspine.log.sqlite import SqliteLog
from eventspine.log.sqlite_file import DEFAULT_CHECK, Check

__all__ = [
    "Log",
    "LogRecord",
    "LogTransaction",
    "MemoryLog",
    "PartitionOffsets",
    "SqliteLog",
    "StoredRecord",
    "TopicInfo",
    "TopicSpec",
    "open_log",
    "read_all",
    "read_range",
]

_SCHEMES = "memory://, memory://name, sqlite:///absolute/path or sqlite://relative/path"


def open_log(url: str) -> Log:
    """Open the log a URL names (see the module docstring for the forms).

    Does no I/O for ``memory://``; creates the file (and its directory) for
    ``sqlite://`` if missing. Reads no environment variables: the caller
    (``eventspine.settings``) decides the URL.

    Raises:
        ConfigError: the URL is malformed, has an unknown scheme or option.
        LogError: the SQLite file cannot be opened (see :class:`SqliteLog`).
    """
    parts = urlsplit(url)
    if parts.scheme == "memory":
        if parts.path or parts.query:
            raise ConfigError(f"log URL {url!r}: use memory:// or memory://name")
        return MemoryLog(unquote(parts.netloc) or None)
    if parts.scheme == "sqlite":
        path = unquote(parts.netloc + parts.path)
        if not path:
            raise ConfigError(
                f"log URL {url!r} has no path: write sqlite:///absolute/path/log.db or "
                f"sqlite://relative/dir (for example sqlite://.eventspine)"
            )
        file = Path(path) if path.endswith(".db") else Path(path) / "log.db"
        synchronous = "NORMAL"
        timeout_ms = 5000
        check: Check = DEFAULT_CHECK
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name == "synchronous" and value.upper() in ("NORMAL", "FULL"):
                synchronous = value.upper()
            elif name == "busy_timeout_ms" and value.isdigit():
                timeout_ms = int(value)
            elif name == "check" and value in get_args(Check):
                check = cast("Check", value)
            else:
                raise ConfigError(
                    f"log URL {url!r}: unknown option {name}={value!r}; the options are "
                    f"synchronous=NORMAL|FULL, busy_timeout_ms=<int> and check=quick|full|none"
                )
        return SqliteLog(
            file,
            synchronous="FULL" if synchronous == "FULL" else "NORMAL",
            busy_timeout=timedelta(milliseconds=timeout_ms),
            check=check,
        )
    if parts.scheme == "kafka":
        from eventspine.log.kafka import open_kafka_log  # imports confluent_kafka: only here

        return open_kafka_log(url)
    raise ConfigError(f"log URL {url!r} has an unknown scheme; use {_SCHEMES}")
