"""eventspine: real-time event streams in plain Python.

    import eventspine as es

    p = es.Pipeline("ticks")
    ticks = p.source("ticks", es.JsonLinesSource("ticks.jsonl"),
                     timestamps=es.EventTime("ts", max_delay=timedelta(seconds=1)))
    (ticks.key_by("by_symbol", "symbol")
          .window(es.Tumbling(timedelta(seconds=1)))
          .aggregate("bars", open=es.first("price"), close=es.last("price"), n=es.count())
          .sink("out", es.JsonLinesSink("bars.jsonl")))

Run it with ``eventspine run ticks.py:p``. Importing eventspine does no I/O
and imports no heavy library; those load when a pipeline runs.
"""

from typing import TYPE_CHECKING as _TYPE_CHECKING

from eventspine._version import __version__
from eventspine.connectors.files import CsvSink, CsvSource, JsonLinesSink, JsonLinesSource
from eventspine.connectors.memory import CollectSink, MemorySource
from eventspine.connectors.stdout import StdoutSink
from eventspine.connectors.topics import Topic, topic
from eventspine.dataflow.aggregations import (
    Agg,
    Aggregator,
    agg,
    collect,
    count,
    distinct_count,
    first,
    last,
    mean,
    quantiles,
    top_k,
)
from eventspine.dataflow.aggregations import (
    max_ as max,  # es.max mirrors the builtin on purpose
)
from eventspine.dataflow.aggregations import (
    min_ as min,  # es.min mirrors the builtin on purpose
)
from eventspine.dataflow.aggregations import (
    sum_ as sum,  # es.sum mirrors the builtin on purpose
)
from eventspine.dataflow.expr import Expr, col, lit
from eventspine.dataflow.pipeline import KeyedStream, Pipeline, Stream, WindowedStream
from eventspine.dataflow.ports import (
    DeadLetter,
    ErrorPolicy,
    Fail,
    ProcessContext,
    Processor,
    Sink,
    Skip,
    Source,
)
from eventspine.dataflow.time import (
    Count,
    CustomDecay,
    Decaying,
    EventTime,
    EveryInterval,
    EveryN,
    ExponentialDecay,
    Hopping,
    LinearDecay,
    OnChange,
    OnClose,
    Session,
    Sliding,
    Tumbling,
)
from eventspine.errors import (
    ConfigError,
    DecodeError,
    DefinitionError,
    EventspineError,
    SinkError,
    SourceError,
    StepError,
)
from eventspine.records import Event
from eventspine.runtime.executor import RunOptions, run
from eventspine.timeutil import ManualClock, SystemClock

if _TYPE_CHECKING:
    from eventspine.connectors.generator import GeneratorSource

__all__ = [
    "__version__",
    # pipeline
    "Pipeline",
    "Stream",
    "KeyedStream",
    "WindowedStream",
    "Event",
    "Expr",
    "col",
    "lit",
    # time and windows
    "EventTime",
    "Tumbling",
    "Hopping",
    "Sliding",
    "Session",
    "Count",
    "Decaying",
    "ExponentialDecay",
    "LinearDecay",
    "CustomDecay",
    "OnClose",
    "OnChange",
    "EveryN",
    "EveryInterval",
    # aggregations
    "Agg",
    "Aggregator",
    "agg",
    "count",
    "sum",
    "mean",
    "min",
    "max",
    "first",
    "last",
    "collect",
    "distinct_count",
    "quantiles",
    "top_k",
    # ports and policies
    "Source",
    "Sink",
    "Processor",
    "ProcessContext",
    "ErrorPolicy",
    "Fail",
    "Skip",
    "DeadLetter",
    # running
    "run",
    "RunOptions",
    # connectors
    "MemorySource",
    "JsonLinesSource",
    "CsvSource",
    "GeneratorSource",
    "JsonLinesSink",
    "CsvSink",
    "StdoutSink",
    "CollectSink",
    "topic",
    "Topic",
    # clocks
    "ManualClock",
    "SystemClock",
    # errors
    "EventspineError",
    "DefinitionError",
    "ConfigError",
    "StepError",
    "DecodeError",
    "SourceError",
    "SinkError",
]


# Names whose modules import heavy libraries (numpy), loaded on first use.
_LAZY = {"testing": "eventspine.testing", "GeneratorSource": "eventspine.connectors.generator"}


def __getattr__(name: str) -> object:
    """Load ``es.testing`` and ``es.GeneratorSource`` on first use (keeps the import light)."""
    if name in _LAZY:
        import importlib

        module = importlib.import_module(_LAZY[name])
        return module if name == "testing" else getattr(module, name)
    raise AttributeError(f"module 'eventspine' has no attribute {name!r}")
