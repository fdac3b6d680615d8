"""Redis pub/sub against ``chatd bench fanout``'s room, plain and TLS, interleaved.

redis-benchmark cannot fan out (its PUBLISH has no subscribers), so this
loads a ``redis-server`` the way ``chatd bench fanout`` loads chatd: 100
subscribers of one channel, 10 publishers each keeping 64 ``PUBLISH`` of a
64-byte text in flight (the integer reply is the acknowledgement), from 2
generator processes pinned away from the server's CPU. A delivery is one
``message`` received by one subscriber. The publishers are 10 connections of
their own (a RESP2 subscriber cannot publish), where chatd's senders are 10
of the room's 100 clients; each message reaches 100 clients either way.

Run from the repository: ``.venv/bin/python scripts/bench_redis_fanout.py``.
"""

from __future__ import annotations

import argparse
import os
import selectors
import socket
import ssl
import statistics
import subprocess
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from chatd.bench import Workers, _free_port, workers
from chatd.bench_load import RECV_SIZE, cpu_now, wait_until, work
from chatd.bench_server import BenchError, Server
from chatd.bench_wire import MarkerCounter
from chatd.tls import create_self_signed

CHANNEL = b"room"
MESSAGE = b"$7\r\nmessage\r\n"  # the head of each delivery's push


def command(*parts: bytes) -> bytes:
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


def _connect(port: int, tls: bool) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        sock = context.wrap_socket(sock)
    return sock


def worker(pipe: Connection, spec: tuple[int, bool, int, int, int, int]) -> None:
    work(pipe, lambda: _load(pipe, spec))


def _load(pipe: Connection, spec: tuple[int, bool, int, int, int, int]) -> None:
    port, tls, subscribers, publishers, size, window = spec
    subs = []
    for _ in range(subscribers):
        sock = _connect(port, tls)
        sock.sendall(command(b"SUBSCRIBE", CHANNEL))
        if b"subscribe" not in sock.recv(4096):
            raise BenchError("no subscribe confirmation")
        sock.setblocking(False)
        subs.append(sock)
    pubs = [_connect(port, tls) for _ in range(publishers)]
    for sock in pubs:
        sock.setblocking(False)
    publish = command(b"PUBLISH", CHANNEL, b"x" * size)
    pipe.send("ready")
    _, (t_start, t_m0, t_m1) = pipe.recv()
    sel = selectors.DefaultSelector()
    for sock in subs:
        sel.register(sock, selectors.EVENT_READ, (sock, MarkerCounter(MESSAGE), False))
    for sock in pubs:  # one "\r\n" per integer reply
        sel.register(sock, selectors.EVENT_READ, (sock, MarkerCounter(b"\r\n"), True))
    buf = bytearray(RECV_SIZE)
    deliveries = 0
    start: tuple[int, tuple[float, float]] | None = None
    wait_until(t_start)
    for sock in pubs:
        sock.sendall(publish * window)  # into empty buffers
    while (now := time.monotonic_ns()) < t_m1:
        if start is None and now >= t_m0:
            start = (deliveries, cpu_now())
        for key, _ in sel.select(0.05):
            sock, counter, publisher = key.data
            try:
                n = sock.recv_into(buf)
            except (BlockingIOError, ssl.SSLWantReadError):
                continue
            if not n:
                raise BenchError("redis closed a connection")
            got = counter.feed(buf, n)
            if publisher:
                sock.setblocking(True)  # small; the publisher waits for its window
                sock.sendall(publish * got)
                sock.setblocking(False)
            else:
                deliveries += got
    end = (deliveries, cpu_now())
    assert start is not None
    pipe.send({"deliveries": end[0] - start[0], "cpu": end[1][0] - start[1][0]})
    pipe.recv()


def run(server: Server, port: int, tls: bool, args: argparse.Namespace) -> dict[str, Any]:
    procs = args.procs
    specs = [(port, tls, args.clients // procs, args.senders // procs, args.size, args.window)
             for _ in range(procs)]
    with workers(worker, specs) as group:
        _gather(group)
        t_start = time.monotonic_ns() + 100_000_000
        t_m0 = t_start + int(args.warmup * 1e9)
        t_m1 = t_m0 + int(args.duration * 1e9)
        group.send(("go", (t_start, t_m0, t_m1)))
        wait_until(t_m0)
        cpu0, wait0, wall0 = server.cpu_seconds(), server.run_delay(), time.monotonic()
        wait_until(t_m1)
        cpu1, wait1, wall1 = server.cpu_seconds(), server.run_delay(), time.monotonic()
        results = _gather(group)
        group.send(("close", None))
    assert cpu0 is not None and cpu1 is not None and wait0 is not None and wait1 is not None
    deliveries = sum(r["deliveries"] for r in results)
    return {"deliveries_per_s": deliveries / args.duration,
            "per_server_cpu_s": deliveries / (cpu1 - cpu0),
            "server_cpu": (cpu1 - cpu0) / (wall1 - wall0),
            "server_waited": (wait1 - wait0) / (wall1 - wall0),
            "generator_cpu": sum(r["cpu"] for r in results) / args.duration}


def _gather(group: Workers) -> list[Any]:
    out = []
    for pipe in group.pipes:
        if not pipe.poll(120):
            raise RuntimeError("generator timed out")
        got = pipe.recv()
        if isinstance(got, tuple):  # ("error", why) from work()
            raise RuntimeError(f"generator: {got[1]}")
        out.append(got)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag, default in (("--clients", 100), ("--senders", 10), ("--size", 64),
                          ("--window", 64), ("--runs", 3), ("--procs", 2)):
        parser.add_argument(flag, type=int, default=default)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    args = parser.parse_args()
    allowed = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, set(allowed[1:]) or set(allowed))
    print(f"load average {os.getloadavg()[0]:.1f}; server on CPU {allowed[0]}")
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
        create_self_signed(cert, key, "127.0.0.1")
        port, tls_port = _free_port(), _free_port()
        proc = subprocess.Popen(
            ["redis-server", "--port", str(port), "--tls-port", str(tls_port),
             "--tls-cert-file", str(cert), "--tls-key-file", str(key),
             "--tls-auth-clients", "no", "--save", "", "--appendonly", "no",
             "--dir", tmp, "--logfile", str(Path(tmp, "redis.log"))],
            stdin=subprocess.DEVNULL)
        os.sched_setaffinity(proc.pid, {allowed[0]})
        server = Server("127.0.0.1", port, proc.pid)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            runs: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
            for number in range(1, args.runs + 1):
                for tls in (False, True):
                    result = run(server, tls_port if tls else port, tls, args)
                    runs[tls].append(result)
                    print(f"  run {number} {'tls' if tls else 'plain'}: " + ", ".join(
                        f"{k} {v:,.2f}" for k, v in result.items()), flush=True)
        finally:
            proc.terminate()
            proc.wait(10)
    med = {tls: {k: statistics.median(r[k] for r in runs[tls]) for k in runs[tls][0]}
           for tls in runs}
    for tls in (False, True):
        print(f"redis {'tls' if tls else 'plain'} median: {med[tls]['deliveries_per_s']:,.0f} "
              f"deliveries/s, {med[tls]['per_server_cpu_s']:,.0f} per server CPU-second")
    for k in ("deliveries_per_s", "per_server_cpu_s"):
        print(f"tls / plain {k}: {med[True][k] / med[False][k]:.2f}")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
