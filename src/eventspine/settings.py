"""Run settings: the only module that reads ``EVENTSPINE_*`` env vars and ``eventspine.toml``.

Every setting has one name, spelled three ways (option, variable, TOML key)::

    --state-dir D            EVENTSPINE_STATE_DIR           state_dir = "./.eventspine"
    --log-url URL            EVENTSPINE_LOG_URL             log_url = "sqlite://.eventspine"
    --checkpoint-interval-ms EVENTSPINE_CHECKPOINT_INTERVAL_MS checkpoint_interval_ms = 1000
    (no option)              EVENTSPINE_FAILPOINTS          failpoints = "ckpt.before_commit=crash"
    (no option)              EVENTSPINE_FAILPOINTS_LOG      failpoints_log = "/tmp/hits.txt"
    --metrics-port N         EVENTSPINE_METRICS_PORT        metrics_port = 9464
    --latency-budget-ms N    EVENTSPINE_LATENCY_BUDGET_MS   latency_budget_ms = 20
    --flush-interval-ms N    EVENTSPINE_FLUSH_INTERVAL_MS   flush_interval_ms = 1000
    --log-level L            EVENTSPINE_LOG_LEVEL           log_level = "INFO"

Precedence: command line > environment > ``eventspine.toml`` > defaults. The
TOML file is ``./eventspine.toml`` when it exists, or the file named by
``EVENTSPINE_CONFIG`` (which must then exist). Every invalid value raises
:class:`~eventspine.errors.ConfigError` naming the option, variable or key,
the value, and the accepted form. Nothing here is read at import time.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from eventspine.errors import ConfigError

__all__ = ["DEFAULT_TOML", "ENV_PREFIX", "Settings"]

ENV_PREFIX = "EVENTSPINE_"
DEFAULT_TOML = "eventspine.toml"
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_LOG_SCHEMES = ("memory://", "sqlite://", "kafka://")


@dataclass(frozen=True)
class Settings:
    """The settings of one run (immutable; build it with :meth:`load`).

    Attributes:
        state_dir: the directory for state, checkpoints and file-backed logs.
        log_url: the durable log (``memory://``, ``sqlite:///abs/path``, ``sqlite://rel/path``);
            default: the SQLite log ``log.db`` in ``state_dir`` (see :attr:`log`).
        checkpoint_interval_ms: the longest time between two checkpoints.
        failpoints: failpoint rules for fault tests (see :mod:`eventspine.failpoints`).
        failpoints_log: a file where every failpoint hit is appended (fault tests).
        metrics_port: serve Prometheus metrics on ``127.0.0.1:<port>`` (``None``: off).
        latency_budget_ms: the target processing time of one micro-batch.
        flush_interval_ms: how often sinks are flushed while running.
        log_level: the level of Python logging (``DEBUG`` ... ``CRITICAL``).
    """

    state_dir: str = "./.eventspine"
    log_url: str | None = None
    metrics_port: int | None = None
    latency_budget_ms: int = 20
    flush_interval_ms: int = 1000
    log_level: str = "WARNING"
    checkpoint_interval_ms: int = 1000
    failpoints: str = ""
    failpoints_log: str = ""

    @property
    def log(self) -> str:
        """The log URL of the run: ``log_url``, or the SQLite log in ``state_dir``."""
        if self.log_url is not None:
            return self.log_url
        return f"sqlite://{Path(self.state_dir) / 'log.db'}"  # 3 slashes when absolute

    @classmethod
    def load(
        cls,
        cli_overrides: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        toml_path: str | os.PathLike[str] | None = None,
    ) -> Settings:
        """Merge defaults, the TOML file, the environment and command-line values.

        Args:
            cli_overrides: setting name -> value from the command line; ``None`` values
                mean "not given" and are ignored.
            env: the environment (default ``os.environ``); only ``EVENTSPINE_*`` is read.
            toml_path: the TOML file; default ``$EVENTSPINE_CONFIG`` if set (it must
                exist), else ``./eventspine.toml`` if it exists.

        Raises:
            ConfigError: a value is invalid, a TOML key is unknown, or the file is unreadable.
        """
        env = os.environ if env is None else env
        names = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}

        for key, raw in _read_toml(toml_path, env).items():
            where = f"eventspine.toml key '{key}'"
            if key not in names:
                raise ConfigError(
                    f"{where} is unknown; the accepted keys are {', '.join(sorted(names))}"
                )
            values[key] = _PARSERS[key](raw, where)
        for name in names:
            var = ENV_PREFIX + name.upper()
            if var in env:
                values[name] = _PARSERS[name](env[var], var)
        for name, raw in (cli_overrides or {}).items():
            if raw is None:
                continue
            if name not in names:
                raise ConfigError(
                    f"setting '{name}' is unknown; the accepted settings are "
                    f"{', '.join(sorted(names))}"
                )
            values[name] = _PARSERS[name](raw, "--" + name.replace("_", "-"))
        return cls(**values)


def _read_toml(path: str | os.PathLike[str] | None, env: Mapping[str, str]) -> dict[str, Any]:
    explicit = path is not None or ENV_PREFIX + "CONFIG" in env
    if path is None:
        path = env.get(ENV_PREFIX + "CONFIG", DEFAULT_TOML)
    p = Path(path)
    if not p.is_file():
        if explicit:
            raise ConfigError(
                f"the settings file '{p}' does not exist; create it or point "
                f"EVENTSPINE_CONFIG at an existing TOML file"
            )
        return {}
    try:
        with p.open("rb") as fh:
            return tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(
            f"the settings file '{p}' cannot be read: {exc}; it must be TOML with "
            f'top-level keys such as state_dir = "./.eventspine"'
        ) from exc


def _text(raw: Any, where: str) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise ConfigError(f"{where} = {raw!r} is invalid; expected a non-empty string")
    return raw.strip()


def _int(raw: Any, where: str, *, low: int, high: int, form: str) -> int:
    value: int | None = None
    if isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    elif isinstance(raw, str):
        try:
            value = int(raw.strip())
        except ValueError:
            value = None
    if value is None or not low <= value <= high:
        raise ConfigError(f"{where} = {raw!r} is invalid; expected {form}")
    return value


def _state_dir(raw: Any, where: str) -> str:
    return _text(raw, where)


def _log_url(raw: Any, where: str) -> str:
    url = _text(raw, where)
    if not url.startswith(_LOG_SCHEMES):
        raise ConfigError(
            f"{where} = {raw!r} is invalid; expected a URL starting with "
            f"{', '.join(_LOG_SCHEMES)} (e.g. sqlite://.eventspine or sqlite:///var/es/log.db)"
        )
    return url


def _metrics_port(raw: Any, where: str) -> int:
    return _int(raw, where, low=1, high=65535, form="a TCP port number from 1 to 65535")


def _positive_ms(raw: Any, where: str) -> int:
    return _int(raw, where, low=1, high=86_400_000, form="a whole number of milliseconds >= 1")


def _log_level(raw: Any, where: str) -> str:
    level = _text(raw, where).upper()
    if level not in _LOG_LEVELS:
        raise ConfigError(f"{where} = {raw!r} is invalid; expected one of {', '.join(_LOG_LEVELS)}")
    return level


def _failpoints(raw: Any, where: str) -> str:
    from eventspine import failpoints

    spec = raw if isinstance(raw, str) else ""
    try:
        failpoints.configure(spec)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    finally:
        failpoints.reset()
    return spec


def _path_or_empty(raw: Any, where: str) -> str:
    return raw.strip() if isinstance(raw, str) else _text(raw, where)


_PARSERS: dict[str, Callable[[Any, str], Any]] = {
    "state_dir": _state_dir,
    "log_url": _log_url,
    "checkpoint_interval_ms": _positive_ms,
    "failpoints": _failpoints,
    "failpoints_log": _path_or_empty,
    "metrics_port": _metrics_port,
    "latency_budget_ms": _positive_ms,
    "flush_interval_ms": _positive_ms,
    "log_level": _log_level,
}
