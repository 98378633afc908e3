"""Readiness check for the Kafka nodes started by tools/kafka/kafkactl.

Stricter than grepping the broker log: the cluster is ready when an
AdminClient sees every expected broker in the metadata (KRaft leaves fenced
brokers out) and, with ``--topic-rf``, can create and delete a throwaway
topic with that replication factor.

Exit codes: 0 ready, 1 timed out, 2 a node process exited, 3 bad setup.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import uuid
from pathlib import Path

try:
    from confluent_kafka.admin import AdminClient, NewTopic
except ImportError as exc:
    print(f"kafkactl: ready check needs confluent_kafka ({exc})", file=sys.stderr)
    sys.exit(3)


class NotReadyError(Exception):
    """The cluster answered, but is not ready yet."""


def _alive(pid: int) -> bool:
    """True if the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _check(bootstrap: str, brokers: set[int], topic_rf: int) -> None:
    quiet = logging.getLogger("kafkactl.ready")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    admin = AdminClient(
        {
            "bootstrap.servers": bootstrap,
            "socket.connection.setup.timeout.ms": 2000,
            "reconnect.backoff.max.ms": 500,
            "logger": quiet,
        }
    )
    md = admin.list_topics(timeout=3)
    missing = brokers - set(md.brokers)
    if missing:
        raise NotReadyError(f"brokers {sorted(missing)} not in metadata yet (have {sorted(md.brokers)})")
    if topic_rf:
        name = f"kafkactl-ready-{uuid.uuid4().hex[:12]}"
        topic = NewTopic(name, num_partitions=1, replication_factor=topic_rf)
        admin.create_topics([topic], operation_timeout=10, request_timeout=15)[name].result(timeout=20)
        admin.delete_topics([name], operation_timeout=10, request_timeout=15)[name].result(timeout=20)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--brokers", required=True, help="comma-separated node ids that must be up")
    ap.add_argument("--topic-rf", type=int, default=0, help="create+delete a topic with this RF")
    ap.add_argument("--pid", type=int, action="append", default=[], help="node process to watch")
    ap.add_argument("--timeout", type=float, default=120.0)
    args = ap.parse_args()
    brokers = {int(b) for b in args.brokers.split(",")}

    deadline = time.monotonic() + args.timeout
    last = "no attempt yet"
    while True:
        dead = [pid for pid in args.pid if not _alive(pid)]
        if dead:
            print(f"kafkactl: node process {dead} exited during start", file=sys.stderr)
            return 2
        try:
            _check(args.bootstrap, brokers, args.topic_rf)
        except Exception as exc:  # any failure means "not ready yet": retry until the deadline
            last = f"{type(exc).__name__}: {exc}"
        else:
            return 0
        if time.monotonic() >= deadline:
            print(f"kafkactl: not ready after {args.timeout:.0f} s; last error: {last}", file=sys.stderr)
            return 1
        time.sleep(0.25)


if __name__ == "__main__":
    sys.exit(main())
