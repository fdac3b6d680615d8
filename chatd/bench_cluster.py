"""``chatd bench fanout --nodes 1,2,3``: the one-room fan-out over a cluster of nodes.

Every run starts its own ``redis-server`` (a free loopback port, a temporary
directory, ``--appendonly yes --appendfsync always --save ''``;
``--redis-fsync everysec`` to compare, twice to run both interleaved) and N
nodes, each ``chatd run --cluster redis://127.0.0.1:P --port 0 --tls-port 0
--http-port 0`` in a data directory of its own, started as ``chatd bench``
starts its one server (:func:`~chatd.bench_server.start_server`).

- **Fan-out**: ``--clients`` version 2 guests, client i on node i % N, all in
  ``lobby`` (where the server puts guests); the first ``--senders`` of them
  (so also spread over the nodes) send ``--size``-character texts with at most
  ``--window`` unacknowledged, as in the one-server fan-out. A delivery is
  one ``msg`` frame received by one client; receivers count the marker
  ``"type":"msg"`` in the bytes (cheap, and it ignores the other nodes' late
  ``join``/``presence`` frames, which reach a client through Redis after its own
  node's barrier). Deliveries are also counted per node (of the receiving
  client), so each node's deliveries per CPU-second of that node is shown.
- **CPU**: user + system seconds of every node and of ``redis-server`` over the
  measured window, from ``/proc/PID/stat`` (and the run-queue wait, from
  ``schedstat``).
- **Latency**: a separate process logs in a probe sender on node 0 and one
  receiver on every node, all of them out of ``lobby`` and in a room of their
  own; the sender says ``--probe-rate`` stamped texts per second. A receiver
  on another node than the sender times a **cross-node** delivery (through
  Redis), the one on node 0 a same-node delivery. Probes run first alone
  (``idle``: 1 s, no fan-out yet) and then during the fan-out (``loaded``:
  received in the measured window). With one node there is no cross-node
  delivery: the same-node figures stand in for it.

Set-ups (node counts, fsync policies) run interleaved, ``--runs`` times, and the
medians are shown side by side. On a machine with a CPU for every node, one for
Redis and one or more left for the generators, each gets its own; with fewer
(two cores), everything shares them, which the output says: the figures then
show each node's CPU cost per delivery and the cross-node latency, not how far
throughput scales out.
"""

from __future__ import annotations

import argparse
import os
import selectors
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from array import array
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from chatd.bench import Bench, Workers, _median, _n, _quantiles, _share, _sleep_until, workers
from chatd.bench_load import (
    RECV_SIZE,
    SETUP_TIMEOUT,
    cpu_now,
    hello,
    start_together,
    wait_until,
    work,
)
from chatd.bench_server import BenchError, Server, start_server
from chatd.bench_wire import STAMP_DIGITS, MarkerCounter, StampReader, stamped_text
from chatd.control_client import ControlClient, ControlError
from protocol.framing import Decoder, Message, encode
from protocol.limits import CLIENT_MAX_FRAME, PROTO_V2

ROOM = "lobby"  # the fan-out's room: guests are put in it at login, on every node
FSYNC = ("always", "everysec", "no")
_IDLE_PROBE_S = 1.0  # probes alone before the fan-out starts
_GAP_S = 0.2  # between the idle probes and the fan-out
_REDIS_START_TIMEOUT = 10.0
_JOIN_TIMEOUT = 15.0  # for every node to see all the others (node leases)
_MSG = b'"type":"msg"'
_PONG = b'"type":"pong"'
_Result = dict[str, Any]


# --- flags -------------------------------------------------------------------------------


def node_counts(text: str) -> tuple[int, ...]:
    """``--nodes``: one count or a comma list (``1,2,3``), each 1..32, no repeats."""
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: must be a node count or a comma list of them (1,2,3)") from None
    if any(not 1 <= count <= 32 for count in counts):
        raise argparse.ArgumentTypeError(f"{text!r}: node counts must be 1 to 32")
    if len(set(counts)) != len(counts):
        raise argparse.ArgumentTypeError(f"{text!r}: a node count is repeated")
    return counts


def _rate(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The cluster flags of ``chatd bench``."""
    group = parser.add_argument_group("cluster (fan-out over N nodes and one redis-server)")
    group.add_argument("--nodes", type=node_counts, default=None, metavar="N[,N...]",
                       help="fanout: run it over a cluster of N nodes (started with their own "
                       "redis-server); a comma list runs each count, interleaved")
    group.add_argument("--redis-fsync", action="append", choices=FSYNC, default=None,
                       help="the cluster's Redis appendfsync (default: always; give it twice "
                       "to compare, interleaved)")
    group.add_argument("--probe-rate", type=_rate, default=500,
                       help="cluster: latency probe messages per second (sent on node 0)")


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage errors of the cluster flags (exit 2, one line)."""
    if args.nodes is None:
        if args.redis_fsync:
            parser.error("--redis-fsync only applies with --nodes")
        return
    if args.part != "fanout":
        parser.error("--nodes runs the fan-out only: chatd bench fanout --nodes N")
    for flag, value in (("--port", args.port), ("--db", args.db), ("--tls", args.tls),
                        ("--ws", args.ws), ("--compare-tree", args.compare_tree)):
        if value:
            parser.error(f"--nodes starts its own cluster and does not take {flag}")
    if args.size < STAMP_DIGITS:
        parser.error(f"--nodes needs --size of at least {STAMP_DIGITS} (the latency probes)")


# --- Redis -------------------------------------------------------------------------------


@dataclass
class Redis:
    """A ``redis-server`` this bench started, and its figures (a :class:`Server`)."""

    server: Server
    proc: subprocess.Popen[bytes]
    tmp: tempfile.TemporaryDirectory[str] = field(repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.server.port}"

    def log_tail(self) -> str:
        try:
            text = (Path(self.tmp.name) / "redis.log").read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-3:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.tmp.cleanup()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _pong(port: int) -> bool:
    """True once Redis answers PING (not while it refuses or is still loading)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(fsync: str, cpus: set[int] | None) -> Redis:
    """``redis-server`` on a free loopback port, append-only, fsync as asked."""
    binary = shutil.which("redis-server") or "/usr/sbin/redis-server"
    if not Path(binary).exists():
        raise BenchError("--nodes needs redis-server (Debian: apt-get install redis-server)")
    for _ in range(3):  # the free port may be taken before Redis binds it
        tmp = tempfile.TemporaryDirectory(prefix="chatd-bench-redis-")
        port = _free_port()
        cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", tmp.name,
               "--appendonly", "yes", "--appendfsync", fsync, "--save", "",
               "--logfile", str(Path(tmp.name) / "redis.log")]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        redis = Redis(Server("127.0.0.1", port, proc.pid), proc, tmp)
        if cpus:
            os.sched_setaffinity(proc.pid, cpus)
        deadline = time.monotonic() + _REDIS_START_TIMEOUT
        while proc.poll() is None and time.monotonic() < deadline:
            if _pong(port):
                return redis
            time.sleep(0.02)  # the bench is a client; it may wait
        tail = redis.log_tail()
        redis.stop()
        if "Address already in use" not in tail:
            raise BenchError(f"redis-server did not start: {tail or 'no log'}")
    raise BenchError("redis-server found no free port")


# --- load generators ---------------------------------------------------------------------


def _login(host: str, port: int, name: str) -> tuple[socket.socket, Decoder, Message]:
    """Blocking version 2 guest login; the socket stays blocking, the welcome is returned."""
    sock = socket.create_connection((host, port), timeout=SETUP_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(hello(name, PROTO_V2))
    decoder = Decoder(CLIENT_MAX_FRAME)
    while True:
        try:
            data = sock.recv(RECV_SIZE)
        except ConnectionError as exc:
            raise BenchError(f"{name}: {exc.strerror} before welcome (port {port})") from None
        if not data:
            raise BenchError(f"{name}: node on port {port} closed the connection before welcome")
        messages = decoder.feed(data, limit=1)
        if messages:
            message = messages[0]
            if message.get("type") != "welcome":
                raise BenchError(f"{name}: login refused on port {port}: "
                                 f"{message.get('code')}: {message.get('message')}")
            return sock, decoder, message


def _rooms_of(welcome: Message) -> list[str]:
    rooms = welcome.get("rooms")
    if not isinstance(rooms, list):
        raise BenchError("welcome without rooms: not a version 2 server?")
    return [str(room["room"]) for room in rooms]


def _barrier(socks: Sequence[socket.socket]) -> None:
    """Ping every socket and read until each has its pong.

    Frames that its own node queued before the ping arrive before the pong;
    the other nodes' may still come later (through Redis), so the counters
    look for markers, not frame borders, and do not mind.
    """
    sel = selectors.DefaultSelector()
    ping = encode({"type": "ping", "t": "bench-barrier"})
    pongs: dict[socket.socket, MarkerCounter] = {}
    for sock in socks:
        sock.setblocking(True)
        sock.sendall(ping)
        sock.setblocking(False)
        pongs[sock] = MarkerCounter(_PONG)
        sel.register(sock, selectors.EVENT_READ, sock)
    buf = bytearray(RECV_SIZE)
    deadline = time.monotonic() + SETUP_TIMEOUT
    while pongs:
        if time.monotonic() > deadline:
            raise BenchError("timed out waiting for pong (barrier)")
        for key, _ in sel.select(1.0):
            sock = key.data
            n = sock.recv_into(buf)
            if not n:
                raise BenchError("a node closed a connection before the barrier")
            if pongs[sock].feed(buf, n):
                sel.unregister(sock)
                del pongs[sock]
    sel.close()


@dataclass(frozen=True)
class FanoutSpec:
    """One generator's share of the room: each client's name, node and port."""

    host: str
    names: list[str]
    nodes: list[int]  # the node of each client
    ports: list[int]  # the port of each client's node
    senders: list[bool]
    node_count: int
    size: int
    window: int


class _Member:
    __slots__ = ("acks", "msgs", "node", "out", "say", "sock")

    def __init__(self, sock: socket.socket, name: str, node: int, say: bytes) -> None:
        self.sock = sock
        self.node = node
        self.say = say  # a sender's `say` frame; b"" for a receiver
        self.msgs = MarkerCounter(_MSG)
        self.acks = MarkerCounter(b'"from":"' + name.encode() + b'"')  # its own echoes
        self.out = bytearray()


def _send(sel: selectors.BaseSelector, member: _Member, data: bytes) -> None:
    if member.out:
        member.out += data
        return
    try:
        sent = member.sock.send(data)
    except BlockingIOError:
        sent = 0
    if sent < len(data):
        member.out += data[sent:]
        sel.modify(member.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, member)


def _flush(sel: selectors.BaseSelector, member: _Member) -> None:
    try:
        sent = member.sock.send(member.out)
    except BlockingIOError:
        return
    del member.out[:sent]
    if not member.out:
        sel.modify(member.sock, selectors.EVENT_READ, member)


def _fanout(spec: FanoutSpec, members: list[_Member], times: tuple[int, int, int]) -> _Result:
    """Senders keep ``window`` messages in flight; everyone counts `msg` frames, per node."""
    t_start, t_m0, t_m1 = times
    sel = selectors.DefaultSelector()
    for member in members:
        sel.register(member.sock, selectors.EVENT_READ, member)
    buf = bytearray(RECV_SIZE)
    counts = [0] * spec.node_count
    start: tuple[list[int], tuple[float, float]] | None = None
    acks = 0
    wait_until(t_start)
    senders = [m for m in members if m.say]
    for member in senders:
        _send(sel, member, member.say * spec.window)
    while True:
        now = time.monotonic_ns()
        if start is None and now >= t_m0:
            start = (counts.copy(), cpu_now())
        if now >= t_m1:
            end = (counts.copy(), cpu_now())
            break
        for key, events in sel.select(0.05):
            member = key.data
            if events & selectors.EVENT_WRITE:
                _flush(sel, member)
            if not events & selectors.EVENT_READ:
                continue
            try:
                n = member.sock.recv_into(buf)
            except BlockingIOError:
                continue
            if not n:
                raise BenchError(f"node {member.node} closed a connection under load")
            counts[member.node] += member.msgs.feed(buf, n)
            if member.say and (acked := member.acks.feed(buf, n)):
                acks += acked
                _send(sel, member, member.say * acked)
    sel.close()
    if senders and not acks:
        raise BenchError("no sender saw its own msg (looked for '\"from\":\"NAME\"')")
    assert start is not None
    return {"deliveries": [b - a for a, b in zip(start[0], end[0], strict=True)],
            "cpu": end[1][0] - start[1][0], "waited": end[1][1] - start[1][1]}


def fanout_worker(pipe: Connection, spec: FanoutSpec) -> None:
    """Log in this worker's clients (each on its node), barrier, run, report."""
    members: list[_Member] = []
    say = encode({"type": "say", "room": ROOM, "text": "x" * spec.size})

    def body() -> None:
        for name, node, port, sender in zip(spec.names, spec.nodes, spec.ports, spec.senders,
                                            strict=True):
            sock, _, welcome = _login(spec.host, port, name)
            members.append(_Member(sock, name, node, say if sender else b""))
            if ROOM not in (room.casefold() for room in _rooms_of(welcome)):
                raise BenchError(f"{name}: not put in {ROOM} at login (node {node})")
        times = start_together(pipe, lambda: _barrier([m.sock for m in members]))
        pipe.send(("done", _fanout(spec, members, times)))

    try:
        work(pipe, body)
    finally:
        for member in members:
            member.sock.close()


@dataclass(frozen=True)
class ProbeSpec:
    """The latency probe: a sender on ``ports[0]``, a receiver on every node."""

    host: str
    ports: list[int]  # each node's port
    names: list[str]  # sender, then one receiver per node
    room: str
    rate: int
    size: int


def _enter_probe_room(sock: socket.socket, decoder: Decoder, welcome: Message,
                      room: str) -> None:
    """Out of the rooms the node put the client in, into ``room``; wait for ``joined``."""
    frames = [encode({"type": "part", "room": r}) for r in _rooms_of(welcome)]
    sock.sendall(b"".join(frames) + encode({"type": "join", "room": room}))
    deadline = time.monotonic() + SETUP_TIMEOUT
    while time.monotonic() < deadline:
        data = sock.recv(RECV_SIZE)
        if not data:
            raise BenchError("a node closed the probe's connection while it joined its room")
        for message in decoder.feed(data):
            kind = message.get("type")
            if kind == "joined" and message.get("room") == room:
                return
            if kind in ("error", "bye"):
                raise BenchError(f"probe: {kind} {message.get('code') or message.get('reason')}"
                                 f": {message.get('message', '')} (joining {room})")
    raise BenchError("timed out joining the probe room")


def _probe(spec: ProbeSpec, socks: list[socket.socket], times: tuple[int, ...]) -> _Result:
    """Send stamped texts from ``socks[0]``; time them on the receivers.

    Idle probes are sent in [t_q0, t_q1) and timed until the fan-out starts;
    loaded ones are sent from the fan-out's start and timed when received in
    the measured window.
    """
    t_q0, t_q1, t_start, t_m0, t_m1 = times
    sender = socks[0]
    sel = selectors.DefaultSelector()
    for index, sock in enumerate(socks):
        sock.setblocking(True)  # a few small frames a millisecond: sendall may block
        sel.register(sock, selectors.EVENT_READ, index)
    readers = [StampReader() for _ in socks]
    samples = {key: array("q") for key in ("idle_same", "idle_cross", "loaded_same",
                                           "loaded_cross")}
    buf = bytearray(RECV_SIZE)
    view = memoryview(buf)
    interval = int(1e9 / spec.rate)
    next_ns = t_q0
    sent = 0
    wait_until(t_q0)
    while (now := time.monotonic_ns()) < t_m1:
        while next_ns <= now:
            if next_ns < t_q1 or next_ns >= t_start:
                text = stamped_text(time.monotonic_ns(), spec.size)
                sender.sendall(encode({"type": "say", "room": spec.room, "text": text}))
                sent += 1
            next_ns += interval
            if t_q1 <= next_ns < t_start:
                next_ns = t_start
        for key, _ in sel.select(max(0.0, (min(next_ns, t_m1) - time.monotonic_ns()) / 1e9)):
            index = key.data
            n = socks[index].recv_into(buf)
            if not n:
                raise BenchError("a node closed a probe connection")
            if index == 0:
                continue  # the sender's own echoes
            received = time.monotonic_ns()
            phase = "idle" if received < t_start else "loaded" if t_m0 <= received else None
            out = None if phase is None else samples[
                f"{phase}_{'same' if index == 1 else 'cross'}"]
            readers[index].feed(view[:n], received, out)
    sel.close()
    return {"sent": sent, **samples}


def probe_worker(pipe: Connection, spec: ProbeSpec) -> None:
    """Log in the probe's clients, each out of ``lobby`` into the probe room; then time."""
    socks: list[socket.socket] = []

    def body() -> None:
        ports = [spec.ports[0], *spec.ports]  # the sender, then a receiver on each node
        for name, port in zip(spec.names, ports, strict=True):
            sock, decoder, welcome = _login(spec.host, port, name)
            socks.append(sock)
            _enter_probe_room(sock, decoder, welcome, spec.room)
        times = start_together(pipe, lambda: _barrier(socks))
        pipe.send(("done", _probe(spec, socks, times)))

    try:
        work(pipe, body)
    finally:
        for sock in socks:
            sock.close()


# --- a run -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    nodes: int
    fsync: str

    def label(self, fsyncs: int) -> str:
        label = f"{self.nodes} node" + ("s" if self.nodes > 1 else "")
        return label + (f", fsync {self.fsync}" if fsyncs > 1 else "")


@dataclass(frozen=True)
class Placement:
    """Which CPUs each node, Redis and the generators get (None: not pinned)."""

    nodes: list[set[int] | None]
    redis: set[int] | None
    generators: set[int]


def placement(bench: Bench, allowed: list[int], nodes: int) -> Placement:
    if bench.args.no_pin or len(allowed) < nodes + 2:
        return Placement([None] * nodes, None, set(allowed))
    return Placement([{cpu} for cpu in allowed[:nodes]], {allowed[nodes]},
                     set(allowed[nodes + 1 :]))


def pinning(bench: Bench) -> str:
    """For the machine line: how the cluster runs are placed on the CPUs."""
    allowed = os.sched_getaffinity(0)
    most = max(bench.args.nodes)
    if bench.args.no_pin:
        return "not pinned (--no-pin)"
    if len(allowed) < most + 2:
        return (f"not pinned: {len(allowed)} CPUs for up to {most} node"
                f"{'s' if most > 1 else ''}, Redis and the load generators")
    return "each node and Redis pinned to a CPU of its own, the load generators to the rest"


def _cpu(servers: Sequence[Server]) -> list[tuple[float | None, float | None]]:
    return [(server.cpu_seconds(), server.run_delay()) for server in servers]


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else b - a


def _cluster_size(node: Server) -> Any:
    """``status.cluster.nodes`` of a node, from its control socket."""
    assert node.control is not None
    try:
        with ControlClient(node.control, timeout=SETUP_TIMEOUT) as client:
            status = client.request({"type": "status"})
    except ControlError as exc:
        raise BenchError(f"status of node on port {node.port}: {exc}") from None
    cluster = status.get("cluster")
    if not isinstance(cluster, dict):
        raise BenchError(f"node on port {node.port} has no 'cluster' in its status: "
                         "not in cluster mode?")
    return cluster.get("nodes")


def _wait_cluster(nodes: list[Server]) -> None:
    """Until every node's ``status`` counts all of them (with a deadline)."""
    deadline = time.monotonic() + _JOIN_TIMEOUT
    for node in nodes:
        while (seen := _cluster_size(node)) != len(nodes):
            if time.monotonic() > deadline:
                raise BenchError(f"node on port {node.port} sees {seen} nodes, not "
                                 f"{len(nodes)}, after {_JOIN_TIMEOUT:g} s")
            time.sleep(0.05)  # the bench is a client; it may wait


@contextmanager
def _cluster(bench: Bench, setup: Setup, place: Placement) -> Iterator[tuple[Redis, list[Server]]]:
    """Redis, then the nodes; stopped nodes first."""
    args = bench.args
    redis = start_redis(setup.fsync, place.redis)
    nodes: list[Server] = []
    try:
        for cpus in place.nodes:
            flags = ["--cluster", redis.url, "--tls-port", "0", "--http-port", "0",
                     "--max-clients", str(args.clients + 100), *args.server_arg]
            nodes.append(start_server("store", flags, cpus))  # "store": no --db flag
        try:
            _wait_cluster(nodes)
            yield redis, nodes
        except BenchError as exc:
            logs = "; ".join(f"node {i}: {node.log_tail(3) or 'empty'}"
                             for i, node in enumerate(nodes))
            raise BenchError(f"{exc} [{logs}; redis: {redis.log_tail() or 'empty'}]") from None
    finally:
        for node in nodes:
            node.stop()
        redis.stop()


def cluster_run(bench: Bench, setup: Setup, allowed: list[int]) -> _Result:
    """One run: Redis, N nodes, the room spread over them, the probe; the window's figures."""
    args = bench.args
    count = setup.nodes
    names = bench.names("c", args.clients)
    probe_names = bench.names("p", count + 1)
    probe_room = bench.names("probe", 1)[0]
    senders = min(args.senders, args.clients)
    procs = min(args.procs, args.clients)
    place = placement(bench, allowed, count)
    os.sched_setaffinity(0, place.generators)  # inherited by the generators forked below
    with _cluster(bench, setup, place) as (redis, nodes):
        ports = [node.port for node in nodes]
        host = nodes[0].host
        specs = [
            FanoutSpec(host=host, names=names[w::procs],
                       nodes=[i % count for i in range(w, args.clients, procs)],
                       ports=[ports[i % count] for i in range(w, args.clients, procs)],
                       senders=[i < senders for i in range(w, args.clients, procs)],
                       node_count=count, size=args.size, window=args.window)
            for w in range(procs)
        ]
        probe = ProbeSpec(host=host, ports=ports, names=probe_names, room=probe_room,
                          rate=args.probe_rate, size=args.size)
        with ExitStack() as stack:
            group = stack.enter_context(workers(fanout_worker, specs))
            prober = stack.enter_context(workers(probe_worker, [probe]))
            result = _window(bench, redis, nodes, group, prober)
    result.update(nodes=count, fsync=setup.fsync, clients=args.clients, senders=senders)
    return result


def _window(bench: Bench, redis: Redis, nodes: list[Server], group: Workers,
            prober: Workers) -> _Result:
    args = bench.args
    for each in (group, prober):
        each.gather("ready")
    for each in (group, prober):
        each.send(("sync", None))
    for each in (group, prober):
        each.gather("synced")
    t_q0 = time.monotonic_ns() + 100_000_000
    t_q1 = t_q0 + int(min(_IDLE_PROBE_S, args.duration) * 1e9)
    t_start = t_q1 + int(_GAP_S * 1e9)
    t_m0 = t_start + int(args.warmup * 1e9)
    t_m1 = t_m0 + int(args.duration * 1e9)
    group.send(("go", (t_start, t_m0, t_m1)))
    prober.send(("go", (t_q0, t_q1, t_start, t_m0, t_m1)))
    servers = [*nodes, redis.server]
    _sleep_until(t_m0)
    before, wall0 = _cpu(servers), time.monotonic()
    _sleep_until(t_m1)
    after, wall1 = _cpu(servers), time.monotonic()
    timeout = args.duration + args.warmup + _IDLE_PROBE_S + 60
    reports = group.gather("done", timeout=timeout)
    probe = prober.gather("done", timeout=timeout)[0]
    wall = wall1 - wall0
    used = [_delta(a[0], b[0]) for a, b in zip(before, after, strict=True)]
    waited = [_delta(a[1], b[1]) for a, b in zip(before, after, strict=True)]
    per_node = [sum(r["deliveries"][i] for r in reports) for i in range(len(nodes))]
    total = sum(per_node)
    node_cpu = used[:-1]
    known = [cpu for cpu in node_cpu if cpu is not None]
    node_total = sum(known, 0.0) if len(known) == len(nodes) else 0.0
    result: _Result = {
        "deliveries_per_s": total / args.duration,
        "per_node_cpu_s": total / node_total if node_total > 0 else None,
        "node_cpu_s": node_cpu,
        "node_cpu": [None if cpu is None else cpu / wall for cpu in node_cpu],
        "node_waited": [None if w is None else w / wall for w in waited[:-1]],
        "node_deliveries_per_s": [d / args.duration for d in per_node],
        "node_per_cpu_s": [d / cpu if cpu else None for d, cpu in zip(per_node, node_cpu,
                                                                       strict=True)],
        "redis_cpu_s": used[-1],
        "redis_cpu": None if used[-1] is None else used[-1] / wall,
        "redis_waited": None if waited[-1] is None else waited[-1] / wall,
        "generator_cpu": sum(r["cpu"] for r in reports) / args.duration,
        "generator_waited": sum(r["waited"] for r in reports) / args.duration,
        "probes_sent": probe["sent"],
    }
    for phase in ("idle", "loaded"):
        for where in ("same", "cross"):
            key = f"{phase}_{where}"
            result.update(_quantiles(list(probe[key]), key + "_"))
    if not result["idle_same_samples"]:
        raise BenchError("no latency probe reached the receiver on the sender's node")
    if len(nodes) > 1 and not result["idle_cross_samples"]:
        raise BenchError("no latency probe reached another node (are the nodes one cluster?)")
    return result


# --- the part ----------------------------------------------------------------------------

_SCALAR_KEYS = [
    "deliveries_per_s", "per_node_cpu_s", "redis_cpu_s", "redis_cpu", "redis_waited",
    "generator_cpu", "generator_waited", "probes_sent",
    *(f"{phase}_{where}_{figure}" for phase in ("idle", "loaded") for where in ("same", "cross")
      for figure in ("p50_ms", "p99_ms", "max_ms", "samples")),
]
_LIST_KEYS = ["node_cpu_s", "node_cpu", "node_waited", "node_deliveries_per_s",
              "node_per_cpu_s"]


def _median_of(runs: list[_Result]) -> _Result:
    """Each figure's median over the runs; per-node figures node by node."""
    med = _median(runs, _SCALAR_KEYS)
    for key in _LIST_KEYS:
        columns = zip(*(r[key] for r in runs), strict=True)
        med[key] = [_median([{key: value} for value in column], [key])[key]
                    for column in columns]
    return med


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _lat(r: _Result, phase: str) -> str:
    """A phase's headline latency: cross-node, or same-node with one node."""
    where = "cross" if r[f"{phase}_cross_samples"] else "same"
    return (f"{_ms(r[f'{phase}_{where}_p50_ms'])}/{_ms(r[f'{phase}_{where}_p99_ms'])} ms"
            + (" (same node)" if where == "same" else ""))


def _each(values: Sequence[float | None], show: Any) -> str:
    return "+".join(show(v) for v in values)


def _run_line(r: _Result) -> str:
    return (f"{_n(r['deliveries_per_s'])} deliveries/s, {_n(r['per_node_cpu_s'])} per node "
            f"CPU-second; node CPU {_each(r['node_cpu'], _share)} + waited "
            f"{_each(r['node_waited'], _share)}; Redis CPU {_share(r['redis_cpu'])} + waited "
            f"{_share(r['redis_waited'])}; generators {_share(r['generator_cpu'])} + waited "
            f"{_share(r['generator_waited'])}; latency p50/p99 idle {_lat(r, 'idle')}, "
            f"loaded {_lat(r, 'loaded')}")


def _row(cells: Sequence[str]) -> str:
    widths = (22, 14, 16, 24, 12, 24, 24)
    return "  ".join(cell.rjust(width) if i else cell.ljust(width)
                     for i, (cell, width) in enumerate(zip(cells, widths, strict=True)))


def bench_cluster(bench: Bench) -> None:
    args = bench.args
    fsyncs: list[str] = args.redis_fsync or ["always"]
    setups = [Setup(nodes, fsync) for fsync in fsyncs for nodes in args.nodes]
    runs: dict[Setup, list[_Result]] = {setup: [] for setup in setups}
    allowed = sorted(os.sched_getaffinity(0))  # before a run pins this process
    if args.no_pin or len(allowed) < max(args.nodes) + 2:
        bench.say(f"note: {len(allowed)} CPUs: the nodes, redis-server and the load generators "
                  "share them, so these figures show each node's CPU cost per delivery and the "
                  "cross-node latency, not scale-out throughput (that needs a CPU per node, "
                  "one for Redis and more for the generators)")
    for number in range(1, args.runs + 1):
        for setup in setups:  # interleaved, so a noisy moment hits every set-up alike
            result = cluster_run(bench, setup, allowed)
            runs[setup].append(result)
            bench.say(f"  cluster run {number}/{args.runs} [{setup.label(len(fsyncs))}]: "
                      f"{_run_line(result)}")
    senders = min(args.senders, args.clients)
    bench.say(f"cluster fan-out: {args.clients} clients in {ROOM} (client i on node i % N), "
              f"{senders} senders spread alike, {args.size} B, window {args.window}; "
              f"{args.duration:g} s measured; median of {args.runs}. Latency: {args.probe_rate} "
              "probes/s sent on node 0, timed on a client of another node (cross-node; with "
              "1 node, on the same node), idle (before the fan-out) and loaded (during it)")
    bench.say(_row(["set-up", "deliveries/s", "per node CPU-s", "node CPU-s each",
                    "Redis CPU-s", "idle p50/p99", "loaded p50/p99"]))
    part: dict[str, Any] = {}
    for setup in setups:
        label = setup.label(len(fsyncs))
        med = _median_of(runs[setup])
        med.update(nodes=setup.nodes, fsync=setup.fsync)
        part[label] = {"runs": runs[setup], "median": med}

        def seconds(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.2f}"

        bench.say(_row([label, _n(med["deliveries_per_s"]), _n(med["per_node_cpu_s"]),
                        _each(med["node_cpu_s"], seconds), seconds(med["redis_cpu_s"]),
                        _lat(med, "idle"), _lat(med, "loaded")]))
    for setup in setups:
        med = part[setup.label(len(fsyncs))]["median"]
        per = ", ".join(f"node {i}: {_n(d)}/s, {_n(c)} per CPU-s"
                        for i, (d, c) in enumerate(zip(med["node_deliveries_per_s"],
                                                       med["node_per_cpu_s"], strict=True)))
        bench.say(f"cluster [{setup.label(len(fsyncs))}]: Redis appendfsync {setup.fsync}; "
                  f"{per}; same-node p50/p99 idle {_ms(med['idle_same_p50_ms'])}/"
                  f"{_ms(med['idle_same_p99_ms'])} ms, loaded {_ms(med['loaded_same_p50_ms'])}/"
                  f"{_ms(med['loaded_same_p99_ms'])} ms")
    bench.results["cluster"] = part
