"""The test suite's TCP fault proxy (tests/faultproxy.py) against a local echo server."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from faultproxy import FaultProxy


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: _EchoServer = self.server  # type: ignore[assignment]
        while True:
            try:
                data = self.request.recv(65536)
            except OSError:
                return
            if not data:
                return
            with server.lock:
                server.received += len(data)
            try:
                self.request.sendall(data)
            except OSError:
                return


class _EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Echo)
        self.lock = threading.Lock()
        self.received = 0


@pytest.fixture
def echo() -> Iterator[_EchoServer]:
    server = _EchoServer()
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(echo: _EchoServer) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", echo.server_address[1], seed=1) as p:
        yield p


def _connect(proxy: FaultProxy, timeout: float = 2.0) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", proxy.port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def _recv_exactly(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise AssertionError(f"connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def _received(server: _EchoServer) -> int:
    with server.lock:
        return server.received


def test_pass_through_carries_a_mebibyte_both_ways_and_counts_it(proxy: FaultProxy) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB
    with _connect(proxy) as s:
        sender = threading.Thread(target=s.sendall, args=(payload,))
        sender.start()
        assert _recv_exactly(s, len(payload)) == payload
        sender.join()
    # The proxy counts a chunk once its send returned, which can be just after the
    # client read it: give the counters a moment, then they must be exact.
    deadline = time.monotonic() + 2.0
    while proxy.stats().bytes_down < len(payload) and time.monotonic() < deadline:
        time.sleep(0.01)
    st = proxy.stats()
    assert (st.accepted, st.forwarded, st.reset) == (1, 1, 0)
    assert st.bytes_up == st.bytes_down == len(payload)


def test_delay_adds_latency_and_keeps_the_order(proxy: FaultProxy) -> None:
    with _connect(proxy) as s:
        t0 = time.monotonic()
        s.sendall(b"ping")
        assert _recv_exactly(s, 4) == b"ping"
        fast = time.monotonic() - t0
        proxy.delay(150)
        t0 = time.monotonic()
        s.sendall(b"ping")
        assert _recv_exactly(s, 4) == b"ping"
        slow = time.monotonic() - t0
        assert fast < 0.25, fast  # loose bounds: the machine may be busy
        assert 0.29 <= slow < 2.0, slow  # 150 ms each way
        # With jitter larger than the gaps between chunks, no chunk overtakes another.
        proxy.delay(60, jitter_ms=50)
        msgs = [f"<{i:03d}>".encode() for i in range(30)]
        for m in msgs:
            s.sendall(m)
            time.sleep(0.003)
        assert _recv_exactly(s, sum(map(len, msgs))) == b"".join(msgs)
        proxy.heal()
        t0 = time.monotonic()
        s.sendall(b"ping")
        assert _recv_exactly(s, 4) == b"ping"
        assert time.monotonic() - t0 < 0.25


def test_cut_resets_live_and_new_connections_until_heal(proxy: FaultProxy) -> None:
    with _connect(proxy) as live:
        live.sendall(b"hello")
        assert _recv_exactly(live, 5) == b"hello"
        proxy.cut()
        with pytest.raises(ConnectionResetError):
            live.recv(10)
    with _connect(proxy) as new:  # the kernel completes the handshake; the proxy resets it
        assert _is_reset(new)
    assert proxy.stats().reset == 2
    proxy.heal()
    with _connect(proxy) as again:
        again.sendall(b"back")
        assert _recv_exactly(again, 4) == b"back"
    assert proxy.stats().live <= 1


def _is_reset(s: socket.socket) -> bool:
    """Whether a write and a read on ``s`` meet a TCP reset."""
    try:
        s.sendall(b"x")
        s.recv(10)
    except (ConnectionResetError, BrokenPipeError):
        return True
    return False


def _fill(s: socket.socket) -> int:
    """Send until the socket would block; return the bytes sent."""
    s.setblocking(False)
    sent = 0
    while sent < 64 << 20:
        try:
            sent += s.send(b"\0" * 65536)
        except BlockingIOError:
            break
    else:
        raise AssertionError("64 MiB went out and the sender never blocked")
    s.settimeout(2.0)
    return sent


def test_stall_blocks_both_ways_until_heal_and_fills_the_buffers(
    proxy: FaultProxy, echo: _EchoServer
) -> None:
    with _connect(proxy, timeout=0.3) as s:
        s.sendall(b"a")
        assert _recv_exactly(s, 1) == b"a"
        before = _received(echo)
        proxy.stall()
        s.sendall(b"stalled")
        with pytest.raises(TimeoutError):
            s.recv(10)
        assert _received(echo) == before  # nothing reached the server
        with _connect(proxy, timeout=0.3) as new:  # accepted, not forwarded
            new.sendall(b"new")
            with pytest.raises(TimeoutError):
                new.recv(10)
            # Nobody reads `new` (it is not connected upstream yet), and the proxy stops
            # reading `s` too: both senders block once the kernel buffers are full.
            unread = _fill(new)
            held = _fill(s)
            assert held < unread + (1 << 20), (held, unread)
            assert _received(echo) == before
            proxy.heal()
            assert _recv_exactly(new, 3) == b"new"
            assert _recv_exactly(new, unread) == bytes(unread)
        assert _recv_exactly(s, 7) == b"stalled"
        assert _recv_exactly(s, held) == bytes(held)


def test_asymmetric_stalls(proxy: FaultProxy, echo: _EchoServer) -> None:
    with _connect(proxy, timeout=0.3) as s:
        s.sendall(b"a")
        assert _recv_exactly(s, 1) == b"a"
        proxy.stall("down")  # requests arrive, answers do not
        before = _received(echo)
        s.sendall(b"req")
        deadline = time.monotonic() + 2
        while _received(echo) < before + 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _received(echo) == before + 3
        with pytest.raises(TimeoutError):
            s.recv(10)
        proxy.heal()
        s.settimeout(2.0)
        assert _recv_exactly(s, 3) == b"req"

        proxy.stall("up")  # requests do not arrive
        before = _received(echo)
        s.sendall(b"lost?")
        time.sleep(0.3)
        assert _received(echo) == before
        proxy.heal()
        assert _recv_exactly(s, 5) == b"lost?"
    with pytest.raises(ValueError):
        proxy.stall("sideways")  # type: ignore[arg-type]
