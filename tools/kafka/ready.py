"""Readiness check for the Kafka nodes started by tools/kafka/kafkactl.

Stricter than grepping the broker log: the cluster is ready when an
AdminClient sees every expected broker in the metadata (KRaft leaves fenced
brokers out) and, with ``--topic-rf``, can create and delete a throwaway
topic with that replication factor. With ``--log FILE --log-offset N`` the
node's log must also say "Kafka Server started" after byte N, so a restarted
node is not taken for ready on metadata that still lists its previous,
not yet fenced incarnation.

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


def _started(log: Path, offset: int) -> bool:
    try:
        with log.open("rb") as f:
            f.seek(offset)
            return b"Kafka Server started" in f.read()
    except OSError:
        return False


_QUIET = logging.getLogger("kafkactl.ready")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False


def _check(bootstrap: str, brokers: set[int], topic_rf: int, deadline: float) -> None:
    def left(cap: float) -> float:
        return max(0.5, min(cap, deadline - time.monotonic()))

    admin = AdminClient(
        {
            "bootstrap.servers": bootstrap,
            "socket.connection.setup.timeout.ms": 2000,
            "reconnect.backoff.max.ms": 500,
            "logger": _QUIET,
        }
    )
    md = admin.list_topics(timeout=left(3))
    missing = brokers - set(md.brokers)
    if missing:
        raise NotReadyError(
            f"brokers {sorted(missing)} not in metadata yet (have {sorted(md.brokers)})"
        )
    if topic_rf:
        name = f"kafkactl-ready-{uuid.uuid4().hex[:12]}"
        topic = NewTopic(name, num_partitions=1, replication_factor=topic_rf)
        timeout = left(15)
        futures = admin.create_topics([topic], operation_timeout=timeout, request_timeout=timeout)
        futures[name].result(timeout=timeout + 1)
        timeout = left(15)
        futures = admin.delete_topics([name], operation_timeout=timeout, request_timeout=timeout)
        futures[name].result(timeout=timeout + 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--brokers", required=True, help="comma-separated node ids that must be up")
    ap.add_argument("--topic-rf", type=int, default=0, help="create+delete a topic with this RF")
    ap.add_argument("--pid", type=int, action="append", default=[], help="node process to watch")
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--log", type=Path, help="node log that must show the server started")
    ap.add_argument("--log-offset", type=int, default=0, help="look in --log after this byte")
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
            if args.log and not _started(args.log, args.log_offset):
                raise NotReadyError(f"no 'Kafka Server started' in {args.log} yet")
            _check(args.bootstrap, brokers, args.topic_rf, deadline)
        except Exception as exc:  # any failure means "not ready yet": retry until the deadline
            last = f"{type(exc).__name__}: {exc}"
        else:
            return 0
        if time.monotonic() >= deadline:
            print(
                f"kafkactl: not ready after {args.timeout:.0f} s; last error: {last}",
                file=sys.stderr,
            )
            return 1
        time.sleep(0.25)


if __name__ == "__main__":
    sys.exit(main())
