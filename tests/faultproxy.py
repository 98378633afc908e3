"""A TCP fault proxy for tests: pass-through, hard cut, stall (blackhole) and delay.

RELIABILITY.md T8 puts a network fault between a worker and its broker. Where
the machine has no netem (or the test should not need root), this userspace
proxy stands in for the link: it listens on ``127.0.0.1:<port>`` and forwards
every connection to ``upstream``; the test switches faults on and off at any
time from its own thread::

    with FaultProxy("127.0.0.1", broker_port) as proxy:   # proxy.port: where clients go
        ...
        proxy.cut()        # RST every live connection; reset new ones at once
        proxy.heal()       # pass-through again
        proxy.stall()      # blackhole: connections stay open, no byte moves
        proxy.stall("up")  # asymmetric: only client -> upstream is blocked
        proxy.delay(200, jitter_ms=100)   # each chunk 100..300 ms later, order kept
        proxy.heal()
        proxy.stats()      # connections and bytes carried so far

Faults:

``cut()``
    Closes both sides of every live connection with a TCP reset (``SO_LINGER``
    0), and resets every connection accepted until :meth:`FaultProxy.heal`.
    Bytes the proxy held are dropped.
``stall(direction="both")``
    Stops moving bytes in ``direction`` (``"up"``: client to upstream,
    ``"down"``: upstream to client, ``"both"``) and stops *reading* there too,
    so the kernel buffers fill and the sender blocks, as when packets are
    dropped and retransmitted. Connections stay open. A connection accepted
    during any stall is not connected upstream until :meth:`heal` (a TCP
    handshake needs both directions); its bytes then flow. Bytes already
    read when the stall began (at most one chunk per direction and what waits
    in a delay queue) are delivered after the heal, like retransmitted
    segments.
``delay(ms, jitter_ms=0)``
    Forwards each chunk read ``ms`` (plus a uniform ``-jitter_ms..+jitter_ms``)
    after it was read, in order per direction (a chunk never overtakes the one
    before it). At most 64 chunks wait per direction, then the proxy stops
    reading (bounded memory).
``heal()``
    Clears every fault: pass-through.

Faults combine (``stall`` during ``delay`` keeps the delay); :meth:`heal` ends
them all. The event loop runs in a daemon thread; every method is thread-safe,
and a fault method returns once the fault is in force (after ``cut()``, every
connection that was live has been reset).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["FaultProxy", "ProxyStats", "free_port"]

Direction = Literal["up", "down", "both"]
_CHUNK = 65536
_QUEUE = 64  # chunks waiting per direction (only a delay makes them wait)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago (bind port 0, release)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class ProxyStats:
    """What a :class:`FaultProxy` carried so far."""

    accepted: int
    """connections accepted from clients (including the ones reset at once)"""
    forwarded: int
    """connections connected upstream"""
    reset: int
    """connections closed with a reset by :meth:`FaultProxy.cut` or while it held"""
    live: int
    """connections open now"""
    bytes_up: int
    """bytes delivered from clients to upstream"""
    bytes_down: int
    """bytes delivered from upstream to clients"""


def _reset(sock: socket.socket) -> None:
    """Close ``sock`` with a TCP reset instead of a FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class FaultProxy:
    """A TCP proxy from ``host:port`` (0: any free port) to ``upstream_host:upstream_port``."""

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int | None = None,
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._listen_addr = (host, port)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._counts = {"accepted": 0, "forwarded": 0, "reset": 0, "up": 0, "down": 0}
        self._conns: set[asyncio.Task[None]] = set()
        self._cut = False
        self._delay = (0.0, 0.0)
        self._listener: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._flowing: dict[str, asyncio.Event] = {}
        self._accepting: asyncio.Task[None] | None = None

    # -- life cycle ------------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The port clients connect to."""
        assert self._listener is not None, "start() the proxy first"
        return int(self._listener.getsockname()[1])

    @property
    def address(self) -> str:
        """``host:port`` clients connect to."""
        assert self._listener is not None, "start() the proxy first"
        host, port = self._listener.getsockname()[:2]
        return f"{host}:{port}"

    def start(self) -> FaultProxy:
        """Bind the listening socket and start forwarding (in a daemon thread)."""
        assert self._thread is None, "already started"
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(self._listen_addr)
        listener.listen(128)
        listener.setblocking(False)
        self._listener = listener
        loop = asyncio.new_event_loop()
        self._loop = loop
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            self._flowing = {"up": asyncio.Event(), "down": asyncio.Event()}
            for event in self._flowing.values():
                event.set()
            self._accepting = loop.create_task(self._accept_loop(listener))
            loop.call_soon(ready.set)
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name=f"faultproxy-{self.port}", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the fault proxy's event loop did not start")
        return self

    def close(self) -> None:
        """Close every connection and the listener, stop the thread (idempotent)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self._call(self._shutdown())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        if self._listener is not None:
            self._listener.close()

    def __enter__(self) -> FaultProxy:
        return self.start() if self._thread is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- faults (called from any thread) ----------------------------------------------------
    def cut(self) -> None:
        """Reset every live connection, and every new one until :meth:`heal`."""
        self._call(self._do_cut())

    def stall(self, direction: Direction = "both") -> None:
        """Stop moving (and reading) bytes in ``direction`` until :meth:`heal`."""
        if direction not in ("up", "down", "both"):
            raise ValueError(f"direction must be 'up', 'down' or 'both', not {direction!r}")
        self._call(self._do_stall(direction))

    def delay(self, ms: float, jitter_ms: float = 0) -> None:
        """Forward each chunk ``ms`` +- ``jitter_ms`` (uniform) after it was read."""
        if ms < 0 or jitter_ms < 0:
            raise ValueError("delay and jitter must be >= 0")
        self._call(self._do_delay(ms / 1000, jitter_ms / 1000))

    def heal(self) -> None:
        """End every fault: pass-through."""
        self._call(self._do_heal())

    def stats(self) -> ProxyStats:
        """Counters so far (a consistent snapshot)."""
        with self._lock:
            c = dict(self._counts)
            live = len(self._conns)
        return ProxyStats(
            accepted=c["accepted"],
            forwarded=c["forwarded"],
            reset=c["reset"],
            live=live,
            bytes_up=c["up"],
            bytes_down=c["down"],
        )

    # -- inside the loop ---------------------------------------------------------------------
    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        loop = self._loop
        if loop is None or self._thread is None or not self._thread.is_alive():
            coro.close()
            raise RuntimeError("the fault proxy is not running")
        asyncio.run_coroutine_threadsafe(coro, loop).result(10)

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    async def _do_cut(self) -> None:
        self._cut = True
        conns = list(self._conns)
        for task in conns:
            task.cancel()
        await asyncio.gather(*conns, return_exceptions=True)

    async def _do_stall(self, direction: Direction) -> None:
        for d in ("up", "down") if direction == "both" else (direction,):
            self._flowing[d].clear()

    async def _do_delay(self, delay: float, jitter: float) -> None:
        self._delay = (delay, jitter)

    async def _do_heal(self) -> None:
        self._cut = False
        self._delay = (0.0, 0.0)
        for event in self._flowing.values():
            event.set()

    async def _shutdown(self) -> None:
        if self._accepting is not None:
            self._accepting.cancel()
            await asyncio.gather(self._accepting, return_exceptions=True)
        await self._do_cut()

    async def _accept_loop(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            client, _ = await loop.sock_accept(listener)
            self._count("accepted")
            if self._cut:
                self._count("reset")
                _reset(client)
                continue
            task = loop.create_task(self._serve(client))
            with self._lock:
                self._conns.add(task)
            task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        with self._lock:
            self._conns.discard(task)

    async def _until_flowing(self, *directions: str) -> None:
        while not all(self._flowing[d].is_set() for d in directions):
            for d in directions:
                await self._flowing[d].wait()

    def _due(self) -> float:
        delay, jitter = self._delay
        if jitter:
            delay = max(0.0, delay + self._rng.uniform(-jitter, jitter))
        return asyncio.get_running_loop().time() + delay

    async def _serve(self, client: socket.socket) -> None:
        """Forward one connection until both sides closed; reset both on an error or a cut."""
        loop = asyncio.get_running_loop()
        client.setblocking(False)
        upstream: socket.socket | None = None
        pumps: list[asyncio.Task[None]] = []
        clean = False
        try:
            await self._until_flowing("up", "down")  # no handshake through a stalled link
            upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            upstream.setblocking(False)
            await loop.sock_connect(upstream, self.upstream)
            self._count("forwarded")
            for src, dst, d in ((client, upstream, "up"), (upstream, client, "down")):
                queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(_QUEUE)
                pumps.append(loop.create_task(self._read(src, queue, d)))
                pumps.append(loop.create_task(self._write(dst, queue, d)))
            await asyncio.wait(pumps, return_when=asyncio.FIRST_EXCEPTION)
            clean = all(p.done() and p.exception() is None for p in pumps)
        except (OSError, asyncio.CancelledError):
            clean = False
        finally:
            for p in pumps:
                p.cancel()
            # Wait for the cancelled socket operations to unregister their file descriptors
            # before the sockets are closed (a reused descriptor must not lose its reader).
            await asyncio.gather(*pumps, return_exceptions=True)
            if self._cut and not clean:
                self._count("reset")
            for sock in (client, upstream):
                if sock is None:
                    continue
                if clean:
                    sock.close()
                else:
                    _reset(sock)

    async def _read(
        self, src: socket.socket, queue: asyncio.Queue[tuple[float, bytes]], d: str
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._flowing[d].wait()  # stalled: do not read, so the sender's buffers fill
            data = await loop.sock_recv(src, _CHUNK)
            await queue.put((self._due(), data))
            if not data:
                return

    async def _write(
        self, dst: socket.socket, queue: asyncio.Queue[tuple[float, bytes]], d: str
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            await self._until_flowing(d)
            if not data:  # the sender closed its side: pass the FIN on
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)
                return
            await loop.sock_sendall(dst, data)
            self._count(d, len(data))
