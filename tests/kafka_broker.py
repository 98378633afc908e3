"""pytest plugin: a real Apache Kafka broker for the tests marked ``kafka``.

Fixtures (session scope, started lazily: a run without Kafka tests starts nothing):

``kafka_bootstrap``
    ``"host:port"`` of a single-node broker. If ``EVENTSPINE_TEST_KAFKA`` is
    set (e.g. ``127.0.0.1:9092``), that broker is used as is. Otherwise
    ``tools/kafka/kafkactl up`` starts one in a temporary dir on free loopback
    ports and ``kafkactl down`` stops it at the end of the session, also when
    tests fail or the run is interrupted (``try``/``finally`` plus ``atexit``;
    if pytest itself is killed, the ``--owner-pid`` watchdog of kafkactl
    stops the broker).
``kafka_broker``
    The same broker as a :class:`KafkaCluster`, with fault injection
    (``kill``/``stop``/``start``/``pause``/``resume`` a node); these skip the
    test when the broker is external.
``kafka_cluster3``
    A three-node cluster (RF 3, ``min.insync.replicas=2``), always started
    locally, for replication and broker-failure tests.

Register it once in ``tests/conftest.py``::

    pytest_plugins = ["kafka_broker"]          # tests/ has no __init__.py
    # or ["tests.kafka_broker"] if tests/ is a package

Environment: ``EVENTSPINE_TEST_KAFKA=host:port`` (external broker),
``EVENTSPINE_TEST_KAFKA_KEEP=1`` (keep the temporary dir with the broker logs).
The ``KAFKACTL_*`` variables of ``tools/kafka/kafkactl`` also apply (heap,
JVM options, timeouts).
"""

from __future__ import annotations

import atexit
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
KAFKACTL = REPO / "tools" / "kafka" / "kafkactl"
EXTERNAL_ENV = "EVENTSPINE_TEST_KAFKA"
KEEP_ENV = "EVENTSPINE_TEST_KAFKA_KEEP"

# kafkactl: node k listens on 10000*k + base (client) and the next port
# (controller). Random bases from this range keep parallel sessions, and a
# developer's `make kafka-up` on the default base 9092, apart.
_BASES = range(9100, 9990, 2)
_UP_TIMEOUT_S = 420  # a cold fetch (~40 s) plus kafkactl's 120 s ready timeout, with margin


def _ports_free(base: int, nodes: int) -> bool:
    for k in range(1, nodes + 1):
        for port in (10000 * k + base, 10000 * k + base + 1):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    return False
    return True


def _free_base(nodes: int) -> int:
    for base in random.sample(_BASES, k=len(_BASES)):
        if _ports_free(base, nodes):
            return base
    raise RuntimeError("no free loopback port range for a Kafka test broker")


@dataclass
class KafkaCluster:
    """A Kafka broker or cluster used by the tests.

    ``run_dir`` is ``None`` for an external broker (``EVENTSPINE_TEST_KAFKA``),
    which the fault-injection methods cannot touch: they skip the test.
    """

    bootstrap: str
    nodes: int
    run_dir: Path | None = None
    _stopped: bool = field(default=False, repr=False)

    def ctl(self, *args: str, timeout: float = 180) -> str:
        """Run ``kafkactl ARGS --dir run_dir`` and return its stdout."""
        if self.run_dir is None:
            pytest.skip(f"needs a broker started by kafkactl, not {EXTERNAL_ENV}")
        proc = subprocess.run(
            [str(KAFKACTL), *args, "--dir", str(self.run_dir)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "KAFKACTL_PYTHON": sys.executable},
            check=False,
        )
        if proc.returncode != 0 and args[0] != "status":
            raise RuntimeError(f"kafkactl {' '.join(args)} failed:\n{proc.stderr}")
        return proc.stdout

    def kill(self, node: int) -> None:
        """SIGKILL one node (crash)."""
        self.ctl("kill", str(node))

    def stop(self, node: int) -> None:
        """SIGTERM one node (clean shutdown; SIGKILL after 30 s)."""
        self.ctl("stop", str(node))

    def start(self, node: int, *, wait: bool = True) -> None:
        """Restart a stopped node on its data; by default wait until it is back."""
        self.ctl("start", str(node), *(() if wait else ("--no-wait",)))

    def pause(self, node: int) -> None:
        """SIGSTOP one node (models a long GC pause)."""
        self.ctl("pause", str(node))

    def resume(self, node: int) -> None:
        """SIGCONT a paused node."""
        self.ctl("resume", str(node))

    def status(self) -> str:
        """Return ``kafkactl status`` output (state, pid, RSS per node)."""
        return self.ctl("status")

    def down(self) -> None:
        """Stop every node (idempotent; a no-op for an external broker)."""
        if self.run_dir is None or self._stopped:
            return
        self._stopped = True
        subprocess.run(
            [str(KAFKACTL), "down", "--dir", str(self.run_dir)],
            capture_output=True,
            timeout=120,
            check=False,
        )


def client_listener_props(port: int, advertised_port: int) -> str:
    """Server properties adding a ``CLIENT`` listener on ``port``, advertised at ``advertised_port``.

    For :func:`running_kafka`'s ``server_props`` (single node; KAFKA.md, "Client listener
    for fault injection"): clients that bootstrap from ``127.0.0.1:advertised_port`` (a
    fault proxy forwarding to ``port``) are told that the broker is there, so all their
    traffic goes through the proxy, while ``PLAINTEXT`` (the cluster's ``bootstrap``)
    keeps serving the broker itself and the test's own clients.
    """
    return (
        "listeners=PLAINTEXT://127.0.0.1:@CLIENT_PORT@,CONTROLLER://127.0.0.1:@CONTROLLER_PORT@,"
        f"CLIENT://127.0.0.1:{port}\n"
        f"advertised.listeners=PLAINTEXT://127.0.0.1:@CLIENT_PORT@,CLIENT://127.0.0.1:{advertised_port}\n"
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,CLIENT:PLAINTEXT\n"
        "inter.broker.listener.name=PLAINTEXT\n"
    )


@contextmanager
def running_kafka(nodes: int = 1, *, server_props: str | None = None) -> Iterator[KafkaCluster]:
    """Start a fresh local broker (``nodes`` 1 or 3) and stop it on exit.

    ``server_props``: text appended to every node's ``server.properties`` (later keys
    win; ``@NODE_ID@``, ``@CLIENT_PORT@``, ``@CONTROLLER_PORT@``, ``@DATA_DIR@`` are
    substituted), passed to kafkactl as ``KAFKACTL_SERVER_PROPS``.
    """
    run_dir = Path(tempfile.mkdtemp(prefix=f"eventspine-kafka{nodes}-"))
    cluster: KafkaCluster | None = None
    errors: list[str] = []
    env = {**os.environ, "KAFKACTL_PYTHON": sys.executable}
    if server_props is not None:
        props = run_dir / "server-extra.properties"  # kafkactl up keeps it (not n*/cluster.env)
        props.write_text(server_props)
        env["KAFKACTL_SERVER_PROPS"] = str(props)
    for _attempt in range(3):  # retry only if another process took our ports meanwhile
        base = _free_base(nodes)
        proc = subprocess.run(
            [
                str(KAFKACTL),
                "up",
                "--nodes",
                str(nodes),
                "--dir",
                str(run_dir),
                "--owner-pid",
                str(os.getpid()),
            ],
            capture_output=True,
            text=True,
            timeout=_UP_TIMEOUT_S,
            env={**env, "KAFKACTL_PORT_BASE": str(base)},
            check=False,
        )
        if proc.returncode == 0:
            cluster = KafkaCluster(proc.stdout.strip().splitlines()[-1], nodes, run_dir)
            break
        errors.append(proc.stderr)
        if "in use" not in proc.stderr and "exited during start" not in proc.stderr:
            break
    if cluster is None:
        pytest.fail(
            f"could not start Kafka with tools/kafka/kafkactl (logs kept in {run_dir}):\n"
            + "\n".join(errors),
            pytrace=False,
        )
    atexit.register(cluster.down)
    try:
        yield cluster
    finally:
        cluster.down()
        atexit.unregister(cluster.down)
        if os.environ.get(KEEP_ENV) != "1":
            shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaCluster]:
    """Single-node broker: external if ``EVENTSPINE_TEST_KAFKA`` is set, else local."""
    external = os.environ.get(EXTERNAL_ENV, "").strip()
    if external:
        yield KafkaCluster(external, nodes=0)
        return
    with running_kafka(nodes=1) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: KafkaCluster) -> str:
    """``bootstrap.servers`` of the session's broker."""
    return kafka_broker.bootstrap


@pytest.fixture(scope="session")
def kafka_cluster3() -> Iterator[KafkaCluster]:
    """Local three-node cluster (RF 3, ``min.insync.replicas=2``) for failure tests."""
    with running_kafka(nodes=3) as cluster:
        yield cluster
