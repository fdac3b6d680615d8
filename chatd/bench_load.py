"""Load generator processes: chat clients driven by the bench parent.

Each worker is a separate process holding a share of the clients. The parent
steers all of them through a pipe in lock step (connect, barrier, go, report)
so that every worker measures the same window of the shared CLOCK_MONOTONIC
(``time.monotonic_ns`` is the same clock in every process on Linux).

A worker raises :class:`~chatd.bench_server.BenchError` on anything the
server did that a correct server would not (a refused login, a closed
connection); the parent turns it into a one-line failure.
"""

from __future__ import annotations

import contextlib
import resource
import selectors
import socket
import ssl
import time
import traceback
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from chatd.bench_server import BenchError, run_delay
from chatd.bench_wire import FrameCounter, MarkerCounter, StampReader, stamped_text
from chatd.bench_ws import WsFrameCounter, WsSession, ws_login
from protocol.framing import Decoder, Message, decode_payload, encode, frame_end
from protocol.limits import CLIENT_MAX_FRAME, HEADER_SIZE, PROTO_VERSION

RECV_SIZE = 1 << 18
SETUP_TIMEOUT = 120.0
_BARRIER_T = "bench-barrier"
WELCOME_HEAD = b'{"type":"welcome"'
_LAZY_DRAIN = 0.005  # latency: seconds between reads of the untimed clients
_DRAIN_EVERY = 0.02  # seconds between reads of logged-in idle connections


def raise_nofile() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit: a worker may hold thousands."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def cpu_now() -> tuple[float, float]:
    """CPU seconds used and seconds spent waiting for a CPU, by this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    try:
        with open("/proc/self/schedstat") as schedstat:
            waited = run_delay(schedstat.read()) or 0.0
    except OSError:
        waited = 0.0
    return usage.ru_utime + usage.ru_stime, waited


def wait_until(t_ns: int) -> None:
    delay = (t_ns - time.monotonic_ns()) / 1e9
    if delay > 0:
        time.sleep(delay)


def hello_message(name: str, proto: int = PROTO_VERSION,
                  password: str | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"type": "hello", "proto": proto, "name": name,
                                "agent": "chatd-bench"}
    if password is not None:
        message["password"] = password
    return message


def hello(name: str, proto: int = PROTO_VERSION, password: str | None = None) -> bytes:
    return encode(hello_message(name, proto, password))


def refusal(message: dict[str, Any]) -> BenchError:
    if message.get("type") == "error":
        return BenchError(f"login refused: {message.get('code')}: {message.get('message')}")
    return BenchError(f"expected welcome, got {message.get('type')!r}")


def work(pipe: Connection, body: Callable[[], None]) -> None:
    """Run ``body``, reporting a failure to the parent as one line."""
    try:
        raise_nofile()
        body()
    except BenchError as exc:
        _report(pipe, str(exc))
    except EOFError:
        pass  # the parent has gone; nobody to tell
    except Exception as exc:  # a bug here must still end the run cleanly
        last = traceback.extract_tb(exc.__traceback__)[-1]
        _report(pipe, f"{type(exc).__name__}: {exc} ({last.filename}:{last.lineno})")
    finally:
        pipe.close()


def _report(pipe: Connection, error: str) -> None:
    with contextlib.suppress(OSError):  # the parent may have gone
        pipe.send(("error", error))


# --- the room: fan-out and latency -----------------------------------------------------


@dataclass(frozen=True)
class RoomSpec:
    """One worker's share of the room."""

    host: str
    port: int
    names: list[str]
    senders: list[int]  # global sender number per client, -1 for a pure receiver
    probes: list[bool]  # latency: clients timed besides the senders
    total_senders: int
    mode: str  # "fanout" or "latency"
    size: int  # text length
    window: int  # fan-out: most unacknowledged messages per sender
    per_sender_rate: float  # latency: messages per second per sender
    tls: bool = False  # connect with TLS (to the server's TLS port)
    ws: bool = False  # fan-out: connect over WebSocket (to the server's web port)


class RoomClient:
    """A client of a fan-out: its socket, its counters, and for a sender what it says.

    ``decoder`` reads the stream until the barrier: a :class:`Decoder` on TCP,
    a :class:`WsSession` on WebSocket; ``counter`` counts frames after it.
    """

    __slots__ = ("acks", "counter", "decoder", "name", "next_ns", "out", "probe", "say",
                 "sender", "sock", "stamps")

    def __init__(
        self, sock: socket.socket, name: str, sender: int, probe: bool,
        decoder: Decoder | WsSession, *, say: bytes = b"",
        counter: FrameCounter | WsFrameCounter | None = None,
    ) -> None:
        self.sock = sock
        self.name = name
        self.sender = sender
        self.probe = probe
        self.decoder: Decoder | WsSession | None = decoder
        self.counter = counter or FrameCounter()
        self.stamps = StampReader()
        # Our own echo (a `msg` from us) is the acknowledgement of a `say`.
        self.acks = MarkerCounter(b'"from":"' + name.encode() + b'"')
        self.out = bytearray()
        self.next_ns = 0
        self.say = say  # fan-out: the `say` frame this sender repeats


def _login(host: str, port: int, name: str, tls: bool = False) -> tuple[socket.socket, Decoder]:
    """Blocking login (the generator may block); returns the socket, non-blocking.

    With ``tls`` the certificate is not checked (the figures are the server's
    cost of TLS). An ``SSLSocket`` decrypts one record per read and leaves the
    rest in the kernel, where the selector sees it.
    """
    sock = socket.create_connection((host, port), timeout=SETUP_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        sock = context.wrap_socket(sock)
    sock.sendall(hello(name))
    decoder = Decoder(CLIENT_MAX_FRAME)
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionError as exc:
            raise BenchError(f"{name}: {exc.strerror} before welcome") from None
        if not data:
            raise BenchError(f"{name}: server closed the connection before welcome")
        messages = decoder.feed(data, limit=1)
        if messages:
            if messages[0].get("type") != "welcome":
                raise refusal(messages[0])
            sock.setblocking(False)
            return sock, decoder


def _ws_login(host: str, port: int, name: str) -> tuple[socket.socket, WsSession]:
    """Like :func:`_login`, over WebSocket (the server's web port)."""
    sock, session, messages = ws_login(host, port, name, hello_message(name), SETUP_TIMEOUT)
    if messages[0].get("type") != "welcome":
        raise refusal(messages[0])
    sock.setblocking(False)
    return sock, session


def start_together(pipe: Connection, sync: Callable[[], None]) -> Any:
    """A worker's start, as every load shares it: tell the parent it is ready,
    wait until every worker is, ``sync`` (a barrier on its connections), say
    so, and return the run's times from the parent."""
    pipe.send(("ready", None))
    pipe.recv()  # every worker is logged in
    sync()
    pipe.send(("synced", None))
    _, times = pipe.recv()
    return times


def barrier(clients: list[RoomClient]) -> None:
    """Ping every client and read (decoding) until each has its pong.

    By the contract's order rule every frame queued for a client before its
    ping was handled (backlog, joins) arrives before the pong, so afterwards
    the streams are empty and the cheap counters can start at a frame border.
    """
    ping: Message = {"type": "ping", "t": _BARRIER_T}
    sel = selectors.DefaultSelector()
    waiting = 0
    for client in clients:
        decoder = client.decoder
        client.sock.setblocking(True)
        client.sock.sendall(decoder.frame(ping) if isinstance(decoder, WsSession)
                            else encode(ping))
        client.sock.setblocking(False)
        sel.register(client.sock, selectors.EVENT_READ, client)
        waiting += 1
    deadline = time.monotonic() + SETUP_TIMEOUT
    while waiting:
        if time.monotonic() > deadline:
            raise BenchError("timed out waiting for pong (barrier)")
        for key, _ in sel.select(1.0):
            client = key.data
            try:
                data = client.sock.recv(RECV_SIZE)
            except ssl.SSLWantReadError:  # part of a TLS record
                continue
            if not data:
                raise BenchError(f"{client.name}: server closed the connection")
            assert client.decoder is not None
            for message in client.decoder.feed(data):
                if message.get("type") == "pong" and message.get("t") == _BARRIER_T:
                    sel.unregister(client.sock)
                    waiting -= 1
                    if client.decoder.pending:
                        raise BenchError(f"{client.name}: frames after the barrier pong")
                    client.decoder = None
    sel.close()


def _send(sel: selectors.BaseSelector, client: RoomClient, data: bytes) -> None:
    if client.out:
        client.out += data
        return
    try:
        sent = client.sock.send(data)
    except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
        sent = 0
    if sent < len(data):
        client.out += data[sent:]
        sel.modify(client.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, client)


def _flush(sel: selectors.BaseSelector, client: RoomClient) -> None:
    try:
        sent = client.sock.send(client.out)
    except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
        return
    del client.out[:sent]
    if not client.out:
        sel.modify(client.sock, selectors.EVENT_READ, client)


class _Snapshots:
    """Deliveries and this process's CPU at the start and end of the window."""

    def __init__(self, t_m0: int, t_m1: int) -> None:
        self.t_m0 = t_m0
        self.t_m1 = t_m1
        self.start: tuple[int, tuple[float, float]] | None = None
        self.end: tuple[int, tuple[float, float]] | None = None

    def tick(self, now: int, deliveries: int) -> bool:
        """Take a due snapshot; True once the window is over."""
        if self.start is None and now >= self.t_m0:
            self.start = (deliveries, cpu_now())
        if now >= self.t_m1:
            self.end = (deliveries, cpu_now())
            return True
        return False

    @property
    def measuring(self) -> bool:
        return self.start is not None

    def result(self, samples: array[int]) -> dict[str, Any]:
        assert self.start is not None and self.end is not None
        return {
            "deliveries": self.end[0] - self.start[0],
            "cpu": self.end[1][0] - self.start[1][0],
            "waited": self.end[1][1] - self.start[1][1],
            "samples": samples,
        }


def _recv(client: RoomClient, buf: bytearray) -> int:
    try:
        n = client.sock.recv_into(buf)
    except (BlockingIOError, ssl.SSLWantReadError):
        return 0
    if n == 0:
        raise BenchError(f"{client.name}: server closed the connection under load")
    return n


def run_fanout(window: int, clients: list[RoomClient], times: tuple[int, int, int]) -> dict[
    str, Any
]:
    """Senders keep ``window`` messages in flight; everyone counts frames."""
    t_start, t_m0, t_m1 = times
    sel = selectors.DefaultSelector()
    for client in clients:
        sel.register(client.sock, selectors.EVENT_READ, client)
    buf = bytearray(RECV_SIZE)
    snaps = _Snapshots(t_m0, t_m1)
    deliveries = 0
    acks = 0
    wait_until(t_start)
    senders = [c for c in clients if c.sender >= 0]
    for client in senders:
        _send(sel, client, client.say * window)
    while not snaps.tick(time.monotonic_ns(), deliveries):
        for key, events in sel.select(0.05):
            client = key.data
            if events & selectors.EVENT_WRITE:
                _flush(sel, client)
            if not events & selectors.EVENT_READ or not (n := _recv(client, buf)):
                continue
            deliveries += client.counter.feed(buf, n)
            if client.sender >= 0:
                acked = client.acks.feed(buf, n)
                if acked:
                    acks += acked
                    _send(sel, client, client.say * acked)
    sel.close()
    if senders and not acks:
        raise BenchError('no sender saw its own msg (looked for \'"from":"NAME"\' in frames)')
    return snaps.result(array("q"))


def _run_latency(spec: RoomSpec, clients: list[RoomClient], times: tuple[int, int, int]) -> dict[
    str, Any
]:
    """Senders pace stamped texts; timed clients measure, the rest only count.

    Timed clients (the senders and every ``probe_every``-th client, so early
    and late positions in the server's fan-out order are both sampled) are read
    the moment data arrives. The others are read every ``_LAZY_DRAIN`` seconds:
    the server sends to them exactly as before, but a generator that woke up
    for each of their frames would spend its CPU on wake-ups and delay the
    timed reads, measuring itself instead of the server.
    """
    t_start, t_m0, t_m1 = times
    timed = selectors.DefaultSelector()
    lazy = selectors.DefaultSelector()
    for client in clients:
        probe = client.sender >= 0 or client.probe
        (timed if probe else lazy).register(client.sock, selectors.EVENT_READ, client)
    senders = [c for c in clients if c.sender >= 0]
    buf = bytearray(RECV_SIZE)
    view = memoryview(buf)
    interval_ns = int(1e9 / spec.per_sender_rate)
    lazy_ns = int(_LAZY_DRAIN * 1e9)
    samples: array[int] = array("q")
    snaps = _Snapshots(t_m0, t_m1)
    deliveries = 0
    wait_until(t_start)
    for client in senders:  # spread the senders' ticks evenly over one interval
        client.next_ns = t_start + interval_ns * client.sender // spec.total_senders
    next_drain = t_start
    while not snaps.tick(now := time.monotonic_ns(), deliveries):
        due = min(next_drain, t_m1)
        for client in senders:
            while client.next_ns <= now:
                text = stamped_text(time.monotonic_ns(), spec.size)
                _send(timed, client, encode({"type": "say", "text": text}))
                client.next_ns += interval_ns
            due = min(due, client.next_ns)
        out = samples if snaps.measuring else None
        for key, events in timed.select(max(0.0, (due - time.monotonic_ns()) / 1e9)):
            client = key.data
            if events & selectors.EVENT_WRITE:
                _flush(timed, client)
            if events & selectors.EVENT_READ and (n := _recv(client, buf)):
                deliveries += client.stamps.feed(view[:n], time.monotonic_ns(), out)
        now = time.monotonic_ns()
        if now >= next_drain:
            next_drain = now + lazy_ns
            for key, _ in lazy.select(0):
                if n := _recv(key.data, buf):
                    deliveries += key.data.counter.feed(buf, n)
    timed.close()
    lazy.close()
    return snaps.result(samples)


def room_worker(pipe: Connection, spec: RoomSpec) -> None:
    """Log in this worker's clients, barrier, run, report; steered by the parent."""
    clients: list[RoomClient] = []
    say = encode({"type": "say", "text": "x" * spec.size})

    def body() -> None:
        if spec.ws and spec.mode != "fanout":
            raise BenchError("WebSocket clients only run the fan-out")
        for name, sender, probe in zip(spec.names, spec.senders, spec.probes, strict=True):
            if spec.ws:  # one masked frame, repeated like the TCP `say` (same mask key)
                sock, session = _ws_login(spec.host, spec.port, name)
                clients.append(RoomClient(
                    sock, name, sender, probe, session, counter=WsFrameCounter(),
                    say=session.frame({"type": "say", "text": "x" * spec.size})))
                continue
            sock, decoder = _login(spec.host, spec.port, name, spec.tls)
            clients.append(RoomClient(sock, name, sender, probe, decoder, say=say))
        times = start_together(pipe, lambda: barrier(clients))
        if spec.mode == "latency":
            pipe.send(("done", _run_latency(spec, clients, times)))
        else:
            pipe.send(("done", run_fanout(spec.window, clients, times)))

    try:
        work(pipe, body)
    finally:
        for client in clients:
            client.sock.close()


# --- idle connections ------------------------------------------------------------------


@dataclass(frozen=True)
class IdleSpec:
    host: str
    port: int
    names: list[str]
    window: int  # most logins in flight (hello sent, no welcome yet)


class _IdleClient:
    __slots__ = ("first", "name", "pong", "sock")

    def __init__(self, sock: socket.socket, name: str) -> None:
        self.sock = sock
        self.name = name
        self.first: bytearray | None = bytearray()  # until the welcome is complete
        self.pong: MarkerCounter | None = None


def _first_frame(client: _IdleClient, buf: bytearray, n: int) -> bool:
    """Collect the first frame (welcome); True once it has arrived and is one."""
    first = client.first
    assert first is not None
    first += buf[:n]
    if len(first) < HEADER_SIZE:
        return False
    end = frame_end(first)
    if len(first) < end:
        return False
    # A welcome lists everyone online: decoding 10,000 names per login would
    # make the generator, not the server, the O(N^2) part. Check its head.
    if not first.startswith(WELCOME_HEAD, HEADER_SIZE):
        message = decode_payload(first[HEADER_SIZE:end])
        if message.get("type") != "welcome":
            raise refusal(message)
    client.first = None  # the rest (joins) is read and dropped
    return True


class _IdleLoad:
    """One idle worker's connections, in two selectors.

    Sockets still waiting for their welcome are read at once (a login's time
    is the figure); logged-in ones only every ``_DRAIN_EVERY`` seconds, so
    each read takes many turns' worth of ``join`` frames instead of one each.
    """

    def __init__(self) -> None:
        # The parent's pipe is polled, not selected: waits are at most one
        # drain interval, and a dead parent cannot turn the loop into a spin.
        self.fresh = selectors.DefaultSelector()
        self.online = selectors.DefaultSelector()
        self.clients: list[_IdleClient] = []
        self.buf = bytearray(RECV_SIZE)
        self.hello_pending = 0
        self.pongs_pending = 0
        self.closing = False
        self._next_drain = 0.0

    def add(self, sock: socket.socket, name: str) -> None:
        client = _IdleClient(sock, name)
        self.clients.append(client)
        self.fresh.register(sock, selectors.EVENT_READ, client)
        self.hello_pending += 1

    def _read(self, client: _IdleClient) -> None:
        buf = self.buf
        try:
            n = client.sock.recv_into(buf)
        except (BlockingIOError, InterruptedError):
            return
        except ConnectionError:
            n = 0
        if n == 0:
            if not self.closing:
                raise BenchError(f"{client.name}: server closed an idle connection")
            selector = self.fresh if client.first is not None else self.online
            selector.unregister(client.sock)
            return
        if client.first is not None and _first_frame(client, buf, n):
            self.hello_pending -= 1
            self.fresh.unregister(client.sock)
            self.online.register(client.sock, selectors.EVENT_READ, client)
        if client.pong is not None and client.pong.feed(buf, n):
            client.pong = None
            self.pongs_pending -= 1

    def pump(self, timeout: float) -> None:
        """Read what has come; wait at most ``timeout`` (or until the next drain)."""
        now = time.monotonic()
        wait = max(0.0, min(timeout, self._next_drain - now))
        for key, _ in self.fresh.select(wait):
            self._read(key.data)
        now = time.monotonic()
        if now >= self._next_drain:
            self._next_drain = now + _DRAIN_EVERY
            for key, _ in self.online.select(0):
                self._read(key.data)

    def until(self, done: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + SETUP_TIMEOUT
        while not done():
            if time.monotonic() > deadline:
                raise BenchError(f"timed out {what}")
            self.pump(1.0)

    def close(self) -> None:
        self.fresh.close()
        self.online.close()
        for client in self.clients:
            client.sock.close()


def idle_worker(pipe: Connection, spec: IdleSpec) -> None:
    """Log in many clients that then only read (and drop) what they are sent.

    Logins are pipelined: connect, send ``hello``, move on, with at most
    ``window`` welcomes outstanding; meanwhile the connections are read, as
    every login sends a ``join`` to everyone already online.
    """
    load = _IdleLoad()

    def body() -> None:
        pipe.send(("ready", None))
        _, t_start = pipe.recv()
        wait_until(t_start)
        cpu0 = cpu_now()[0]
        for name in spec.names:
            load.until(lambda: load.hello_pending < spec.window, "logging in idle clients")
            sock = socket.create_connection((spec.host, spec.port), timeout=SETUP_TIMEOUT)
            sock.sendall(hello(name))
            sock.setblocking(False)
            load.add(sock, name)
            load.pump(0)
        load.until(lambda: not load.hello_pending, "waiting for welcomes")
        pipe.send(("connected", (time.monotonic_ns(), cpu_now()[0] - cpu0)))
        load.until(pipe.poll, "waiting for the other generators")  # reading joins meanwhile
        pipe.recv()
        ping = encode({"type": "ping", "t": _BARRIER_T})
        for client in load.clients:
            client.pong = MarkerCounter(_BARRIER_T.encode())
            client.sock.send(ping)  # a few bytes into an empty socket buffer
            load.pongs_pending += 1
        load.until(lambda: not load.pongs_pending, "waiting for pong (barrier)")
        pipe.send(("settled", time.monotonic_ns()))
        load.closing = True  # the parent stops the server now; its byes are dropped
        load.until(pipe.poll, "waiting for the parent")
        pipe.recv()

    try:
        work(pipe, body)
    finally:
        load.close()
