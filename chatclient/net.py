"""The thin socket driver of a :class:`~chatclient.session.ClientSession`.

No threads and no blocking call: :meth:`Connection.poll` does whatever is due
(start a connection attempt, finish a connect, read, write, let the session's
timers run) and returns the session's events, so a GUI calls it from its event
loop and the terminal client from a ``selectors`` loop (:meth:`~Connection.fileno`,
:meth:`~Connection.wants_write`, :meth:`~Connection.timeout`).

Name resolution: a numeric address is used as is; any other host name is
resolved once, at the first attempt, and the addresses are reused for every
reconnect. ``getaddrinfo`` can wait for seconds on a slow or dead name server
and has no non-blocking form, so the lookup runs in a short-lived child process
(:data:`RESOLVER`) that ``poll`` checks without waiting, and kills after
:data:`CONNECT_TIMEOUT`.

TLS (contract §20, :class:`TLSOptions`): the handshake runs in ``poll`` like the
connect, within the same :data:`CONNECT_TIMEOUT`; the session hears of the
connection only once the certificate is accepted: verified against CAs, or its
fingerprint equal to the pinned one (:mod:`chatclient.pins`). A refused
certificate is a lost connection whose reason says why (both fingerprints on a
mismatch), and :attr:`Connection.refused` keeps it for a first-use question.
Decrypted bytes can wait inside the ``SSLSocket`` where ``select`` does not see
them, so :meth:`Connection.timeout` is 0 while there are any.
"""

from __future__ import annotations

import errno
import json
import os
import select
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatclient.events import Event
from chatclient.pins import CertificateRefused, check, pinning_context
from chatclient.session import ClientSession

CONNECT_TIMEOUT = 5.0  # a TCP connect (or a lookup) that takes longer counts as failed
#: Bytes read per poll at most: bounds the work of one GUI turn. A window fed
#: 20,000 messages took 830 ms of CPU in one turn reading 4 MiB at once; at
#: 32 KiB its turns stay near 30 ms and the flood is read over more turns.
READ_AHEAD = 32 * 1024
#: What a non-blocking socket (or its TLS layer) says when it must be tried later.
_TRY_AGAIN = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
RECV_SIZE = 32 * 1024
IDLE_POLL = 0.05  # while a child resolves a name, poll this often

_IN_PROGRESS = {errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY, errno.EINTR}

#: The child that resolves a host name: argv host, port; prints a JSON list of
#: [family, address] pairs, or {"error": why}. A list so tests can swap it.
RESOLVER = [sys.executable, "-c", """
import json, socket, sys
try:
    infos = socket.getaddrinfo(sys.argv[1], int(sys.argv[2]), type=socket.SOCK_STREAM,
                               flags=socket.AI_NUMERICSERV)
    print(json.dumps([[int(f), list(a)] for f, _, _, _, a in infos]))
except (OSError, UnicodeError, ValueError, OverflowError) as exc:
    print(json.dumps({"error": str(exc)}))
"""]


def port_number(text: object) -> int:
    """``text`` as a TCP port to connect to (1..65535), else ``ValueError``.

    Strict ASCII digits: ``"²"`` is a digit to ``str.isdigit`` but not to
    ``int``, and ``getaddrinfo`` quietly wraps a port past 65535.
    """
    value = str(text).strip()
    if not (value.isascii() and value.isdecimal()) or not 1 <= int(value) <= 65535:
        raise ValueError(f"not a port number (1..65535): {text!r}")
    return int(value)


@dataclass(frozen=True)
class TLSOptions:
    """How to trust the server: CAs in ``ca`` (a PEM file; the host name is
    checked too), else the ``fingerprint`` pinned for it (None: nothing is
    pinned yet, so every attempt is refused with the offered fingerprint)."""

    ca: Path | None = None
    fingerprint: str | None = None

    def context(self) -> ssl.SSLContext:
        if self.ca is None:
            return pinning_context()
        context = ssl.create_default_context(cafile=str(self.ca))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context


class Connection:
    """Owns the socket of one session; never blocks."""

    def __init__(self, session: ClientSession, host: str, port: int,
                 tls: TLSOptions | None = None) -> None:
        self.session = session
        self.host = host
        self.port = port
        self.tls = tls
        self.refused: CertificateRefused | None = None  # the last certificate refused
        self._context = tls.context() if tls is not None else None
        self._handshaking = False  # TCP is up, the TLS handshake is not done
        self._tls_wants_write = False
        self._addresses: list[tuple[int, tuple[Any, ...]]] | None = None
        self._index = 0  # the address being tried
        self._resolver: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._connected = False
        self._deadline = 0.0  # of the lookup or of the connect
        self._out = bytearray()

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def fileno(self) -> int | None:
        """The socket to wait on (it changes at each reconnect), if any."""
        return self._sock.fileno() if self._sock is not None else None

    def wants_write(self) -> bool:
        if self._handshaking:
            return self._tls_wants_write
        return self._sock is not None and (not self._connected or bool(self._out))

    def timeout(self, now: float | None = None) -> float | None:
        """Seconds until :meth:`poll` has timed work (None: only socket readiness)."""
        now = time.monotonic() if now is None else now
        if self._resolver is not None:
            return IDLE_POLL
        if isinstance(self._sock, ssl.SSLSocket) and self._connected and self._sock.pending():
            return 0.0  # decrypted bytes wait inside the SSLSocket, unseen by select
        due = [t for t in (self.session.next_timer(),) if t is not None]
        if self._sock is not None and not self._connected:
            due.append(self._deadline)
        if self.session.status == "idle":
            due.append(now)
        return max(0.0, min(due) - now) if due else None

    def poll(self, now: float | None = None) -> list[Event]:
        """Do whatever is due without blocking; the events that came of it."""
        now = time.monotonic() if now is None else now
        session = self.session
        if self._sock is None and self._resolver is None and session.wants_connection(now):
            session.connection_started(now, self.address)
            self._connect(now)
        if self._resolver is not None:
            self._check_resolver(now)
        if self._sock is not None and not self._connected:
            if self._handshaking:
                self._handshake(now)
            else:
                self._check_connect(now)
        if self._connected:
            self._read(now)
        session.tick(now)
        if self._connected:
            self._out += session.data_to_send()
            self._flush(now)
        if self._sock is not None and session.should_close():
            self._flush(now)  # best effort: e.g. nothing, or our last bye
            self._drop()
        elif self._sock is None:
            session.data_to_send()  # no connection: nothing can go out
        return session.events()

    def close(self) -> None:
        """Say bye; later polls finish the close (:class:`~chatclient.events.Closed`)."""
        self.session.bye()

    def close_and_wait(self, timeout: float = 3.0) -> list[Event]:
        """Close and wait (bounded) for the server's goodbye, for callers with no
        event loop left to drive :meth:`poll` (a destroyed window, end of input)."""
        self.close()
        events: list[Event] = []
        deadline = time.monotonic() + timeout
        while self.session.status != "done" and time.monotonic() < deadline:
            if self._sock is not None:
                select.select([self._sock], [], [], 0.05)
            events += self.poll()
        self._stop_resolver()
        self._drop()
        return events

    # ------------------------------------------------------------- connecting

    def _connect(self, now: float) -> None:
        """Start a non-blocking connect to the next address (resolving first)."""
        if self._addresses is None:
            self._resolve(now)
            if self._addresses is None:
                return  # resolving, or failed
        family, address = self._addresses[self._index]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        code = sock.connect_ex(address)
        self._sock = sock
        self._connected = False
        self._out = bytearray()
        self._deadline = now + CONNECT_TIMEOUT
        if code == 0:
            self._made(now)
        elif code not in _IN_PROGRESS:
            self._connect_failed(now, os.strerror(code))

    def _resolve(self, now: float) -> None:
        """A numeric address at once; a host name by the child (see the module doc)."""
        flags = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
        try:
            infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM,
                                       flags=flags)
        except (OSError, UnicodeError, OverflowError):
            pass  # not numeric: a name to look up
        else:
            self._addresses = [(family, address) for family, _, _, _, address in infos]
            return
        try:
            self._resolver = subprocess.Popen(
                [*RESOLVER, self.host, str(self.port)], stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        except (OSError, ValueError) as exc:  # ValueError: a NUL in the host name
            self.session.connection_lost(now, f"cannot resolve {self.host!r}: {exc}")
            return
        self._deadline = now + CONNECT_TIMEOUT

    def _check_resolver(self, now: float) -> None:
        proc = self._resolver
        assert proc is not None and proc.stdout is not None
        if proc.poll() is None:
            if now >= self._deadline:
                self._stop_resolver()
                self.session.connection_lost(
                    now, f"cannot resolve {self.host!r}: no answer within {CONNECT_TIMEOUT:g} s")
            return
        output = proc.stdout.read()  # it has exited: its few bytes are all there
        self._stop_resolver()
        try:
            answer = json.loads(output)
        except ValueError:
            answer = {"error": f"the resolver failed ({proc.returncode})"}
        if not isinstance(answer, list) or not answer:
            why = answer.get("error") if isinstance(answer, dict) else "no address"
            self.session.connection_lost(now, f"cannot resolve {self.host!r}: {why}")
            return
        self._addresses = [(family, tuple(address)) for family, address in answer]
        self._index = 0
        self._connect(now)

    def _stop_resolver(self) -> None:
        proc, self._resolver = self._resolver, None
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            proc.wait()  # exited or killed: reaped at once
            if proc.stdout is not None:
                proc.stdout.close()

    def _check_connect(self, now: float) -> None:
        assert self._sock is not None
        try:
            _, writable, broken = select.select([], [self._sock], [self._sock], 0)
        except (OSError, ValueError) as exc:
            self._connect_failed(now, str(exc))
            return
        if writable or broken:
            code = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code == 0:
                self._made(now)
            else:
                self._connect_failed(now, os.strerror(code))
        elif now >= self._deadline:
            self._connect_failed(now, f"no answer within {CONNECT_TIMEOUT:g} s")

    def _made(self, now: float) -> None:
        if self._context is not None and not isinstance(self._sock, ssl.SSLSocket):
            assert self._sock is not None
            self._sock = self._context.wrap_socket(
                self._sock, do_handshake_on_connect=False, server_hostname=self.host)
            self._handshaking = True
            self._handshake(now)
            return
        self._connected = True
        self.session.connection_made(now)

    def _handshake(self, now: float) -> None:
        """One step of the TLS handshake; then the certificate check."""
        sock = self._sock
        assert isinstance(sock, ssl.SSLSocket) and self.tls is not None
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self._tls_wants_write = False
        except ssl.SSLWantWriteError:
            self._tls_wants_write = True
        except OSError as exc:  # ssl.SSLError (a CA check too) or a reset
            self._lost(now, f"TLS handshake with {self.address} failed: {exc}")
            return
        else:
            self._handshaking = False
            if self.tls.ca is None:
                der = sock.getpeercert(binary_form=True)
                try:
                    check(der or b"", self.tls.fingerprint, self.address)
                except CertificateRefused as exc:
                    self.refused = exc
                    self._lost(now, str(exc))
                    return
            self.refused = None
            self._made(now)
            return
        if now >= self._deadline:
            self._lost(now, f"TLS handshake with {self.address}: no answer within "
                       f"{CONNECT_TIMEOUT:g} s")

    def _connect_failed(self, now: float, why: str) -> None:
        self._drop()
        assert self._addresses is not None
        if self._index + 1 < len(self._addresses):
            self._index += 1  # e.g. localhost: ::1 refused, try 127.0.0.1
            self._connect(now)
            return
        self._index = 0
        self.session.connection_lost(now, f"cannot connect to {self.address}: {why}")

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._connected = False
        self._handshaking = False
        self._out = bytearray()

    # ------------------------------------------------------------------- I/O

    def _read(self, now: float) -> None:
        sock = self._sock
        assert sock is not None
        total = 0
        while total < READ_AHEAD:
            try:
                data = sock.recv(min(RECV_SIZE, READ_AHEAD - total))
            except _TRY_AGAIN:
                return
            except OSError as exc:
                self._lost(now, f"connection lost: {exc.strerror or exc}")
                return
            self.session.receive_data(data, now)  # b"": the server closed
            if not data or self.session.should_close():
                if not data and not self.session.should_close():
                    self._lost(now, "the server closed the connection")
                return
            total += len(data)

    def _flush(self, now: float) -> None:
        if self._sock is None or not self._out:
            return
        try:
            sent = self._sock.send(self._out)
        except _TRY_AGAIN:
            return
        except OSError as exc:
            self._lost(now, f"connection lost: {exc.strerror or exc}")
            return
        del self._out[:sent]

    def _lost(self, now: float, why: str) -> None:
        self._drop()
        self.session.connection_lost(now, why)
