"""The chat core: sessions, presence, dispatch, history, rate limits. Pure.

No sockets, no clock of its own: the loop calls :meth:`Core.begin_turn` with
the time, feeds received bytes with :meth:`Core.receive`, reports lost
connections and fired timers, then calls :meth:`Core.end_turn`, which commits
the turn's public messages to the store (group commit) and only then moves the
staged frames into the connections' out-buffers. Tests and hypothesis drive it
the same way, without sockets or sleeps.

Closing is two-phase: :meth:`Core._close` stages the final frame, takes the
connection out of the session tables (its name is free at once) and lists it in
:attr:`Core.closing`; the loop shuts the socket down once the frame is out.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import struct
from collections.abc import Callable, Iterator
from typing import Any

from chatd import __version__
from chatd.connection import (
    CHAT,
    CLOSING,
    CONTROL,
    HANDSHAKE,
    OPERATOR,
    USER,
    WATCHER,
    Asked,
    Connection,
    Welcome,
)
from chatd.history import History, Stored
from chatd.settings import Settings
from chatd.timers import Timers
from chatd.turn import Turn
from protocol import (
    CHAT_REQUESTS,
    CONTROL_REQUESTS,
    ProtocolError,
    clean_text,
    encode,
    encode_payload,
    name_key,
    normalize_name,
    validate,
)
from protocol import messages as m
from protocol.limits import HISTORY_LIMIT_DEFAULT, LOGIN_MAX_FRAME, PROTO_VERSION
from protocol.messages import request_ref

log = logging.getLogger("chatd.core")
_header = struct.Struct(">I")

SERVER_NAME = f"chatd/{__version__}"
ANNOUNCER = "server"  # the ``from`` of an operator's announcement
FRAMES_PER_TURN = 64  # requests handled per connection per turn (fairness)
UNAVAILABLE_RETRY_MS = 1000  # what ``unavailable`` asks a sender to wait
TOKEN_BYTES = 24  # session token: 192 random bits
BACKLOG_BURST = 256 * 1024  # backlog bytes queued at a time (see Core._burst)
RECENT_FRAMES = 1024  # encoded msg frames cached for backlogs (at least ``backlog``)

_FREE = frozenset({"pong", "bye"})  # requests that take no rate token (contract §7)

Message = dict[str, Any]
Handler = Callable[[Connection, Message, "str | None"], None]


class Core:
    """All chat state of one server; see the module docstring."""

    def __init__(self, settings: Settings, history: History, now: float, wall_ms: int) -> None:
        self.settings = settings
        self.history = history
        self.started = now
        self.now = now
        self.ts = wall_ms
        self.seq = history.last_seq
        self.users: dict[str, Connection] = {}  # name key -> session
        self.audience: set[Connection] = set()  # users and watchers
        self.conns: set[Connection] = set()  # every open connection
        self.clients = 0  # open chat connections, logged in or not
        self.handshakes = 0  # chat connections before hello
        self.timers: Timers[Connection] = Timers()
        self.turn = Turn()
        self.pending_input: set[Connection] = set()  # frames left in the decoder
        self.closing: list[Connection] = []  # marked this turn; the loop reaps them
        self.stop_requested = False
        self.stopping = False
        self.msgs_in = 0
        self.frames_out = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self._recent: dict[int, bytes] = {}  # seq -> encoded msg frame
        self._roster: bytes | None = None  # see roster()
        self._recent_cap = max(RECENT_FRAMES, settings.backlog)
        self._login_frame = min(LOGIN_MAX_FRAME, settings.max_frame)
        self._chat: dict[str, Handler] = {
            "say": self._say,
            "pm": self._pm,
            "who": self._who,
            "history": self._history,
            "ping": self._ping,
            "pong": self._pong,
            "bye": self._bye,
        }
        self._control: dict[str, Handler] = {
            "status": self._status,
            "kick": self._kick,
            "announce": self._announce,
            "watch": self._watch,
            "shutdown": self._shutdown,
        }

    # --- the loop's interface ---------------------------------------------

    def begin_turn(self, now: float, wall_ms: int) -> None:
        self.now = now
        self.ts = wall_ms

    def connect(self, kind: int, label: str = "") -> Connection:
        """A new connection. A chat connection must say hello in time."""
        if kind == CHAT:
            conn = Connection(CHAT, self._login_frame, self.now, label)
            self.clients += 1
            self.handshakes += 1
            self.conns.add(conn)
            if self.handshakes > self.settings.max_clients:
                # More half-open connections than sessions allowed: refuse early
                # (contract §3.2 allows server_full before hello).
                self._fatal(conn, ProtocolError("server_full", "too many connections"))
            else:
                self.timers.schedule(
                    self.now + self.settings.handshake_timeout, conn, "handshake"
                )
        else:
            conn = Connection(CONTROL, self.settings.max_frame, self.now, label)
            self.conns.add(conn)
        return conn

    def receive(self, conn: Connection, data: bytes | memoryview) -> None:
        """Bytes from a connection (``b""``: continue with frames left over).

        Handles at most FRAMES_PER_TURN frames; the rest stay in the decoder and
        the connection is listed in :attr:`pending_input` for the next turn.
        A hello is decoded alone, so the frames after it are judged by the
        post-login frame limit.
        """
        self.bytes_in += len(data)
        if conn.state >= CLOSING:
            return
        budget = FRAMES_PER_TURN
        decoder = conn.decoder
        max_outbuf = self.settings.max_outbuf
        try:
            while True:
                backlogged = conn.out_len + conn.held_len + conn.staged_bytes
                if backlogged > max_outbuf:
                    # Its replies wait unread: leave its requests in the decoder
                    # (the loop stops reading it) rather than grow memory.
                    if data:
                        decoder.feed(data, 0)  # only buffered
                    self.pending_input.add(conn)
                    return
                # One frame at a time for a hello (the frame limit changes after
                # it) and near the output limit (each reply may be large).
                small = conn.state == HANDSHAKE or backlogged > max_outbuf // 2
                limit = 1 if small else budget
                try:
                    msgs = decoder.feed(data, limit)
                except ProtocolError as exc:
                    for msg in exc.decoded:
                        self._dispatch(conn, msg)
                        if conn.state >= CLOSING:
                            return
                    self._fatal(conn, exc)
                    return
                data = b""
                for msg in msgs:
                    self._dispatch(conn, msg)
                    if conn.state >= CLOSING:
                        self.pending_input.discard(conn)
                        return
                budget -= len(msgs)
                if len(msgs) < limit:
                    self.pending_input.discard(conn)
                    return
                if budget <= 0:
                    self.pending_input.add(conn)
                    return
        except Exception:
            # A bug met on one client's input must not take the server down:
            # that client is cut off (no frame: we cannot say what went wrong),
            # everyone else carries on.
            log.exception("internal error handling input from %s; closing it", conn.label)
            self._close(conn, None, "error")

    def lost(self, conn: Connection) -> None:
        """The peer closed or broke the connection (EOF, reset): the session
        ends without a final frame (what was already queued may still go out
        to a peer that only closed its sending side)."""
        if conn.state < CLOSING:
            self._close(conn, None, "lost", stage=False)

    def forget(self, conn: Connection) -> None:
        """The loop closed the socket: drop the last reference."""
        self.conns.discard(conn)
        self.pending_input.discard(conn)

    def run_timers(self, now: float) -> None:
        for conn, kind in self.timers.pop_due(now):
            if kind == "handshake":
                if conn.state == HANDSHAKE:
                    self._fatal(conn, ProtocolError("timeout", "no hello in time"))
            elif kind == "heartbeat" and conn.state == USER:
                self._heartbeat(conn, now)

    def next_deadline(self) -> float | None:
        return self.timers.next_deadline()

    def has_work(self) -> bool:
        """Whether the next turn must not wait for the network."""
        return bool(self.pending_input or self.turn.touched or self.turn.bcast)

    def end_turn(self, defer_presence: bool = False) -> list[Connection]:
        """Commit the turn's messages, then release every staged frame.

        Returns the connections given output. With ``defer_presence`` the
        presence nobody else's output took along stays in the presence log
        (see chatd.turn) until :meth:`flush_presence`; the loop flushes it on
        a timer, so a storm of logins costs O(1) per login, not O(audience).
        """
        self.commit()
        frames, released = self.turn.release(self.audience)
        self.frames_out += frames
        if not defer_presence:
            released.extend(self.flush_presence())
        return released

    def presence_waiting(self) -> bool:
        """Whether presence frames wait in the log for :meth:`flush_presence`."""
        return bool(self.turn.presence)

    def flush_presence(self) -> list[Connection]:
        """Queue every member's waiting presence (between turns); returns the
        connections given output."""
        frames, given = self.turn.flush_presence(self.audience)
        self.frames_out += frames
        return given

    def overflow(self, conn: Connection) -> bool:
        """The connection's unsent output passed max_outbuf (contract §6).

        Output that has not started to go out is dropped and the error queued
        alone; if a frame is partly out, nothing can follow it. Returns whether
        there is a final frame worth one more send.
        """
        if conn.state >= CLOSING:
            return False
        mid_frame = conn.mid_frame()
        conn.drop_output()
        if not mid_frame:
            conn.push(encode(_fatal_message(ProtocolError(
                "slow_consumer",
                f"more than {self.settings.max_outbuf} bytes of output unread",
            ))))
            self.frames_out += 1
        self._close(conn, None, "slow_consumer", stage=False)
        return not mid_frame

    def begin_shutdown(self) -> None:
        """Contract §9: every client gets ``bye`` shutdown; watchers see leaves."""
        if self.stopping:
            return
        self.stopping = True
        bye = encode(m.bye("shutdown"))
        users = list(self.users.values())
        for conn in users:
            self._close(conn, bye, None)
        for conn in users:
            self.turn.broadcast(encode(m.leave(conn.name, self.ts, "shutdown")))
        for conn in list(self.conns):
            if conn.state == HANDSHAKE:
                self._close(conn, bye, None)
        for conn in list(self.conns):
            if conn.state in (OPERATOR, WATCHER):
                self._close(conn, None, None)

    def status(self) -> Message:
        return {
            "type": "status",
            "server": SERVER_NAME,
            "uptime_s": round(self.now - self.started, 3),
            "clients": self.clients,
            "users": [c.name for c in self.users.values()],
            "seq": self.seq,
            "msgs_in": self.msgs_in,
            "frames_out": self.frames_out,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "watchers": sum(1 for c in self.audience if c.state == WATCHER),
            "handshakes": self.handshakes,
        }

    # --- store --------------------------------------------------------------

    def commit(self) -> None:
        """Group commit: store this turn's public messages, all or nothing.

        Also called before anything reads the store in the middle of a turn
        (a login's backlog, a history page, a same-turn duplicate id), so reads
        see every message accepted before them.
        """
        pending = self.turn.take_pending()
        if not pending:
            return
        batch = [item.stored for item in pending]
        try:
            self.history.append(batch)
        except Exception as exc:  # StoreError, or a bug in a store: same answer
            log.error("could not store %d message(s) (seq %d..%d), refusing them: %s",
                      len(batch), batch[0].seq, batch[-1].seq, exc)
            self.seq = batch[0].seq - 1
            self.msgs_in -= len(batch)
            for stored in batch:
                self._recent.pop(stored.seq, None)
            self.turn.refuse(pending, UNAVAILABLE_RETRY_MS)

    def _msg_frame(self, stored: Stored) -> bytes:
        frame = self._recent.get(stored.seq)
        if frame is None:
            frame = encode(m.msg(stored.seq, stored.ts, stored.sender, stored.text, stored.ident))
        return frame

    def _publish(
        self, conn: Connection | None, key: str, sender: str, text: str, *,
        ident: str | None, ref: str | None, ok: bytes | None,
    ) -> None:
        self.seq += 1
        stored = Stored(self.seq, self.ts, sender, text, ident)
        frame = encode(m.msg(stored.seq, stored.ts, sender, text, ident))
        recent = self._recent
        recent[stored.seq] = frame
        if len(recent) > self._recent_cap:
            del recent[next(iter(recent))]
        self.turn.public(conn, frame, stored, key=key, ref=ref, ok=ok)
        self.msgs_in += 1

    # --- dispatch -------------------------------------------------------------

    def _dispatch(self, conn: Connection, msg: Message) -> None:
        conn.last_rx = self.now
        state = conn.state
        if state == USER:
            self._request(conn, msg)
        elif state == HANDSHAKE:
            self._hello(conn, msg)
        else:
            self._operator(conn, msg)

    def _request(self, conn: Connection, msg: Message) -> None:
        kind = msg["type"]
        settings = self.settings
        if settings.rate and kind not in _FREE:
            wait = conn.take_token(self.now, settings.rate, settings.burst)
            if wait:
                self._error(conn, ProtocolError(
                    "rate_limited", f"more than {settings.rate:g} requests per second",
                    ref=request_ref(msg), retry_after_ms=wait,
                ))
                return
        try:
            if kind == "hello":  # whatever its members: the session exists
                raise ProtocolError("already_logged_in", "this connection is logged in",
                                    ref=request_ref(msg))
            ref = validate(msg, CHAT_REQUESTS)
            self._chat[kind](conn, msg, ref)
        except ProtocolError as exc:
            self._error(conn, exc)

    def _operator(self, conn: Connection, msg: Message) -> None:
        try:
            ref = validate(msg, CONTROL_REQUESTS)
            self._control[msg["type"]](conn, msg, ref)
        except ProtocolError as exc:
            self._error(conn, exc)

    def _error(self, conn: Connection, exc: ProtocolError) -> None:
        if exc.fatal:
            self._fatal(conn, exc)
        else:
            self.turn.unicast(conn, encode(exc.to_message()))

    def _fatal(self, conn: Connection, exc: ProtocolError) -> None:
        """The error frame is the connection's last; others see ``leave`` error."""
        reason = "timeout" if exc.code == "timeout" else "error"
        self._close(conn, encode(_fatal_message(exc)), reason)

    def _close(
        self, conn: Connection, final: bytes | None, reason: str | None, stage: bool = True
    ) -> None:
        """Phase one of a close: stage the final frame, free the name at once,
        tell the others (``reason`` None: no ``leave``)."""
        if conn.state >= CLOSING:
            return
        if stage:
            self.turn.catch_up(conn)
            if final is not None:
                self.turn.unicast(conn, final)
        self.audience.discard(conn)
        self.pending_input.discard(conn)
        state = conn.state
        conn.state = CLOSING
        if conn.kind == CHAT:
            self.clients -= 1
        if state == USER:
            del self.users[conn.key]
            self._roster = None
            if reason is not None:
                self.turn.broadcast(encode(m.leave(conn.name, self.ts, reason)))
        elif state == HANDSHAKE:
            self.handshakes -= 1
        self.closing.append(conn)

    # --- login -------------------------------------------------------------------

    def _hello(self, conn: Connection, msg: Message) -> None:
        """Contract §3.2: welcome, or a fatal error checked in the given order."""
        settings = self.settings
        ref = request_ref(msg)
        try:
            if msg["type"] != "hello":
                raise ProtocolError("not_logged_in", "the first frame must be hello", ref=ref)
            validate(msg, CHAT_REQUESTS)
            if msg["proto"] != PROTO_VERSION:
                raise ProtocolError(
                    "unsupported_proto", f"this server speaks proto {PROTO_VERSION}", ref=ref
                )
            name = normalize_name(msg["name"])
            if settings.password is not None and not hmac.compare_digest(
                msg.get("password", "").encode(), settings.password.encode()
            ):
                raise ProtocolError("auth_failed", "wrong or missing password", ref=ref)
            key = name_key(name)
            old = self.users.get(key)
            if old is not None:
                token = msg.get("token")
                if token is None or not hmac.compare_digest(token.encode(), old.token.encode()):
                    raise ProtocolError("name_taken", f"{name!r} is online", ref=ref)
            elif len(self.users) >= settings.max_clients:
                raise ProtocolError("server_full", "the server is full", ref=ref)
            self.commit()  # the backlog must hold every message accepted so far
            since = msg.get("since")
            if since is not None:
                source = self.history.after(since)
            else:
                source = iter(self.history.latest(settings.backlog) if settings.backlog else [])
            backlog, rest = self._burst(source)
        except ProtocolError as exc:
            if exc.ref is None:
                exc.ref = ref
            self._fatal(conn, exc)
            return
        except Exception as exc:  # the store could not be read
            self._fatal(conn, _unreadable("a login", exc, ref))
            return
        self._login(conn, key, name, old=old, backlog=backlog, rest=rest, ref=ref)

    def _login(
        self, conn: Connection, key: str, name: str, *, old: Connection | None,
        backlog: list[bytes], rest: Iterator[Stored] | None, ref: str | None,
    ) -> None:
        settings = self.settings
        if old is not None:  # takeover: same session, new connection
            name = old.name
            self._close(old, encode(m.bye("replaced")), None)
        conn.name = name
        conn.key = key
        conn.label = name
        conn.token = secrets.token_urlsafe(TOKEN_BYTES)
        self.users[key] = conn
        if self._roster is not None:
            self._roster = self._roster[:-1] + (b"," if len(self.users) > 1 else b"") + \
                _json_bytes(name) + b"]"
        frames = [self._welcome(conn, ref), *backlog]
        conn.backlog = rest
        self.turn.unicast(conn, Welcome(b"".join(frames)), len(frames))
        conn.state = USER
        conn.decoder.max_frame = settings.max_frame
        conn.tokens = float(settings.burst)
        conn.refill_at = self.now
        self.handshakes -= 1
        if old is None:
            self.turn.broadcast(encode(m.join(name, self.ts)))
        self.turn.skip_to_end(conn)
        self.audience.add(conn)
        self.timers.schedule(self.now + settings.heartbeat, conn, "heartbeat")

    def _burst(self, source: Iterator[Stored]) -> tuple[list[bytes], Iterator[Stored] | None]:
        """The next BACKLOG_BURST bytes of backlog frames, and the rest (None
        once ``source`` is exhausted). A long backlog goes out as the client
        reads it, not all at once into memory."""
        frames: list[bytes] = []
        size = 0
        for stored in source:
            frame = self._msg_frame(stored)
            frames.append(frame)
            size += len(frame)
            if size >= BACKLOG_BURST:
                return frames, source
        return frames, None

    def refill(self, conn: Connection) -> None:
        """The client read what it had: queue the next part of its backlog,
        and after the last part the live output held behind it."""
        source = conn.backlog
        if source is None:
            return
        try:
            frames, conn.backlog = self._burst(source)
        except Exception as exc:  # the store could not be read
            log.error("cannot read history for the backlog of %s: %s", conn.label, exc)
            conn.drop_output()
            self._close(conn, None, "error", stage=False)
            return
        if frames:
            conn.queue(Asked(b"".join(frames)))
            self.frames_out += len(frames)
        if conn.backlog is None:
            conn.release_held()

    def roster(self) -> bytes:
        """The JSON array of online names, in login order (welcome and ``users``).

        Kept encoded and extended in place at each login, so 10,000 logins do
        not each rebuild and re-encode a list of thousands of names.
        """
        if self._roster is None:
            self._roster = _json_bytes([c.name for c in self.users.values()])
        return self._roster

    def _welcome(self, conn: Connection, ref: str | None) -> bytes:
        settings = self.settings
        payload = encode_payload(m.welcome(
            name=conn.name, server=SERVER_NAME, seq=self.seq, oldest=self.history.oldest_seq,
            users=[], max_frame=settings.max_frame, max_text=settings.max_text,
            heartbeat=settings.heartbeat, token=conn.token, ref=ref,
        ))
        # Names and tokens cannot hold '"', so this member occurs exactly once.
        payload = payload.replace(b'"users":[]', b'"users":' + self.roster(), 1)
        return _header.pack(len(payload)) + payload

    def _heartbeat(self, conn: Connection, now: float) -> None:
        """Contract §7, re-armed lazily: frames only ever update ``last_rx``."""
        beat = self.settings.heartbeat
        if conn.ping_at and conn.last_rx < conn.ping_at:  # pinged, silent since
            if now >= conn.ping_at + beat:
                self._fatal(conn, ProtocolError(
                    "timeout", f"no frame for {2 * beat:g} seconds"))
                return
            self.timers.schedule(conn.ping_at + beat, conn, "heartbeat")
            return
        conn.ping_at = 0.0
        if now >= conn.last_rx + beat:
            conn.ping_at = now
            self.turn.unicast(conn, encode(m.ping(self.ts)))
            self.timers.schedule(now + beat, conn, "heartbeat")
        else:
            self.timers.schedule(conn.last_rx + beat, conn, "heartbeat")

    # --- chat requests (contract §4) ------------------------------------------

    def _say(self, conn: Connection, msg: Message, ref: str | None) -> None:
        ident = msg.get("id")
        if ident is not None:
            original = self._find(conn.key, ident, ref)
            if original is not None:
                self.turn.unicast(conn, self._msg_frame(original))
                return
        text = clean_text(msg["text"], self.settings.max_text, ref=ref)
        self._publish(conn, conn.key, conn.name, text, ident=ident, ref=ref, ok=None)

    def _find(self, key: str, ident: str, ref: str | None) -> Stored | None:
        """The retained message this user already had accepted with this id."""
        if (key, ident) in self.turn.pending_ids:
            self.commit()
        try:
            return self.history.find(key, ident)
        except Exception as exc:
            raise _unreadable("an idempotency check", exc, ref) from None

    def _pm(self, conn: Connection, msg: Message, ref: str | None) -> None:
        text = clean_text(msg["text"], self.settings.max_text, ref=ref)
        target = self.users.get(name_key(msg["to"]))
        if target is None:
            raise ProtocolError("no_such_user", f"{msg['to']!r} is not online", ref=ref)
        frame = encode(m.pm(conn.name, target.name, self.ts, text, msg.get("id")))
        self.turn.unicast(target, frame)
        if target is not conn:
            self.turn.unicast(conn, frame)
        self.msgs_in += 1

    def _who(self, conn: Connection, msg: Message, ref: str | None) -> None:
        payload = encode_payload(m.users([], ref)).replace(b"[]", self.roster(), 1)
        self.turn.unicast(conn, _header.pack(len(payload)) + payload)

    def _history(self, conn: Connection, msg: Message, ref: str | None) -> None:
        before = msg["before"]
        self.commit()
        try:
            found = self.history.before(before, msg.get("limit", HISTORY_LIMIT_DEFAULT))
        except Exception as exc:
            raise _unreadable("a history request", exc, ref) from None
        reply = m.history(before, [stored.as_member() for stored in found], ref)
        self.turn.unicast(conn, Asked(encode(reply)))

    def _ping(self, conn: Connection, msg: Message, ref: str | None) -> None:
        self.turn.unicast(conn, encode(m.pong(msg, ref)))

    def _pong(self, conn: Connection, msg: Message, ref: str | None) -> None:
        """Nothing to do: any frame proves the client alive (``last_rx``)."""

    def _bye(self, conn: Connection, msg: Message, ref: str | None) -> None:
        self._close(conn, encode(m.bye("quit")), "quit")

    # --- control requests (contract §8) -------------------------------------------

    def _status(self, conn: Connection, msg: Message, ref: str | None) -> None:
        reply = self.status()
        if ref is not None:
            reply["ref"] = ref
        self.turn.unicast(conn, encode(reply))

    def _kick(self, conn: Connection, msg: Message, ref: str | None) -> None:
        # The reason reaches the user as bye.message: the text rules keep it
        # printable and encodable for every client.
        reason = msg.get("reason")
        if reason is not None:
            reason = clean_text(reason, self.settings.max_text, ref=ref)
        target = self.users.get(name_key(msg["name"]))
        if target is None:
            raise ProtocolError("no_such_user", f"{msg['name']!r} is not online", ref=ref)
        self._close(target, encode(m.bye("kicked", reason)), "kicked")
        self.turn.unicast(conn, encode(m.ok(ref)))

    def _announce(self, conn: Connection, msg: Message, ref: str | None) -> None:
        text = clean_text(msg["text"], self.settings.max_text, ref=ref)
        self._publish(conn, ANNOUNCER, ANNOUNCER, text, ident=None, ref=ref,
                      ok=encode(m.ok(ref)))

    def _watch(self, conn: Connection, msg: Message, ref: str | None) -> None:
        self.turn.unicast(conn, encode(m.ok(ref)))
        if conn.state != WATCHER:
            conn.state = WATCHER
            self.turn.skip_to_end(conn)
            self.audience.add(conn)

    def _shutdown(self, conn: Connection, msg: Message, ref: str | None) -> None:
        self.turn.unicast(conn, encode(m.ok(ref)))
        self.stop_requested = True


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _fatal_message(exc: ProtocolError) -> Message:
    """The error frame of a fatal close: before login every error is fatal."""
    out = exc.to_message()
    out["fatal"] = True
    return out


def _unreadable(purpose: str, exc: Exception, ref: str | None) -> ProtocolError:
    """Log a failed history read and give the ``unavailable`` error that reports it."""
    log.error("cannot read history for %s: %s", purpose, exc)
    return ProtocolError(
        "unavailable", "the server cannot read its history; retry later", ref=ref,
        retry_after_ms=UNAVAILABLE_RETRY_MS,
    )
