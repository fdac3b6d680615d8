"""The client session shared by the desktop window and the terminal client.

No GUI code and no threads: the caller drives everything through
:meth:`Session.poll`, which never blocks (every socket call is non-blocking and
every wait is a deadline checked on the next poll), so a GUI can call it from
its event loop. What happened comes back as a list of :class:`Event`.

What the session guarantees the user, per the wire contract:

- **Nothing typed is lost or duplicated.** Each ``say``/``pm`` gets a unique
  ``id`` (a random UUID, so ids never repeat across runs: the server de-duplicates
  a user's ``say`` by id among retained messages) and stays in the *outbox*
  until its echo (``msg``/``pm`` with that id) arrives. After a reconnect the
  whole outbox is sent again; the server answers an already accepted ``say``
  with the original message, which acknowledges it without a new copy.
- **Nothing is missed.** A reconnect resumes with ``since`` = the last seq seen,
  and messages are de-duplicated by seq. A ``pm`` has no seq and the server
  does not de-duplicate it, so a sender that resends one after a reconnect may
  deliver it twice: the recipient drops a ``pm`` whose sender and id it has
  just seen.
- **Connection loss is survived.** Reconnects use exponential backoff with
  jitter (0.5 s doubling up to 30 s) and carry the ``token`` of the last
  ``welcome``, so a session the server still holds (a silently dead connection)
  is taken over rather than refused as ``name_taken``.

Only the *first* login is a single attempt: a refusal or an unreachable server
is reported (``failed``) so a login window can show it and let the user retry.
Refusals the user must fix (``name_taken``, ``bad_name``, ``auth_failed``,
``unsupported_proto``) and ``bye`` ``kicked``/``replaced`` stop reconnecting at
any time; ``server_full`` does so only at the first login: on a reconnect it
passes (clients cut off together come back together), so it is retried with
backoff, keeping the outbox.

Name resolution: a numeric address is used as is; any other host name is
resolved once, when the session first connects, and the addresses are reused
for every reconnect. ``getaddrinfo`` can wait for seconds on a slow or dead
name server and has no non-blocking form, and the GUI has one thread, so the
lookup runs in a short-lived child process (:data:`RESOLVER`) that ``poll``
checks without waiting, and kills after ``CONNECT_TIMEOUT``.
"""

from __future__ import annotations

import errno
import json
import os
import random
import select
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from protocol import limits
from protocol.errors import ProtocolError
from protocol.framing import Decoder, Message, encode
from protocol.messages import SERVER_EVENTS, validate
from protocol.values import clean_text, name_key, name_problem, normalize_name

# Status values carried by ``status`` events.
CONNECTING = "connecting"
CONNECTED = "connected"
RECONNECTING = "reconnecting"
OFFLINE = "offline"

#: Login refusals that another attempt with the same input cannot fix
#: (``server_full`` can pass, so only a first login gives up on it).
REFUSALS = frozenset({"name_taken", "bad_name", "auth_failed", "unsupported_proto"})

BACKOFF_MIN = 0.5
BACKOFF_MAX = 30.0
CONNECT_TIMEOUT = 5.0  # a TCP connect that takes longer counts as unreachable
HANDSHAKE_TIMEOUT = 10.0  # connected, but no welcome (or refusal) this long after hello
CLOSE_TIMEOUT = 2.0  # after our bye, wait this long for the server's bye
MAX_EVENTS = 500  # messages handled per poll: bounds the work of one GUI turn
READ_AHEAD = 16 * 1024 * 1024  # read ahead this far into a flood, so the server never waits on us
RECV_SIZE = 256 * 1024
HISTORY_PAGE = 50
PM_MEMORY = 1024  # (sender, id) of recent private messages, to drop resent copies

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


@dataclass(frozen=True)
class Event:
    """One thing the session reports to its user interface.

    ``kind`` is one of: ``status`` (``status`` is connecting / connected /
    reconnecting / offline, ``delay`` the seconds until the next attempt),
    ``welcome``, ``message``, ``pm``, ``join``, ``leave``, ``users``,
    ``history`` (an older page, ``msg["msgs"]``), ``error`` (a server error
    frame; ``ident`` is the outbox entry it rejected, if any), ``acked``
    (``ident`` was accepted; the ``message``/``pm`` event follows), ``failed``
    (the session is over: ``code`` says why, ``detail`` for people).

    ``history`` marks messages sent before this user logged in: the backlog of
    the first login and pages of older history.
    """

    kind: str
    msg: Message = field(default_factory=dict)
    status: str = ""
    detail: str = ""
    code: str = ""
    ident: str = ""
    delay: float = 0.0
    history: bool = False


@dataclass
class Pending:
    """An outbox entry: a ``say`` or ``pm`` frame not yet acknowledged."""

    ident: str
    frame: Message
    not_before: float = 0.0  # resend time after rate_limited / unavailable
    sent: bool = False

    @property
    def kind(self) -> str:
        return str(self.frame["type"])

    @property
    def text(self) -> str:
        return str(self.frame["text"])

    @property
    def to(self) -> str | None:
        to = self.frame.get("to")
        return to if isinstance(to, str) else None


def port_number(text: object) -> int:
    """``text`` as a TCP port to connect to (1..65535), else ``ValueError``.

    Strict ASCII digits: ``"²"`` is a digit to ``str.isdigit`` but not to
    ``int``, and ``getaddrinfo`` quietly wraps a port past 65535.
    """
    value = str(text).strip()
    if not (value.isascii() and value.isdecimal()) or not 1 <= int(value) <= 65535:
        raise ValueError(f"not a port number (1..65535): {text!r}")
    return int(value)


def backoff_delay(attempt: int, rng: random.Random) -> float:
    """Seconds to wait before reconnect attempt ``attempt`` (0 = first retry).

    The ceiling doubles from 1 s up to 30 s; the delay is drawn between half
    the ceiling and the ceiling (0.5..1 s for the first retry), so clients cut
    off together, e.g. by a server restart, do not all come back in the same
    instant, not even the first time.
    """
    ceiling = min(BACKOFF_MAX, BACKOFF_MIN * 2 ** min(attempt + 1, 16))
    return rng.uniform(max(BACKOFF_MIN, ceiling / 2), ceiling)


class Session:
    """One user's connection to a chat server, kept alive across failures."""

    def __init__(
        self,
        name: str,
        host: str = limits.DEFAULT_HOST,
        port: int = limits.DEFAULT_PORT,
        *,
        password: str | None = None,
        agent: str = "chatgui",
        max_events: int = MAX_EVENTS,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        problem = name_problem(name)
        if problem is not None:
            raise ValueError(problem)
        self.name = normalize_name(name)  # the server's spelling replaces it at welcome
        self.host = host
        self.port = port
        self.password = password
        self.agent = agent
        self.max_events = max_events
        self._rng = rng or random.Random()
        self._clock = clock

        self.status = OFFLINE
        self.users: dict[str, str] = {}  # name_key -> name as the server holds it
        self.welcome: Message | None = None
        self.max_text = limits.DEFAULT_MAX_TEXT
        self.max_frame = limits.DEFAULT_MAX_FRAME  # the largest frame we may send
        self.oldest = 0  # the oldest retained seq, from welcome
        self.last_seq = 0  # the highest public seq delivered
        self.finished = False  # no more connections will be made

        self._outbox: dict[str, Pending] = {}  # insertion order is send order
        self._resend = False  # some outbox entry is not sent on this connection
        self._token: str | None = None
        self._logged_in_once = False
        self._horizon = 0  # welcome.seq of the first login: where resumes start at least
        self._backlog_end = 0  # this login's welcome.seq: msgs up to it are the backlog
        self._addresses: list[tuple[Any, ...]] | None = None
        self._address_index = 0
        self._attempt = 0
        self._sock: socket.socket | None = None
        self._decoder = Decoder(limits.CLIENT_MAX_FRAME)
        self._out = bytearray()
        self._phase = "idle"  # idle, resolving, connecting, handshake, ready, closing,
        # waiting, done
        self._resolver: subprocess.Popen[bytes] | None = None
        self._deadline = 0.0
        self._retry_at = 0.0
        self._eof = False
        self.more = False  # the last poll stopped at max_events: poll again soon
        self._last_rx = 0.0
        self._heartbeat = limits.DEFAULT_HEARTBEAT
        self._ping_sent = False
        self._closing = False
        self._history_wanted: str | None = None  # id of the history request in flight
        self._eof_detail = ""
        self._resumed = False
        self._events: list[Event] = []
        self._started = False
        self._pms_seen: dict[tuple[str, str], None] = {}  # insertion order: oldest first

    # ------------------------------------------------------------------ public

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def outbox(self) -> list[Pending]:
        """Unacknowledged messages, oldest first."""
        return list(self._outbox.values())

    @property
    def socket(self) -> socket.socket | None:
        """The current socket, for callers that wait on it with ``selectors``."""
        return self._sock

    @property
    def wants_write(self) -> bool:
        return bool(self._out) or self._phase == "connecting"

    def retry_in(self, now: float | None = None) -> float:
        """Seconds until the next reconnect attempt (0 unless waiting to retry)."""
        if self._phase != "waiting":
            return 0.0
        return max(0.0, self._retry_at - (self._clock() if now is None else now))

    def say(self, text: str) -> str:
        """Queue a public message; returns its id. Sent now if connected.

        Raises :class:`ProtocolError` (``bad_text``, ``empty_message``,
        ``text_too_long``) for text the server would refuse, without a round trip.
        """
        clean = clean_text(text, self.max_text)
        return self._queue({"type": "say", "text": clean})

    def pm(self, to: str, text: str) -> str:
        """Queue a private message to ``to``; returns its id (see :meth:`say`)."""
        target = normalize_name(to)
        clean = clean_text(text, self.max_text)
        return self._queue({"type": "pm", "to": target, "text": clean})

    def who(self) -> bool:
        """Ask for the user list (a ``users`` event follows). False if offline."""
        return self._request({"type": "who", "id": "who"})

    def request_history(self, before: int, limit: int = HISTORY_PAGE) -> bool:
        """Ask for the messages older than ``before`` (the oldest one shown).

        Returns False when offline, when a request is already in flight, or when
        nothing older is retained.
        """
        if self._history_wanted is not None or before <= max(1, self.oldest):
            return False
        ident = f"history-{before}"
        if self._request({"type": "history", "before": before, "limit": limit, "id": ident}):
            self._history_wanted = ident
            return True
        return False

    def close(self) -> None:
        """End the session: send ``bye`` and let :meth:`poll` finish the close."""
        if self.finished or self._closing:
            return
        self._closing = True
        if self._phase in ("ready", "handshake"):  # after a hello, bye is in order
            self._send({"type": "bye"})
            self._phase = "closing"
            self._deadline = self._clock() + CLOSE_TIMEOUT
        else:
            self._finish("closed")

    def close_and_wait(self) -> list[Event]:
        """Close and wait (briefly, bounded) for the server's goodbye.

        For callers with no event loop left to drive :meth:`poll`: a window that
        is already destroyed, or the terminal client at its end of input.
        """
        self.close()
        events: list[Event] = []
        deadline = self._clock() + CLOSE_TIMEOUT + 1.0
        while not self.finished and self._clock() < deadline:
            if self._sock is not None:
                select.select([self._sock], [], [], 0.05)
            events += self.poll()
        return events

    def poll(self, now: float | None = None) -> list[Event]:
        """Do whatever is due without blocking, and return what happened."""
        if now is None:
            now = self._clock()
        self.more = False
        if not self._started:
            self._started = True
            self._connect(now)
        phase = self._phase
        if phase == "resolving":
            self._check_resolver(now)
        elif phase == "connecting":
            self._check_connect(now)
        elif phase == "waiting" and now >= self._retry_at:
            self._connect(now)
        if self._sock is not None and self._phase in ("handshake", "ready", "closing"):
            self._read(now)
        if self._phase == "ready":
            self._keepalive(now)
            self._resend_due(now)
        if self._sock is not None and self._phase in ("handshake", "closing") and (
            now >= self._deadline
        ):
            if self._phase == "closing":
                self._finish("closed")
            else:
                self._lost(now, "the server did not answer the login in time")
        self._flush(now)
        events, self._events = self._events, []
        return events

    # ------------------------------------------------------------- connection

    def _emit(self, kind: str, **fields: Any) -> None:
        self._events.append(Event(kind, **fields))

    def _set_status(self, status: str, detail: str = "", delay: float = 0.0) -> None:
        self.status = status
        self._emit("status", status=status, detail=detail, delay=delay)

    def _start_resolver(self, now: float) -> None:
        """A numeric address at once; a host name by the child (see the module doc)."""
        flags = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
        try:
            infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM,
                                       flags=flags)
        except (OSError, UnicodeError, OverflowError):
            pass  # not numeric: a name to look up
        else:
            self._addresses = [(family, address) for family, _, _, _, address in infos]
            self._address_index = 0
            return
        self._set_status(CONNECTING, f"looking up {self.host}")
        try:
            self._resolver = subprocess.Popen(
                [*RESOLVER, self.host, str(self.port)], stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        except (OSError, ValueError) as exc:  # ValueError: a NUL in the host name
            self._fail("unreachable", f"cannot resolve {self.host!r}: {exc}")
            return
        self._phase = "resolving"
        self._deadline = now + CONNECT_TIMEOUT

    def _check_resolver(self, now: float) -> None:
        proc = self._resolver
        assert proc is not None and proc.stdout is not None
        if proc.poll() is None:
            if now >= self._deadline:
                self._stop_resolver()
                self._fail("unreachable", f"cannot resolve {self.host!r}: no answer "
                           f"within {CONNECT_TIMEOUT:g} s")
            return
        output = proc.stdout.read()  # it has exited: its few bytes are all there
        self._stop_resolver()
        try:
            answer = json.loads(output)
        except ValueError:
            answer = {"error": f"the resolver failed ({proc.returncode})"}
        if not isinstance(answer, list) or not answer:
            why = answer.get("error") if isinstance(answer, dict) else "no address"
            self._fail("unreachable", f"cannot resolve {self.host!r}: {why}")
            return
        self._addresses = [(family, tuple(address)) for family, address in answer]
        self._address_index = 0
        self._connect(now)

    def _stop_resolver(self) -> None:
        proc, self._resolver = self._resolver, None
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            proc.wait()  # exited or killed: reaped at once
            if proc.stdout is not None:
                proc.stdout.close()

    def _connect(self, now: float) -> None:
        """Start a non-blocking connect to the next address."""
        if self._addresses is None:
            self._start_resolver(now)
            if self._addresses is None:
                return  # resolving, or failed
        family, address = self._addresses[self._address_index]
        self._set_status(RECONNECTING if self._logged_in_once else CONNECTING,
                         f"connecting to {self.address}")
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        code = sock.connect_ex(address)
        self._sock = sock
        self._decoder = Decoder(limits.CLIENT_MAX_FRAME)
        self._out = bytearray()
        self._eof = False
        self._phase = "connecting"
        self._deadline = now + CONNECT_TIMEOUT
        if code == 0:
            self._connected(now)
        elif code not in _IN_PROGRESS:
            self._connect_failed(now, os.strerror(code))

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
                self._connected(now)
            else:
                self._connect_failed(now, os.strerror(code))
        elif now >= self._deadline:
            self._connect_failed(now, f"no answer within {CONNECT_TIMEOUT:g} s")

    def _connect_failed(self, now: float, why: str) -> None:
        self._drop_socket()
        assert self._addresses is not None
        if self._address_index + 1 < len(self._addresses):
            self._address_index += 1  # e.g. localhost: ::1 refused, try 127.0.0.1
            self._connect(now)
            return
        self._address_index = 0
        detail = f"cannot connect to {self.address}: {why}"
        if not self._logged_in_once:
            self._fail("unreachable", detail)
        else:
            self._wait_retry(now, detail)

    def _connected(self, now: float) -> None:
        hello: Message = {"type": "hello", "proto": limits.PROTO_VERSION, "name": self.name,
                          "agent": self.agent}
        if self._logged_in_once:
            hello["since"] = max(self.last_seq, self._horizon)
            if self._token is not None:
                hello["token"] = self._token
        if self.password is not None:
            hello["password"] = self.password
        self._phase = "handshake"
        self._deadline = now + HANDSHAKE_TIMEOUT
        self._last_rx = now
        self._send(hello)

    def _drop_socket(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._out = bytearray()
        self._history_wanted = None
        self._ping_sent = False
        for entry in self._outbox.values():
            entry.sent = False
        self._resend = bool(self._outbox)

    def _wait_retry(self, now: float, detail: str) -> None:
        """The connection is gone: come back after a backoff delay."""
        self._drop_socket()
        if self._closing:
            self._finish("closed")
            return
        delay = backoff_delay(self._attempt, self._rng)
        self._attempt += 1
        self._phase = "waiting"
        self._retry_at = now + delay
        self._set_status(RECONNECTING, detail, delay)

    def _lost(self, now: float, detail: str) -> None:
        if self._phase == "handshake" and not self._logged_in_once:
            self._fail("unreachable", detail)
        elif self._phase == "closing":
            self._finish("closed")
        else:
            self._wait_retry(now, detail)

    def _fail(self, code: str, detail: str) -> None:
        self._emit("failed", code=code, detail=detail)
        self._finish(detail)

    def _finish(self, detail: str) -> None:
        self._stop_resolver()
        self._drop_socket()
        self._phase = "done"
        self.finished = True
        self._set_status(OFFLINE, detail)

    # ------------------------------------------------------------------ I/O

    def _send(self, message: Message) -> None:
        self._out += encode(message)

    def _request(self, message: Message) -> bool:
        if self._phase != "ready":
            return False
        self._send(message)
        return True

    def _oversize(self, frame: Message) -> str | None:
        """Why the server would drop the connection over ``frame`` (fatal
        ``frame_too_large``), or None: such a frame is refused here instead."""
        size = len(encode(frame)) - limits.HEADER_SIZE
        if size <= self.max_frame:
            return None
        return f"the message takes {size} bytes; this server takes frames of at most " \
               f"{self.max_frame}"

    def _queue(self, frame: Message) -> str:
        ident = uuid.uuid4().hex
        frame["id"] = ident
        problem = self._oversize(frame)
        if problem is not None:
            raise ProtocolError("text_too_long", problem)
        entry = Pending(ident, frame)
        self._outbox[ident] = entry
        if self._phase == "ready" and not self._resend:
            self._send(frame)  # nothing older waits: keep the order, send it now
            entry.sent = True
        else:
            self._resend = True
        return ident

    def _resend_due(self, now: float) -> None:
        """Send the outbox entries that are not on this connection yet."""
        if not self._resend:
            return  # the common case costs nothing, however long the outbox
        self._resend = False
        for entry in self._outbox.values():
            if entry.sent:
                continue
            if now < entry.not_before:
                self._resend = True  # waiting out a rate limit; later ones wait too,
                break  # so the server gets the messages in the order they were typed
            self._send(entry.frame)
            entry.sent = True

    def _flush(self, now: float) -> None:
        if self._sock is None or not self._out or self._phase == "connecting":
            return
        try:
            sent = self._sock.send(self._out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(now, f"connection lost: {exc.strerror or exc}")
            return
        del self._out[:sent]

    def _read(self, now: float) -> None:
        sock = self._sock
        assert sock is not None
        chunks: list[bytes] = []
        size = self._decoder.pending
        while not self._eof and size < READ_AHEAD:
            try:
                data = sock.recv(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self._eof = True  # a reset: handle what arrived, then reconnect
                self._eof_detail = f"connection lost: {exc.strerror or exc}"
                break
            if not data:
                self._eof = True
                self._eof_detail = "the server closed the connection"
                break
            chunks.append(data)
            size += len(data)
        try:
            messages = self._decoder.feed(b"".join(chunks), limit=self.max_events)
        except ProtocolError as exc:
            for message in exc.decoded:
                self._handle(now, message)
            if self._sock is sock:
                self._lost(now, f"the server sent a bad frame ({exc.message})")
            return
        if chunks or messages:  # a long flood is drained over many polls: alive throughout
            self._last_rx = now
            self._ping_sent = False
        self.more = len(messages) >= self.max_events
        for message in messages:
            self._handle(now, message)
            if self._sock is not sock:
                return  # the connection ended while handling (bye, fatal error)
        if self._eof and len(messages) < self.max_events:
            self._lost(now, self._eof_detail)

    def _keepalive(self, now: float) -> None:
        """Notice a silently dead connection: ping after a quiet heartbeat."""
        quiet = now - self._last_rx
        if quiet >= 2 * self._heartbeat:
            self._lost(now, "the server stopped answering")
        elif quiet >= self._heartbeat and not self._ping_sent:
            self._send({"type": "ping", "t": "keepalive"})
            self._ping_sent = True

    # ------------------------------------------------------------- messages

    def _handle(self, now: float, message: Message) -> None:
        try:
            validate(message, SERVER_EVENTS)
        except ProtocolError:
            return  # unknown (newer) or malformed frame: ignored, never a crash
        handler = getattr(self, "_on_" + message["type"], None)
        if handler is not None:
            handler(now, message)

    def _on_welcome(self, now: float, message: Message) -> None:
        if self._phase != "handshake" or not all(isinstance(u, str) for u in message["users"]):
            return
        resumed = self._resumed = self._logged_in_once
        self.welcome = message
        self.name = message["name"]
        self._token = message["token"]
        self.max_text = message["max_text"]
        self.max_frame = message["max_frame"]
        self.oldest = message["oldest"]
        self._heartbeat = max(1.0, float(message["heartbeat"]))
        self._backlog_end = message["seq"]
        if not resumed:
            self._horizon = message["seq"]
        self._logged_in_once = True
        self._attempt = 0
        self._phase = "ready"
        self.users = {name_key(u): u for u in message["users"]}
        self._set_status(CONNECTED, f"connected to {self.address}")
        self._emit("welcome", msg=message, detail="resumed" if resumed else "")
        self._emit("users", msg={"type": "users", "users": list(self.users.values())})
        for entry in list(self._outbox.values()):
            entry.not_before = 0.0
            # Typed before this server announced a smaller max_frame: sending it
            # would cost the connection, on every reconnect. Refuse it instead.
            problem = self._oversize(entry.frame)
            if problem is not None:
                del self._outbox[entry.ident]
                refusal: Message = {"type": "error", "code": "text_too_long", "message": problem,
                                    "fatal": False, "ref": entry.ident}
                self._emit("error", msg=refusal, code="text_too_long", detail=problem,
                           ident=entry.ident)
        self._resend = bool(self._outbox)
        self._resend_due(now)

    def _acknowledge(self, message: Message, kind: str) -> None:
        """An echo of our own ``say``/``pm`` (same id, from us) acknowledges it."""
        entry = self._outbox.get(message.get("id", ""))
        if (
            entry is not None
            and entry.kind == kind
            and name_key(message["from"]) == name_key(self.name)
        ):
            del self._outbox[entry.ident]
            self._emit("acked", ident=entry.ident, msg=message)

    def _on_msg(self, now: float, message: Message) -> None:
        self._acknowledge(message, "say")  # before the seq check: a re-sent original acks too
        seq = message["seq"]
        if seq <= self.last_seq:
            return  # seen already (a resume overlap, or a re-sent original)
        self.last_seq = seq
        first_backlog = seq <= self._backlog_end and not self._resumed
        self._emit("message", msg=message, history=first_backlog)

    def _on_pm(self, now: float, message: Message) -> None:
        self._acknowledge(message, "pm")
        ident = message.get("id")
        if ident is not None:
            key = (name_key(message["from"]), ident)
            if key in self._pms_seen:
                return  # the sender resent it after a reconnect: shown already
            self._pms_seen[key] = None
            if len(self._pms_seen) > PM_MEMORY:
                del self._pms_seen[next(iter(self._pms_seen))]
        self._emit("pm", msg=message)

    def _on_join(self, now: float, message: Message) -> None:
        self.users[name_key(message["name"])] = message["name"]
        self._emit("join", msg=message)

    def _on_leave(self, now: float, message: Message) -> None:
        self.users.pop(name_key(message["name"]), None)
        self._emit("leave", msg=message)

    def _on_users(self, now: float, message: Message) -> None:
        names = [u for u in message["users"] if isinstance(u, str)]
        self.users = {name_key(u): u for u in names}
        self._emit("users", msg=message)

    def _on_history(self, now: float, message: Message) -> None:
        msgs: list[Message] = []
        for item in message["msgs"]:
            if not isinstance(item, dict):
                continue
            candidate = {**item, "type": "msg"}
            try:
                validate(candidate, SERVER_EVENTS)
            except ProtocolError:
                continue
            msgs.append(candidate)
        self._history_wanted = None
        if not msgs:
            self.oldest = max(self.oldest, message["before"])  # nothing older is retained
        self._emit("history", msg={**message, "msgs": msgs}, history=True)

    def _on_ping(self, now: float, message: Message) -> None:
        reply: Message = {"type": "pong"}
        if "t" in message:
            reply["t"] = message["t"]
        self._send(reply)

    def _on_bye(self, now: float, message: Message) -> None:
        reason = message["reason"]
        text = message.get("message")
        detail = f"the server said bye ({reason})" + (f": {text}" if text else "")
        if reason in ("kicked", "replaced") or self._phase == "closing":
            if self._phase == "closing":
                self._finish("closed")
            else:
                self._fail(reason, detail)
        else:
            self._lost(now, detail)

    def _on_error(self, now: float, message: Message) -> None:
        code = message["code"]
        ref = message.get("ref")
        entry = self._outbox.get(ref) if isinstance(ref, str) else None
        if message["fatal"]:
            detail = f"{code}: {message['message']}"
            if code in REFUSALS or not self._logged_in_once:
                self._fail(code, detail)
            else:
                self._lost(now, detail)
            return
        ident = ""
        if entry is not None:
            ident = entry.ident
            retry = message.get("retry_after_ms")
            if code in ("rate_limited", "unavailable"):
                wait = retry / 1000 if isinstance(retry, int) and retry > 0 else 1.0
                entry.sent = False
                entry.not_before = now + wait
                self._resend = True
                ident = ""  # still pending: it will be sent again
            else:
                del self._outbox[entry.ident]  # refused for good (e.g. no_such_user)
        if ref is not None and ref == self._history_wanted:
            self._history_wanted = None
        self._emit("error", msg=message, code=code, detail=message["message"], ident=ident)
