"""Failpoints: named places in the checkpoint and recovery protocol where tests crash us.

A failpoint is a call ``failpoints.hit("ckpt.before_commit")`` at one step of
a protocol. Normally it costs one global boolean check. When a spec is
configured (by ``eventspine.settings`` from ``EVENTSPINE_FAILPOINTS``; this
module reads no environment itself), a matching hit triggers its action::

    EVENTSPINE_FAILPOINTS="ckpt.before_commit=crash@3,recovery.mid_replay=raise"

``name=action[@count]``: the action fires on the ``count``-th hit (default
the first). Actions:

* ``crash``: ``SIGKILL`` this process (a real kill -9: no cleanup, no flush);
* ``raise``: raise :class:`FailpointError` (an I/O-like failure);
* ``sleep:MS``: sleep that many milliseconds;
* ``pause``: ``SIGSTOP`` this process (a test sends ``SIGCONT``).

Every hit of every failpoint is counted (``counts()``); when
``EVENTSPINE_FAILPOINTS_LOG`` names a file (again passed in by settings), each
hit appends one line ``name`` to it, so a test harness can assert that every
named failpoint was reached at least once across a suite.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

from eventspine.errors import ConfigError, EventspineError

__all__ = ["FailpointError", "configure", "counts", "hit", "reset"]

_ACTIONS = ("crash", "raise", "sleep", "pause")


class FailpointError(EventspineError):
    """Raised by a failpoint whose action is ``raise``."""


@dataclass
class _Rule:
    action: str
    arg: int
    at: int


_active = False
_rules: dict[str, _Rule] = {}
_counts: dict[str, int] = {}
_log_path: str | None = None


def configure(spec: str | None, log_path: str | None = None) -> None:
    """Install failpoint rules from ``spec`` (``None`` or ``""`` disables them).

    Raises:
        ConfigError: the spec is malformed (the message shows the accepted form).
    """
    global _active, _log_path
    _rules.clear()
    _counts.clear()
    _log_path = log_path or None
    for part in (spec or "").split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, rest = part.partition("=")
        action, _, at_s = rest.partition("@")
        action, _, arg_s = action.partition(":")
        if not sep or not name or action not in _ACTIONS:
            raise ConfigError(
                f"failpoint spec {part!r} is invalid: write name=action[@count] with action "
                f"one of crash, raise, sleep:MS, pause (e.g. ckpt.before_commit=crash@2)"
            )
        try:
            arg = int(arg_s) if arg_s else 0
            at = int(at_s) if at_s else 1
        except ValueError as exc:
            raise ConfigError(f"failpoint spec {part!r}: count and MS must be integers") from exc
        _rules[name.strip()] = _Rule(action, arg, max(at, 1))
    _active = bool(_rules) or _log_path is not None


def reset() -> None:
    """Disable every failpoint and forget the counts."""
    configure(None)


def counts() -> dict[str, int]:
    """Return how often each failpoint was hit since :func:`configure`."""
    return dict(_counts)


def hit(name: str) -> None:
    """Mark that execution reached failpoint ``name``; trigger its action if configured."""
    if not _active:
        return
    n = _counts.get(name, 0) + 1
    _counts[name] = n
    if _log_path is not None:
        with open(_log_path, "a", encoding="utf-8") as f:
            f.write(name + "\n")
    rule = _rules.get(name)
    if rule is None or n != rule.at:
        return
    if rule.action == "crash":
        os.kill(os.getpid(), signal.SIGKILL)
    elif rule.action == "raise":
        raise FailpointError(f"failpoint {name} fired (hit {n})")
    elif rule.action == "sleep":
        time.sleep(rule.arg / 1000)
    elif rule.action == "pause":
        os.kill(os.getpid(), signal.SIGSTOP)
