"""Time vocabulary: conversions between the public types and hot-path integers, and clocks.

The public API speaks ``timedelta`` and aware UTC ``datetime``; the hot path
speaks integers with the unit in the name (``ts_ms``). A :class:`Clock`
gives the wall clock (epoch milliseconds, may jump) and a monotonic clock
(seconds, never goes back); the runtime reads time only through a clock, so
tests can drive it with a :class:`ManualClock` and never sleep.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol, final

__all__ = [
    "MAX_TS_MS",
    "MIN_TS_MS",
    "Clock",
    "ManualClock",
    "SystemClock",
    "from_ms",
    "to_ms",
    "to_duration_ms",
]

#: The watermark of an input that has ended: every window may close.
MAX_TS_MS = (1 << 62) - 1
#: The watermark before any record has been seen.
MIN_TS_MS = -(1 << 62)


def to_duration_ms(value: timedelta, what: str = "duration") -> int:
    """Return a ``timedelta`` as whole milliseconds.

    Raises:
        TypeError: ``value`` is not a ``timedelta``.
    """
    if not isinstance(value, timedelta):
        raise TypeError(
            f"{what} must be a datetime.timedelta, not {type(value).__name__} "
            f"(for 5 seconds write timedelta(seconds=5))"
        )
    return (value.days * 86_400_000) + (value.seconds * 1000) + (value.microseconds // 1000)


def to_ms(value: datetime) -> int:
    """Return an aware ``datetime`` as epoch milliseconds.

    Raises:
        ValueError: ``value`` is naive (has no timezone).
    """
    if value.tzinfo is None:
        raise ValueError(
            f"{value!r} has no timezone; use an aware datetime such as "
            f"datetime(2024, 1, 1, tzinfo=timezone.utc)"
        )
    return int(value.timestamp() * 1000)


def from_ms(ts_ms: int) -> datetime:
    """Return epoch milliseconds as an aware UTC ``datetime``."""
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC)


class Clock(Protocol):
    """Where the runtime reads time.

    ``now_ms`` is the wall clock (epoch milliseconds), used to advance the
    watermark of idle inputs and to fire processing-time timers.
    ``monotonic`` (seconds) measures durations (latency, timeouts, leases)
    and never goes back, whatever happens to the wall clock.
    """

    def now_ms(self) -> int:
        """Return the wall-clock time in epoch milliseconds."""
        ...

    def monotonic(self) -> float:
        """Return a monotonic time in seconds."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (a manual clock advances itself instead)."""
        ...


@final
class SystemClock:
    """The machine's clocks."""

    def now_ms(self) -> int:
        """Return the wall-clock time in epoch milliseconds."""
        return time.time_ns() // 1_000_000

    def monotonic(self) -> float:
        """Return ``time.monotonic()``."""
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        """Sleep for real."""
        if seconds > 0:
            time.sleep(seconds)


@final
class ManualClock:
    """A clock that moves only when told to: tests drive time without sleeping.

    ``sleep`` advances the clock instead of waiting, so a pipeline that waits
    for an idle timeout finishes at once in a test.

    Args:
        start: the initial wall-clock time (aware datetime). Default: 2024-01-01 UTC.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now_ms = to_ms(start) if start is not None else 1_704_067_200_000
        self._mono = 0.0

    def now_ms(self) -> int:
        """Return the current manual wall-clock time in epoch milliseconds."""
        return self._now_ms

    def monotonic(self) -> float:
        """Return the manual monotonic time in seconds."""
        return self._mono

    def sleep(self, seconds: float) -> None:
        """Advance the clock by ``seconds`` instead of waiting."""
        self.advance(timedelta(seconds=max(seconds, 0.0)))

    def advance(self, delta: timedelta) -> None:
        """Move both clocks forward by ``delta``.

        Raises:
            ValueError: ``delta`` is negative (use :meth:`set_wall` to jump the wall clock).
        """
        ms = to_duration_ms(delta, "delta")
        if ms < 0 or delta < timedelta(0):
            raise ValueError("a ManualClock only moves forward; use set_wall() to jump it back")
        self._now_ms += ms if ms else 0
        self._mono += delta.total_seconds()

    def set_wall(self, value: datetime) -> None:
        """Jump the wall clock (forwards or backwards); the monotonic clock is unchanged."""
        self._now_ms = to_ms(value)
