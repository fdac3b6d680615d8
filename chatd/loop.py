"""The event loop: the only code that touches selectors, sockets and signals.

One thread, one ``selectors.DefaultSelector``, non-blocking sockets. Listeners
are sockets; each connection's bytes go through its
:class:`~chatd.transport.Transport`, which the core never sees. A turn:

1. wait in ``select`` until a socket is ready, a timer is due, or a signal
   wakes the loop (``signal.set_wakeup_fd``; handlers only record the signal);
2. accept (capped per turn), read (one ``recv`` per connection; a connection
   whose decoder still holds frames from the last turn is not read, which is
   the backpressure), hand the bytes to the pure :class:`~chatd.core.Core`;
3. run due timers, hand finished password hashes (the hash worker's pipe is
   in the selector) back to the core, and act on signals;
4. ``core.end_turn()``: group commit, then the staged frames go to out-buffers;
5. at most ONE ``send``/``sendmsg`` per connection, capped in bytes; what is
   left waits for ``EVENT_WRITE``, registered only while output remains (or
   the transport holds bytes of its own). Presence (``join``/``leave``) may
   wait a moment to go out with more (see ``Server._presence``); a streamed
   backlog is refilled as the client reads it; a connection over ``max_outbuf`` is a slow consumer;
6. reap: a closing connection whose last frame is out gets ``shutdown(SHUT_WR)``
   and lingers (reading and discarding) for up to a second before ``close``.

Cluster mode (``--cluster``): the two Redis links of
:class:`~chatd.cluster.node.Cluster` are in the selector too; their replies
run in step 2, the turn's Redis commands go out in one write per link before
step 5 (a name given back reaches Redis before its client sees ``bye``),
and the node's leases are renewed once a second.

Backpressure: a connection whose unsent output (asked-for bytes included) is
over ``max_outbuf`` is neither read nor served until it drains, so a client
that asks without reading cannot grow the server's memory.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import resource
import selectors
import signal
import socket
import stat
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from chatd.cluster.link import RedisLink
from chatd.cluster.node import Cluster
from chatd.connection import CHAT, CLOSED, CLOSING, CONTROL, LINGER, Connection
from chatd.core import Core
from chatd.errors import StartupError
from chatd.hashworker import STARVED_S, HashWorker
from chatd.settings import Settings
from chatd.store import Store, open_store
from chatd.timers import Timers
from chatd.tls import ServerCertificate, TLSTransport
from chatd.transport import Chunk, SocketTransport, Transport
from chatd.unix_path import unix_address
from chatd.web.http import Site
from chatd.web.transport import WebTransport

log = logging.getLogger("chatd")

READ_SIZE = 256 * 1024  # one recv per connection per turn
WRITE_CAP = 256 * 1024  # bytes offered to one send per connection per turn
MAX_IOV = 64  # chunks handed to one sendmsg
BACKLOG_LOW = 64 * 1024  # queue more of a streamed backlog below this many bytes
ACCEPTS_PER_TURN = 64
LISTEN_BACKLOG = 4096
LINGER_S = 1.0  # contract §3.5: keep reading this long after our last frame
SHUTDOWN_LINGER_S = 0.25  # "up to a second": shorter when the whole server is leaving
FLUSH_TIMEOUT_S = 5.0  # a closing connection that does not read is cut off
PRESENCE_DELAY_PER_MEMBER_S = 0.00005  # presence batching: 0.5 s at 10,000 sessions
PRESENCE_DELAY_MAX_S = 0.5
ACCEPT_BACKOFF_S = 0.2  # out of file descriptors: stop accepting this long
STATUS_EVERY_S = 5.0  # notify("STATUS=...") period

_LISTEN = "listen"
_LISTEN_TLS = "listen-tls"
_LISTEN_WEB = "listen-web"
_CONTROL = "control"
_WAKEUP = "wakeup"
_HASHED = "hashed"
_FD_ERRORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)

Notify = Callable[[str], None]


def serve(settings: Settings, notify: Notify | None = None) -> int:
    """Run the server until it is shut down; return the exit code.

    Raises :class:`StartupError` when it cannot start (port in use, a live
    server owns the control socket, unusable database).
    """
    server = Server(settings, notify or (lambda state: None))
    try:
        return server.run()
    finally:
        server.cleanup()


def raise_fd_limit() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit, so max_clients is reachable."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:
        log.warning("cannot raise the open file limit from %d to %d: %s", soft, hard, exc)


class Server:
    """Sockets and the loop around one :class:`Core`."""

    def __init__(self, settings: Settings, notify: Notify) -> None:
        self.settings = settings
        self.notify = notify
        self.sel = selectors.DefaultSelector()
        self.timers: Timers[Any] = Timers()
        self.listener: socket.socket | None = None  # None with plain_port_off
        self.tls_listener: socket.socket | None = None
        self.web_listener: socket.socket | None = None  # http_port: the web client, /ws
        self.site: Site | None = None
        self.certificate: ServerCertificate | None = None  # while TLS is on
        self.control: socket.socket | None = None
        self.control_bound = False
        self.store: Store | None = None
        self.cluster: Cluster | None = None  # cluster mode (--cluster)
        self.watched: dict[RedisLink, tuple[Any, int]] = {}  # link -> (socket, events)
        self.hasher: HashWorker | None = None
        self.core: Core | None = None
        self.signals: list[int] = []
        self.old_handlers: dict[int, Any] = {}
        self.old_wakeup = -1
        self.wake_r, self.wake_w = socket.socketpair()
        self.rview = memoryview(bytearray(READ_SIZE))
        self.grace_deadline: float | None = None
        self.port = 0
        self.accepting = False
        self.fd_warned = False
        self.parked: set[Connection] = set()  # frames waiting until output drains
        self.presence_due = 0.0  # when the core's waiting presence goes out, 0 if none

    # --- start and stop ------------------------------------------------------

    def _open(self) -> Core:
        settings = self.settings
        raise_fd_limit()
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        if not settings.plain_port_off:
            self.listener = self._listen_tcp(settings.port)
            self.port = self.listener.getsockname()[1]
        if settings.tls_port:
            self.certificate = self._load_certificate()
            self.tls_listener = self._listen_tcp(settings.tls_port)
            if self.listener is None:  # the port the logs and the notify status name
                self.port = settings.tls_port
        if settings.http_port:  # HTTPS when TLS is on (contract §21)
            self.web_listener = self._listen_tcp(settings.http_port)
            self.site = Site("https" if self.certificate else "http", settings.allowed_origins)
        self.control = self._listen_control()
        if settings.cluster is not None:
            self.cluster = Cluster(settings, settings.cluster)
            self.store = self.cluster
            for link in self.cluster.links():
                link.on_close = self._unwatch
            self.cluster.start(settings.data_dir)
        else:
            self.store = open_store(settings)
        self.hasher = HashWorker(settings.hash_workers)
        core = Core(settings, self.store, self.hasher, time.monotonic(), _wall_ms(),
                    cluster=self.cluster)
        if self.cluster is not None:
            self.cluster.adopt(core)
        self.sel.register(self.hasher.fileno(), selectors.EVENT_READ, _HASHED)
        if self.listener is not None:
            self.sel.register(self.listener, selectors.EVENT_READ, _LISTEN)
        if self.certificate is not None and self.tls_listener is not None:
            core.tls_fingerprint = self.certificate.fingerprint
            self.sel.register(self.tls_listener, selectors.EVENT_READ, _LISTEN_TLS)
        if self.web_listener is not None:
            self.sel.register(self.web_listener, selectors.EVENT_READ, _LISTEN_WEB)
        self.sel.register(self.control, selectors.EVENT_READ, _CONTROL)
        self.accepting = True
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        self.sel.register(self.wake_r, selectors.EVENT_READ, _WAKEUP)
        self.old_wakeup = signal.set_wakeup_fd(self.wake_w.fileno(), warn_on_full_buffer=False)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            self.old_handlers[signum] = signal.signal(signum, self._on_signal)
        return core

    def _load_certificate(self) -> ServerCertificate:
        settings = self.settings
        return ServerCertificate.load(settings.tls_cert, settings.tls_key, settings.data_dir,
                                      settings.host)

    def _reload_certificate(self) -> None:
        """SIGHUP: new TLS connections use the files as they are now; open
        ones keep theirs. Bad files are logged and the old certificate stays."""
        if self.certificate is None:
            log.info("SIGHUP: TLS is off, nothing to reload")
            return
        try:
            certificate = self._load_certificate()
        except StartupError as exc:
            log.error("SIGHUP: keeping the TLS certificate in use: %s", exc)
            return
        self.certificate = certificate
        if self.core is not None:
            self.core.tls_fingerprint = certificate.fingerprint
        log.info("TLS certificate reloaded from %s, fingerprint %s", certificate.cert_path,
                 certificate.fingerprint)

    def _listen_tcp(self, port: int) -> socket.socket:
        settings = self.settings
        try:
            infos = socket.getaddrinfo(settings.host, port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
        except socket.gaierror as exc:
            raise StartupError(f"cannot resolve host {settings.host!r}: {exc}") from None
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(LISTEN_BACKLOG)
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise StartupError(
                    f"port {port} on {settings.host} is in use "
                    "(another chatd or another program)"
                ) from None
            raise StartupError(
                f"cannot listen on {settings.host}:{port}: {exc.strerror}"
            ) from None
        sock.setblocking(False)
        return sock

    def _listen_control(self) -> socket.socket:
        """Contract §8: mode 0600; a stale socket is replaced, a live one refused."""
        path = self.settings.control_path
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISSOCK(mode):  # a mistyped --control must not delete a file
                raise StartupError(f"control socket path {path} exists and is not a socket")
            if _answers(path):
                raise StartupError(
                    f"a chatd is already running with control socket {path}"
                )
            log.info("replacing stale control socket %s", path)
            os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            with unix_address(path) as address:
                sock.bind(address)
            self.control_bound = True
            os.chmod(path, 0o600)
            sock.listen(LISTEN_BACKLOG)
        except OSError as exc:
            sock.close()
            raise StartupError(
                f"cannot create control socket {path}: {exc.strerror or exc}"
            ) from None
        finally:
            os.umask(old_umask)
        sock.setblocking(False)
        return sock

    def cleanup(self) -> None:
        """Release everything, also after a failed start."""
        for signum, handler in self.old_handlers.items():
            signal.signal(signum, handler)
        self.old_handlers.clear()
        if self.old_wakeup != -1 or self.core is not None:
            signal.set_wakeup_fd(self.old_wakeup)
            self.old_wakeup = -1
        if self.core is not None:
            for conn in list(self.core.conns):
                self._drop(conn)
        self._stop_listening()
        if self.hasher is not None:
            hasher, self.hasher = self.hasher, None
            hasher.close()
        for sock, _ in self.watched.values():
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(sock)
        self.watched.clear()
        if self.store is not None:
            store, self.store = self.store, None
            try:
                store.close()
            except Exception:
                log.exception("closing the store failed")
        if self.control_bound:
            self.control_bound = False
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.settings.control_path)
        self.sel.close()
        self.wake_r.close()
        self.wake_w.close()

    def _stop_listening(self) -> None:
        for sock in (self.listener, self.tls_listener, self.web_listener, self.control):
            if sock is not None:
                if self.accepting or sock is self.control:
                    with contextlib.suppress(KeyError, ValueError):
                        self.sel.unregister(sock)
                sock.close()
        self.listener = self.tls_listener = self.web_listener = self.control = None
        self.accepting = False

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        """Only record it: the loop acts on it (wakeup fd wakes select)."""
        self.signals.append(signum)

    # --- the loop ---------------------------------------------------------------

    def run(self) -> int:
        core = self.core = self._open()
        settings = self.settings
        if self.certificate is not None and self.tls_listener is not None:
            log.info("TLS on %s:%d fingerprint %s", settings.host,
                     self.tls_listener.getsockname()[1], self.certificate.fingerprint)
        if self.site is not None and self.web_listener is not None:
            log.info("web client at %s://%s:%d/", self.site.scheme, settings.host,
                     self.web_listener.getsockname()[1])
        log.info("listening on %s:%d control %s", settings.host, self.port,
                 settings.control_path)
        self.notify(f"READY=1\nSTATUS=listening on {settings.host}:{self.port}")
        self.timers.schedule(time.monotonic() + STATUS_EVERY_S, None, "status")
        select = self.sel.select
        limit = settings.max_outbuf
        hasher = self.hasher
        assert hasher is not None
        while True:
            now = time.monotonic()
            if core.has_work():
                timeout: float | None = 0.0
            else:
                deadlines = [d for d in (core.next_deadline(), self.timers.next_deadline())
                             if d is not None]
                if hasher.pending():  # a starved worker is raised (HashWorker.tick)
                    deadlines.append(now + STARVED_S / 2)
                if self.cluster is not None:
                    deadlines.append(self.cluster.next_deadline())
                timeout = max(0.0, min(deadlines) - now) if deadlines else None
            events = select(timeout)
            now = time.monotonic()
            core.begin_turn(now, _wall_ms())
            carry = core.pending_input
            core.pending_input = set()
            writable: list[Connection] = []
            for key, mask in events:
                data = key.data
                if type(data) is Connection:
                    if mask & selectors.EVENT_READ and data not in carry:
                        self._read(data, writable)
                    if mask & selectors.EVENT_WRITE:
                        writable.append(data)
                elif data == _LISTEN:
                    self._accept(key.fileobj, CHAT)  # type: ignore[arg-type]
                elif data == _LISTEN_TLS:
                    self._accept(key.fileobj, CHAT, tls=True)  # type: ignore[arg-type]
                elif data == _LISTEN_WEB:
                    self._accept(key.fileobj, CHAT,  # type: ignore[arg-type]
                                 tls=self.certificate is not None, web=True)
                elif data == _CONTROL:
                    self._accept(key.fileobj, CONTROL)  # type: ignore[arg-type]
                elif type(data) is RedisLink:
                    if mask & selectors.EVENT_WRITE:
                        data.on_writable()
                    if mask & selectors.EVENT_READ:
                        data.on_readable()
                elif data == _HASHED:
                    assert self.hasher is not None
                    core.hashed(self.hasher.results())
                else:
                    self._drain_wakeup()
            for conn in carry:
                if conn.out_len + conn.held_len > limit:  # backpressure: wait until it reads
                    self.parked.add(conn)
                else:
                    core.receive(conn, b"")
            core.run_timers(now)
            if self.cluster is not None:
                self.cluster.tick(now)
                core.run_ready()
            if hasher.pending():
                hasher.tick(now)
            self._run_timers(now)
            if self.signals:
                signals, self.signals = self.signals, []
                for signum in signals:
                    if signum == signal.SIGHUP:
                        self._reload_certificate()
                        continue
                    if signum == signal.SIGINT and core.stopping:
                        log.warning("second SIGINT: exiting at once")
                        return 1
                    self._begin_shutdown(signal.Signals(signum).name)
            if core.stop_requested and not core.stopping:
                self._begin_shutdown("control request")
            released = core.end_turn()
            self._presence(released, now)
            if self.cluster is not None:  # first: a name given back is free before the bye
                self._flush_cluster()
            self._flush_all(released, writable)
            if core.stopping and (not core.conns or now >= (self.grace_deadline or now)):
                if core.conns:
                    log.warning("grace period over: closing %d connection(s)",
                                len(core.conns))
                log.info("stopped")
                return 0

    def _unwatch(self, sock: socket.socket) -> None:
        """A Redis link's socket is about to close: out of the selector first."""
        for link, (watched, _) in list(self.watched.items()):
            if watched is sock:
                with contextlib.suppress(KeyError, ValueError):
                    self.sel.unregister(sock)
                del self.watched[link]

    def _flush_cluster(self) -> None:
        """The turn's Redis commands in one write per link; the feed asked
        again; each link watched for what it waits for."""
        cluster = self.cluster
        assert cluster is not None
        cluster.read_feed()
        cluster.flush()
        for link in cluster.links():
            sock = link.sock
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if link.wants_write else 0)
            watched = self.watched.get(link)
            if watched is not None and (watched[0] is not sock or watched[1] != events):
                with contextlib.suppress(KeyError, ValueError):
                    self.sel.unregister(watched[0])
                del self.watched[link]
                watched = None
            if watched is None and sock is not None:
                self.sel.register(sock, events, link)
                self.watched[link] = (sock, events)

    def _run_timers(self, now: float) -> None:
        core = self.core
        assert core is not None
        for target, kind in self.timers.pop_due(now):
            if kind in {"linger", "flush"}:
                if target.state != CLOSED and (kind == "flush") == (target.state == CLOSING):
                    self._drop(target)
            elif kind == "accept":
                self._resume_accepting()
            elif kind == "tls":
                # Contract §20: a TLS handshake not done in handshake_timeout
                # closes the connection (its timeout frame could not go out).
                if target.state != CLOSED and target.transport.handshaking:
                    core.lost(target)
                    self._drop(target)
            elif kind == "status":
                self.notify(f"STATUS={len(core.online)} users online")
                self.timers.schedule(now + STATUS_EVERY_S, None, "status")
            # "grace" and "presence" only wake the loop; run() checks them.

    def _begin_shutdown(self, why: str) -> None:
        core = self.core
        assert core is not None
        if core.stopping:
            return
        log.info("shutting down (%s)", why)
        self.notify("STOPPING=1")
        self._stop_listening()
        core.begin_shutdown()
        self.grace_deadline = core.now + self.settings.grace
        self.timers.schedule(self.grace_deadline, None, "grace")

    # --- accept, read, write -------------------------------------------------

    def _accept(self, listener: socket.socket, kind: int, tls: bool = False,
                web: bool = False) -> None:
        core = self.core
        assert core is not None
        if not self.accepting:  # paused by the other listener earlier this turn
            return
        for _ in range(ACCEPTS_PER_TURN):
            try:
                sock, address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _FD_ERRORS:
                    self._pause_accepting(exc)
                    return
                continue  # ECONNABORTED and friends: that peer is gone
            sock.setblocking(False)
            if kind == CHAT:
                try:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                except OSError:  # reset before we got to it (EINVAL on some systems)
                    sock.close()
                    continue
                label = f"{address[0]}:{address[1]}"
            else:
                label = "control"
            conn = core.connect(kind, label, address[0] if kind == CHAT else "")
            conn.transport = SocketTransport(sock)
            if tls and self.certificate is not None:
                conn.transport = TLSTransport(conn.transport, self.certificate.context)
                self.timers.schedule(core.now + self.settings.handshake_timeout, conn, "tls")
            if web and self.site is not None:  # HTTP until /ws upgrades (chatd.web)
                conn.transport = WebTransport(conn.transport, self.site, conn.decoder)
            conn.events = selectors.EVENT_READ
            self.sel.register(conn.transport, selectors.EVENT_READ, conn)
            self.fd_warned = False  # the next shortage is worth a log line again

    def _pause_accepting(self, exc: OSError) -> None:
        """Out of descriptors: stop listening a moment instead of spinning
        (logged once per shortage, not every ACCEPT_BACKOFF_S)."""
        if not self.fd_warned:
            log.warning("cannot accept: %s; pausing accepts", exc.strerror)
            self.fd_warned = True
        for sock in (self.listener, self.tls_listener, self.web_listener, self.control):
            if sock is not None:
                self.sel.unregister(sock)
        self.accepting = False
        self.timers.schedule(time.monotonic() + ACCEPT_BACKOFF_S, None, "accept")

    def _resume_accepting(self) -> None:
        if self.accepting or self.control is None:
            return
        if self.listener is not None:
            self.sel.register(self.listener, selectors.EVENT_READ, _LISTEN)
        if self.tls_listener is not None:
            self.sel.register(self.tls_listener, selectors.EVENT_READ, _LISTEN_TLS)
        if self.web_listener is not None:
            self.sel.register(self.web_listener, selectors.EVENT_READ, _LISTEN_WEB)
        self.sel.register(self.control, selectors.EVENT_READ, _CONTROL)
        self.accepting = True

    def _drain_wakeup(self) -> None:
        try:
            while self.wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def _read(self, conn: Connection, writable: list[Connection]) -> None:
        """One recv; a transport that now has bytes of its own to send (a
        handshake, a pong) joins this turn's ``writable``."""
        transport: Transport = conn.transport
        broken = False
        try:
            data = transport.recv(self.rview)
        except OSError:  # reset: nothing can reach the peer any more
            data, broken = None, True
        core = self.core
        assert core is not None
        if data is None:
            if conn.state == LINGER:
                self._drop(conn)
                return
            core.lost(conn)
            if broken or conn.out is None:
                self._drop(conn)
                return
            # Else only the peer's sending side is closed (FIN): it may still
            # read. Its output is flushed like a closing one's, then it lingers.
        elif data and conn.state != LINGER:
            # The decoder copies what it keeps, so the shared buffer can be lent.
            core.receive(conn, data)
        if transport.wants_write:
            writable.append(conn)

    def _presence(self, released: list[Connection], now: float) -> None:
        """Presence nobody's other output took along waits in the core's lazy
        logs up to PRESENCE_DELAY_PER_MEMBER_S times the audience (at most
        PRESENCE_DELAY_MAX_S), then goes to every session at once.

        A login storm (10,000 clients connecting) otherwise costs a push and a
        send per session per login. Order is kept: any other frame for a
        connection queues its waiting presence first (see chatd.turn).
        """
        core = self.core
        assert core is not None
        if not core.presence_waiting():
            self.presence_due = 0.0
            return
        if not self.presence_due:
            delay = min(PRESENCE_DELAY_MAX_S, core.audience() * PRESENCE_DELAY_PER_MEMBER_S)
            self.presence_due = now + delay
            self.timers.schedule(self.presence_due, None, "presence")
        if now >= self.presence_due:
            released.extend(core.flush_presence())
            self.presence_due = 0.0

    def _flush_all(self, released: list[Connection], writable: list[Connection]) -> None:
        core = self.core
        assert core is not None
        targets = set(released)
        targets.update(writable)
        # A closing connection is tried now, then only when writable (not
        # every turn: a shutdown can leave thousands that do not read).
        for conn in core.closing:
            if conn.state == CLOSING:
                targets.add(conn)
                self.timers.schedule(core.now + FLUSH_TIMEOUT_S, conn, "flush")
        core.closing = []
        limit = self.settings.max_outbuf
        for conn in targets:
            if conn.state == CLOSED:
                continue
            if (conn.out is not None or conn.transport.wants_write) and not self._send(conn):
                continue
            if conn.state < CLOSING and conn.counted() > limit:
                if core.overflow(conn):
                    self._send(conn)
                self._drop(conn)
                continue
            if conn.backlog is not None and conn.out_len < BACKLOG_LOW:
                core.refill(conn)
            if conn.state == CLOSING and conn.out is None:
                self._start_linger(conn)
            else:
                self._register(conn)
                if conn in self.parked and conn.out_len + conn.held_len <= limit:
                    self.parked.discard(conn)
                    core.pending_input.add(conn)

    def _send(self, conn: Connection) -> bool:
        """One send of up to WRITE_CAP bytes in up to MAX_IOV chunks (none:
        only the transport's own bytes); False if the connection broke."""
        out = conn.out
        buffers: Sequence[Chunk]
        if out is None:
            buffers = ()
        elif len(out) == 1 and not conn.out_off and len(out[0]) <= WRITE_CAP:
            buffers = out
        else:
            first = memoryview(out[0])[conn.out_off:conn.out_off + WRITE_CAP]
            buffers = [first]
            size = len(first)
            for chunk in out[1:MAX_IOV]:
                if size >= WRITE_CAP:
                    break
                buffers.append(chunk)
                size += len(chunk)
        try:
            count = conn.transport.send(buffers)
        except OSError:
            core = self.core
            assert core is not None
            core.lost(conn)
            self._drop(conn)
            return False
        conn.sent(count)
        core = self.core
        assert core is not None
        core.bytes_out += count
        return True

    def _register(self, conn: Connection) -> None:
        """READ while a session (backpressure: not while output is over
        max_outbuf), not while CLOSING: its input is ignored, and a peer's FIN
        read then would cut off the flush of its last frames; WRITE only while
        output remains."""
        events = 0
        if conn.out is not None or conn.transport.wants_write:
            events = selectors.EVENT_WRITE
        if conn.state == LINGER or (
            conn.state < CLOSING
            and conn.out_len + conn.held_len <= self.settings.max_outbuf
        ):
            events |= selectors.EVENT_READ
        if events != conn.events:
            if events:
                self.sel.modify(conn.transport, events, conn)
            conn.events = events

    def _start_linger(self, conn: Connection) -> None:
        """Contract §3.5: our sending side is done; read and discard up to 1 s."""
        try:
            conn.transport.shutdown_write()
        except OSError:
            self._drop(conn)
            return
        conn.state = LINGER
        self._register(conn)
        core = self.core
        assert core is not None
        linger = SHUTDOWN_LINGER_S if core.stopping else LINGER_S
        self.timers.schedule(core.now + linger, conn, "linger")

    def _drop(self, conn: Connection) -> None:
        """Phase two: the socket is closed and forgotten."""
        if conn.state == CLOSED:
            return
        conn.state = CLOSED
        self.parked.discard(conn)
        transport = conn.transport
        if transport is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(transport)
            transport.close()
        conn.drop_output()
        core = self.core
        assert core is not None
        core.forget(conn)


def _answers(path: Path) -> bool:
    """Whether a server accepts connections on this Unix socket."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2.0)
    try:
        with unix_address(path) as address:
            probe.connect(address)
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000
