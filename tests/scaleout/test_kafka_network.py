"""RELIABILITY.md T8: the network between the workers and the broker is cut, stalled or slow.

The module starts its own single-node broker with a second listener, ``CLIENT``,
advertised at the port of a :class:`~faultproxy.FaultProxy` that forwards to it
(KAFKA.md, "Client listener for fault injection"). The workers bootstrap from the
proxy, and the broker's metadata sends them back there, so all their traffic
(fetches, produces, transactions, group heartbeats) crosses the fault; the
broker's own traffic and the test's reader use ``PLAINTEXT`` directly, so the
test reads the committed output while the workers are cut off.

Each test runs two workers of ``tests/scaleout/pipeline.py`` (exactly-once),
puts one fault between them and the broker mid-stream, heals it, and judges:

- during a cut or stall, the committed output (read ``read_committed``) stops
  growing once a commit that was in flight has landed, and no worker's resident
  memory grows past a bound;
- after the heal every task's output grows again within session timeout +
  transaction timeout + 10 s;
- at the end no transaction is left open (last stable offset == high watermark
  of the output partitions) and the output is the oracle's (no loss, no
  duplicate, every window count right and emitted once);
- the proxy carried the workers' traffic (else the test would pass vacuously);
- workers exit only through their stall watchdog (code 75, restarted as a
  supervisor would, and recorded), a bounded number of times.

The unmarked cut runs in ``make test`` (the PR tier's "one T8 cut"); the stall,
delay and asymmetric variants are ``slow`` (nightly). Each test leaves
``timeline.log`` in its tmp dir: the test's steps and the workers' log lines by time.

The bug this found: librdkafka re-bootstraps a client whose brokers all became
unreachable (``metadata.recovery.strategy=rebootstrap``, its default since 2.10) and
decommissions the brokers it knew; the transactional producer then kept the
decommissioned broker as its group coordinator, and after the heal
``send_offsets_to_transaction`` hung past its timeout (librdkafka issues 5511 and
5456) until the stall watchdog ended the worker: tasks resumed 40-44 s after the
heal instead of within the bound. The Kafka log now configures every client with
``metadata.recovery.strategy=none`` (``KafkaSettings.base``); a resume later than
the bound fails the test (:class:`ResumedTooLate`) after the output was judged.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from eventspine.connectors.topics import key_bytes, partition_for
from eventspine.errors import LogError
from eventspine.log import Log, open_log
from eventspine.runtime.worker import EXIT_STALLED
from faultproxy import FaultProxy, free_port
from kafka_broker import KafkaCluster, client_listener_props, running_kafka

from .cluster import (
    Workers,
    judge,
    judge_windows,
    make_input,
    open_transactions,
    read_topic,
    wait_output,
)
from .pipeline import expected

pytestmark = pytest.mark.kafka

SESSION_S = 6  # session_timeout_ms: the broker's group.min.session.timeout.ms
TXN_S = 10  # transaction_timeout_ms
REQUEST_S = 5  # request_timeout_ms (below the transaction timeout)
STALL_TIMEOUT_S = 25  # --stall-timeout-s: a Kafka call hung past this ends the worker (75)
RESUME_S = SESSION_S + TXN_S + 10  # RELIABILITY.md T8: resume bound after the heal
URL_OPTIONS = (
    f"?request_timeout_ms={REQUEST_S * 1000}&transaction_timeout_ms={TXN_S * 1000}"
    f"&session_timeout_ms={SESSION_S * 1000}"
)
PARTITIONS = 4  # of the input: the tasks
MIB = 1 << 20
RSS_GROWTH_LIMIT = 64 * MIB  # per worker, while the fault holds, over its RSS when it began
RSS_LIMIT = 1024 * MIB  # per worker, absolute
MAX_RESTARTS = 4  # watchdog exits (75) per test before it counts as a crash loop


class ResumedTooLate(AssertionError):
    """The workers resumed after a healed fault, but later than the T8 bound."""


@dataclass
class Net:
    """The module's broker and the proxy in front of its ``CLIENT`` listener."""

    cluster: KafkaCluster
    proxy: FaultProxy


@pytest.fixture(scope="module")
def net() -> Iterator[Net]:
    client_port = free_port()
    with (
        FaultProxy("127.0.0.1", client_port, seed=8) as proxy,
        running_kafka(server_props=client_listener_props(client_port, proxy.port)) as cluster,
    ):
        yield Net(cluster, proxy)


def _task_of(key: str) -> int:
    """The task (input partition) of ``key``."""
    kb = key_bytes(key)
    assert kb is not None
    return partition_for(kb, PARTITIONS)


def _rss(pid: int) -> int | None:
    """Resident memory of ``pid`` in bytes, or ``None`` once it has exited."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return None  # a zombie has no VmRSS


class Timeline:
    """``timeline.log`` in the test's tmp dir: the test's notes and the workers' log lines.

    Each line gets the time it reached the worker's stderr file (polled every 0.2 s; the
    workers log without timestamps). librdkafka's lines reach it when the worker serves
    its clients, so they can come seconds after the event while a Kafka call blocks.
    """

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.t0 = time.monotonic()
        self.path = tmp / "timeline.log"
        self.notes: list[str] = []
        self._lock = threading.Lock()
        self._offsets: dict[Path, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def note(self, text: str) -> None:
        self._poll()  # the lines logged before the note come before it
        line = f"{time.monotonic() - self.t0:7.1f}s  TEST  {text}"
        with self._lock:
            self.notes.append(line)
            with self.path.open("a") as f:
                f.write(line + "\n")

    def _poll(self) -> None:
        with self._lock:
            stamp = f"{time.monotonic() - self.t0:7.1f}s"
            for err in sorted(self.tmp.glob("worker*.err")):
                with err.open("rb") as f:
                    f.seek(self._offsets.get(err, 0))
                    data = f.read()
                cut = data.rfind(b"\n") + 1
                self._offsets[err] = self._offsets.get(err, 0) + cut
                if cut:
                    name = err.stem.removeprefix("worker")
                    with self.path.open("a") as out:
                        for line in data[:cut].decode(errors="replace").splitlines():
                            out.write(f"{stamp}  w{name:<3}  {line}\n")

    def _follow(self) -> None:
        while not self._stop.wait(0.2):
            self._poll()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._poll()


@dataclass
class Run:
    """One pipeline run through the proxy: its input, workers and the direct reader."""

    net: Net
    tmp: Path
    records: int = 4000
    slow_ms: float = 5
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    late: str | None = None

    def __post_init__(self) -> None:
        self.timeline = Timeline(self.tmp)
        # The test's view: PLAINTEXT, straight to the broker, read_committed.
        self.log: Log = open_log(f"kafka://{self.net.cluster.bootstrap}")
        self.recs = make_input(
            self.log, f"in-{self.tag}", records=self.records, keys=40, partitions=PARTITIONS
        )
        self.out = f"out-{self.tag}"
        self.want = Counter(_task_of(r["key"]) for r in expected(self.recs))  # type: ignore[arg-type]
        env = {
            "SCALE_IN": f"in-{self.tag}",
            "SCALE_OUT": self.out,
            "SCALE_APP": f"app-{self.tag}",
            "SCALE_SLOW_MS": str(self.slow_ms),
        }
        self.workers = Workers(f"kafka://{self.net.proxy.address}{URL_OPTIONS}", env, self.tmp)
        self.workers.extra = ("--stall-timeout-s", str(STALL_TIMEOUT_S))
        self.stats0 = self.net.proxy.stats()  # the proxy's counters span the module

    def note(self, text: str) -> None:
        self.timeline.note(text)

    def count(self) -> int:
        return len(read_topic(self.log, self.out))

    def per_task(self) -> Counter[int]:
        """Committed output rows per task (input partition of their key)."""
        return Counter(_task_of(r["key"]) for r in read_topic(self.log, self.out))

    def start(self, n: int = 2) -> None:
        for _ in range(n):
            self.workers.start(*self.workers.extra)

    def wait(self, count: int, timeout: float) -> float:
        """Wait until ``count`` rows are committed; return how long it took."""
        t = time.monotonic()
        try:
            wait_output(self.log, self.out, count, self.workers, timeout)
        except AssertionError as exc:
            self.note(f"FAILED waiting for {count} rows: {str(exc).splitlines()[0]}")
            raise AssertionError(f"{self.summary()}\n{exc}") from None
        self.check_exits()
        return time.monotonic() - t

    def check_exits(self) -> None:
        """Workers end only through their watchdog (75), and not again and again."""
        for i, p in enumerate(self.workers.procs):
            code = p.poll()
            assert code in (None, EXIT_STALLED), (
                f"worker {i} exited with {code}\n{self.summary()}\n{self.workers.stderr()}"
            )
        stalled = sum(p.poll() == EXIT_STALLED for p in self.workers.procs)
        assert stalled <= MAX_RESTARTS, (
            f"{stalled} watchdog exits: a crash loop\n{self.summary()}\n{self.workers.stderr()}"
        )

    def hold(self, seconds: float, *, grace: float | None) -> None:
        """Keep the fault ``seconds``; check memory, and (``grace`` not None) frozen output.

        A commit in flight when the fault began may still land within ``grace`` seconds;
        after that, nothing the workers do can commit while they cannot reach the broker.
        """
        start = time.monotonic()
        base = {p.pid: _rss(p.pid) for p in self.workers.procs if p.poll() is None}
        peak: dict[int, int] = {}
        at_fault = self.count()
        frozen: int | None = None
        while (elapsed := time.monotonic() - start) < seconds:
            self.workers.supervise()  # a worker the watchdog stopped starts again, cut off
            self.check_exits()
            for p in self.workers.procs:
                rss = _rss(p.pid) if p.poll() is None else None
                if rss is None:
                    continue
                base.setdefault(p.pid, rss)  # a restarted worker: from its first sample
                peak[p.pid] = max(peak.get(p.pid, 0), rss)
                first = base[p.pid] or rss
                detail = (
                    f"worker pid {p.pid}: RSS {first / MIB:.0f} -> {rss / MIB:.0f} MiB "
                    f"after {elapsed:.0f} s of the fault\n{self.summary()}"
                )
                assert rss - first <= RSS_GROWTH_LIMIT, detail
                assert rss <= RSS_LIMIT, detail
            if grace is not None and elapsed >= grace:
                now = self.count()
                if frozen is None:
                    frozen = now
                    self.note(f"committed at fault {at_fault}, after {grace:.0f} s grace {now}")
                assert now == frozen, (
                    f"committed output grew from {frozen} to {now} {elapsed:.0f} s into a fault "
                    f"that keeps the workers from the broker\n{self.summary()}"
                )
            time.sleep(1.0)
        growth = {pid: f"{(base[pid] or 0) / MIB:.0f}->{peak[pid] / MIB:.0f} MiB" for pid in peak}
        self.note(f"fault held {seconds:.0f} s; worker RSS {growth}")

    def finish(self) -> None:
        """Wait for all the output, stop the workers, judge it against the oracle."""
        self.wait(len(expected(self.recs)), timeout=240)  # type: ignore[arg-type]
        time.sleep(1.0)  # a duplicate would show up late: give it time to be committed
        self.check_exits()
        for proc in self.workers.procs:
            if proc.poll() is None:
                code = self.workers.stop(proc)
                assert code in (0, 143, EXIT_STALLED), f"{code}\n{self.workers.stderr()}"
        # No transaction left open (it would hold read_committed readers back): T6/T8.
        hanging = open_transactions(
            self.net.cluster.bootstrap, [self.out, f"{self.out}.windows"], within_s=TXN_S + 10
        )
        assert not hanging, f"transactions still open (LSO, HW): {hanging}\n{self.summary()}"
        rows = read_topic(self.log, self.out)
        judge(self.recs, rows)  # type: ignore[arg-type]
        judge_windows(self.recs, read_topic(self.log, f"{self.out}.windows"))  # type: ignore[arg-type]
        # The output went through the proxy: at least its JSON bytes crossed it upwards.
        st = self.net.proxy.stats()
        out_bytes = sum(len(json.dumps(r, separators=(",", ":"))) for r in rows)
        assert st.bytes_up - self.stats0.bytes_up >= out_bytes, (self.stats0, st, out_bytes)
        restarts = sum(p.returncode == EXIT_STALLED for p in self.workers.procs)
        carried = (
            f"proxy: {st.accepted - self.stats0.accepted} connections accepted, "
            f"{st.reset - self.stats0.reset} reset, {st.bytes_up - self.stats0.bytes_up} bytes "
            f"up, {st.bytes_down - self.stats0.bytes_down} down"
        )
        self.note(f"done: {len(rows)} rows judged; {restarts} watchdog restart(s); {carried}")
        print("\n".join(self.timeline.notes))
        if self.late:
            raise ResumedTooLate(f"{self.late}\n{self.summary()}")

    def summary(self) -> str:
        notes = "\n".join(self.timeline.notes)
        return f"{notes}\n(workers' log lines by time: {self.timeline.path})"

    def close(self) -> None:
        self.workers.close()
        self.timeline.close()
        self.log.close()


@pytest.fixture
def run(net: Net, tmp_path: Path) -> Iterator[Run]:
    net.proxy.heal()
    r = Run(net, tmp_path)
    try:
        yield r
    finally:
        net.proxy.heal()
        r.close()


def _started(run: Run, rows: int = 600) -> int:
    """Start two workers and wait until ``rows`` are committed through the proxy."""
    before = run.net.proxy.stats()
    run.start(2)
    run.wait(rows, timeout=90)
    done = run.count()
    after = run.net.proxy.stats()
    assert after.forwarded >= before.forwarded + 2, after  # the workers connect through it
    assert after.bytes_up > before.bytes_up, after
    assert done < len(run.recs) - 1500, "the run is nearly over before the fault: slow it down"
    run.note(f"{done} rows committed before the fault; {after}")
    return done


def _resume(run: Run) -> None:
    """After the heal, every task with output left commits more within the T8 bound.

    Per task, not in total: one worker may commit while the other hangs on its tasks.
    A miss is recorded (``run.late``) and the run goes on, watched by the workers' stall
    watchdog, so that the output is still judged; :meth:`Run.finish` then raises
    :class:`ResumedTooLate`. A task that never resumes fails at once.
    """
    healed = time.monotonic()
    at_heal = run.per_task()
    pending = {t for t, n in run.want.items() if at_heal[t] < n}
    resumed: dict[int, float] = {}
    late = False
    while len(resumed) < len(pending):
        run.workers.supervise()  # a worker the watchdog stopped starts again
        run.check_exits()
        waited = time.monotonic() - healed
        if waited > RESUME_S and not late:
            late = True
            run.note(f"task(s) {sorted(pending - resumed.keys())} not resumed in {RESUME_S} s")
            run.workers.dump_stacks()  # where they hang, in the workers' logs
        if waited > RESUME_S + STALL_TIMEOUT_S + 90:
            raise AssertionError(
                f"task(s) {sorted(pending - resumed.keys())} committed nothing in {waited:.0f} s "
                f"after the heal\n{run.summary()}\n{run.workers.stderr()}"
            )
        with contextlib.suppress(LogError):
            counts = run.per_task()
            for t in pending - resumed.keys():
                if counts[t] > at_heal[t]:
                    resumed[t] = time.monotonic() - healed
        time.sleep(0.5)
    took = ", ".join(f"task {t} {s:.1f} s" for t, s in sorted(resumed.items()))
    run.note(f"healed: output grew again: {took} (bound {RESUME_S} s)")
    if late:
        run.late = (
            f"after the heal, a task committed nothing for longer than {RESUME_S} s "
            f"(session + transaction timeout + 10 s): {took}"
        )


def _hold_heal_judge(run: Run, seconds: float, *, grace: float) -> None:
    """Hold the fault in force (:meth:`Run.hold`), heal it, check the resume, judge the run."""
    run.hold(seconds, grace=grace)
    run.net.proxy.heal()
    run.note("heal")
    _resume(run)
    run.finish()


@pytest.mark.timeout(420)
def test_cut_past_the_session_and_transaction_timeouts(run: Run) -> None:
    """PR tier: a hard cut (every connection reset, new ones too) held 12 s, then healed."""
    _started(run)
    resets = run.net.proxy.stats().reset
    run.net.proxy.cut()
    run.note("cut")
    assert run.net.proxy.stats().reset > resets, "the cut reset no live connection"
    _hold_heal_judge(run, 2 * SESSION_S, grace=2)  # > session (6 s) and txn (10 s) timeouts


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_stall_longer_than_the_transaction_timeout(run: Run) -> None:
    """Blackhole both ways for 2x the transaction timeout: connections stay open, silent."""
    _started(run)
    run.net.proxy.stall()
    run.note("stall both ways")
    _hold_heal_judge(run, 2 * TXN_S, grace=2)


@pytest.mark.slow
@pytest.mark.parametrize("direction", ["up", "down"])
@pytest.mark.timeout(420)
def test_asymmetric_stall(run: Run, direction: str) -> None:
    """One direction blackholed past the session timeout ("down": the broker's answers lost).

    With ``down`` the broker still gets the requests sent before the workers time them
    out (``request_timeout_ms``), so a commit may land that late.
    """
    _started(run)
    run.net.proxy.stall(direction)  # type: ignore[arg-type]
    run.note(f"stall {direction}")
    _hold_heal_judge(run, 3 * SESSION_S, grace=2 if direction == "up" else REQUEST_S + 2)


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_delay_with_jitter(run: Run) -> None:
    """200 +- 100 ms each way for 20 s: slower, but the workers keep committing."""
    done = _started(run)
    run.net.proxy.delay(200, jitter_ms=100)
    run.note("delay 200 +- 100 ms")
    run.hold(20, grace=None)
    during = run.count()
    run.note(f"{during - done} rows committed during the delay")
    assert during > done, f"no commit in 20 s of 200 ms delay\n{run.summary()}"
    run.net.proxy.heal()
    run.note("heal")
    run.finish()
