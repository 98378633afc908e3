"""Row-only pipelines never import polars (its import is ~0.15 s of every start)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import sys
    from datetime import timedelta

    import eventspine as es
    from eventspine.log import LogRecord, TopicSpec, open_log
    from eventspine.runtime.checkpoint import CheckpointPolicy

    log = open_log("memory://")
    log.create_topic(TopicSpec("in"))
    log.append("in", 0, [LogRecord(b"k", b'{"key": "k", "value": %d}' % i, i) for i in range(5)])
    p = es.Pipeline("rows")
    (
        p.source("in", es.topic("in", dict))
        .filter("keep", es.col("value") > 1)
        .map("double", value=es.col("value") * 2)
        .key_by("by_key", es.col("key"))
        .sink("out", es.topic("out", key="key"))
    )
    options = es.RunOptions(
        log=log,
        handle_signals=False,
        max_wall=timedelta(milliseconds=500),
        checkpoint=CheckpointPolicy(interval=timedelta(milliseconds=10)),
    )
    es.run(p, options=options)
    values = sorted(r.value for r in log.read("out", 0, 0))
    assert values == [b'{"key":"k","value":4}', b'{"key":"k","value":6}', b'{"key":"k","value":8}'], values
    print("polars" in sys.modules)
    """
)


def test_a_row_only_pipeline_with_expressions_does_not_import_polars() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
