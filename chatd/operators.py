"""Control-socket requests (contract §8, §18): operators may do everything.

Errors here are never fatal but for framing (§18); the core sends them as
non-fatal whatever their code. Password work goes to the hash worker like a
login's, and the operator's connection waits for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chatd.cluster import replay
from chatd.connection import WATCHER, Connection
from chatd.core import RoomExists
from chatd.login import create_account, reserve_account, set_password
from chatd.records import DM, PRIVATE, PUBLIC, RemoveAccount, RemoveMarker
from chatd.replies import ANNOUNCER
from chatd.room_requests import lift_ban, remove, rooms_reply, set_op, set_topic
from protocol import ProtocolError, clean_text, encode, name_key, normalize_name
from protocol import messages as m
from protocol.limits import LOBBY
from protocol.values import clean_topic, is_dm_name, new_password, room_key, room_problem

if TYPE_CHECKING:
    from chatd.core import Core, Handler
    from chatd.rooms import Person

Message = dict[str, Any]


def status(core: Core, conn: Connection, msg: Message, ref: str | None) -> None:
    core.reply(conn, m.with_ref(core.status(), ref))


def kick(core: Core, conn: Connection, msg: Message, ref: str | None) -> None:
    # The reason reaches the user as bye.message or part.message: the text
    # rules keep it printable for every client.
    reason = msg.get("reason")
    if msg.get("room") is not None:
        room = core.find_room(msg["room"], ref)
        if reason is not None:
            reason = clean_text(reason, core.settings.max_text, ref=ref)
        target = core.people.get(name_key(msg["name"]))
        if target is None or target.key not in room.members:
            raise ProtocolError("no_such_user", f"{msg['name']!r} is not in {room.name!r}",
                                ref=ref)
        remove(core, room, target, by=ANNOUNCER, reason=reason, ban=msg.get("ban") is True,
               conn=conn, ref=ref)
        return
    if reason is not None:
        reason = clean_text(reason, core.settings.max_text, ref=ref)
    key = name_key(msg["name"])
    session = core.online.get(key)
    bye = encode(m.bye("kicked", reason))
    if session is None:
        if core.cluster is None:
            raise ProtocolError("no_such_user", f"{msg['name']!r} is not online", ref=ref)

        def found(holder: tuple[str, str, str] | None) -> None:  # on another node?
            if holder is None:
                raise ProtocolError("no_such_user", f"{msg['name']!r} is not online",
                                    ref=ref)
            core.reply(conn, m.ok(ref))
            node, token, name = holder
            replay.end_elsewhere(core, key, name, bye, "kicked")
            assert core.cluster is not None
            core.cluster.release(key, token, node=node)  # free at once, everywhere

        core.online_elsewhere(conn, key, found)
        return
    core.reply(conn, m.ok(ref))  # a reply before the events it causes (§13)
    core.close(session, bye, "kicked")


def announce(core: Core, conn: Connection, msg: Message, ref: str | None) -> None:
    room = core.find_room(msg.get("room", LOBBY), ref)
    text = clean_text(msg["text"], core.settings.max_text, ref=ref)
    core.publish(room, ANNOUNCER, ANNOUNCER, text, ident=None, conn=conn,
                 ok=encode(m.ok(ref)), ref=ref)


def watch(core: Core, conn: Connection, msg: Message, ref: str | None) -> None:
    core.reply(conn, m.ok(ref))
    if conn.state != WATCHER:
        conn.state = WATCHER
        core.turn.subscribe(conn, core.watch)


def shutdown(core: Core, conn: Connection, msg: Message, ref: str | None) -> None:
    core.reply(conn, m.ok(ref))
    core.stop_requested = True


def _hashed(ref: str | None, then: Any) -> Any:
    def run(record: Any) -> None:
        if not isinstance(record, str):
            raise ProtocolError("unavailable", "cannot hash passwords now", ref=ref,
                                retry_after_ms=1000)
        then(record)

    return run


def account_add(core: Core, conn: Connection, msg: Message, ref: str | None) -> None:
    try:
        name = normalize_name(msg["name"])
    except ProtocolError as exc:
        exc.ref = ref
        raise
    key = name_key(name)
    if key in core.people and core.people[key].account:
        raise ProtocolError("account_exists", f"{name!r} is an account", ref=ref)
    password = new_password(msg.get("password"), ref=ref)

    def created(record: str) -> None:
        if key in core.people and core.people[key].account:
            raise ProtocolError("account_exists", f"{name!r} is an account", ref=ref)
        reserve_account(core, name, record, ref)
        core.turn.outcome(conn, encode(m.ok(ref)), ref)  # before the events it causes
        guest = core.online.get(key)
        bye = encode(m.bye("kicked", "the name is now an account"))
        if guest is not None:  # the name is now an account: its guest session ends
            core.close(guest, bye, "kicked")
        elif key in core.remote_online:  # cluster: on another node
            replay.end_elsewhere(core, key, name, bye, "kicked")
        create_account(core, name, record)

    core.submit(conn, "hash", password, None, _hashed(ref, created))


def account_password(core: Core, conn: Connection, msg: Message, ref: str | None) -> None:
    person = core.account(msg["name"], ref)
    password = new_password(msg.get("password"), ref=ref)

    def changed(record: str) -> None:
        if core.people.get(person.key) is not person:
            raise ProtocolError("no_such_user", f"{person.name!r} is not an account", ref=ref)
        set_password(core, person, record)
        core.turn.outcome(conn, encode(m.ok(ref)), ref)

    core.submit(conn, "hash", password, None, _hashed(ref, changed))


def account_remove(core: Core, conn: Connection, msg: Message, ref: str | None) -> None:
    """§18: the session ends, memberships end (``part`` removed), dm rooms go,
    invitations and markers go, owned rooms have no owner; messages stay."""
    person = core.account(msg["name"], ref)
    if person.conn is None and core.cluster is not None:
        # Its session may be on another node, maybe not heard of here yet.
        core.online_elsewhere(conn, person.key,
                              lambda holder: _remove_account(core, conn, person, ref, holder))
        return
    _remove_account(core, conn, person, ref, None)


def _remove_account(core: Core, conn: Connection, person: Person, ref: str | None,
                    holder: tuple[str, str, str] | None) -> None:
    if core.people.get(person.key) is not person:  # removed meanwhile
        raise ProtocolError("no_such_user", f"{person.name!r} is not an account", ref=ref)
    core.turn.outcome(conn, encode(m.ok(ref)), ref)  # before the events it causes
    session = person.conn
    bye = encode(m.bye("kicked", "the account was removed"))
    if session is not None:
        core.close(session, bye, "kicked")
    elif holder is not None and core.cluster is not None:  # on another node
        replay.end_elsewhere(core, person.key, person.name, bye, "kicked")
        core.cluster.release(person.key, holder[1], node=holder[0])
    for room in list(core.rooms.values()):
        if room.kind == DM and person.key in room.members:
            core.remove_room(room)
            continue
        if person.key in room.members:
            core.remove_member(room, person)
            core.turn.broadcast(room.chan, encode(m.room_event(
                "part", room.name, core.ts, name=person.name, reason="removed")), durable=True)
        core.set_invite(room, person.key, False)
        if room.owner == person.key:
            core.save_room(room, owner=None)
    markers = dict(person.markers)
    person.markers.clear()
    for marked in markers:
        core.ops.append(RemoveMarker(marked, person.key))
    del core.people[person.key]

    def undo() -> None:
        core.people[person.key] = person
        person.markers.update(markers)

    core.change(RemoveAccount(person.key), undo)


def accounts(core: Core, conn: Connection, msg: Message, ref: str | None) -> None:
    names = sorted((p.name for p in core.people.values() if p.account), key=str.casefold)
    core.reply(conn, m.with_ref({"type": "accounts", "accounts": names}, ref))


def rooms(core: Core, conn: Connection, msg: Message, ref: str | None) -> None:
    core.reply(conn, rooms_reply(core, None, ref))


def room_add(core: Core, conn: Connection, msg: Message, ref: str | None) -> None:
    name = msg["room"]
    if is_dm_name(name):
        raise ProtocolError("not_allowed", "dm rooms are made by the dm request", ref=ref)
    problem = room_problem(name)
    if problem is not None:
        raise ProtocolError("bad_room", problem, ref=ref)
    if room_key(name) in core.rooms:
        raise ProtocolError("not_allowed", f"the room {name!r} exists", ref=ref)
    try:
        core.create_room(name, PRIVATE if msg.get("private") is True else PUBLIC, None)
    except RoomExists as exists:  # cluster: made on another node a moment ago
        core.adopt_room(exists.record)
        raise ProtocolError("not_allowed", f"the room {name!r} exists", ref=ref) from None
    core.turn.outcome(conn, encode(m.ok(ref)), ref)


def room_remove(core: Core, conn: Connection, msg: Message, ref: str | None) -> None:
    room = core.find_room(msg["room"], ref)
    if room.key == LOBBY:
        raise ProtocolError("not_allowed", "lobby cannot be removed", ref=ref)
    core.remove_room(room)
    core.turn.outcome(conn, encode(m.ok(ref)), ref)


def topic(core: Core, conn: Connection, msg: Message, ref: str | None) -> None:
    room = core.find_room(msg["room"], ref)
    set_topic(core, room, clean_topic(msg["topic"], ref=ref), by=ANNOUNCER, conn=conn, ref=ref)


def unban(core: Core, conn: Connection, msg: Message, ref: str | None) -> None:
    lift_ban(core, core.find_room(msg["room"], ref), msg["name"], conn, ref)


def op(core: Core, conn: Connection, msg: Message, ref: str | None) -> None:
    room = core.find_room(msg["room"], ref)
    target = core.account(msg["name"], ref)
    set_op(core, room, target, msg["op"], by=ANNOUNCER, conn=conn, ref=ref)


CONTROL: dict[str, Handler] = {
    "status": status,
    "kick": kick,
    "announce": announce,
    "watch": watch,
    "shutdown": shutdown,
    "account_add": account_add,
    "account_remove": account_remove,
    "account_password": account_password,
    "accounts": accounts,
    "rooms": rooms,
    "room_add": room_add,
    "room_remove": room_remove,
    "topic": topic,
    "unban": unban,
    "op": op,
}
