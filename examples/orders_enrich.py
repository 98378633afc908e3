"""E-commerce service: enrich orders from a lookup, join with payments, find unpaid orders.

Orders are enriched with their customer's tier through a cached lookup (the
kind of call that would hit a database), then interval-joined with payments
of the same order within 15 minutes; a left join emits orders that were never
paid once the 15 minutes have passed in event time.

Run: eventspine run examples/orders_enrich.py:pipeline
 or: python examples/orders_enrich.py
"""

import random
from datetime import timedelta

import eventspine as es

rng = random.Random(11)
ORDERS = [
    {
        "order": i,
        "customer": f"c{rng.randrange(50)}",
        "amount": rng.randrange(5, 500),
        "ts": i * 7_000,
    }
    for i in range(2_000)
]
PAYMENTS = [
    {"order": o["order"], "paid": o["amount"], "ts": o["ts"] + rng.randrange(0, 20 * 60_000)}
    for o in ORDERS
    if rng.random() < 0.9
]
PAYMENTS.sort(key=lambda p: p["ts"])
TIERS = {f"c{i}": ("gold" if i % 10 == 0 else "standard") for i in range(50)}


def customer_tier(customer: str) -> dict[str, str]:
    """Stand-in for a database lookup; the enrich step caches its answers."""
    return {"tier": TIERS[customer]}


pipeline = es.Pipeline("orders_enrich")
window = timedelta(minutes=15)
orders = (
    pipeline.source("orders", es.MemorySource(ORDERS), timestamps=es.EventTime("ts"))
    .enrich("tier", customer_tier, key="customer", ttl=timedelta(minutes=10))
    .key_by("by_order", "order")
)
payments = pipeline.source(
    "payments", es.MemorySource(PAYMENTS), timestamps=es.EventTime("ts")
).key_by("pay_by_order", "order")

paid = orders.interval_join("paid", payments, between=(timedelta(0), window), how="left")
unpaid = paid.filter("unpaid", lambda r: r["right"] is None).map(
    "unpaid_order", lambda r: {**r["left"], "status": "unpaid"}
)
unpaid.sink("unpaid_out", es.JsonLinesSink("out/unpaid_orders.jsonl"))


if __name__ == "__main__":
    result = es.run(pipeline)
    n = result.inspector.snapshot()["unpaid"].records_out
    print(f"{len(ORDERS):,} orders, {len(PAYMENTS):,} payments, {n:,} unpaid after 15 minutes")
