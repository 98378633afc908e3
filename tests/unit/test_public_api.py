"""Locks the public API surface: adding or removing a public name is a deliberate change."""

import eventspine as es

EXPECTED = {
    "__version__",
    "Pipeline",
    "Stream",
    "KeyedStream",
    "WindowedStream",
    "Event",
    "Expr",
    "col",
    "lit",
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
    "Source",
    "Sink",
    "Processor",
    "ProcessContext",
    "ErrorPolicy",
    "Fail",
    "Skip",
    "DeadLetter",
    "ManualClock",
    "SystemClock",
    "EventspineError",
    "DefinitionError",
    "ConfigError",
    "StepError",
    "DecodeError",
    "SourceError",
    "SinkError",
    "run",
    "RunOptions",
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
}


def test_all_is_exactly_the_public_surface() -> None:
    assert set(es.__all__) == EXPECTED


def test_every_public_name_exists() -> None:
    missing = [n for n in es.__all__ if not hasattr(es, n)]
    assert missing == []


def test_no_accidental_public_names() -> None:
    public = {n for n in dir(es) if not n.startswith("_")}
    # submodules are importable attributes, not part of the curated surface
    submodules = {
        "dataflow",
        "records",
        "errors",
        "timeutil",
        "runtime",
        "connectors",
        "testing",
        "log",
        "cli",
        "settings",
        "failpoints",
        "serde",
    }
    assert public - set(es.__all__) - submodules == set()


def test_import_is_light() -> None:
    import subprocess
    import sys

    code = "import sys, eventspine; print(sorted(m for m in ('polars','numpy','datasketches','prometheus_client','confluent_kafka') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
