"""Event time, windows and emit modes: the values a pipeline is defined with.

Window kinds are values passed to one ``KeyedStream.window(...)``; emit modes
are values passed to its ``emit=`` argument. All durations are ``timedelta``.
Windows are aligned to the epoch (a 1 s tumbling window starts at every whole
second UTC) unless an ``offset`` is given.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, final

from eventspine.dataflow.expr import Expr
from eventspine.errors import DefinitionError
from eventspine.timeutil import to_duration_ms

__all__ = [
    "Count",
    "CustomDecay",
    "Decay",
    "Decaying",
    "EmitMode",
    "EventTime",
    "EveryInterval",
    "EveryN",
    "ExponentialDecay",
    "Hopping",
    "LinearDecay",
    "OnChange",
    "OnClose",
    "Session",
    "Sliding",
    "Tumbling",
    "WindowKind",
]


def _positive_ms(value: timedelta, what: str) -> int:
    try:
        ms = to_duration_ms(value, what)
    except TypeError as exc:
        raise DefinitionError(str(exc)) from exc
    if ms <= 0:
        raise DefinitionError(f"{what} must be a positive duration of at least 1 ms, not {value}")
    return ms


@final
@dataclass(frozen=True)
class EventTime:
    """Where a source's records get their event time, and how its watermark moves.

    Args:
        timestamp: a field name holding epoch milliseconds (int), an ``Expr``, or a
            function ``record -> int (epoch ms) | datetime``.
        max_delay: the bounded out-of-orderness: the watermark of each partition is
            the largest timestamp seen minus ``max_delay``.
        idle_timeout: after this long with nothing to read, a partition is idle: it no
            longer holds back other partitions, and if every partition is idle the
            wall clock advances the watermark (so windows close on time when a stream
            goes quiet). ``None`` disables wall-clock advancement.
    """

    timestamp: str | Expr | Callable[[Any], Any]
    max_delay: timedelta = timedelta(0)
    idle_timeout: timedelta | None = timedelta(seconds=5)

    def __post_init__(self) -> None:
        if to_duration_ms(self.max_delay, "max_delay") < 0:
            raise DefinitionError(f"max_delay must not be negative, not {self.max_delay}")
        if self.idle_timeout is not None:
            _positive_ms(self.idle_timeout, "idle_timeout")

    @property
    def max_delay_ms(self) -> int:
        """``max_delay`` in milliseconds."""
        return to_duration_ms(self.max_delay)

    @property
    def idle_timeout_ms(self) -> int | None:
        """``idle_timeout`` in milliseconds, or ``None``."""
        return None if self.idle_timeout is None else to_duration_ms(self.idle_timeout)


class WindowKind:
    """A kind of window (a value passed to ``KeyedStream.window``)."""

    __slots__ = ()

    @property
    def signature(self) -> str:
        """A stable description, stored with the state so incompatible changes are refused."""
        return repr(self)


@final
@dataclass(frozen=True, repr=False)
class Tumbling(WindowKind):
    """Fixed-size, non-overlapping windows ``[start, start + size)``."""

    size: timedelta
    offset: timedelta = timedelta(0)

    def __post_init__(self) -> None:
        _positive_ms(self.size, "Tumbling size")

    def __repr__(self) -> str:
        size, offset = to_duration_ms(self.size), to_duration_ms(self.offset)
        return f"Tumbling(size_ms={size}, offset_ms={offset})"


@final
@dataclass(frozen=True, repr=False)
class Hopping(WindowKind):
    """Fixed-size windows that start every ``hop``; a record is in ``size / hop`` windows."""

    size: timedelta
    hop: timedelta
    offset: timedelta = timedelta(0)

    def __post_init__(self) -> None:
        size = _positive_ms(self.size, "Hopping size")
        hop = _positive_ms(self.hop, "Hopping hop")
        if hop > size:
            raise DefinitionError(
                f"Hopping hop ({self.hop}) is larger than size ({self.size}): records between "
                f"windows would belong to none; use a hop <= size"
            )

    def __repr__(self) -> str:
        return (
            f"Hopping(size_ms={to_duration_ms(self.size)}, hop_ms={to_duration_ms(self.hop)}, "
            f"offset_ms={to_duration_ms(self.offset)})"
        )


@final
@dataclass(frozen=True, repr=False)
class Sliding(WindowKind):
    """One window per record: the records of the key with ``ts`` in ``(t - size, t]``.

    The result for a record at ``t`` is emitted once the watermark reaches ``t``.
    """

    size: timedelta

    def __post_init__(self) -> None:
        _positive_ms(self.size, "Sliding size")

    def __repr__(self) -> str:
        return f"Sliding(size_ms={to_duration_ms(self.size)})"


@final
@dataclass(frozen=True, repr=False)
class Session(WindowKind):
    """Windows of activity separated by at least ``gap`` of silence (merged as records arrive)."""

    gap: timedelta

    def __post_init__(self) -> None:
        _positive_ms(self.gap, "Session gap")

    def __repr__(self) -> str:
        return f"Session(gap_ms={to_duration_ms(self.gap)})"


@final
@dataclass(frozen=True, repr=False)
class Count(WindowKind):
    """Every ``size`` records of a key, in arrival order (a partial window flushes at the end)."""

    size: int

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or self.size < 1:
            raise DefinitionError(f"Count size must be a positive int, not {self.size!r}")

    def __repr__(self) -> str:
        return f"Count(size={self.size})"


class Decay:
    """How much a record weighs as it ages (``weight(age_ms) -> float in [0, 1]``)."""

    __slots__ = ()

    horizon_ms: int | None

    def weight(self, age_ms: float) -> float:
        """Return the weight of a record ``age_ms`` old."""
        raise NotImplementedError


@final
@dataclass(frozen=True)
class ExponentialDecay(Decay):
    """Weight halves every ``half_life``: ``w = 0.5 ** (age / half_life)``."""

    half_life: timedelta
    horizon_ms: int | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        _positive_ms(self.half_life, "half_life")

    @property
    def half_life_ms(self) -> int:
        """The half-life in milliseconds."""
        return to_duration_ms(self.half_life)

    def weight(self, age_ms: float) -> float:
        """Return ``0.5 ** (age_ms / half_life_ms)``."""
        return math.pow(0.5, age_ms / self.half_life_ms)


@final
@dataclass(frozen=True)
class LinearDecay(Decay):
    """Weight falls linearly from 1 to 0 over ``horizon``: ``w = max(0, 1 - age / horizon)``."""

    horizon: timedelta
    horizon_ms: int | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "horizon_ms", _positive_ms(self.horizon, "LinearDecay horizon"))

    def weight(self, age_ms: float) -> float:
        """Return ``max(0, 1 - age_ms / horizon_ms)``."""
        assert self.horizon_ms is not None
        return max(0.0, 1.0 - age_ms / self.horizon_ms)


@final
@dataclass(frozen=True)
class CustomDecay(Decay):
    """Weight given by a function of age (a ``timedelta``); older than ``horizon`` weighs 0."""

    fn: Callable[[timedelta], float]
    horizon: timedelta
    horizon_ms: int | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "horizon_ms", _positive_ms(self.horizon, "CustomDecay horizon"))

    def weight(self, age_ms: float) -> float:
        """Return ``fn(age)`` for ages within the horizon, else 0."""
        assert self.horizon_ms is not None
        if age_ms > self.horizon_ms:
            return 0.0
        return float(self.fn(timedelta(milliseconds=age_ms)))


@final
@dataclass(frozen=True, repr=False)
class Decaying(WindowKind):
    """A per-key aggregate in which every record's weight decays with its age.

    With the default emit mode the aggregate is evaluated at each record's event
    time and emitted for every record (``count`` is the sum of weights, ``sum`` the
    weighted sum, ``mean`` their ratio). With ``EveryInterval`` it is evaluated at
    the watermark every interval.
    """

    decay: Decay

    def __post_init__(self) -> None:
        if not isinstance(self.decay, Decay):
            raise DefinitionError(
                "Decaying takes ExponentialDecay(...), LinearDecay(...) or CustomDecay(...)"
            )

    def __repr__(self) -> str:
        return f"Decaying({self.decay!r})"


class EmitMode:
    """When a window emits results (a value passed to ``window(..., emit=...)``)."""

    __slots__ = ()


@final
@dataclass(frozen=True)
class OnClose(EmitMode):
    """Emit once, when the watermark passes the window end (the default)."""


@final
@dataclass(frozen=True)
class OnChange(EmitMode):
    """Emit an update on every change, then the final result at close."""


@final
@dataclass(frozen=True)
class EveryN(EmitMode):
    """Emit an update every ``n`` records of the window, then the final result at close."""

    n: int

    def __post_init__(self) -> None:
        if not isinstance(self.n, int) or self.n < 1:
            raise DefinitionError(f"EveryN takes a positive int, not {self.n!r}")


@final
@dataclass(frozen=True)
class EveryInterval(EmitMode):
    """Emit an update each time the watermark advances by ``interval``, then the final result."""

    interval: timedelta

    def __post_init__(self) -> None:
        _positive_ms(self.interval, "EveryInterval interval")
