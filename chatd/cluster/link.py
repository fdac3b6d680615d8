"""One connection to Redis that never blocks the loop: RESP in, RESP out.

Commands are packed with ``hiredis.pack_command`` into an out-buffer and go
out in one ``send`` when the loop flushes (once per turn: a turn's scripts are
one pipelined write); replies are parsed by the sans-I/O ``hiredis.Reader``
and handed, in order, to the callback given with each command. The socket is
non-blocking from the first ``connect``; the loop watches :meth:`fileno`.

:meth:`RedisLink.wait` is the one place that waits: a turn that changed rooms
or accounts is not released before Redis has its answer (what SQLite's fsync
is to the single server). It selects on this socket alone, with a deadline.

When the connection breaks, every callback still waiting gets a
:class:`LinkDown` (the caller turns it into ``unavailable``) and the link is
down until :meth:`connect` succeeds again.
"""

from __future__ import annotations

import errno
import logging
import selectors
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import hiredis

from chatd.settings import RedisUrl

log = logging.getLogger("chatd.cluster")

Reply = Any
Callback = Callable[[Reply], None]

READ_SIZE = 256 * 1024


class LinkDown(Exception):
    """The link to Redis is down (or broke before this command's reply came)."""


class RedisLink:
    """A pipelined, non-blocking Redis connection (see the module docstring)."""

    def __init__(self, url: RedisUrl, name: str, on_connect: Callable[[RedisLink], None]
                 ) -> None:
        self.url = url
        self.name = name
        self.sock: socket.socket | None = None
        self.connecting = False
        self.up = False
        self.out = bytearray()
        self.waiting: deque[tuple[Callback | None, float]] = deque()  # with when sent
        self.reader = hiredis.Reader(encoding="utf-8")
        self._on_connect = on_connect  # sends what a new connection needs first
        #: Called with the socket just before it is closed: the loop takes it
        #: out of its selector first (its fd number may be reused at once).
        self.on_close: Callable[[socket.socket], None] | None = None
        self.address: tuple[str, int] | None = None  # resolved once (see resolve)
        self.family = socket.AF_INET

    def resolve(self) -> None:
        """Look the host up, once, before the loop runs (a lookup blocks); a
        reconnect reuses the address. Raises :class:`LinkDown`."""
        try:
            infos = socket.getaddrinfo(self.url.host, self.url.port, socket.AF_UNSPEC,
                                       socket.SOCK_STREAM)
        except OSError as exc:
            raise LinkDown(f"cannot look up {self.url.host}: {exc}") from None
        family, _, _, _, address = infos[0]
        self.family = family
        self.address = (str(address[0]), int(address[1]))

    # --- connection ----------------------------------------------------------

    def connect(self) -> None:
        """Start a non-blocking connect; :meth:`on_writable` completes it."""
        self.close()
        if self.address is None:
            self.resolve()
        assert self.address is not None
        try:
            sock = socket.socket(self.family, socket.SOCK_STREAM)
        except OSError as exc:
            raise LinkDown(f"cannot connect to {self.url}: {exc}") from None
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # A peer gone without a word (a cable, a frozen VM) is noticed in
        # about 11 s by the kernel, besides the answer deadline (overdue()).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for option, value in (("TCP_KEEPIDLE", 5), ("TCP_KEEPINTVL", 2), ("TCP_KEEPCNT", 3)):
            if hasattr(socket, option):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
        try:
            code = sock.connect_ex(self.address)
        except OSError as exc:
            sock.close()
            raise LinkDown(f"cannot connect to {self.url}: {exc}") from None
        if code not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
            sock.close()
            raise LinkDown(f"cannot connect to {self.url}: {errno.errorcode.get(code, code)}")
        self.sock = sock
        self.connecting = True
        self.reader = hiredis.Reader(encoding="utf-8")
        if self.url.db:
            self.call(("SELECT", self.url.db))
        self._on_connect(self)

    def connect_now(self, timeout: float) -> None:
        """Connect and wait until it is done (at start, before the loop runs)."""
        self.connect()
        assert self.sock is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.sock, selectors.EVENT_WRITE)
            if not sel.select(timeout):
                self.close()
                raise LinkDown(f"no answer from {self.url} in {timeout:g} s")
        self.on_writable()
        if not self.up:
            raise LinkDown(f"cannot connect to {self.url}")

    def fileno(self) -> int:
        return self.sock.fileno() if self.sock is not None else -1

    def close(self, why: str = "closed") -> None:
        """Drop the connection; waiting callbacks get :class:`LinkDown`."""
        sock, self.sock = self.sock, None
        was_up, self.up, self.connecting = self.up, False, False
        if sock is not None:
            if self.on_close is not None:
                self.on_close(sock)
            sock.close()
            if was_up:
                log.warning("redis link %s to %s lost: %s", self.name, self.url, why)
        self.out.clear()
        waiting = list(self.waiting)
        self.waiting.clear()
        down = LinkDown(f"the link to Redis broke ({why})")
        for callback, _ in waiting:
            if callback is not None:
                try:
                    callback(down)
                except Exception:  # a bug in one caller must not stop the others
                    log.exception("internal error handling a broken Redis link")

    @property
    def wants_write(self) -> bool:
        return self.connecting or bool(self.out)

    # --- commands ------------------------------------------------------------

    def call(self, args: Sequence[Any], callback: Callback | None = None) -> None:
        """Queue a command; ``callback(reply)`` runs when its reply is in (a
        ``hiredis.ReplyError`` for an error reply, :class:`LinkDown` if none
        will come). Raises :class:`LinkDown` at once if the link is down."""
        if self.sock is None:
            raise LinkDown(f"no link to Redis at {self.url}")
        self.out += hiredis.pack_command(tuple(args))
        self.waiting.append((callback, time.monotonic()))

    def overdue(self, now: float, limit: float) -> None:
        """Close the link if the oldest command has waited ``limit`` seconds
        for its answer (Redis frozen, or the network between dropping packets):
        its callers get :class:`LinkDown` rather than waiting for ever."""
        if self.waiting and now - self.waiting[0][1] > limit:
            self.close(f"no answer in {limit:g} s")

    def flush(self) -> None:
        """Send what the out-buffer holds, as far as the socket takes it."""
        if not self.out or self.sock is None or self.connecting:
            return
        try:
            sent = self.sock.send(self.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.close(exc.strerror or str(exc))
            return
        del self.out[:sent]

    def on_writable(self) -> None:
        if self.connecting and self.sock is not None:
            code = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                self.close(errno.errorcode.get(code, str(code)))
                return
            self.connecting = False
            self.up = True
            log.info("redis link %s connected to %s", self.name, self.url)
        self.flush()

    def on_readable(self) -> None:
        """Read what came and run the callbacks of the complete replies."""
        sock = self.sock
        if sock is None:
            return
        try:
            data = sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.close(exc.strerror or str(exc))
            return
        if not data:
            self.close("Redis closed the connection")
            return
        reader = self.reader
        reader.feed(data)
        waiting = self.waiting
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as exc:
                self.close(f"bad reply: {exc}")
                return
            if reply is False:
                return
            callback = waiting.popleft()[0] if waiting else None
            if isinstance(reply, hiredis.ReplyError) and str(reply).startswith("NOSCRIPT"):
                # Redis lost its scripts (SCRIPT FLUSH, a failover): connecting
                # again loads them; this command's caller sees it fail.
                self.close("Redis no longer has the scripts")
                if callback is not None:
                    callback(LinkDown("Redis no longer had the scripts"))
                return
            if callback is not None:
                try:
                    callback(reply)
                except Exception:  # a bug in one answer must not stop the node
                    log.exception("internal error handling a reply from Redis")
                if self.sock is not sock:  # the callback closed the link
                    return

    def wait(self, done: Callable[[], bool], timeout: float) -> bool:
        """Flush, then read this link alone until ``done()`` (or the link is
        down, or ``timeout`` passed: then False)."""
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            while not done():
                sock = self.sock
                if sock is None:
                    return False
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                events = selectors.EVENT_READ | (selectors.EVENT_WRITE if self.wants_write
                                                 else 0)
                try:
                    sel.modify(sock, events)
                except KeyError:
                    sel.register(sock, events)
                for _, mask in sel.select(left):
                    if mask & selectors.EVENT_WRITE:
                        self.on_writable()
                    if mask & selectors.EVENT_READ:
                        self.on_readable()
        return True
