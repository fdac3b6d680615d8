"""Per-connection state: decoder, out-buffer, token bucket, session fields.

Kept small on purpose (``__slots__``, buffers are ``None`` while empty): ten
thousand idle sessions must cost only a few KiB each. Nothing here touches a
socket; the loop owns ``transport`` and calls :meth:`Connection.sent` with what
the transport took.

The out-buffer is a list of ``bytes`` chunks, each holding whole frames, plus an
offset into the first one. A turn's broadcast blob is shared by every recipient
(appended by reference, never copied), and the loop can hand the chunks to
``sendmsg`` as they are.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from protocol import Decoder
from protocol.framing import whole_frames

# Connection kinds.
CHAT = 0
CONTROL = 1

# States. A connection only moves forward through them.
HANDSHAKE = 0  # chat connection before its hello
USER = 1  # logged-in chat session
OPERATOR = 2  # control connection
WATCHER = 3  # control connection that asked to watch
CLOSING = 4  # final frame queued: flushing, input ignored
LINGER = 5  # sending side shut down, reading and discarding until EOF or a second
CLOSED = 6


class Asked(bytes):
    """Frames the client asked for (welcome and backlog, history replies).

    They do not count toward ``max_outbuf`` (contract §3.3); the loop instead
    stops reading a connection's requests while its whole unsent output is over
    the limit, so asking cannot grow memory without bound either.
    """


class BacklogHead(Asked):
    """The first part of a streamed backlog, with the reply it follows (a
    welcome, or a ``joined`` with ``since``): output queued after it waits
    until the rest of the backlog is out (see Connection.backlog)."""


class Connection:
    """One client or control connection, as the chat core sees it."""

    __slots__ = (
        "address",
        "backlog",
        "busy",
        "decoder",
        "deferred",
        "events",
        "exempt",
        "gated",
        "held",
        "held_asked",
        "held_len",
        "key",
        "kind",
        "label",
        "last_rx",
        "lazy_own",
        "lazy_pos",
        "name",
        "out",
        "out_len",
        "out_off",
        "person",
        "ping_at",
        "proto",
        "refill_at",
        "say_room",
        "says",
        "sent_total",
        "staged",
        "staged_bytes",
        "state",
        "token",
        "tokens",
        "transport",
        "windows",
    )

    def __init__(self, kind: int, max_frame: int, now: float, label: str = "") -> None:
        self.kind = kind
        self.state = HANDSHAKE if kind == CHAT else OPERATOR
        self.decoder = Decoder(max_frame)
        self.name = ""
        self.key = ""
        self.token = ""
        self.out: list[bytes] | None = None
        self.out_off = 0  # bytes of out[0] already sent
        self.out_len = 0  # unsent bytes in total
        self.sent_total = 0  # bytes ever sent: the origin of the exempt ranges
        self.exempt: list[list[int]] | None = None  # [start, end) stream offsets
        self.staged: list[Any] | None = None  # this turn's unicasts (see chatd.turn)
        self.staged_bytes = 0  # bytes of this turn's unicasts (replies) to it
        # A long backlog is streamed as the client reads it: ``backlog`` is the
        # rest of it, and the live output meanwhile waits in ``held`` (it must
        # follow the whole backlog): ``held_len`` bytes, ``held_asked`` of them asked for.
        self.backlog: Iterator[Any] | None = None
        self.held: list[bytes] | None = None
        self.held_len = 0
        self.held_asked = 0
        self.windows: dict[Any, list[int]] | None = None  # this turn's channel windows (chatd.turn)
        self.lazy_pos: dict[Any, int] | None = None  # per channel (chatd.turn)
        self.lazy_own: list[tuple[int, bytes]] | None = None  # its own waiting presence
        self.proto = 0  # the session's protocol version once logged in
        self.person: Any = None  # the chatd.people.Person of a session
        self.busy = False  # a request waits on the hash worker: input waits too
        self.deferred: list[Any] | None = None  # requests decoded while it waited
        # Cluster mode: ``says`` not yet echoed (all to ``say_room``); any other
        # request waits meanwhile (``gated``, with ``busy``), so replies keep
        # the order of requests (contract 3.6) though echoes come from Redis.
        self.says = 0
        self.say_room = ""
        self.gated = False
        self.address = ""  # the peer's IP (without port), for the guessing throttle
        self.last_rx = now
        self.ping_at = 0.0  # when the unanswered heartbeat ping went out, 0 if none
        self.tokens = 0.0
        self.refill_at = now
        self.transport: Any = None  # a chatd.transport.Transport, owned by the loop
        self.events = 0  # selector events registered, owned by the loop
        self.label = label  # for logs: peer address, later the name

    def __repr__(self) -> str:
        return f"<Connection {self.label or id(self)} state={self.state}>"

    # --- out-buffer ------------------------------------------------------

    def push(self, chunk: bytes) -> None:
        """Append whole frames to the output (by reference, no copy): to the
        out-buffer, or behind a backlog still streaming."""
        if not chunk:
            return
        if self.held is not None:
            self.held.append(chunk)
            self.held_len += len(chunk)
            if isinstance(chunk, Asked):
                self.held_asked += len(chunk)
            return
        self.queue(chunk)
        if type(chunk) is BacklogHead and self.backlog is not None:
            self.held = []

    def push_from(self, chunk: bytes, start: int) -> None:
        """Append ``chunk[start:]`` (whole frames): an empty out-buffer shares
        ``chunk`` itself, starting at ``start`` as if the head were sent, so
        the presence log's one joined blob is not copied per recipient."""
        if self.out is None and self.held is None and start < len(chunk):
            self.out = [chunk]
            self.out_off = start
            self.out_len = len(chunk) - start
        else:
            self.push(chunk[start:])

    def release_held(self) -> None:
        """The backlog is all out: the output held behind it follows."""
        held, self.held = self.held, None
        self.held_len = self.held_asked = 0
        for chunk in held or ():
            self.queue(chunk)

    def queue(self, chunk: bytes) -> None:
        """Append whole frames to the out-buffer itself."""
        if isinstance(chunk, Asked):
            start = self.sent_total + self.out_len
            if self.exempt is None:
                self.exempt = []
            self.exempt.append([start, start + len(chunk)])
        if self.out is None:
            self.out = [chunk]
        else:
            self.out.append(chunk)
        self.out_len += len(chunk)

    def sent(self, count: int) -> None:
        """The kernel took ``count`` bytes from the head of the out-buffer."""
        if count <= 0:
            return
        out = self.out
        assert out is not None
        self.out_len -= count
        self.sent_total += count
        if self.out_len == 0:
            self.out = None
            self.out_off = 0
        else:
            count += self.out_off
            while count >= len(out[0]):
                count -= len(out.pop(0))
            self.out_off = count
        if self.exempt is not None:
            done = self.sent_total
            self.exempt = [r for r in self.exempt if r[1] > done] or None

    def counted(self) -> int:
        """Unsent bytes that count toward ``max_outbuf`` (asked-for bytes do not)."""
        held = self.held_len - self.held_asked
        if self.exempt is None:
            return self.out_len + held
        done = self.sent_total
        exempt = sum(end - max(start, done) for start, end in self.exempt if end > done)
        return self.out_len + held - exempt

    def mid_frame(self) -> bool:
        """Whether a frame has partly gone out (only the head chunk can tell)."""
        if not self.out_off or self.out is None:
            return False
        return whole_frames(self.out[0], 0, self.out_off)[1] != self.out_off

    def drop_output(self) -> None:
        """Forget the unsent output (it has not started to go out)."""
        self.out = None
        self.out_off = 0
        self.out_len = 0
        self.exempt = None
        self.backlog = None
        self.held = None
        self.held_len = self.held_asked = 0

    # --- token bucket ------------------------------------------------------

    def take_token(self, now: float, rate: float, burst: int) -> int:
        """Take one request token: 0 if granted, else the ms until one is due."""
        tokens = min(float(burst), self.tokens + (now - self.refill_at) * rate)
        self.refill_at = now
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return 0
        self.tokens = tokens
        return max(1, int((1.0 - tokens) / rate * 1000.0 + 0.999))
