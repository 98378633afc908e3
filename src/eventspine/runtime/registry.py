"""Which operator implements each stateful step kind (windows, joins, process)."""

from __future__ import annotations

from collections.abc import Callable

from eventspine.dataflow.steps import AsofJoinStep, IntervalJoinStep, ProcessStep, WindowStep
from eventspine.runtime.operator import Operator

__all__ = ["factories"]


def factories() -> dict[type, Callable[..., Operator]]:
    """Return ``step type -> factory(step, metrics, boundary, clock)``."""
    from eventspine.runtime.joins import make_asof_join, make_interval_join
    from eventspine.runtime.process import make_process
    from eventspine.runtime.windows import make_window

    return {
        WindowStep: make_window,
        IntervalJoinStep: make_interval_join,
        AsofJoinStep: make_asof_join,
        ProcessStep: make_process,
    }
