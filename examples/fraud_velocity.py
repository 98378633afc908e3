"""Fraud analyst: flag accounts whose payment velocity or amount jumps.

Synthetic payments -> per account, a 10-minute hopping window every minute
(count, total, distinct merchants) -> keep windows over the thresholds ->
alerts. Records the generator marks as odd go to their own sink through
`split`, and an amount that cannot be parsed is dead-lettered, not lost.

Run: eventspine run examples/fraud_velocity.py:pipeline
 or: python examples/fraud_velocity.py   (an in-memory run that prints a summary)
"""

from datetime import timedelta

import eventspine as es

pipeline = es.Pipeline("fraud_velocity", on_error=es.DeadLetter("fraud_rejects"))

payments = pipeline.source(
    "payments",
    es.GeneratorSource("payments", count=50_000, seed=7, rate=None),
    timestamps=es.EventTime("ts", max_delay=timedelta(seconds=2)),
)
routes = payments.split("route", large=es.col("amount") > 2_000)

velocity = (
    routes["default"]
    .key_by("by_account", "account")
    .window(es.Hopping(size=timedelta(minutes=10), hop=timedelta(minutes=1)))
    .aggregate(
        "velocity",
        payments=es.count(),
        total=es.sum("amount"),
        merchants=es.distinct_count("merchant"),
    )
)
alerts = velocity.filter("suspicious", (es.col("payments") >= 8) | (es.col("total") > 5_000))
alerts.sink("alerts", es.JsonLinesSink("out/fraud_alerts.jsonl"))
routes["large"].sink("large_payments", es.JsonLinesSink("out/large_payments.jsonl"))


if __name__ == "__main__":
    result = es.run(pipeline)
    totals = result.inspector.totals()
    print(f"read {totals['read']:,} payments, wrote {totals['written']:,} records to out/")
