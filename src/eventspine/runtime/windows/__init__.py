"""Event-time (and count) window operators.

:func:`make_window` is the factory the registry maps ``WindowStep`` to. It
prefers the vectorized operator of :mod:`eventspine.runtime.windows.columnar`
when that module supports the step, and otherwise builds the general
record-at-a-time operator of the step's window kind:

========================  ======================================================
``Tumbling``/``Hopping``  :class:`~eventspine.runtime.windows.fixed.FixedWindows`
``Session``               :class:`~eventspine.runtime.windows.session.SessionWindows`
``Sliding``               :class:`~eventspine.runtime.windows.sliding.SlidingWindows`
``Count``                 :class:`~eventspine.runtime.windows.count.CountWindows`
``Decaying``              :class:`~eventspine.runtime.windows.decaying.DecayingAggregate`
========================  ======================================================

Contract shared by every operator (see ``docs/windows.md``):

* A window ``[start, end)`` emits when the operator watermark reaches ``end``;
  its result has event time ``end - 1`` and is a dict ``{key_field: key,
  "window_start_ms": start, "window_end_ms": end, **aggregations}``, plus
  ``"final"`` in the update modes (``OnChange``, ``EveryN``, ``EveryInterval``).
* State is kept until the watermark reaches ``end + allowed_lateness``; a
  record for a window in that period updates it and re-emits its result (a
  later row for the same key and window replaces the earlier one); a record
  whose windows are all past that point is counted in ``metrics.late`` and
  sent, unchanged, to side output ``"late"``.
* Results released together are ordered by ``(event time, key)``.
* ``metrics.state_keys`` is the number of open ``(key, window)`` entries.
* State is plain dicts of lists and tuples keyed by ``(key, window start)``
  (each module documents its layout) so that durable snapshots can be added.
"""

from __future__ import annotations

from eventspine.dataflow.steps import WindowStep
from eventspine.dataflow.time import Count, Decaying, Hopping, Session, Sliding, Tumbling
from eventspine.errors import DefinitionError
from eventspine.runtime.metrics import StepMetrics
from eventspine.runtime.operator import ErrorBoundary, Operator
from eventspine.timeutil import Clock

__all__ = ["make_window", "make_record_window"]


def make_window(
    step: WindowStep, metrics: StepMetrics, boundary: ErrorBoundary, clock: Clock
) -> Operator:
    """Return the operator for a window step: the columnar one if it supports the step.

    Raises:
        DefinitionError: the step combines options no operator supports.
    """
    try:
        from eventspine.runtime.windows import columnar
    except ImportError:
        columnar = None  # type: ignore[assignment]  # the vectorized operator is optional
    if columnar is not None and columnar.supports(step):
        return columnar.ColumnarWindow(
            step,
            metrics,
            boundary,
            clock,
            record_path=lambda: make_record_window(step, metrics, boundary, clock),
        )
    return make_record_window(step, metrics, boundary, clock)


def make_record_window(
    step: WindowStep, metrics: StepMetrics, boundary: ErrorBoundary, clock: Clock
) -> Operator:
    """Return the general record-at-a-time operator for a window step.

    Raises:
        DefinitionError: the step combines options no operator supports.
    """
    kind = step.window
    if isinstance(kind, Tumbling | Hopping):
        from eventspine.runtime.windows.fixed import FixedWindows

        return FixedWindows(step, metrics, boundary, clock)
    if isinstance(kind, Session):
        from eventspine.runtime.windows.session import SessionWindows

        return SessionWindows(step, metrics, boundary, clock)
    if isinstance(kind, Sliding):
        from eventspine.runtime.windows.sliding import SlidingWindows

        return SlidingWindows(step, metrics, boundary, clock)
    if isinstance(kind, Count):
        from eventspine.runtime.windows.count import CountWindows

        return CountWindows(step, metrics, boundary, clock)
    if isinstance(kind, Decaying):
        from eventspine.runtime.windows.decaying import DecayingAggregate

        return DecayingAggregate(step, metrics, boundary, clock)
    raise DefinitionError(f"step '{step.name}': no window operator for {kind!r}")
