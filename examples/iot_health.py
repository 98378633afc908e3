"""IoT platform: per-device health with a decaying baseline and late data kept.

Sensor readings -> per device, a 1-minute tumbling mean and max temperature,
plus an exponentially decaying baseline (half-life 5 minutes) evaluated every
minute of event time. Readings that arrive after their window closed go to a
`late` side output instead of vanishing.

Run: eventspine run examples/iot_health.py:pipeline
 or: python examples/iot_health.py
"""

from datetime import timedelta

import eventspine as es

pipeline = es.Pipeline("iot_health")

readings = pipeline.source(
    "readings",
    es.GeneratorSource("iot", count=40_000, seed=3, disorder=timedelta(seconds=3)),
    timestamps=es.EventTime(
        "ts", max_delay=timedelta(seconds=2), idle_timeout=timedelta(seconds=10)
    ),
)
by_device = readings.key_by("by_device", "device")

minutes = by_device.window(es.Tumbling(timedelta(minutes=1))).aggregate(
    "per_minute",
    readings=es.count(),
    mean_temp=es.mean("temperature"),
    max_temp=es.max("temperature"),
    p95_temp=es.quantiles("temperature", [0.95]),
)
minutes.sink("minutes", es.JsonLinesSink("out/device_minutes.jsonl"))
minutes.side_output("late").sink("late", es.JsonLinesSink("out/late_readings.jsonl"))

baseline = by_device.window(
    es.Decaying(es.ExponentialDecay(half_life=timedelta(minutes=5))),
    emit=es.EveryInterval(timedelta(minutes=1)),
).aggregate("baseline", temp=es.mean("temperature"))
baseline.sink("baselines", es.JsonLinesSink("out/device_baselines.jsonl"))


if __name__ == "__main__":
    result = es.run(pipeline)
    snap = result.inspector.snapshot()
    readings_n, minutes_n = snap["readings"].records_out, snap["per_minute"].records_out
    late_n = snap["per_minute"].late
    print(f"{readings_n:,} readings, {minutes_n:,} device-minutes, {late_n:,} late readings kept")
