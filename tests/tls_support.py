"""Test support for TLS: a real ``chatd`` with TLS on, and TLS test clients.

``running_tls_server`` wraps :func:`tests.support.running_server`. The TLS port
cannot be 0 (that turns TLS off), so a free one is found by binding port 0 and
closing; if another program takes it in between, the start is tried again.
The web port is turned off: its fixed default would clash between servers.
"""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support import RECV_TIMEOUT, ServerProcess, TestClient, running_server

_TLS_LINE = re.compile(r"TLS on (\S+):(\d+) fingerprint ([0-9a-f]{64})$")
START_ATTEMPTS = 3
#: Listeners with fixed default ports that these tests do not use.
OTHER_PORTS_OFF = ("--http-port", "0")


@dataclass
class TLSServer:
    """A running server's TLS side."""

    server: ServerProcess
    port: int
    fingerprint: str

    def client(self, timeout: float = RECV_TIMEOUT) -> TestClient:
        """A connected TLS client (the handshake done), trusting any certificate."""
        return TestClient(tls_socket(self.server.host, self.port, timeout), timeout)

    def login(self, name: str, **hello: object) -> TestClient:
        client = self.client()
        client.login(name, **hello)
        return client


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def client_context() -> ssl.SSLContext:
    """A context that accepts any certificate: the tests check fingerprints themselves."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def tls_socket(host: str, port: int, timeout: float = RECV_TIMEOUT) -> ssl.SSLSocket:
    raw = socket.create_connection((host, port), timeout=timeout)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return client_context().wrap_socket(raw)


@contextlib.contextmanager
def running_tls_server(tmp_path: Path, *flags: str, db: str = ":memory:"
                       ) -> Iterator[TLSServer]:
    """``running_server`` with ``--tls-port`` on a free port."""
    with contextlib.ExitStack() as stack:
        for attempt in range(START_ATTEMPTS):
            try:
                server = stack.enter_context(running_server(
                    tmp_path, "--tls-port", str(free_port()), *OTHER_PORTS_OFF, *flags,
                    db=db))
            except AssertionError as exc:
                if "in use" in str(exc) and attempt + 1 < START_ATTEMPTS:
                    continue
                raise
            break
        match = next(m for m in map(_TLS_LINE.search, server.lines) if m)
        yield TLSServer(server, int(match.group(2)), match.group(3))
