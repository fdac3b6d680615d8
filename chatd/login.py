"""Logging in, both versions (contract §3.2, §10, §12): ``hello`` to ``welcome``.

The checks run in the contract's order. A password check or a new account's
hash runs in the hash worker (chatd.hashworker): the connection waits (its
later frames stay in its decoder) and the login goes on in a later turn, where
the checks that depend on who is online (``name_taken``, ``server_full``) are
made, so they see the server as it is then.
"""

from __future__ import annotations

import hmac
import secrets
from typing import TYPE_CHECKING, Any

from chatd.connection import USER, BacklogHead, Connection
from chatd.passwords import needs_rehash
from chatd.records import MEMBER, AccountRecord, PutAccount
from chatd.replies import SERVER_NAME, unreadable
from chatd.rooms import Person, Room
from protocol import ProtocolError, encode, encode_payload, name_key, normalize_name
from protocol import messages as m
from protocol.framing import frame
from protocol.limits import LOBBY, MAX_INT, PROTO_V2, PROTO_VERSION, PROTO_VERSIONS
from protocol.values import new_password, room_key, room_name_problem

if TYPE_CHECKING:
    from chatd.core import Core

TOKEN_BYTES = 24  # session token: 192 random bits

Message = dict[str, Any]


def hello(core: Core, conn: Connection, msg: Message) -> None:
    """Contract §3.2 and §12: welcome, or a fatal error in the given order."""
    ref = m.request_ref(msg)
    try:
        _hello(core, conn, msg, ref)
    except ProtocolError as exc:
        if exc.ref is None:
            exc.ref = ref
        core.fatal(conn, exc)


def _hello(core: Core, conn: Connection, msg: Message, ref: str | None) -> None:
    settings = core.settings
    if msg["type"] != "hello":
        raise ProtocolError("not_logged_in", "the first frame must be hello")
    m.validate(msg, {"hello": m.HELLO_COMMON})
    proto = msg["proto"]
    if proto == PROTO_VERSION:
        m.validate(msg, m.CHAT_REQUESTS)
    elif proto == PROTO_V2:
        m.validate(msg, m.V2_REQUESTS)
    else:
        raise ProtocolError("unsupported_proto", f"this server speaks proto {PROTO_VERSIONS}")
    name = normalize_name(msg["name"])
    resume: dict[str, int] = {}
    if proto == PROTO_V2:
        for room, seq in msg.get("resume", {}).items():
            if room_name_problem(room) is not None or type(seq) is not int \
                    or not 0 <= seq <= MAX_INT:
                raise ProtocolError("bad_request", f"hello.resume has a bad entry {room!r}")
            resume[room_key(room)] = seq
    key = name_key(name)
    person = core.people.get(key)
    account = person is not None and person.account
    password = msg.get("password")

    def proceed(person: Person | None) -> None:
        _admit(core, conn, msg, ref, key=key, name=name, person=person, resume=resume)

    if proto == PROTO_V2 and msg.get("register") is True:
        if settings.registration == "closed":
            raise ProtocolError("registration_closed", "registration is closed")
        if settings.registration == "code" and not _same(msg.get("code"), settings.join_code):
            raise ProtocolError("auth_failed", "a join code is needed to register")
        if account:
            raise ProtocolError("account_exists", f"{name!r} is an account")
        password = new_password(password)
        if key in core.online or key in core.remote_online:
            raise ProtocolError("name_taken", f"{name!r} is online")
        if len(core.online) >= settings.max_clients:
            raise ProtocolError("server_full", "the server is full")

        def registered(record: Any) -> None:
            if not isinstance(record, str):
                raise _busy()
            if key in core.people and core.people[key].account:
                raise ProtocolError("account_exists", f"{name!r} is an account")
            if key in core.online or key in core.remote_online:
                raise ProtocolError("name_taken", f"{name!r} is online")
            reserve_account(core, name, record, ref)
            person = create_account(core, name, record)
            core.commit()  # the welcome says ``account``: it must be stored first
            if core.people.get(key) is not person:
                raise _busy()
            proceed(person)

        core.submit(conn, "hash", password, None, _fatal_on_error(core, conn, ref, registered))
        return
    if account:
        assert person is not None
        wait = core.throttle.blocked(conn.address, key, core.now)
        if wait:
            raise ProtocolError("auth_failed", "too many failed passwords; wait",
                                retry_after_ms=wait)
        if not isinstance(password, str):
            raise ProtocolError("auth_failed", f"{name!r} is an account: its password is needed")
        account_person = person

        def verified(ok: Any) -> None:
            if ok is None:
                raise _busy()
            if not ok:
                raise ProtocolError("auth_failed", "wrong password")
            if core.people.get(key) is not account_person:  # removed meanwhile
                raise ProtocolError("auth_failed", f"{name!r} is no longer an account")
            if needs_rehash(account_person.hash):  # parameters raised since it was made
                core.submit(conn, "hash", password, None,
                            _fatal_on_error(core, conn, ref, rehashed))
                return
            proceed(account_person)

        def rehashed(record: Any) -> None:
            if core.people.get(key) is not account_person:  # removed meanwhile
                raise ProtocolError("auth_failed", f"{name!r} is no longer an account")
            if isinstance(record, str):
                set_password(core, account_person, record)
            proceed(account_person)

        core.check_password(conn, key, password, person.hash,
                            _fatal_on_error(core, conn, ref, verified))
        return
    if not settings.guests:
        raise ProtocolError("auth_failed", "only accounts may log in here")
    if settings.password is not None and not _same(password, settings.password):
        raise ProtocolError("auth_failed", "wrong or missing password")
    proceed(None)


def _busy() -> ProtocolError:
    return ProtocolError("unavailable", "the server cannot check passwords now; retry later",
                         retry_after_ms=1000, fatal=True)


def _fatal_on_error(core: Core, conn: Connection, ref: str | None, step: Any) -> Any:
    """A continuation whose errors are fatal (before login every error is)."""

    def run(result: Any) -> None:
        try:
            step(result)
        except ProtocolError as exc:
            if exc.ref is None:
                exc.ref = ref
            core.fatal(conn, exc)

    return run


def _same(given: object, expected: str | None) -> bool:
    return (isinstance(given, str) and expected is not None
            and hmac.compare_digest(given.encode(), expected.encode()))


def reserve_account(core: Core, name: str, record: str, ref: str | None) -> None:
    """Cluster mode: ``account_exists`` if another node made this account a
    moment ago (before this node heard of it); else it is this node's to make."""
    if core.cluster is not None and core.cluster.reserve_account(
            AccountRecord(name_key(name), name, record)) is not None:
        raise ProtocolError("account_exists", f"{name!r} is an account", ref=ref)


def create_account(core: Core, name: str, record: str) -> Person:
    """A new account: put in ``default_rooms`` at its creation (§10)."""
    key = name_key(name)
    person = Person(key, name, account=True, hash=record)
    old = core.people.get(key)
    core.people[key] = person

    def undo() -> None:
        if old is None:
            core.people.pop(key, None)
        else:
            core.people[key] = old

    core.change(PutAccount(AccountRecord(key, name, record)), undo)
    for room in default_rooms(core, person):
        core.enter(room, person, MEMBER)
    return person


def set_password(core: Core, person: Person, record: str) -> None:
    """Replace an account's password hash."""
    old = person.hash
    person.hash = record

    def undo() -> None:
        person.hash = old

    core.change(PutAccount(AccountRecord(person.key, person.name, record)), undo)


def default_rooms(core: Core, person: Person) -> list[Room]:
    """The default rooms that exist and do not ban ``person``, up to max_rooms."""
    out: list[Room] = []
    for name in core.settings.default_rooms:
        room = core.rooms.get(room_key(name))
        if room is None or person.key in room.bans or room.key in person.rooms:
            continue
        if len(person.rooms) + len(out) >= core.settings.max_rooms:
            break
        out.append(room)
    return out


def _admit(core: Core, conn: Connection, msg: Message, ref: str | None, *, key: str,
           name: str, person: Person | None, resume: dict[str, int],
           claimed: tuple[str, Any] | None = None) -> None:
    """The checks that depend on who is online, then the login itself.

    In cluster mode a name not online here is claimed in Redis first (it may
    be online on another node); ``claimed`` is (the new token, Redis's answer)."""
    old = core.online.get(key)
    if old is not None:
        token = msg.get("token")
        if token is None or not hmac.compare_digest(token.encode(), old.token.encode()):
            raise ProtocolError("name_taken", f"{name!r} is online")
    elif len(core.online) >= core.settings.max_clients:
        raise ProtocolError("server_full", "the server is full")
    v1 = msg["proto"] == PROTO_VERSION
    if v1 and key in core.lobby.bans:
        raise ProtocolError("not_allowed", "you are banned from lobby", fatal=True)
    moved = False  # the session comes from another node (a takeover there)
    if core.cluster is not None and old is None:
        if claimed is None:
            fresh = secrets.token_urlsafe(TOKEN_BYTES)

            def answered(result: Any) -> None:
                _admit(core, conn, msg, ref, key=key, name=name, person=core.people.get(key)
                       if person is not None else None, resume=resume,
                       claimed=(fresh, result))

            core.claim(conn, key, name, fresh, given=msg.get("token"),
                       done=_fatal_on_error(core, conn, ref, answered))
            return
        answer = claimed[1]
        if not isinstance(answer, list):
            raise ProtocolError("unavailable", "the cluster cannot be reached; retry later",
                                retry_after_ms=1000, fatal=True)
        if answer[0] != 1:
            raise ProtocolError("name_taken", f"{name!r} is online")
        moved = bool(answer[1])
        core.remote_online.pop(key, None)
    core.commit()  # backlogs must hold every message accepted so far
    if old is not None:
        person = old.person
        core.close(old, encode(m.bye("replaced")), None, takeover=True)
    elif person is None:
        known = core.people.get(key)
        if moved and known is not None and not known.account and known.conn is None:
            person = known  # a guest moved from another node: its rooms go on
        else:
            person = Person(key, name, account=False)
            core.people[key] = person
    assert person is not None
    conn.proto = msg["proto"]
    conn.person = person
    conn.name = person.name
    conn.key = key
    conn.label = person.name
    conn.token = claimed[0] if claimed is not None else secrets.token_urlsafe(TOKEN_BYTES)
    if old is not None and core.cluster is not None:
        core.cluster.moved(key, person.name, conn.token)
    core.online[key] = conn
    person.conn = conn
    settings = core.settings
    core.handshakes -= 1
    conn.state = USER
    conn.decoder.max_frame = settings.max_frame
    conn.tokens = float(settings.burst)
    conn.refill_at = core.now
    if old is None:
        # Memberships first (others see ``join``), then presence to those rooms.
        if v1:
            if LOBBY not in person.rooms:
                core.enter(core.lobby, person, MEMBER, lazy=True)
        elif not person.account:
            for room in default_rooms(core, person):
                core.enter(room, person, MEMBER, lazy=True)
        if LOBBY in person.rooms:
            core.lobby_online_set(person, True)
        if not moved:  # (a session moved from another node was online all along)
            core.presence(person, True)
            core.turn.broadcast(core.watch, encode(m.join(person.name, core.ts)), lazy=True)
    elif v1 and LOBBY not in person.rooms:  # a takeover across versions
        core.enter(core.lobby, person, MEMBER)
    for channel in core.channels(conn):
        core.turn.subscribe(conn, channel)
    try:
        if v1:
            frames, rest = _welcome_v1(core, conn, msg, ref)
        else:
            frames, rest = _welcome_v2(core, conn, ref, resume)
    except Exception as exc:  # the store could not be read
        core.fatal(conn, unreadable("a login", exc, ref))
        return
    conn.backlog = rest
    core.turn.unicast(conn, BacklogHead(b"".join(frames)), len(frames))
    core.timers.schedule(core.now + settings.heartbeat, conn, "heartbeat")


def _welcome_v1(core: Core, conn: Connection, msg: Message, ref: str | None
                ) -> tuple[list[bytes], Any]:
    settings = core.settings
    lobby = core.lobby
    payload = encode_payload(m.welcome(
        name=conn.name, server=SERVER_NAME, seq=lobby.seq, oldest=lobby.oldest,
        users=[], max_frame=settings.max_frame, max_text=settings.max_text,
        heartbeat=settings.heartbeat, token=conn.token, ref=ref,
    ))
    # Names and tokens cannot hold '"', so this member occurs exactly once.
    payload = payload.replace(b'"users":[]', b'"users":' + core.roster(), 1)
    since = msg.get("since")
    if since is not None:
        source = lobby.log.after(since)
    else:
        source = iter(lobby.log.latest(settings.backlog) if settings.backlog else [])
    backlog, rest = core.burst(lobby, source, v1=True)
    return [frame(payload), *backlog], rest


def _welcome_v2(core: Core, conn: Connection, ref: str | None, resume: dict[str, int]
                ) -> tuple[list[bytes], Any]:
    settings = core.settings
    person: Person = conn.person
    rooms = sorted(person.rooms.values(), key=lambda r: r.name.casefold())
    summaries = [room_summary(core, person, room) for room in rooms]
    welcome = m.with_ref({
        "type": "welcome", "proto": PROTO_V2, "name": person.name, "server": SERVER_NAME,
        "token": conn.token, "max_frame": settings.max_frame, "max_text": settings.max_text,
        "heartbeat": settings.heartbeat, "account": person.account, "rooms": summaries,
    }, ref)
    frames = [encode(welcome)]
    rest: Any = None
    for room in rooms:
        since = resume.get(room.key)
        if since is None:
            continue
        if rest is not None:  # an earlier room's backlog was long: stream the rest too
            rest = _chain(rest, (core.msg_frame(room, s, v1=False) for s in room.log.after(since)))
            continue
        backlog, rest = core.burst(room, room.log.after(since), v1=False)
        frames.extend(backlog)
    return frames, rest


def _chain(*parts: Any) -> Any:
    for part in parts:
        yield from part


def room_summary(core: Core, person: Person, room: Room) -> Message:
    """A ``welcome.rooms`` entry (§12)."""
    out: Message = {"room": room.name, "kind": room.kind, "topic": room.topic,
                    "seq": room.seq, "oldest": room.oldest,
                    "read": person.markers.get(room.key, 0), "role": room.role_of(person.key)}
    if room.is_dm:
        out["with"] = dm_partner(core, room, person)
    return out


def dm_partner(core: Core, room: Room, person: Person) -> str:
    """The other account of a dm room, as registered (itself for a self dm)."""
    low, high = room.dm_keys()
    other = high if low == person.key else low
    partner = core.people.get(other)
    return partner.name if partner is not None else other
