"""The chat core: connections, sessions, dispatch, durable changes. Pure.

No sockets, no clock of its own: the loop calls :meth:`Core.begin_turn` with
the time, feeds received bytes with :meth:`Core.receive`, reports lost
connections, fired timers and finished password hashes, then calls
:meth:`Core.end_turn`, which commits the turn's changes to the store (group
commit) and only then moves the staged frames into the connections'
out-buffers. Tests and hypothesis drive it the same way, without sockets.

The requests live in modules named after what they hold: :mod:`chatd.login`
(hello, both versions), :mod:`chatd.room_requests`, :mod:`chatd.message_requests`
and :mod:`chatd.operators`. This module holds what they share: the state
changes (each one also records its store op and how to undo it, should the
turn's commit fail), the frames every session sees (presence, join/leave),
and closing.

Closing is two-phase: :meth:`Core.close` stages the final frame, takes the
connection out of the session tables (its name is free at once) and lists it
in :attr:`Core.closing`; the loop shuts the socket down once the frame is out.
"""

from __future__ import annotations

import json
import logging
import unicodedata
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from chatd import records
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
)
from chatd.hashworker import Hasher

if TYPE_CHECKING:
    from chatd.cluster.node import Cluster
from chatd.records import MEMBER, Op, RoomRecord, Stored
from chatd.replies import SERVER_NAME, UNAVAILABLE_RETRY_MS, fatal_message, not_fatal
from chatd.rooms import Person, Room
from chatd.settings import Settings
from chatd.store import Store
from chatd.throttle import GuessThrottle
from chatd.timers import Timers
from chatd.turn import Channel, Turn
from protocol import ProtocolError, encode, name_key
from protocol import messages as m
from protocol.limits import LOBBY, LOGIN_MAX_FRAME, PROTO_V2
from protocol.values import room_key, room_name_problem

log = logging.getLogger("chatd.core")

FRAMES_PER_TURN = 64  # requests handled per connection per turn (fairness)
BACKLOG_BURST = 256 * 1024  # backlog bytes queued at a time (see Core.burst)
HASH_COST_S = 0.05  # about what one password hash takes a worker here
#: Hash jobs waiting per worker beyond which a login or password change is
#: refused with ``unavailable``: at HASH_COST_S each, 100 are 5 s of waiting,
#: half the default handshake_timeout.
HASH_QUEUE_MAX = 100

Message = dict[str, Any]
Handler = Callable[["Core", Connection, Message, "str | None"], None]


class RoomExists(Exception):
    """Cluster mode: the room a request was about to make was made on another
    node a moment before; the request runs again, finding it."""

    def __init__(self, record: RoomRecord) -> None:
        super().__init__(record.key)
        self.record = record
Done = Callable[[Any], None]


class Core:
    """All chat state of one server; see the module docstring."""

    def __init__(self, settings: Settings, store: Store, hasher: Hasher, now: float,
                 wall_ms: int, *, cluster: Cluster | None = None) -> None:
        self.settings = settings
        self.store = store
        #: Cluster mode (chatd.cluster): the node's link to the others; then
        #: ``store`` is the cluster too.
        self.cluster = cluster
        #: Users online on other nodes: key -> (name, their room keys).
        self.remote_online: dict[str, tuple[str, list[str]]] = {}
        #: Logins whose name claim Redis answered: continued in the loop's turn.
        self.ready: list[tuple[Connection, Done, Any]] = []
        #: Cluster mode: room key -> (seq, sender's connection) of stored
        #: messages whose echo has not come back on the feed yet, in seq order
        #: (a room's script answers come in the order the scripts ran).
        self.echoes: dict[str, deque[tuple[int, Connection]]] = {}
        self.hasher = hasher
        self.throttle = GuessThrottle()
        self.started = now
        self.now = now
        self.ts = wall_ms
        self.people: dict[str, Person] = {}  # accounts, and guests while online
        self.rooms: dict[str, Room] = {}
        self.online: dict[str, Connection] = {}  # name key -> session
        #: Control-socket watchers. Not tagged: other cluster nodes tell their
        #: own watchers who came and went (chatd.cluster.replay).
        self.watch = Channel()
        self.lobby_online: dict[str, str] = {}  # key -> name of online lobby members
        self._roster: bytes | None = None  # see roster()
        self.conns: set[Connection] = set()
        self.clients = 0  # open chat connections, logged in or not
        self.handshakes = 0  # chat connections before their welcome
        self.timers: Timers[Connection] = Timers()
        self.turn = Turn()
        self.ops: list[Op] = []  # this turn's changes, committed at its end
        #: (room, sender, id) of this turn's messages not yet committed: an
        #: idempotent resend in the same turn finds them without a commit.
        self.pending_ids: dict[tuple[str, str, str], Stored] = {}
        self.undo: list[Callable[[], None]] = []
        self.jobs: dict[int, tuple[Connection, Done, Done | None]] = {}
        self._job = 0
        self.pending_input: set[Connection] = set()  # frames left in the decoder
        self.closing: list[Connection] = []  # marked this turn; the loop reaps them
        self.stop_requested = False
        self.stopping = False
        self.msgs_in = 0
        self.frames_out = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.tls_fingerprint: str | None = None  # set by the loop while TLS is on
        self._login_frame = min(LOGIN_MAX_FRAME, settings.max_frame)
        if cluster is not None:
            cluster.core = self
            self.turn.record = []
        self._load()
        from chatd import login, message_requests, operators, room_requests

        self._hello = login.hello
        self._v1: dict[str, Handler] = message_requests.V1
        self._v2: dict[str, Handler] = {**message_requests.V2, **room_requests.V2}
        self._control: dict[str, Handler] = operators.CONTROL

    def _load(self) -> None:
        """Rebuild the state from the store; create ``lobby`` and the default rooms."""
        snap = self.store.load()
        for account in snap.accounts:
            self.people[account.key] = Person(account.key, account.name, account=True,
                                              hash=account.hash)
        for record in snap.rooms:
            self.rooms[record.key] = Room(record, self.store.log(record.key),
                                          lobby=record.key == LOBBY)
        for room_k, person_k, role in snap.members:
            room, person = self.rooms.get(room_k), self.people.get(person_k)
            if room is not None and person is not None:
                room.members[person_k] = role
                person.rooms[room_k] = room
        for room_k, name_k in snap.bans:
            if room_k in self.rooms:
                self.rooms[room_k].bans.add(name_k)
        for room_k, person_k in snap.invites:
            if room_k in self.rooms:
                self.rooms[room_k].invites.add(person_k)
        for room_k, person_k, seq in snap.markers:
            if person_k in self.people:
                self.people[person_k].markers[room_k] = seq
        for name in (LOBBY, *self.settings.default_rooms):
            if room_key(name) not in self.rooms:
                self.create_room(name, records.PUBLIC, None, new=False)
        self.commit()
        if self.ops:  # pragma: no cover - commit() empties it or raises
            raise AssertionError("ops left after the first commit")

    @property
    def lobby(self) -> Room:
        return self.rooms[LOBBY]

    # --- the loop's interface ---------------------------------------------

    def begin_turn(self, now: float, wall_ms: int) -> None:
        self.now = now
        self.ts = wall_ms
        if self.cluster is not None:
            self.cluster.waited = 0.0

    def connect(self, kind: int, label: str = "", address: str = "") -> Connection:
        """A new connection. A chat connection must say hello in time."""
        if kind == CHAT:
            conn = Connection(CHAT, self._login_frame, self.now, label)
            conn.address = address
            self.clients += 1
            self.handshakes += 1
            self.conns.add(conn)
            if self.handshakes > self.settings.max_clients:
                # More half-open connections than sessions allowed: refuse early
                # (contract §3.2 allows server_full before hello).
                self.fatal(conn, ProtocolError("server_full", "too many connections"))
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
        the connection is listed in :attr:`pending_input` for the next turn. A
        hello is decoded alone (the frame limit changes after it), and nothing
        is decoded while a request of the connection waits on the hash worker.
        """
        self.bytes_in += len(data)
        if conn.state >= CLOSING:
            return
        budget = FRAMES_PER_TURN
        decoder = conn.decoder
        max_outbuf = self.settings.max_outbuf
        try:
            if conn.deferred is not None and not conn.busy:
                deferred, conn.deferred = conn.deferred, None
                budget -= len(deferred)
                if self._handle(conn, deferred):
                    if data:
                        decoder.feed(data, 0)  # only buffered
                    return
            while True:
                backlogged = conn.out_len + conn.held_len + conn.staged_bytes
                if conn.busy or backlogged > max_outbuf:
                    # Its replies wait (unread, or on the hash worker): leave its
                    # requests in the decoder rather than grow memory or reorder.
                    if data:
                        decoder.feed(data, 0)  # only buffered
                    if not conn.busy:
                        self.pending_input.add(conn)
                    return
                small = conn.state == HANDSHAKE or backlogged > max_outbuf // 2
                limit = 1 if small else budget
                try:
                    msgs = decoder.feed(data, limit)
                except ProtocolError as exc:
                    for msg in exc.decoded:
                        self._dispatch(conn, msg)
                        if conn.state >= CLOSING:
                            return
                    self.fatal(conn, exc)
                    return
                data = b""
                if self._handle(conn, msgs):
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
            # that client is cut off, everyone else carries on.
            log.exception("internal error handling input from %s; closing it", conn.label)
            self.close(conn, None, "error")

    def _handle(self, conn: Connection, msgs: list[Message]) -> bool:
        """Dispatch decoded requests in order; True if the connection must stop
        for now: it is closing, or a request waits on the hash worker (the
        requests after it wait in ``conn.deferred``, so replies keep their order)."""
        cluster = self.cluster
        for index, msg in enumerate(msgs):
            if cluster is not None and cluster.waited_enough():
                conn.deferred = msgs[index:]  # the turn waited on Redis long enough
                self.pending_input.add(conn)
                return True
            if conn.says and not self._pipelined(conn, msg):
                conn.busy = conn.gated = True  # until its messages are echoed
                conn.deferred = msgs[index:]
                return True
            self._dispatch(conn, msg)
            if conn.state >= CLOSING:
                self.pending_input.discard(conn)
                return True
            if conn.busy:
                rest = msgs[index + 1:]
                if rest:
                    conn.deferred = rest
                return True
        return False

    @staticmethod
    def _pipelined(conn: Connection, msg: Message) -> bool:
        """Whether a request may go while the connection's messages to
        ``say_room`` wait for their echo: only another message to that room."""
        if msg.get("type") != "say":
            return False
        if conn.proto != PROTO_V2:
            return conn.say_room == LOBBY
        room = msg.get("room")
        return isinstance(room, str) and room_key(room) == conn.say_room

    def _said(self, conn: Connection) -> None:
        """One of the connection's messages was answered (echo, error or the
        original): when none is left, its waiting requests go on."""
        conn.says -= 1
        if conn.says == 0 and conn.gated:
            conn.busy = conn.gated = False
            if conn.state < CLOSING:
                self.pending_input.add(conn)

    def echoed(self, room_key: str, upto: int | None = None,
               delivered: tuple[Room, Stored] | None = None) -> None:
        """Messages of the room up to seq ``upto`` (None: all) were delivered
        (``delivered``: the one just delivered, whose sender gets it even if
        it left the room meanwhile: it is the answer to its ``say``)."""
        waiting = self.echoes.get(room_key)
        while waiting and (upto is None or waiting[0][0] <= upto):
            seq, conn = waiting.popleft()
            if delivered is not None and seq == delivered[1].seq and conn.state == USER:
                room, stored = delivered
                v1 = conn.proto != PROTO_V2
                channel = room.chan1 if v1 else room.chan
                if channel is None or conn not in channel.conns:
                    self.turn.unicast(conn, self.msg_frame(room, stored, v1=v1, with_id=True))
            self._said(conn)

    def lost(self, conn: Connection) -> None:
        """The peer closed or broke the connection: the session ends without a
        final frame (what was already queued may still go out)."""
        if conn.state < CLOSING:
            self.close(conn, None, "lost", stage=False)

    def forget(self, conn: Connection) -> None:
        """The loop closed the socket: drop the last reference."""
        self.conns.discard(conn)
        self.pending_input.discard(conn)

    def run_timers(self, now: float) -> None:
        for conn, kind in self.timers.pop_due(now):
            if kind == "handshake":
                if conn.state == HANDSHAKE:
                    self.fatal(conn, ProtocolError("timeout", "login not finished in time"
                                                   if conn.busy else "no hello in time"))
            elif kind == "heartbeat" and conn.state == USER:
                self._heartbeat(conn, now)

    def next_deadline(self) -> float | None:
        return self.timers.next_deadline()

    def has_work(self) -> bool:
        """Whether the next turn must not wait for the network."""
        return bool(self.pending_input or self.turn.touched or self.turn.active or self.ready)

    def check_password(self, conn: Connection, key: str, password: str, record: str,
                       done: Done) -> None:
        """Verify a password in the worker, counted by the guessing throttle
        from the moment it starts (many connections from one address cannot
        run more checks at once than the throttle allows failures)."""
        address, throttle = conn.address, self.throttle
        throttle.begin(address, key, self.now)

        def settle(ok: Any) -> None:
            if ok is False:
                throttle.failed(address, key, self.now)
            else:
                throttle.passed(address, key, self.now)

        self.submit(conn, "verify", password, record, done, settle=settle)

    def hashed(self, results: list[tuple[int, Any]]) -> None:
        """Password work finished: continue the requests that waited on it."""
        for job, result in results:
            entry = self.jobs.pop(job, None)
            if entry is None:
                continue
            conn, done, settle = entry
            if settle is not None:
                settle(result)
            self._resume(conn, done, result)

    def _resume(self, conn: Connection, done: Done, result: Any) -> None:
        """Continue a request that waited (on the hash worker, on Redis)."""
        conn.busy = False
        if conn.state >= CLOSING:
            return
        try:
            done(result)
        except ProtocolError as exc:
            self.error(conn, exc)
        except Exception:
            log.exception("internal error finishing a request of %s; closing it",
                          conn.label)
            self.close(conn, None, "error")
        if conn.state < CLOSING and not conn.busy:
            self.pending_input.add(conn)  # its next requests waited

    def run_ready(self) -> None:
        """Continue the logins whose name claim came back from Redis."""
        ready, self.ready = self.ready, []
        for conn, done, result in ready:
            self._resume(conn, done, result)

    def claim(self, conn: Connection, key: str, name: str, token: str, *, given: str | None,
              done: Done) -> None:
        """Cluster mode: claim a name for a login; ``done`` continues it with
        Redis's answer (a claim that outlived its connection is given back)."""
        cluster = self.cluster
        assert cluster is not None
        conn.busy = True

        def answered(result: Any) -> None:
            if conn.state >= CLOSING:
                if isinstance(result, list) and result and result[0] == 1:
                    cluster.release(key, token)
                return
            if isinstance(result, list) and result[0] == 1:
                conn.key, conn.token = key, token  # given back if the login fails now
                # What this user did on another node a moment ago is here first.
                cluster.sync(lambda: self.ready.append((conn, done, result)))
            else:
                self.ready.append((conn, done, result))

        cluster.claim(key, name, token, given=given, done=answered)

    def online_elsewhere(self, conn: Connection, key: str, done: Done) -> None:
        """Cluster mode: ask Redis whether ``key`` is online on another node
        (this node may not have heard of a login there yet); ``done`` gets
        (node, session token, name), or None. The connection's requests wait
        meanwhile."""
        cluster = self.cluster
        assert cluster is not None
        conn.busy = True

        def answered(value: Any) -> None:
            holder = None
            if isinstance(value, str):
                holder = tuple(value.split("\t", 2))
                if holder[0] == cluster.node:  # it went offline here meanwhile
                    holder = None
            if conn.state < CLOSING:
                self.ready.append((conn, done, holder))

        cluster.look_up(key, answered)

    def submit(self, conn: Connection, op: str, password: str, record: str | None,
               done: Done, *, settle: Done | None = None) -> None:
        """Hand password work to the worker; ``done(result)`` runs when it is back
        (None: the worker failed), if the connection is still open; ``settle(result)``
        runs in any case. The connection's input waits meanwhile."""
        hasher = self.hasher
        waiting = hasher.pending() / hasher.workers()
        if waiting >= HASH_QUEUE_MAX:
            # A queue this long outlasts handshake_timeout: say so at once
            # rather than let the login wait to be timed out.
            raise ProtocolError(
                "unavailable", "the server is busy checking passwords; retry later",
                retry_after_ms=int(waiting * HASH_COST_S * 1000) + 1,
                fatal=conn.state == HANDSHAKE)
        self._job += 1
        self.jobs[self._job] = (conn, done, settle)
        conn.busy = True
        hasher.submit(self._job, op, password, record)

    def end_turn(self) -> list[Connection]:
        """Commit the turn's changes, then release every staged frame.

        Returns the connections given output.
        """
        self.commit()
        if self.cluster is not None:
            self.cluster.share(self.turn.take_record())
        frames, released = self.turn.release(UNAVAILABLE_RETRY_MS)
        self.frames_out += frames
        return released

    def presence_waiting(self) -> bool:
        """Whether presence frames wait for :meth:`flush_presence` (chatd.turn)."""
        return self.turn.lazy_waiting()

    def flush_presence(self) -> list[Connection]:
        """Queue every session's waiting presence (between turns); returns the
        connections given output."""
        frames, given = self.turn.flush_lazy()
        self.frames_out += frames
        return given

    def audience(self) -> int:
        """Sessions and watchers: what the presence delay scales with."""
        return len(self.online) + len(self.watch.conns)

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
            conn.push(encode(fatal_message(ProtocolError(
                "slow_consumer",
                f"more than {self.settings.max_outbuf} bytes of output unread",
            ))))
            self.frames_out += 1
        self.close(conn, None, "slow_consumer", stage=False)
        return not mid_frame

    def begin_shutdown(self) -> None:
        """Contract §9: every client gets ``bye`` shutdown; watchers see leaves."""
        if self.stopping:
            return
        self.stopping = True
        bye = encode(m.bye("shutdown"))
        users = list(self.online.values())
        for conn in users:
            person = conn.person
            # Other cluster nodes' sessions see these users go (here, all go).
            self.presence_shared(person, False, "shutdown", list(person.rooms),
                                 LOBBY in person.rooms)
            self.close(conn, bye, None)
        for conn in users:
            self.turn.broadcast(self.watch, encode(m.leave(conn.name, self.ts, "shutdown")))
        for conn in list(self.conns):
            if conn.state == HANDSHAKE:
                self.close(conn, bye, None)
        for conn in list(self.conns):
            if conn.state in (OPERATOR, WATCHER):
                self.close(conn, None, None)

    def status(self) -> Message:
        status: Message = {
            "type": "status",
            "server": SERVER_NAME,
            "uptime_s": round(self.now - self.started, 3),
            "clients": self.clients,
            "users": [c.name for c in self.online.values()],
            "seq": self.lobby.seq,
            "msgs_in": self.msgs_in,
            "frames_out": self.frames_out,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "rooms": len(self.rooms),
            "accounts": sum(1 for p in self.people.values() if p.account),
            "watchers": len(self.watch.conns),
            "handshakes": self.handshakes,
        }
        if self.tls_fingerprint is not None:  # contract §20: what clients pin
            status["tls_fingerprint"] = self.tls_fingerprint
        if self.cluster is not None:
            status["cluster"] = self.cluster.status()
            status["users"] += [name for name, _ in self.remote_online.values()]
        return status

    # --- store ----------------------------------------------------------------

    def change(self, op: Op | None, undo: Callable[[], None]) -> None:
        """Record a durable change made in memory: its store op (None for a
        guest's, which is not stored) and how to take it back."""
        if op is not None:
            self.ops.append(op)
        self.undo.append(undo)

    def commit(self) -> None:
        """Group commit: store this turn's changes, all or nothing.

        Also called before anything reads the store in the middle of a turn (a
        backlog, a history page, a search, an edit), so reads see every change
        accepted before them. If the store refuses, every change is undone in
        memory and its frames are revoked (chatd.turn).
        """
        ops, undo = self.ops, self.undo
        self.ops, self.undo = [], []
        self.pending_ids = {}
        durable, outcomes = self.turn.take_durable()
        if not ops:
            return
        try:
            if self.cluster is not None:
                self.cluster.commit(ops, self.turn.take_record())
            else:
                self.store.commit(ops)
        except Exception as exc:  # StoreError, or a bug in a store: same answer
            log.error("could not store %d change(s), refusing them: %s", len(ops), exc)
            for step in reversed(undo):
                step()
            first: dict[str, int] = {}  # each room's seq goes back to before the turn
            for op in ops:
                if type(op) is records.AddMessage:
                    first.setdefault(op.room, op.msg.seq)
            for key, seq in first.items():
                room = self.rooms.get(key)
                if room is not None:
                    room.seq = seq - 1
            self.msgs_in -= sum(1 for op in ops if type(op) is records.AddMessage)
            self._roster = None
            Turn.refuse(durable, outcomes)

    # --- dispatch ----------------------------------------------------------------

    def _dispatch(self, conn: Connection, msg: Message) -> None:
        conn.last_rx = self.now
        state = conn.state
        if state == USER:
            self._request(conn, msg)
        elif state == HANDSHAKE:
            self._hello(self, conn, msg)
        else:
            self._operator(conn, msg)

    def _request(self, conn: Connection, msg: Message) -> None:
        kind = msg["type"]
        settings = self.settings
        if settings.rate and kind not in ("pong", "bye"):
            wait = conn.take_token(self.now, settings.rate, settings.burst)
            if wait:
                self.error(conn, ProtocolError(
                    "rate_limited", f"more than {settings.rate:g} requests per second",
                    ref=m.request_ref(msg), retry_after_ms=wait,
                ))
                return
        try:
            if kind == "hello":  # whatever its members: the session exists
                raise ProtocolError("already_logged_in", "this connection is logged in",
                                    ref=m.request_ref(msg))
            if conn.proto == PROTO_V2:
                ref = m.validate(msg, m.V2_REQUESTS)
                handler = self._v2[kind]
            else:
                ref = m.validate(msg, m.CHAT_REQUESTS)
                handler = self._v1[kind]
            try:
                handler(self, conn, msg, ref)
            except RoomExists as exists:  # made on another node: join it as it is
                self.adopt_room(exists.record)
                handler(self, conn, msg, ref)
        except ProtocolError as exc:
            if exc.ref is None and "id" in msg:
                exc.ref = m.request_ref(msg)
            self.error(conn, exc)

    def _operator(self, conn: Connection, msg: Message) -> None:
        try:
            ref = m.validate(msg, m.CONTROL_REQUESTS)
            self._control[msg["type"]](self, conn, msg, ref)
        except ProtocolError as exc:
            if exc.ref is None and "id" in msg:
                exc.ref = m.request_ref(msg)
            # On the control socket only framing errors are fatal (§18).
            self.reply(conn, not_fatal(exc))

    def reply(self, conn: Connection, message: Message) -> None:
        self.turn.unicast(conn, encode(message))

    def error(self, conn: Connection, exc: ProtocolError) -> None:
        if exc.fatal:
            self.fatal(conn, exc)
        else:
            self.turn.unicast(conn, encode(exc.to_message()))

    def fatal(self, conn: Connection, exc: ProtocolError) -> None:
        """The error frame is the connection's last; others see ``leave`` error."""
        reason = "timeout" if exc.code == "timeout" else "error"
        self.close(conn, encode(fatal_message(exc)), reason)

    # --- rooms: lookups shared by the requests ----------------------------------

    def find_room(self, name: str, ref: str | None) -> Room:
        """The room a request names: ``bad_room``, then ``no_such_room``."""
        problem = room_name_problem(name)
        if problem is not None:
            raise ProtocolError("bad_room", problem, ref=ref)
        room = self.rooms.get(room_key(name))
        if room is None:
            raise ProtocolError("no_such_room", f"there is no room {name!r}", ref=ref)
        return room

    def member_room(self, person: Person, name: str, ref: str | None, *,
                    readable: bool = False) -> Room:
        """A room the person must be a member of (``not_member``); with
        ``readable``, a public room is open to everyone logged in."""
        room = self.find_room(name, ref)
        if person.key not in room.members and not (readable and room.is_public):
            raise ProtocolError("not_member", f"you are not in {room.name!r}", ref=ref)
        return room

    def account(self, name: str, ref: str | None) -> Person:
        """The account of this name, or ``no_such_user``."""
        person = self.people.get(name_key(name))
        if person is None or not person.account:
            raise ProtocolError("no_such_user", f"{name!r} is not an account", ref=ref)
        return person

    def channels(self, conn: Connection) -> Iterator[Channel]:
        """Every channel a logged-in session is subscribed to."""
        person: Person = conn.person
        if conn.proto == PROTO_V2:
            for room in person.rooms.values():
                yield room.chan
        else:
            chan1 = self.lobby.chan1
            assert chan1 is not None
            yield chan1

    # --- durable changes -----------------------------------------------------------

    def create_room(self, name: str, kind: str, owner: Person | None, *,
                    new: bool = True) -> Room:
        """A new room, shown as named at creation in NFC (§11). ``new``: made
        by a request, not at start; in a cluster another node may have made
        it a moment ago: then :class:`RoomExists` (see Core._request)."""
        name = unicodedata.normalize("NFC", name)
        key = room_key(name)
        record = RoomRecord(key, name, kind, "", owner.key if owner is not None else None)
        if new and self.cluster is not None:
            existing = self.cluster.reserve_room(record)
            if existing is not None:
                raise RoomExists(existing)
        self.ops.append(records.PutRoom(record))
        # The store serves a log for a room it has not stored yet: empty, its
        # seq continuing a removed room of the same name.
        room = Room(record, self.store.log(key), lobby=key == LOBBY)
        self.rooms[key] = room
        self.undo.append(lambda: self._forget_room(key))
        return room

    def adopt_room(self, record: RoomRecord) -> Room:
        """A room another node made (as it reserved it in Redis), known here
        before its commit comes on the feed."""
        room = Room(record, self.store.log(record.key), lobby=record.key == LOBBY)
        self.rooms[record.key] = room
        if room.is_dm:  # its two members are known: a dm request finds itself in it
            for key in set(room.dm_keys()):
                person = self.people.get(key)
                if person is None:
                    continue
                room.members[key] = MEMBER
                person.rooms[room.key] = room
                conn = person.conn
                if conn is not None and conn.proto == PROTO_V2 and conn.state == USER:
                    self.turn.subscribe(conn, room.chan)
        return room

    def _forget_room(self, key: str) -> None:
        del self.rooms[key]

    def enter(self, room: Room, person: Person, role: str, *, lazy: bool = False) -> None:
        """``person`` becomes a member: every other online member gets ``join``
        (``lazy`` at a login: it may wait for other presence, see chatd.turn)."""
        self.turn.broadcast(room.chan, encode(m.room_event(
            "join", room.name, self.ts, name=person.name)), durable=True, skip=person.conn,
            lazy=lazy)
        self.add_member(room, person, role)

    def add_member(self, room: Room, person: Person, role: str) -> None:
        """Make ``person`` a member; its v2 session (if any) starts getting the room."""
        room.members[person.key] = role
        person.rooms[room.key] = room
        conn = person.conn
        if conn is not None and conn.proto == PROTO_V2:
            self.turn.subscribe(conn, room.chan)
        if room.key == LOBBY and conn is not None:
            self.lobby_online_set(person, True)

        def undo() -> None:
            room.members.pop(person.key, None)
            person.rooms.pop(room.key, None)
            if conn is not None:
                self.turn.unsubscribe(conn, room.chan)

        self._member_change(person, records.PutMember(room.key, person.key, role), undo)

    def remove_member(self, room: Room, person: Person) -> None:
        role = room.members.pop(person.key)
        person.rooms.pop(room.key, None)
        conn = person.conn
        if conn is not None:  # (lobby's version 1 sessions are told by the caller)
            self.turn.unsubscribe(conn, room.chan)

        def undo() -> None:
            room.members[person.key] = role
            person.rooms[room.key] = room
            if conn is not None and conn.proto == PROTO_V2 and conn.state == USER:
                self.turn.subscribe(conn, room.chan)

        self._member_change(person, records.RemoveMember(room.key, person.key), undo)

    def _member_change(self, person: Person, op: Op, undo: Callable[[], None]) -> None:
        """A guest's membership is not stored; other nodes still learn it."""
        if person.account:
            self.change(op, undo)
            return
        self.change(None, undo)
        record = self.turn.record
        if record is not None:
            record.append(["g", op])

    def set_role(self, room: Room, person: Person, role: str) -> None:
        old = room.members[person.key]
        room.members[person.key] = role
        self.change(records.PutMember(room.key, person.key, role),
                    lambda: room.members.__setitem__(person.key, old))

    def save_room(self, room: Room, **changes: Any) -> None:
        """Change a room's topic or owner."""
        old = {name: getattr(room, name) for name in changes}
        for name, value in changes.items():
            setattr(room, name, value)

        def undo() -> None:
            for name, value in old.items():
                setattr(room, name, value)

        self.change(records.PutRoom(room.record()), undo)

    def set_ban(self, room: Room, key: str, banned: bool) -> None:
        if (key in room.bans) == banned:
            return
        if banned:
            room.bans.add(key)
            self.change(records.PutBan(room.key, key), lambda: room.bans.discard(key))
        else:
            room.bans.discard(key)
            self.change(records.RemoveBan(room.key, key), lambda: room.bans.add(key))

    def set_invite(self, room: Room, key: str, invited: bool) -> None:
        if (key in room.invites) == invited:
            return
        if invited:
            room.invites.add(key)
            self.change(records.PutInvite(room.key, key), lambda: room.invites.discard(key))
        else:
            room.invites.discard(key)
            self.change(records.RemoveInvite(room.key, key), lambda: room.invites.add(key))

    def set_marker(self, room: Room, person: Person, seq: int) -> None:
        old = person.markers.get(room.key)
        person.markers[room.key] = seq

        def undo() -> None:
            if old is None:
                person.markers.pop(room.key, None)
            else:
                person.markers[room.key] = old

        self.change(records.PutMarker(room.key, person.key, seq) if person.account else None,
                    undo)

    def remove_room(self, room: Room) -> None:
        """Delete a room and its history; each online member gets ``part``
        removed naming itself. Undone in full if the commit fails."""
        gone: list[tuple[Person, str]] = []
        for key, role in list(room.members.items()):
            person = self.people.get(key)
            if person is None:
                continue
            gone.append((person, role))
            del room.members[key]
            person.rooms.pop(room.key, None)
            conn = person.conn
            if conn is not None:
                self.turn.unsubscribe(conn, room.chan)
                if conn.proto == PROTO_V2:
                    self.turn.outcome(conn, encode(m.room_event(
                        "part", room.name, self.ts, name=person.name, reason="removed")),
                        None, silent=True)
        del self.rooms[room.key]
        markers = {}  # members' and those of people who parted earlier: the store drops all
        for person in self.people.values():
            marker = person.markers.pop(room.key, None)
            if marker is not None:
                markers[person] = marker

        def undo() -> None:
            self.rooms[room.key] = room
            for person, marker in markers.items():
                person.markers[room.key] = marker
            for person, role in gone:
                room.members[person.key] = role
                person.rooms[room.key] = room
                conn = person.conn
                if conn is not None and conn.proto == PROTO_V2 and conn.state == USER:
                    self.turn.subscribe(conn, room.chan)

        self.change(records.RemoveRoom(room.key), undo)

    def changed(self, conn: Connection, ref: str | None, room: Room, kind: str,
                **members: Any) -> None:
        """A durable change done for a request: its ``ok``, then the room
        event every online member gets (both revoked if the commit fails)."""
        self.turn.outcome(conn, encode(m.ok(ref)), ref)
        self.turn.broadcast(room.chan, encode(m.room_event(kind, room.name, self.ts, **members)),
                            durable=True)

    # --- messages -------------------------------------------------------------------

    def publish(self, room: Room, sender: str, sender_key: str, text: str, *,
                ident: str | None, conn: Connection | None, ok: bytes, ref: str | None) -> None:
        """Accept a message: the next seq, its store op, and its ``msg`` for every
        member, version 1 sessions of lobby and watchers (revocable until the
        commit); the requester gets ``ok`` (b"": its echo is the answer).

        In cluster mode the seq comes from Redis and the message is delivered
        (to everyone, the sender too) when it comes back on the feed: see
        :meth:`delivered`."""
        if self.cluster is not None:
            self._publish_cluster(room, sender, sender_key, text, ident=ident, conn=conn, ok=ok,
                                  ref=ref)
            return
        seq = room.seq = room.seq + 1  # taken back by commit() if the store refuses
        ts = self.ts
        stored = Stored(seq, ts, sender, text, ident)
        self.ops.append(records.AddMessage(room.key, stored))
        if ident is not None:
            self.pending_ids[room.key, sender_key, ident] = stored
        turn = self.turn
        if conn is not None:  # the answer comes before the events it causes (§13)
            turn.outcome(conn, ok, ref)
        self._fan_out(room, stored, durable=True)
        self.msgs_in += 1

    def _fan_out(self, room: Room, stored: Stored, *, durable: bool) -> None:
        """A new message's ``msg`` to every member, lobby's version 1 sessions
        and the watchers (each shape encoded only if someone is there)."""
        turn = self.turn
        seq, ts, sender, text, ident = (stored.seq, stored.ts, stored.sender, stored.text,
                                        stored.ident)
        chan1 = room.chan1
        if chan1 is not None and chan1.conns:
            turn.broadcast(chan1, encode(m.msg(seq, ts, sender, text, ident)), durable=durable)
        watch = self.watch
        if room.chan.conns or watch.conns:
            frame = encode(m.room_msg(room.name, seq, ts, sender, text, ident=ident))
            if watch.conns:
                turn.broadcast(watch, frame, durable=durable)
            turn.broadcast(room.chan, frame, durable=durable)

    def _publish_cluster(self, room: Room, sender: str, sender_key: str, text: str, *,
                         ident: str | None, conn: Connection | None, ok: bytes,
                         ref: str | None) -> None:
        cluster = self.cluster
        assert cluster is not None

        if conn is not None:
            conn.says += 1
            conn.say_room = room.key

        def answered(reply: Any) -> None:
            if conn is None:
                return
            if isinstance(reply, list) and reply[0] == 1:
                if room.seq >= reply[1] or self.rooms.get(room.key) is not room:
                    self._said(conn)  # the feed was first, or no echo will come
                else:
                    self.echoes.setdefault(room.key, deque()).append((reply[1], conn))
            else:
                self._said(conn)
            if conn.state >= CLOSING:
                return
            if str(reply).startswith("GONE"):  # removed on another node meanwhile
                self.error(conn, ProtocolError("no_such_room",
                                               f"there is no room {room.name!r}", ref=ref))
            elif not isinstance(reply, list):  # Redis refused, or the link broke
                log.error("message to %s not stored: %s", room.name, reply)
                self.error(conn, ProtocolError(
                    "unavailable", "the message could not be stored; retry later", ref=ref,
                    retry_after_ms=UNAVAILABLE_RETRY_MS))
            elif reply[0] == 1:
                self.msgs_in += 1
                if ok:
                    self.turn.unicast(conn, ok)
            else:  # the id was used before, on some node: that message again
                original = cluster.stored(room, reply)
                if original is not None:
                    v1 = conn.proto != PROTO_V2
                    self.turn.unicast(conn, self.msg_frame(room, original, v1=v1, with_id=True))

        cluster.say(room, sender, sender_key, text, ident=ident, done=answered)

    def delivered(self, room_key: str, stored: Stored) -> None:
        """Cluster mode: a message came on the feed (the cache has it)."""
        room = self.rooms.get(room_key)
        if room is None:
            return
        room.seq = stored.seq
        turn = self.turn
        record, turn.record = turn.record, None
        self._fan_out(room, stored, durable=False)
        turn.record = record
        if room_key in self.echoes:
            self.echoed(room_key, stored.seq, (room, stored))

    def msg_frame(self, room: Room, stored: Stored, *, v1: bool, with_id: bool = False) -> bytes:
        """A retained message as a ``msg`` frame (a tombstone as one, §14, §10)."""
        out: Message = {"type": "msg"}
        out.update(m.entry(stored.seq, stored.ts, stored.sender, stored.text,
                           ident=stored.ident, edited=stored.edited, deleted=stored.deleted,
                           room=None if v1 else room.name, v1=v1, with_id=with_id))
        return encode(out)

    def burst(self, room: Room, source: Iterator[Stored], v1: bool
              ) -> tuple[list[bytes], Iterator[bytes] | None]:
        """Backlog frames up to BACKLOG_BURST bytes, and the rest (None once
        ``source`` is exhausted): a long backlog goes out as the client reads it."""
        frames: list[bytes] = []
        size = 0
        for stored in source:
            frame = self.msg_frame(room, stored, v1=v1)
            frames.append(frame)
            size += len(frame)
            if size >= BACKLOG_BURST:
                return frames, (self.msg_frame(room, s, v1=v1) for s in source)
        return frames, None

    def refill(self, conn: Connection) -> None:
        """The client read what it had: queue the next part of its backlog, and
        after the last part the live output held behind it."""
        source = conn.backlog
        if source is None:
            return
        frames: list[bytes] = []
        size = 0
        try:
            for frame in source:
                frames.append(frame)
                size += len(frame)
                if size >= BACKLOG_BURST:
                    break
            else:
                conn.backlog = None
        except Exception as exc:  # the store could not be read
            log.error("cannot read history for the backlog of %s: %s", conn.label, exc)
            conn.drop_output()
            self.close(conn, None, "error", stage=False)
            return
        if frames:
            conn.queue(Asked(b"".join(frames)))
            self.frames_out += len(frames)
        if conn.backlog is None:
            conn.release_held()

    # --- who is online ---------------------------------------------------------------

    def lobby_online_set(self, person: Person, online: bool) -> None:
        """Keep the roster of online lobby members (what version 1 sees as users)."""
        if online:
            if person.key not in self.lobby_online:
                self.lobby_online[person.key] = person.name
                if self._roster is not None:
                    self._roster = self._roster[:-1] + (
                        b"," if len(self.lobby_online) > 1 else b"") + _json(person.name) + b"]"
                chan1 = self.lobby.chan1
                assert chan1 is not None
                turn = self.turn
                record, turn.record = turn.record, None  # other nodes: presence_shared
                turn.broadcast(chan1, encode(m.join(person.name, self.ts)),
                               skip=person.conn, lazy=True)
                turn.record = record
        elif self.lobby_online.pop(person.key, None) is not None:
            self._roster = None

    def lobby_leave(self, person: Person, reason: str) -> None:
        """An online lobby member is gone for version 1 sessions."""
        if person.key in self.lobby_online:
            self.lobby_online_set(person, False)
            chan1 = self.lobby.chan1
            assert chan1 is not None
            turn = self.turn
            record, turn.record = turn.record, None  # other nodes: presence_shared
            turn.broadcast(chan1, encode(m.leave(person.name, self.ts, reason)), lazy=True)
            turn.record = record

    def roster(self) -> bytes:
        """The JSON array of online lobby members, in login order (version 1
        welcome and ``users``), kept encoded and extended in place at each login."""
        if self._roster is None:
            self._roster = _json(list(self.lobby_online.values()))
        return self._roster

    def presence(self, person: Person, online: bool, reason: str | None = None) -> None:
        """``presence`` once to every version 2 session sharing a room with ``person``
        (§15); its own session is not subscribed at this point."""
        rooms = list(person.rooms.values())
        self.presence_to(rooms, person, online, reason)
        self.presence_shared(person, online, reason, [room.key for room in rooms],
                             LOBBY in person.rooms)

    def elsewhere(self, key: str, *items: Any, known: bool = True) -> bool:
        """Cluster mode: whether ``key`` is online on another node (as far as
        this node heard; with ``known`` False, whether it may be); if so,
        ``items`` go to that node on the feed (see chatd.cluster.replay)."""
        record = self.turn.record
        if record is None or (known and key not in self.remote_online):
            return False
        record.append(list(items))
        return True

    def presence_shared(self, person: Person, online: bool, reason: str | None,
                        rooms: list[str], in_lobby: bool) -> None:
        """Cluster mode: the other nodes tell their sessions too (chatd.cluster.replay)."""
        record = self.turn.record
        if record is not None:
            record.append(["p", person.key, person.name, online, reason, rooms, in_lobby])

    def presence_to(self, rooms: list[Room], person: Person, online: bool,
                    reason: str | None) -> None:
        """``presence`` to this node's sessions in ``rooms``."""
        frame = encode(m.presence(person.name, online, self.ts, reason))
        turn = self.turn
        record, turn.record = turn.record, None
        if len(rooms) == 1:
            turn.broadcast(rooms[0].chan, frame, skip=person.conn, lazy=True)
        elif rooms:
            seen: set[Connection] = set()
            for room in rooms:
                seen.update(room.chan.conns)
            if person.conn is not None:
                seen.discard(person.conn)
            for conn in seen:
                turn.lazy_unicast(conn, frame)
        turn.record = record

    # --- closing -----------------------------------------------------------------------

    def close(self, conn: Connection, final: bytes | None, reason: str | None,
              stage: bool = True, *, takeover: bool = False, moved: bool = False) -> None:
        """Phase one of a close: stage the final frame, free the name at once,
        tell the others (``reason`` None: nobody is told; ``takeover``: the
        session goes on on another connection; ``moved``: on another cluster
        node, so its person stays as it is, with its rooms)."""
        if conn.state >= CLOSING:
            return
        state = conn.state
        if state == USER:
            for channel in list(self.channels(conn)):
                self.turn.unsubscribe(conn, channel)
        elif state == WATCHER:
            self.turn.unsubscribe(conn, self.watch)
        if stage and final is not None:
            self.turn.unicast(conn, final)
        self.pending_input.discard(conn)
        conn.state = CLOSING
        if conn.busy:  # its password work is of no use now
            conn.busy = False
            for job in [job for job, entry in self.jobs.items() if entry[0] is conn]:
                self.hasher.cancel(job)
                _, _, settle = self.jobs.pop(job)
                if settle is not None:
                    settle(None)
        if conn.kind == CHAT:
            self.clients -= 1
        if state == USER:
            self._end_session(conn, reason, takeover, moved)
        elif state == HANDSHAKE:
            self.handshakes -= 1
            if self.cluster is not None and conn.token:  # it had claimed its name
                self.cluster.release(conn.key, conn.token)
        self.closing.append(conn)

    def _end_session(self, conn: Connection, reason: str | None, takeover: bool,
                     moved: bool) -> None:
        person: Person = conn.person
        del self.online[person.key]
        if takeover:
            return
        if moved:
            person.conn = None
            self.remote_online[person.key] = (person.name, list(person.rooms))
            return
        if self.cluster is not None:
            self.cluster.release(person.key, conn.token)
        person.conn = None
        if reason is not None:
            self.lobby_leave(person, reason)
            self.presence(person, False, reason)
            self.turn.broadcast(self.watch, encode(m.leave(person.name, self.ts, reason)),
                                lazy=True)
        else:
            self.lobby_online.pop(person.key, None)
            self._roster = None
        if not person.account:  # a guest's memberships end silently with it
            for room in list(person.rooms.values()):
                room.members.pop(person.key, None)
            person.rooms.clear()
            self.people.pop(person.key, None)

    def _heartbeat(self, conn: Connection, now: float) -> None:
        """Contract §7, re-armed lazily: frames only ever update ``last_rx``."""
        beat = self.settings.heartbeat
        if conn.ping_at and conn.last_rx < conn.ping_at:  # pinged, silent since
            if now >= conn.ping_at + beat:
                self.fatal(conn, ProtocolError(
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

    def role_ok(self, room: Room, person: Person) -> bool:
        """Owner or op of the room."""
        return room.role_of(person.key) in (records.OWNER, records.OP)

    def members_list(self, room: Room) -> list[Message]:
        """``{name, role, online}`` of every member, sorted by casefolded name."""
        out = []
        for key in sorted(room.members, key=lambda k: self._display(k).casefold()):
            person = self.people.get(key)
            out.append({"name": self._display(key), "role": room.role_of(key),
                        "online": person is not None and (person.conn is not None
                                                          or key in self.remote_online)})
        return out

    def _display(self, key: str) -> str:
        person = self.people.get(key)
        return person.name if person is not None else key

    def new_role(self, room: Room, person: Person) -> str:
        return records.OWNER if room.owner == person.key else MEMBER


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
