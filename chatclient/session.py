"""The version 2 client session, sans-I/O: bytes and intents in, bytes and events out.

In the manner of h11 and wsproto: no sockets, no clock, no threads. A driver
(:mod:`chatclient.net`, or a test) feeds it what arrived and the time, and
writes out what :meth:`ClientSession.data_to_send` returns; a user interface
calls the intents (:meth:`~ClientSession.say`, :meth:`~ClientSession.join`,
...) and shows the :mod:`chatclient.events` that come out. So every guarantee
below is tested with scripted server frames, and a recorded conversation can be
replayed byte for byte (:meth:`ClientSession.transcript`).

What the session guarantees the user, per the wire contract, in every room:

- **Nothing typed is lost or duplicated.** Each ``say``/``pm`` gets a unique
  ``id`` (a random UUID by default: the server de-duplicates a user's ``say``
  by id among the retained messages of its room) and stays in the *outbox*
  until its echo (``msg``/``pm`` from this user with that id) arrives. After a
  reconnect the whole outbox is sent again, in the order typed; the server
  answers an already accepted ``say`` with the original message, which
  acknowledges it without a new copy. ``rate_limited`` and ``unavailable``
  keep the entry and send it again after ``retry_after_ms``.
- **Nothing is missed.** A reconnect resumes each room after the last seq
  delivered: ``hello.resume`` for as many rooms as fit the 4096-byte frame
  limit before login, ``join`` with ``since`` after login for the rest (and
  for a guest's rooms that its new session lacks). Messages are
  de-duplicated by (room, seq) (:mod:`chatclient.rooms`). A ``pm`` has no seq
  and the server does not de-duplicate it, so the recipient drops a ``pm``
  whose sender and id it has just seen.
- **Every request gets one outcome.** A request with an id gets its reply
  event or :class:`~chatclient.events.Rejected`; one asked while offline, or in
  flight when the connection is lost, is rejected with code ``offline``
  (``say`` and ``pm`` never are: they wait in the outbox).
- **Connection loss is survived.** The reconnect policy is data
  (:meth:`~ClientSession.wants_connection`, :meth:`~ClientSession.next_attempt_at`):
  exponential backoff with jitter, 0.5 s doubling to 30 s, reset by a
  ``welcome``. Reconnects carry the ``token`` of the last ``welcome``, so a
  session the server still holds (a silently dead connection) is taken over
  rather than refused as ``name_taken``. A server silent for one heartbeat
  gets a ``ping``; silent for two, the connection counts as lost. The
  server's ``ping`` is answered.

Only the *first* login is a single attempt: a refusal or an unreachable server
ends the session (:class:`~chatclient.events.Failed`) so a login form can show
it. Refusals the user must fix (:data:`REFUSALS`) and ``bye``
``kicked``/``replaced`` end it at any time; ``server_full`` and a fatal
``unavailable`` are retried on a reconnect (clients cut off together come back
together), keeping the outbox.
"""

from __future__ import annotations

import base64
import functools
import random
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, TypeVar

from chatclient import wire
from chatclient.events import (
    Acked,
    Closed,
    Connected,
    Connecting,
    Done,
    Event,
    Failed,
    HistoryPage,
    Invited,
    LoggedIn,
    Member,
    MemberJoined,
    MemberLeft,
    Members,
    MessageAdded,
    MessageDeleted,
    MessageEdited,
    Presence,
    PrivateMessage,
    Reconnecting,
    Rejected,
    RoleChanged,
    RoomJoined,
    RoomLeft,
    RoomList,
    RoomUpdated,
    SearchResults,
    TopicChanged,
    Typing,
    Users,
)
from chatclient.recording import MASK, event_to_json, redact_frame
from chatclient.rooms import RoomState
from protocol import limits
from protocol.errors import ProtocolError
from protocol.framing import Decoder, Message, encode, encode_payload
from protocol.values import (
    clean_query,
    clean_text,
    clean_topic,
    name_key,
    name_problem,
    normalize_name,
    password_problem,
    room_key,
    room_name_problem,
)

#: Fatal login refusals that another attempt with the same input cannot fix.
REFUSALS = frozenset({"name_taken", "bad_name", "auth_failed", "unsupported_proto",
                      "registration_closed", "account_exists", "weak_password",
                      "not_allowed"})
#: Refusals that pass (only a first login gives up on them).
PASSING = frozenset({"server_full", "unavailable"})

BACKOFF_MIN = 0.5
BACKOFF_MAX = 30.0
HANDSHAKE_TIMEOUT = 10.0  # connected, but no welcome (or refusal) this long after hello
CLOSE_TIMEOUT = 2.0  # after our bye, wait this long for the server's bye
PM_MEMORY = 1024  # (sender, id) of recent private messages, to drop resent copies
HISTORY_PAGE = limits.HISTORY_LIMIT_DEFAULT

# Phases (``status``): idle (never connected), connecting (the driver is
# connecting), handshake (hello sent), ready (logged in), closing (bye sent),
# waiting (for the next attempt), done (over).
_ATTACHED = ("handshake", "ready", "closing")

P = ParamSpec("P")
R = TypeVar("R")


def backoff_delay(attempt: int, rng: random.Random) -> float:
    """Seconds to wait before reconnect attempt ``attempt`` (0 = first retry).

    The ceiling doubles from 1 s up to 30 s; the delay is drawn between half
    the ceiling and the ceiling (0.5..1 s for the first retry), so clients cut
    off together, e.g. by a server restart, do not all come back in the same
    instant, not even the first time.
    """
    ceiling = min(BACKOFF_MAX, BACKOFF_MIN * 2 ** min(attempt + 1, 16))
    return rng.uniform(max(BACKOFF_MIN, ceiling / 2), ceiling)


@dataclass
class Pending:
    """An outbox entry: a ``say`` (``room``) or ``pm`` (``to``) not yet acknowledged."""

    ident: str
    kind: str
    text: str
    room: str | None = None
    to: str | None = None
    sent: bool = False  # on the current connection
    not_before: float = 0.0  # resend time after rate_limited / unavailable

    def frame(self) -> Message:
        target = {"room": self.room} if self.kind == "say" else {"to": self.to}
        return {"type": self.kind, **target, "text": self.text, "id": self.ident}


def _intent(method: Callable[Concatenate[ClientSession, P], R]
            ) -> Callable[Concatenate[ClientSession, P], R]:
    """Record a successful intent in the transcript (secrets redacted)."""

    @functools.wraps(method)
    def wrapper(self: ClientSession, /, *args: P.args, **kwargs: P.kwargs) -> R:
        result = method(self, *args, **kwargs)
        if self._record is not None:
            secret = method.__name__ == "change_password"
            self._log({"intent": method.__name__, "now": self._now,
                       "args": [MASK if secret else a for a in args],
                       "kwargs": kwargs})
        return result

    return wrapper


class ClientSession:
    """One user's version 2 session, kept alive across connections."""

    def __init__(
        self,
        name: str,
        *,
        password: str | None = None,
        register: bool = False,
        code: str | None = None,
        agent: str = "chatclient",
        rooms: Sequence[str] = (),
        rng: random.Random | None = None,
        new_id: Callable[[], str] | None = None,
        record: bool = False,
    ) -> None:
        problem = name_problem(name)
        if problem is not None:
            raise ValueError(problem)
        for room in rooms:
            problem = room_name_problem(room)
            if problem is not None:
                raise ValueError(problem)
        self.name = normalize_name(name)  # the server's spelling replaces it at welcome
        self.account = False
        self.password = password
        self.register = register
        self.code = code
        self.agent = agent
        self.max_text = limits.DEFAULT_MAX_TEXT
        self.max_frame = limits.DEFAULT_MAX_FRAME
        self.rooms: dict[str, RoomState] = {}  # by room key
        self._initial_rooms = list(rooms)
        self._rng = rng or random.Random()
        self._new_id = new_id or (lambda: uuid.uuid4().hex)
        self._reader = wire.Reader(self.name)

        self._phase = "idle"
        self._now = 0.0
        self._decoder = Decoder(limits.CLIENT_MAX_FRAME)
        self._out = bytearray()
        self._events: deque[Event] = deque()
        self._token: str | None = None
        self._logged_in_once = False
        self._attempt = 0
        self._retry_at = 0.0
        self._deadline = 0.0  # of the handshake, or of the close
        self._last_rx = 0.0
        self._heartbeat = limits.DEFAULT_HEARTBEAT
        self._ping_sent = False
        self._outbox: dict[str, Pending] = {}  # insertion order is send order
        self._requests: dict[str, str] = {}  # id -> request type, awaiting a reply
        self._rejoins: dict[str, str] = {}  # id -> room key: a resume by join+since
        self._resuming: set[str] = set()  # room keys whose join+since is in flight
        self._rejoin_at: dict[str, float] = {}  # room key -> when to retry its join+since
        self._resumed_keys: set[str] = set()  # room keys in this hello's resume
        self._pms_seen: dict[tuple[str, str], None] = {}  # insertion order: oldest first
        self._typing_sent: dict[str, float] = {}  # room key -> when
        self._typers: dict[tuple[str, str], tuple[str, float]] = {}  # (room, name key)
        self._record: list[dict[str, Any]] | None = [] if record else None
        self._header = {"name": self.name, "password": password is not None,
                        "register": register, "code": None if code is None else MASK,
                        "agent": agent, "rooms": list(rooms)}

    # ------------------------------------------------------------ state for UIs

    @property
    def status(self) -> str:
        return self._phase

    @property
    def outbox(self) -> list[Pending]:
        """Unacknowledged messages, oldest first."""
        return list(self._outbox.values())

    def room(self, name: str) -> RoomState | None:
        """The room ``name`` (any spelling), if the user is a member."""
        return self.rooms.get(room_key(name))

    def has_older(self, room: str) -> bool:
        """Whether :meth:`history` without ``before`` can bring anything new."""
        state = self.room(room)
        return state is None or state.has_older

    def typers(self, room: str, now: float) -> list[str]:
        """Who typed in ``room`` within the last :data:`~protocol.limits.TYPING_SHOW_S`."""
        key = room_key(room)
        return [name for (k, _), (name, until) in self._typers.items()
                if k == key and until > now]

    def transcript(self) -> dict[str, Any]:
        """The recorded conversation (``record=True``), JSON-able.

        ``session``: the constructor's arguments (secrets as :data:`MASK`);
        ``steps``: in order, every driver call with its time and bytes in
        (base64), every intent, every id and random draw the session took, every
        frame sent (secrets masked) and every event. :func:`transcript.replay`
        runs it through a fresh session.
        """
        if self._record is None:
            raise RuntimeError("the session was created without record=True")
        return {"version": 1, "session": dict(self._header), "steps": list(self._record)}

    # ------------------------------------------------------------- driver side

    def wants_connection(self, now: float) -> bool:
        """Whether the driver should start a connection attempt now."""
        return self._phase == "idle" or (self._phase == "waiting" and now >= self._retry_at)

    def next_attempt_at(self) -> float | None:
        """When the next attempt is due, while waiting for it."""
        return self._retry_at if self._phase == "waiting" else None

    def next_timer(self) -> float | None:
        """When :meth:`tick` (or :meth:`wants_connection`) next has work to do."""
        if self._phase == "waiting":
            return self._retry_at
        if self._phase in ("handshake", "closing"):
            return self._deadline
        if self._phase != "ready":
            return None
        due = self._last_rx + self._heartbeat * (2 if self._ping_sent else 1)
        waiting = [e.not_before for e in self._outbox.values() if not e.sent]
        waiting += self._rejoin_at.values()
        return min([due, *waiting])

    def should_close(self) -> bool:
        """The session is done with the current socket: flush, then close it
        (without calling :meth:`connection_lost`)."""
        return self._phase in ("waiting", "done")

    def connection_started(self, now: float, address: str) -> None:
        self._log({"call": "connection_started", "now": now, "address": address})
        self._now = now
        self._phase = "connecting"
        self._emit(Connecting(address))

    def connection_made(self, now: float) -> None:
        """The socket is connected: say hello."""
        self._log({"call": "connection_made", "now": now})
        self._now = now
        self._decoder = Decoder(limits.CLIENT_MAX_FRAME)
        self._out = bytearray()
        self._phase = "handshake"
        self._deadline = now + HANDSHAKE_TIMEOUT
        self._last_rx = now
        self._emit(Connected())
        self._send(self._hello())

    def receive_data(self, data: bytes, now: float) -> None:
        """Bytes from the server; ``b""`` is the end of the stream."""
        self._log({"call": "receive_data", "now": now,
                   "data": base64.b64encode(data).decode("ascii")})
        self._now = now
        if self._phase not in _ATTACHED:
            return
        if not data:
            self._lost("the server closed the connection")
            return
        try:
            messages = self._decoder.feed(data)
        except ProtocolError as exc:
            self._handle_all(exc.decoded)
            if self._phase in _ATTACHED:
                self._lost(f"the server sent a bad frame ({exc.message})")
            return
        self._last_rx = now
        self._ping_sent = False
        self._handle_all(messages)

    def connection_lost(self, now: float, reason: str) -> None:
        """The connection (or the attempt to make one) failed or closed."""
        self._log({"call": "connection_lost", "now": now, "reason": reason})
        self._now = now
        if self._phase == "connecting" or self._phase in _ATTACHED:
            self._lost(reason)

    def tick(self, now: float) -> None:
        """Deadlines: the handshake, the close, heartbeats, outbox retries."""
        self._now = now
        before = (len(self._out), len(self._events), self._phase)
        mark = len(self._record) if self._record is not None else 0
        self._log({"call": "tick", "now": now})
        if self._phase == "handshake" and now >= self._deadline:
            self._lost("the server did not answer the login in time")
        elif self._phase == "closing" and now >= self._deadline:
            self._finish()
        elif self._phase == "ready":
            quiet = now - self._last_rx
            if quiet >= 2 * self._heartbeat:
                self._lost("the server stopped answering")
            else:
                if quiet >= self._heartbeat and not self._ping_sent:
                    self._send({"type": "ping", "t": "keepalive"})
                    self._ping_sent = True
                for key in [k for k, at in self._rejoin_at.items() if at <= now]:
                    del self._rejoin_at[key]
                    if key in self.rooms:
                        self._rejoin(key)
                self._send_outbox()
        if self._record is not None and before == (len(self._out), len(self._events),
                                                   self._phase):
            del self._record[mark:]  # an idle tick: not worth a step

    def data_to_send(self) -> bytes:
        out, self._out = bytes(self._out), bytearray()
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def events(self) -> list[Event]:
        out = list(self._events)
        self._events.clear()
        return out

    # ------------------------------------------------------------------ intents

    @_intent
    def say(self, room: str, text: str) -> str:
        """Queue a message to ``room``; its id. Sent now when nothing older waits."""
        self._check_room(room)
        entry = Pending(self._ident(), "say", clean_text(text, self.max_text), room=room)
        return self._queue(entry)

    @_intent
    def pm(self, to: str, text: str) -> str:
        """Queue a private message to the online user ``to``; its id."""
        entry = Pending(self._ident(), "pm", clean_text(text, self.max_text),
                        to=normalize_name(to))
        return self._queue(entry)

    @_intent
    def edit(self, room: str, seq: int, text: str) -> str:
        self._check_room(room)
        return self._request("edit", room=room, seq=seq, text=clean_text(text, self.max_text))

    @_intent
    def delete(self, room: str, seq: int) -> str:
        self._check_room(room)
        return self._request("delete", room=room, seq=seq)

    @_intent
    def typing(self, room: str) -> bool:
        """Tell the room the user types (at most every 3 s per room); whether sent."""
        self._check_room(room)
        key = room_key(room)
        last = self._typing_sent.get(key)
        if self._phase != "ready" or (last is not None
                                      and self._now - last < limits.TYPING_EVERY_S):
            return False
        self._typing_sent[key] = self._now
        self._send({"type": "typing", "room": room})
        return True

    @_intent
    def mark(self, room: str, seq: int | None = None) -> str | None:
        """Move the read marker to ``seq`` (default: the newest seq delivered).

        The local marker moves at once (:class:`RoomUpdated`); the server's
        ``marked`` reply confirms it. None when there is nothing to move.
        """
        state = self.room(room)
        if state is None:
            return None
        target = min(state.seq, state.high if seq is None else seq)
        if target <= state.read:
            return None
        state.set_read(target)
        self._emit(RoomUpdated(state.info()))
        return self._request("mark", room=state.name, seq=target)

    @_intent
    def join(self, room: str, private: bool = False) -> str:
        self._check_room(room)
        return self._request("join", room=room, **({"private": True} if private else {}))

    @_intent
    def part(self, room: str) -> str:
        self._check_room(room)
        return self._request("part", room=room)

    @_intent
    def dm(self, name: str) -> str:
        return self._request("dm", to=normalize_name(name))

    @_intent
    def invite(self, room: str, name: str) -> str:
        self._check_room(room)
        return self._request("invite", room=room, name=normalize_name(name))

    @_intent
    def kick(self, room: str, name: str, reason: str | None = None, ban: bool = False) -> str:
        self._check_room(room)
        extra: dict[str, Any] = {"ban": True} if ban else {}
        if reason is not None:
            extra["reason"] = clean_text(reason, self.max_text)
        return self._request("kick", room=room, name=normalize_name(name), **extra)

    @_intent
    def topic(self, room: str, text: str) -> str:
        self._check_room(room)
        return self._request("topic", room=room, topic=clean_topic(text))

    @_intent
    def op(self, room: str, name: str, op: bool = True) -> str:
        self._check_room(room)
        return self._request("op", room=room, name=normalize_name(name), op=op)

    @_intent
    def unban(self, room: str, name: str) -> str:
        self._check_room(room)
        return self._request("unban", room=room, name=normalize_name(name))

    @_intent
    def history(self, room: str, before: int | None = None, limit: int = HISTORY_PAGE) -> str:
        """Ask for older messages: by default, the page right below those delivered."""
        self._check_room(room)
        if before is None:
            state = self.room(room)
            before = limits.MAX_INT if state is None else max(1, state.floor)
        return self._request("history", room=room, before=before, limit=limit)

    @_intent
    def search(self, query: str, room: str | None = None, limit: int = limits.SEARCH_LIMIT_DEFAULT,
               before: int | None = None) -> str:
        members: dict[str, Any] = {"query": clean_query(query), "limit": limit}
        if room is not None:
            self._check_room(room)
            members["room"] = room
            if before is not None:
                members["before"] = before
        return self._request("search", **members)

    @_intent
    def members(self, room: str) -> str:
        self._check_room(room)
        return self._request("members", room=room)

    @_intent
    def list_rooms(self) -> str:
        return self._request("rooms")

    @_intent
    def who(self) -> str:
        return self._request("who")

    @_intent
    def change_password(self, old: str, new: str) -> str:
        problem = password_problem(new)
        if problem is not None:
            raise ProtocolError("weak_password", problem, fatal=False)
        return self._request("password", old=old, new=new)

    @_intent
    def bye(self) -> None:
        """End the session: :class:`Closed` follows (after the server's bye)."""
        if self._phase in ("handshake", "ready"):
            self._send({"type": "bye"})
            self._phase = "closing"
            self._deadline = self._now + CLOSE_TIMEOUT
        elif self._phase != "done":
            self._finish()

    # --------------------------------------------------------------- internals

    def _log(self, step: dict[str, Any]) -> None:
        if self._record is not None:
            self._record.append(step)

    def _emit(self, event: Event) -> None:
        self._events.append(event)
        self._log({"event": event_to_json(event)})

    def _ident(self) -> str:
        ident = self._new_id()
        self._log({"id": ident})
        return ident

    def _send(self, message: Message) -> None:
        self._out += encode(message)
        self._log({"sent": redact_frame(message)})

    @staticmethod
    def _check_room(room: str) -> None:
        problem = room_name_problem(room)
        if problem is not None:
            raise ProtocolError("bad_room", problem)

    def _request(self, kind: str, **members: Any) -> str:
        """Send a request with a fresh id now, or reject it as ``offline``."""
        ident = self._ident()
        if self._phase != "ready":
            self._emit(Rejected(ident, kind, "offline", "not connected to the server"))
            return ident
        self._requests[ident] = kind
        self._send({"type": kind, **members, "id": ident})
        return ident

    def _oversize(self, entry: Pending) -> str | None:
        """Why the server would drop the connection over ``entry`` (fatal
        ``frame_too_large``), or None: such a frame is refused here instead."""
        size = len(encode_payload(entry.frame()))
        if size <= self.max_frame:
            return None
        return f"the message takes {size} bytes; this server takes frames of at most " \
               f"{self.max_frame}"

    def _queue(self, entry: Pending) -> str:
        problem = self._oversize(entry)
        if problem is not None:
            raise ProtocolError("text_too_long", problem)
        self._outbox[entry.ident] = entry
        if self._phase == "ready":
            self._send_outbox()
        return entry.ident

    def _send_outbox(self) -> None:
        """Send the outbox entries not on this connection yet, in the order typed:
        one waiting out a rate limit holds back those after it."""
        for entry in self._outbox.values():
            if entry.sent:
                continue
            if self._now < entry.not_before:
                break
            self._send(entry.frame())
            entry.sent = True

    def _hello(self) -> Message:
        hello: Message = {"type": "hello", "proto": limits.PROTO_V2, "name": self.name,
                          "agent": self.agent}
        if self.password is not None:
            hello["password"] = self.password
        if self.register and not self._logged_in_once:
            hello["register"] = True
            if self.code is not None:
                hello["code"] = self.code
        if self._token is not None:
            hello["token"] = self._token
        resume = self._resume_map(len(encode_payload({**hello, "resume": {}})))
        if resume:
            hello["resume"] = resume
        self._resumed_keys = {room_key(name) for name in resume}
        return hello

    def _resume_map(self, base: int) -> dict[str, int]:
        """{room: last seq delivered} for as many rooms as fit the login frame limit."""
        resume: dict[str, int] = {}
        size = base
        for state in self.rooms.values():
            item = len(encode_payload({state.name: state.high})) - 2 + (1 if resume else 0)
            if size + item > limits.LOGIN_MAX_FRAME:
                break
            resume[state.name] = state.high
            size += item
        return resume

    def _lost(self, reason: str) -> None:
        if self._phase == "closing":
            self._finish()
        elif not self._logged_in_once:
            self._fail("unreachable", reason)
        else:
            self._wait(reason)

    def _wait(self, reason: str, at_least: float = 0.0) -> None:
        """The connection is gone: come back after a backoff delay."""
        self._drop()
        delay = backoff_delay(self._attempt, self._rng)
        self._log({"draw": delay})
        delay = max(at_least, delay)
        self._attempt += 1
        self._phase = "waiting"
        self._retry_at = self._now + delay
        self._emit(Reconnecting(delay, reason))

    def _fail(self, code: str, detail: str) -> None:
        self._drop()
        self._phase = "done"
        self._emit(Failed(code, detail))

    def _finish(self) -> None:
        self._drop()
        self._phase = "done"
        self._emit(Closed())

    def _drop(self) -> None:
        """Forget the connection: what was in flight gets its outcome."""
        self._out = bytearray()
        self._ping_sent = False
        for entry in self._outbox.values():
            entry.sent = False
        requests, self._requests = self._requests, {}
        for ident, kind in requests.items():
            self._emit(Rejected(ident, kind, "offline",
                                "the connection was lost before the reply"))
        self._rejoins.clear()
        self._rejoin_at.clear()
        self._resuming.clear()

    # ------------------------------------------------------------ server frames

    def _handle_all(self, messages: list[Message]) -> None:
        for message in messages:
            if self._phase not in _ATTACHED:
                return  # the connection ended while handling (bye, fatal error)
            if wire.checked(message):
                getattr(self, "_on_" + message["type"])(message)

    def _on_welcome(self, message: Message) -> None:
        if self._phase != "handshake":
            return
        resumed = self._logged_in_once
        self.name = message["name"]
        self._reader = wire.Reader(self.name)
        self.account = message.get("account") is True
        self._token = message["token"]
        self.max_text = message["max_text"]
        self.max_frame = message["max_frame"]
        self._heartbeat = max(1.0, float(message["heartbeat"]))
        self._logged_in_once = True
        self._attempt = 0
        self._phase = "ready"
        present: set[str] = set()
        behind: list[str] = []  # known rooms whose messages the hello did not resume
        for summary in wire.room_summaries(message["rooms"]):
            key = room_key(summary["room"])
            present.add(key)
            state = self.rooms.get(key)
            if state is None:
                self.rooms[key] = RoomState.from_summary(summary)
            else:
                state.update(summary)
                if key not in self._resumed_keys:
                    behind.append(key)
        gone = [key for key in self.rooms if key not in present]
        if not self.account:
            behind += gone  # a guest's new session: join its rooms again
            gone = []
        left = [self.rooms.pop(key) for key in gone]
        self._emit(LoggedIn(self.name, self.account,
                            tuple(s.info() for s in self.rooms.values()), resumed))
        for state in left:
            self._emit(RoomLeft(state.name, "gone", None, None))
        for key in behind:
            self._rejoin(key)
        if not resumed:
            for room in self._initial_rooms:
                if room_key(room) not in self.rooms:
                    self._request("join", room=room)  # not an intent: not recorded as one
        for entry in list(self._outbox.values()):
            entry.not_before = 0.0
            # Typed before this server announced a smaller max_frame: sending it
            # would cost the connection, on every reconnect. Refuse it instead.
            problem = self._oversize(entry)
            if problem is not None:
                del self._outbox[entry.ident]
                self._emit(Rejected(entry.ident, entry.kind, "text_too_long", problem))
        self._send_outbox()

    def _rejoin(self, key: str) -> None:
        """Resume a room after login: ``join`` with ``since`` its last seq. Its
        messages until the reply are dropped: the backlog brings them again."""
        state = self.rooms[key]
        ident = self._ident()
        self._rejoins[ident] = key
        self._resuming.add(key)
        self._send({"type": "join", "room": state.name, "since": state.high, "id": ident})

    def _reply(self, message: Message) -> str | None:
        """The request type that ``message`` answers (it is no longer awaited)."""
        ref = message.get("ref")
        return self._requests.pop(ref, None) if isinstance(ref, str) else None

    def _on_msg(self, message: Message) -> None:
        key = room_key(message["room"])
        entry = self._outbox.get(message.get("id", ""))
        if (entry is not None and entry.kind == "say" and entry.room is not None
                and room_key(entry.room) == key
                and name_key(message["from"]) == self._reader.key):
            # Before the seq check: a re-sent original acknowledges too.
            del self._outbox[entry.ident]
            self._emit(Acked(entry.ident, message["room"], message["seq"]))
        state = self.rooms.get(key)
        if state is None or key in self._resuming:
            return
        chat = self._reader.message(message)
        if state.take(chat.seq, chat.mine):
            self._emit(MessageAdded(state.name, chat, chat.seq > state.live_from))

    def _on_pm(self, message: Message) -> None:
        mine = name_key(message["from"]) == self._reader.key
        ident = message.get("id")
        entry = self._outbox.get(ident) if ident is not None else None
        if entry is not None and entry.kind == "pm" and mine:
            del self._outbox[entry.ident]
            self._emit(Acked(entry.ident, None, None))
        if ident is not None:
            key = (name_key(message["from"]), ident)
            if key in self._pms_seen:
                return  # the sender resent it after a reconnect: shown already
            self._pms_seen[key] = None
            if len(self._pms_seen) > PM_MEMORY:
                del self._pms_seen[next(iter(self._pms_seen))]
        self._emit(PrivateMessage(message["from"], message["to"], message["text"],
                                  message["ts"], ident, mine))

    def _on_joined(self, message: Message) -> None:
        ref = message.get("ref")
        self._reply(message)
        key = room_key(message["room"])
        if isinstance(ref, str) and self._rejoins.pop(ref, None) is not None:
            self._resuming.discard(key)
        members = wire.members(message["members"])
        state = self.rooms.get(key)
        if state is None:
            state = self.rooms[key] = RoomState.from_summary(message)
            state.set_members(members)
            self._emit(RoomJoined(state.info()))
        else:
            state.update(message)
            state.set_members(members)
            self._emit(RoomUpdated(state.info()))

    def _on_parted(self, message: Message) -> None:
        self._reply(message)
        state = self.rooms.pop(room_key(message["room"]), None)
        if state is not None:
            self._emit(RoomLeft(state.name, "part", None, None))

    def _on_part(self, message: Message) -> None:
        key = room_key(message["room"])
        state = self.rooms.get(key)
        if state is None:
            return
        if name_key(message["name"]) == self._reader.key:
            del self.rooms[key]
            self._emit(RoomLeft(state.name, message["reason"], message.get("by"),
                                message.get("message")))
        else:
            state.members.pop(name_key(message["name"]), None)
            self._emit(MemberLeft(state.name, message["name"], message["reason"]))

    def _on_join(self, message: Message) -> None:
        state = self.rooms.get(room_key(message["room"]))
        if state is not None:
            state.members[name_key(message["name"])] = Member(message["name"], "member",
                                                                   True)
            self._emit(MemberJoined(state.name, message["name"]))

    def _on_topic(self, message: Message) -> None:
        state = self.rooms.get(room_key(message["room"]))
        if state is not None:
            state.topic = message["topic"]
            self._emit(TopicChanged(state.name, message["topic"], message["by"]))
            self._emit(RoomUpdated(state.info()))

    def _on_role(self, message: Message) -> None:
        state = self.rooms.get(room_key(message["room"]))
        if state is None:
            return
        key = name_key(message["name"])
        member = state.members.get(key)
        if member is not None:
            state.members[key] = Member(member.name, message["role"], member.online)
        self._emit(RoleChanged(state.name, message["name"], message["role"], message["by"]))
        if key == self._reader.key:
            state.role = message["role"]
            self._emit(RoomUpdated(state.info()))

    def _on_invited(self, message: Message) -> None:
        self._emit(Invited(message["room"], message["by"]))

    def _on_edited(self, message: Message) -> None:
        state = self.rooms.get(room_key(message["room"]))
        if state is not None:
            self._emit(MessageEdited(state.name, message["seq"], message["text"],
                                     message["ts"]))

    def _on_deleted(self, message: Message) -> None:
        state = self.rooms.get(room_key(message["room"]))
        if state is not None:
            self._emit(MessageDeleted(state.name, message["seq"], message["by"]))

    def _on_typing(self, message: Message) -> None:
        state = self.rooms.get(room_key(message["room"]))
        if state is not None:
            until = self._now + limits.TYPING_SHOW_S
            self._typers[(room_key(state.name), name_key(message["name"]))] = (
                message["name"], until)
            self._typers = {k: v for k, v in self._typers.items() if v[1] > self._now}
            self._emit(Typing(state.name, message["name"]))

    def _on_marked(self, message: Message) -> None:
        self._reply(message)
        state = self.rooms.get(room_key(message["room"]))
        if state is not None and message["seq"] != state.read:
            state.set_read(message["seq"])  # the stored marker: it may be ahead of ours
            self._emit(RoomUpdated(state.info()))

    def _on_presence(self, message: Message) -> None:
        key = name_key(message["name"])
        for state in self.rooms.values():
            member = state.members.get(key)
            if member is not None:
                state.members[key] = Member(member.name, member.role, message["online"])
        self._emit(Presence(message["name"], message["online"], message.get("reason")))

    def _on_history(self, message: Message) -> None:
        self._reply(message)
        room = message["room"]
        chats = [self._reader.message(e) for e in wire.entries(message["msgs"], room)]
        state = self.rooms.get(room_key(room))
        if state is not None:
            fresh = state.take_page([(c.seq, c.mine) for c in chats], message["before"])
            chats = [c for c, new in zip(chats, fresh, strict=True) if new]
            room = state.name
        self._emit(HistoryPage(room, tuple(chats), message["before"]))

    def _on_results(self, message: Message) -> None:
        self._reply(message)
        chats = tuple(self._reader.message(e) for e in wire.entries(message["msgs"]))
        self._emit(SearchResults(message["query"], message.get("room"), chats))

    def _on_rooms(self, message: Message) -> None:
        self._reply(message)
        self._emit(RoomList(wire.room_list(message["rooms"])))

    def _on_members(self, message: Message) -> None:
        self._reply(message)
        members = wire.members(message["members"])
        state = self.rooms.get(room_key(message["room"]))
        if state is not None:
            state.set_members(members)
            self._emit(RoomUpdated(state.info()))
        self._emit(Members(message["room"], members))

    def _on_users(self, message: Message) -> None:
        self._reply(message)
        self._emit(Users(tuple(u for u in message["users"] if isinstance(u, str))))

    def _on_ok(self, message: Message) -> None:
        kind = self._reply(message)
        if kind is not None:
            self._emit(Done(message["ref"], kind))

    def _on_ping(self, message: Message) -> None:
        reply: Message = {"type": "pong"}
        if "t" in message:
            reply["t"] = message["t"]
        self._send(reply)

    def _on_pong(self, message: Message) -> None:
        pass  # any frame shows the server is alive; receive_data noted it

    def _on_bye(self, message: Message) -> None:
        reason = message["reason"]
        text = message.get("message")
        detail = f"the server said bye ({reason})" + (f": {text}" if text else "")
        if self._phase == "closing":
            self._finish()
        elif reason in ("kicked", "replaced"):
            self._fail(reason, detail)
        else:
            self._lost(detail)

    def _on_error(self, message: Message) -> None:
        code = message["code"]
        detail = message["message"]
        retry = message.get("retry_after_ms")
        wait = retry / 1000 if isinstance(retry, int) and retry > 0 else 1.0
        if message["fatal"]:
            if self._phase == "closing":
                self._finish()
            elif code in REFUSALS or not self._logged_in_once:
                self._fail(code, f"{code}: {detail}")
            else:
                self._wait(f"{code}: {detail}", wait if code in PASSING else 0.0)
            return
        ref = message.get("ref")
        if not isinstance(ref, str):
            self._emit(Rejected(None, None, code, detail))
            return
        entry = self._outbox.get(ref)
        if entry is not None:
            if code in ("rate_limited", "unavailable"):
                entry.sent = False  # still pending: sent again after the wait
                entry.not_before = self._now + wait
            else:
                del self._outbox[ref]  # refused for good (e.g. no_such_user)
                self._emit(Rejected(ref, entry.kind, code, detail))
            return
        key = self._rejoins.pop(ref, None)
        if key is not None:
            if code in ("rate_limited", "unavailable"):
                self._rejoin_at[key] = self._now + wait  # still resuming: try again
                return
            self._resuming.discard(key)
            state = self.rooms.pop(key, None)
            if state is not None:
                self._emit(RoomLeft(state.name, code, None, detail))
            return
        self._emit(Rejected(ref, self._requests.pop(ref, None), code, detail))
