"""Test support for cluster mode (issue 12): a real Redis and several ``chatd`` nodes.

``redis_server(tmp_path)`` starts ``/usr/bin/redis-server`` on a free loopback
port with the append-only file on and fsynced at every write (what cluster mode
requires), waits until it answers ``PING`` (polling with a deadline), and stops
it on exit. The :class:`RedisServer` it yields can be killed with SIGKILL and
started again on the same port and directory (the AOF is replayed), and emptied
with ``FLUSHALL``. Commands go over a raw socket in RESP, so the tests need no
Redis client library.

``cluster_node(tmp_path, redis_url, name)`` is :func:`tests.support.running_server`
with ``--cluster`` (each node in its own directory); :class:`Node` is a node
that can be killed with SIGKILL and started again on its directory, and
``cluster(tmp_path, redis, n)`` starts ``n`` of them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import IO, Any

from tests.support import ServerProcess, TestClient, running_server

REDIS_BINARY = "/usr/bin/redis-server"
REDIS_START_TIMEOUT = 15.0
REDIS_STOP_TIMEOUT = 10.0
POLL_INTERVAL = 0.02
NODE_FLAGS = ("--rate", "0", "--tls-port", "0", "--http-port", "0")
"""Every node: no rate limit (tests pipeline), no TLS or web listener."""

Reply = bytes | int | list[Any] | None


class RedisError(Exception):
    """Redis answered a command with an error reply (``-ERR ...``)."""


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _read_reply(stream: IO[bytes]) -> Reply:
    """One RESP2 reply from ``stream``."""
    line = stream.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError(f"redis closed the connection (read {line!r})")
    kind, body = line[:1], line[1:-2]
    if kind == b"+":
        return body
    if kind == b"-":
        raise RedisError(body.decode("utf-8", "replace"))
    if kind == b":":
        return int(body)
    if kind == b"$":
        size = int(body)
        if size < 0:
            return None
        data = stream.read(size + 2)
        if len(data) != size + 2:
            raise ConnectionError("redis closed the connection inside a bulk reply")
        return data[:-2]
    if kind == b"*":
        count = int(body)
        return None if count < 0 else [_read_reply(stream) for _ in range(count)]
    raise ConnectionError(f"not a RESP reply: {line!r}")


def redis_command(port: int, *args: str | bytes, timeout: float = 5.0) -> Reply:
    """Send one command to the Redis on ``127.0.0.1:port`` and return its reply."""
    parts = [arg.encode() if isinstance(arg, str) else arg for arg in args]
    payload = b"*%d\r\n" % len(parts) + b"".join(
        b"$%d\r\n%s\r\n" % (len(part), part) for part in parts)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        with sock.makefile("rb") as stream:
            return _read_reply(stream)


class RedisServer:
    """A ``redis-server`` subprocess on a fixed port and directory."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port if port is not None else free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.dir / "redis.log"
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def command(self, *args: str | bytes, timeout: float = 5.0) -> Reply:
        return redis_command(self.port, *args, timeout=timeout)

    def start(self) -> None:
        """Start (or start again: same port, same directory, the AOF replayed)
        and return once it answers ``PING`` with ``PONG``."""
        assert not self.running, "redis is already running"
        args = [REDIS_BINARY, "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.dir), "--appendonly", "yes", "--appendfsync", "always",
                "--save", "", "--daemonize", "no", "--protected-mode", "yes",
                "--logfile", "", "--loglevel", "notice"]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT)
        self.starts += 1
        self.wait_ready()

    def wait_ready(self, timeout: float = REDIS_START_TIMEOUT) -> None:
        """Poll ``PING`` until ``PONG`` (not ``-LOADING`` while the AOF replays)."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"redis-server exited ({self.proc.returncode}): "
                                     f"{self.log()}")
            try:
                if self.command("PING", timeout=1.0) == b"PONG":
                    return
            except (OSError, RedisError) as exc:  # not listening yet, or loading
                last = exc
            time.sleep(POLL_INTERVAL)
        raise AssertionError(f"redis-server did not answer PING in {timeout} s "
                             f"({last!r}): {self.log()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown, nothing written beyond what is already in the AOF."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(REDIS_STOP_TIMEOUT)

    def restart(self) -> None:
        """Kill -9 if running, then start again on the same port and directory."""
        if self.running:
            self.kill()
        self.start()

    def stop(self) -> None:
        """SIGTERM with a bounded wait, then SIGKILL."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(REDIS_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()

    def flushall(self) -> None:
        """Empty every database, as an operator's mistake would."""
        assert self.command("FLUSHALL") == b"OK"

    def config(self, name: str) -> str:
        reply = self.command("CONFIG", "GET", name)
        assert isinstance(reply, list) and len(reply) == 2, reply
        value = reply[1]
        assert isinstance(value, bytes), reply
        return value.decode()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


@contextlib.contextmanager
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis with AOF (``appendfsync always``) in ``tmp_path/redis``; stopped on exit."""
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    try:
        yield redis
    finally:
        redis.stop()


def cluster_node(tmp_path: Path, redis_url: str, name: str, *flags: str
                 ) -> AbstractContextManager[ServerProcess]:
    """``chatd run --cluster redis_url`` with its data in ``tmp_path/name``."""
    directory = tmp_path / name
    directory.mkdir(parents=True, exist_ok=True)
    return running_server(directory, *NODE_FLAGS, "--cluster", redis_url, *flags)


class Node:
    """A cluster node that can be killed with SIGKILL and started again (on the
    same data directory; it gets a new port)."""

    def __init__(self, tmp_path: Path, redis_url: str, name: str, *flags: str) -> None:
        self.tmp = tmp_path
        self.redis_url = redis_url
        self.name = name
        self.flags = flags
        self._ctx: AbstractContextManager[ServerProcess] | None = None
        self._server: ServerProcess | None = None

    @property
    def server(self) -> ServerProcess:
        assert self._server is not None, f"node {self.name} is not running"
        return self._server

    @property
    def alive(self) -> bool:
        return self._server is not None and self._server.proc.poll() is None

    def start(self) -> ServerProcess:
        assert self._ctx is None, f"node {self.name} is already running"
        ctx = cluster_node(self.tmp, self.redis_url, self.name, *self.flags)
        self._server = ctx.__enter__()
        self._ctx = ctx
        return self._server

    def _exit(self) -> None:
        ctx, self._ctx = self._ctx, None
        if ctx is not None:
            ctx.__exit__(None, None, None)  # raises if the node logged a traceback

    def kill(self) -> None:
        """kill -9: the node's connections break, its Redis lease is left to expire."""
        server = self.server
        if server.proc.poll() is None:
            os.kill(server.pid, signal.SIGKILL)
        server.proc.wait(REDIS_STOP_TIMEOUT)
        self._exit()
        self._server = None

    def stop(self) -> None:
        """SIGTERM (graceful), then as :func:`running_server` stops a server."""
        self._exit()
        self._server = None

    def restart(self) -> ServerProcess:
        if self._ctx is not None:
            self.kill()
        return self.start()

    # --- shortcuts ------------------------------------------------------------------

    def client(self) -> TestClient:
        return self.server.client()

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        return self.server.request(message)

    def status(self) -> dict[str, Any]:
        reply = self.request({"type": "status"})
        assert reply["type"] == "status", reply
        return reply


@contextlib.contextmanager
def cluster(tmp_path: Path, redis: RedisServer, count: int, *flags: str
            ) -> Iterator[list[Node]]:
    """``count`` nodes on ``redis`` (``a``, ``b``, ``c``, ...), all stopped on exit.

    It does not wait for ``status.cluster.nodes`` to count them all (that takes
    a node's lease period): a node serves as soon as it listens."""
    nodes = [Node(tmp_path, redis.url, chr(ord("a") + i), *flags) for i in range(count)]
    try:
        for node in nodes:
            node.start()
        yield nodes
    finally:
        errors: list[BaseException] = []
        for node in nodes:
            try:
                if node._ctx is not None:
                    node.stop()
            except BaseException as exc:  # stop the others, then report
                errors.append(exc)
        if errors:
            raise errors[0]


def wait_nodes(node: Node, count: int, timeout: float = 10.0) -> dict[str, Any]:
    """Poll ``status`` until ``cluster.nodes`` is ``count``; the last status."""
    deadline = time.monotonic() + timeout
    status = node.status()
    while status.get("cluster", {}).get("nodes") != count:
        if time.monotonic() > deadline:
            raise AssertionError(f"node {node.name} does not see {count} nodes: {status}")
        time.sleep(0.05)
        status = node.status()
    return status


def kill_node(node: Node) -> None:
    """kill -9 a node (see :meth:`Node.kill`)."""
    node.kill()


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    """Poll ``predicate()`` until true, with a deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not in {timeout} s: {what}")
        time.sleep(0.05)
