"""Join operators: the interval join (record and vectorized paths) and the as-of join.

Factories follow the registry contract ``factory(step, metrics, boundary, clock) -> Operator``.
Lookup enrichment (``Stream.enrich``) lives in :mod:`eventspine.runtime.routing`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from eventspine.runtime.joins.asof import AsofJoinOperator
from eventspine.runtime.joins.interval import IntervalJoinOperator

if TYPE_CHECKING:
    from eventspine.dataflow.steps import AsofJoinStep, IntervalJoinStep
    from eventspine.runtime.metrics import StepMetrics
    from eventspine.runtime.operator import ErrorBoundary
    from eventspine.timeutil import Clock

__all__ = ["AsofJoinOperator", "IntervalJoinOperator", "make_asof_join", "make_interval_join"]


def make_interval_join(
    step: IntervalJoinStep, metrics: StepMetrics, boundary: ErrorBoundary, clock: Clock
) -> IntervalJoinOperator:
    """Compile an interval join step (the clock is not used: joins run on event time)."""
    return IntervalJoinOperator(step, metrics, boundary)


def make_asof_join(
    step: AsofJoinStep, metrics: StepMetrics, boundary: ErrorBoundary, clock: Clock
) -> AsofJoinOperator:
    """Compile an as-of join step (the clock is not used: joins run on event time)."""
    return AsofJoinOperator(step, metrics, boundary)
