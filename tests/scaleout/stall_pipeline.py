"""The oracle pipeline (``pipeline.py``) whose ``stats`` step blocks once, in one process.

Run by ``test_kafka_maxpoll.py`` as real worker processes::

    SCALE_IN=... SCALE_OUT=... SCALE_STALL_AFTER=300 SCALE_STALL_S=11 \\
        eventspine run tests/scaleout/stall_pipeline.py:pipeline --log-url kafka://...

Same steps, state and output as ``pipeline.py`` (so :func:`pipeline.expected` is its
oracle). With ``SCALE_STALL_AFTER=N`` the step, after the N-th record this *process*
handled, sleeps ``SCALE_STALL_S`` seconds inside user code, once per process: the
worker's loop does not poll its group member meanwhile, while librdkafka's background
thread keeps heartbeating (unlike SIGSTOP, the session stays alive, only
``max.poll.interval.ms`` runs out). Workers started without the variable never block;
all workers run this module, so the step's state signature is the same everywhere.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

# The CLI loads a target by path with its folder on sys.path: the oracle is `pipeline`.
import pipeline as oracle  # type: ignore[import-not-found,unused-ignore]

import eventspine as es

_handled = 0
_stalled = False


class StallingStats(oracle.RunningStats):  # type: ignore[misc,unused-ignore]
    """``RunningStats`` that blocks once after ``after`` records (0: never)."""

    def __init__(self, slow_ms: float) -> None:
        super().__init__(slow_ms)
        self.after = int(os.environ.get("SCALE_STALL_AFTER", "0"))
        self.stall_s = float(os.environ.get("SCALE_STALL_S", "0"))

    def on_record(self, record: dict[str, Any], ctx: es.ProcessContext) -> None:
        global _handled, _stalled
        super().on_record(record, ctx)
        _handled += 1
        if self.after and not _stalled and _handled >= self.after:
            _stalled = True  # once per process, even if its tasks are rebuilt afterwards
            print(f"stall_pipeline: blocking {self.stall_s} s", file=sys.stderr, flush=True)
            time.sleep(self.stall_s)
            print("stall_pipeline: woke up", file=sys.stderr, flush=True)


def pipeline() -> es.Pipeline:
    """The oracle pipeline with :class:`StallingStats` as its ``stats`` step."""
    oracle.RunningStats = StallingStats  # pipeline() looks the class up when it builds
    return oracle.pipeline()  # type: ignore[no-any-return,unused-ignore]
