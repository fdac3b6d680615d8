"""Test support: a real ``chatd`` on an ephemeral port, and blocking test clients.

``running_server(tmp_path, *flags)`` starts ``python -m chatd run --port 0`` in a
subprocess and waits (with a deadline) for its ``listening on`` log line. The
server's stderr is read by a small daemon thread into a list: the pipe must be
drained continuously or a chatty server would block on a full pipe, and a thread
in the TEST process is harmless (the one-thread rule is for the server, which
``server_threads`` checks). On exit the server gets SIGTERM, a bounded wait,
then SIGKILL.

``TestClient`` is a blocking socket with timeouts: every wait has a deadline,
so a broken server fails a test instead of hanging it.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chatd.control_client import connect_unix
from protocol import Decoder, encode
from protocol.limits import CLIENT_MAX_FRAME

Message = dict[str, Any]

START_TIMEOUT = 15.0
STOP_TIMEOUT = 15.0
RECV_TIMEOUT = 5.0
_LISTENING = re.compile(r"listening on (\S+):(\d+) control (.+)$")


@dataclass
class ServerProcess:
    """A running ``chatd run`` subprocess."""

    proc: subprocess.Popen[bytes]
    host: str
    port: int
    control_path: Path
    data_dir: Path
    lines: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def client(self, timeout: float = RECV_TIMEOUT) -> TestClient:
        return TestClient.connect(self.host, self.port, timeout)

    def login(self, name: str, **hello: Any) -> TestClient:
        """A connected, logged-in client (its welcome in ``.welcome``)."""
        client = self.client()
        client.login(name, **hello)
        return client

    def control(self, timeout: float = RECV_TIMEOUT) -> TestClient:
        return TestClient.connect_unix(self.control_path, timeout)

    def request(self, message: Message) -> Message:
        """One control request, its reply (a fresh control connection)."""
        with self.control() as ctl:
            ctl.send(message)
            return ctl.recv()

    def stderr_text(self) -> str:
        return "\n".join(self.lines)

    def wait_log(self, text: str, timeout: float = RECV_TIMEOUT) -> None:
        """Wait until the server has logged ``text`` (its log is read by a
        thread, so a line written a moment ago may not be in yet)."""
        deadline = time.monotonic() + timeout
        while text not in self.stderr_text():
            if time.monotonic() > deadline:
                raise AssertionError(f"chatd did not log {text!r}:\n{self.stderr_text()}")
            time.sleep(0.01)

    def wait_exit(self, timeout: float = STOP_TIMEOUT) -> int:
        return self.proc.wait(timeout)

    def cpu_seconds(self) -> float:
        """User plus system CPU time the server has used so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def threads(self) -> int:
        """Threads of the server process (contract of the house: exactly one)."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        match = re.search(r"^Threads:\s+(\d+)", status, re.MULTILINE)
        assert match is not None
        return int(match.group(1))

    def rss_kib(self) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        assert match is not None
        return int(match.group(1))


def _pump(stream: Any, lines: list[str], ready: threading.Event) -> None:
    for raw in iter(stream.readline, b""):
        lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
        if _LISTENING.search(lines[-1]):
            ready.set()
    ready.set()  # EOF: the server died; the waiter checks the exit code


@contextlib.contextmanager
def running_server(tmp_path: Path, *flags: str, db: str = ":memory:",
                   env: dict[str, str] | None = None,
                   max_fds: int | None = None) -> Iterator[ServerProcess]:
    """``chatd run --port 0`` with its data in ``tmp_path``; stopped on exit.

    Fails the test if the server logged a traceback. ``max_fds`` lowers the
    server's RLIMIT_NOFILE once it listens (to test running out of file
    descriptors; ``prlimit`` instead of a ``preexec_fn``, which is unsafe in a
    process with threads).
    """
    data_dir = tmp_path / "chatd-data"
    args = [sys.executable, "-m", "chatd", "run", "--host", "127.0.0.1", "--port", "0",
            "--data-dir", str(data_dir), "--db", db, "--log-level", "info", *flags]
    full_env = dict(os.environ)
    full_env.pop("NOTIFY_SOCKET", None)
    full_env.update(env or {})
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=full_env)
    lines: list[str] = []
    ready = threading.Event()
    reader = threading.Thread(target=_pump, args=(proc.stderr, lines, ready), daemon=True)
    reader.start()
    try:
        if not ready.wait(START_TIMEOUT):
            raise AssertionError(f"chatd did not start in time: {lines}")
        match = next((_LISTENING.search(line) for line in lines if _LISTENING.search(line)),
                     None)
        if match is None:
            raise AssertionError(f"chatd exited ({proc.poll()}) before listening: {lines}")
        server = ServerProcess(proc, match.group(1), int(match.group(2)),
                               Path(match.group(3)), data_dir, lines)
        if max_fds is not None:
            resource.prlimit(proc.pid, resource.RLIMIT_NOFILE, (max_fds, max_fds))
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT)
        reader.join(STOP_TIMEOUT)
        if proc.stderr is not None:
            proc.stderr.close()
    # Reached only when the test passed: an exception that escaped the loop
    # (or was logged with its traceback) fails it even if nothing noticed.
    if any("Traceback" in line for line in lines):
        raise AssertionError("chatd logged a traceback:\n" + "\n".join(lines))


class ConnectionClosed(AssertionError):
    """The server closed the connection while a frame was expected."""


class TestClient:
    """A blocking client with deadlines on every wait."""

    __test__ = False  # not a pytest test class

    def __init__(self, sock: socket.socket, timeout: float = RECV_TIMEOUT) -> None:
        self.sock = sock
        self.timeout = timeout
        self.decoder = Decoder(CLIENT_MAX_FRAME)
        self.inbox: list[Message] = []
        self.eof = False
        self.welcome: Message = {}

    @classmethod
    def connect(cls, host: str, port: int, timeout: float = RECV_TIMEOUT) -> TestClient:
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(sock, timeout)

    @classmethod
    def connect_unix(cls, path: Path, timeout: float = RECV_TIMEOUT) -> TestClient:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        connect_unix(sock, path)
        return cls(sock, timeout)

    def __enter__(self) -> TestClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    # --- sending -------------------------------------------------------------

    def send(self, message: Message) -> None:
        self.sock.sendall(encode(message))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def login(self, name: str, **hello: Any) -> Message:
        """Send hello and return the welcome (the backlog stays in the inbox)."""
        self.send({"type": "hello", "proto": 1, "name": name, **hello})
        self.welcome = self.expect("welcome")
        return self.welcome

    # --- receiving --------------------------------------------------------------

    def _fill(self, deadline: float) -> bool:
        """Read once; False on timeout. Raises ConnectionClosed at EOF."""
        if self.eof:
            raise ConnectionClosed("connection closed by the server")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(1 << 20)
        except TimeoutError:
            return False
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            raise ConnectionClosed("connection closed by the server")
        self.inbox.extend(self.decoder.feed(data))
        return True

    def recv(self, timeout: float | None = None) -> Message:
        """The next frame; AssertionError if none arrives in time."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self.inbox:
            if not self._fill(deadline):
                raise AssertionError("no frame from the server in time")
        return self.inbox.pop(0)

    def poll(self, timeout: float = 0.2) -> Message | None:
        """The next frame if one arrives within ``timeout``, else None."""
        try:
            return self.recv(timeout)
        except ConnectionClosed:
            raise
        except AssertionError:
            return None

    def expect(self, kind: str, timeout: float | None = None, **members: Any) -> Message:
        """The next frame, which must be of ``kind`` (and have ``members``)."""
        message = self.recv(timeout)
        assert message["type"] == kind, f"expected {kind}, got {message}"
        for key, value in members.items():
            assert message.get(key) == value, f"expected {key}={value!r} in {message}"
        return message

    def drain_until(self, predicate: Callable[[Message], bool],
                    timeout: float | None = None) -> list[Message]:
        """Frames up to and including the first that satisfies ``predicate``."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        seen: list[Message] = []
        while True:
            while self.inbox:
                message = self.inbox.pop(0)
                seen.append(message)
                if predicate(message):
                    return seen
            if not self._fill(deadline):
                raise AssertionError(f"no matching frame in time; got {seen}")

    def barrier(self, token: Any = "barrier", timeout: float | None = None) -> list[Message]:
        """Ping and wait for the pong: every frame before it (contract §3.6)."""
        self.send({"type": "ping", "t": token})
        seen = self.drain_until(lambda msg: msg["type"] == "pong" and msg.get("t") == token,
                                timeout)
        return seen[:-1]

    def wait_closed(self, timeout: float | None = None) -> list[Message]:
        """Every frame until the server closes the connection."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        seen: list[Message] = []
        try:
            while True:
                seen.extend(self.inbox)
                self.inbox.clear()
                if not self._fill(deadline):
                    raise AssertionError(f"connection not closed in time; got {seen}")
        except ConnectionClosed:
            seen.extend(self.inbox)
            self.inbox.clear()
            return seen


class Pipelined:
    """A non-blocking client over a logged-in :class:`TestClient`'s socket: it
    writes what it has queued in ``out`` as the socket takes it and hands every
    frame it reads to :meth:`receive` (load tests that must not wait per request)."""

    def __init__(self) -> None:
        self.sock: socket.socket | None = None
        self.decoder = Decoder(CLIENT_MAX_FRAME)
        self.out = b""

    def attach(self, client: TestClient) -> None:
        """Take over a logged-in client's socket; what it already read is received."""
        self.sock = client.sock
        self.sock.setblocking(False)
        self.decoder = client.decoder
        for msg in client.inbox:
            self.receive(msg)

    def receive(self, msg: Message) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        """One non-blocking send of what is queued (dropped if the server is gone)."""
        assert self.sock is not None
        if not self.out:
            return
        try:
            sent = self.sock.send(self.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.out = b""  # the server is gone: the test resends what was not acknowledged
            return
        self.out = self.out[sent:]

    def pump_in(self) -> bool:
        """Read what is there; False at EOF."""
        assert self.sock is not None
        try:
            data = self.sock.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            return True
        except ConnectionResetError:
            data = b""
        if not data:
            return False
        for msg in self.decoder.feed(data):
            self.receive(msg)
        return True

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
