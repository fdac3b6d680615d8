"""Requests about rooms (contract §13): join, part, rooms, members, topic,
invite, kick, unban, op, dm. Checks run in the order of §17."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chatd.connection import Asked, BacklogHead, Connection
from chatd.login import dm_partner
from chatd.records import DM, MEMBER, OP, OWNER, PRIVATE, PUBLIC
from chatd.rooms import Person, Room
from protocol import ProtocolError, clean_text, encode, name_key
from protocol import messages as m
from protocol.limits import LOBBY, PROTO_V2
from protocol.values import clean_topic, dm_name, is_dm_name, room_key, room_name_problem

if TYPE_CHECKING:
    from chatd.core import Core, Handler

Message = dict[str, Any]


def joined(core: Core, person: Person, room: Room, ref: str | None) -> Message:
    """The ``joined`` reply: the room as the person sees it, with its members."""
    out: Message = {"type": "joined", "room": room.name, "kind": room.kind,
                    "topic": room.topic, "seq": room.seq, "oldest": room.oldest,
                    "read": person.markers.get(room.key, 0), "role": room.role_of(person.key)}
    if room.is_dm:
        out["with"] = dm_partner(core, room, person)
    out["members"] = core.members_list(room)
    return m.with_ref(out, ref)


def _joined(core: Core, conn: Connection, room: Room, since: int | None,
            ref: str | None) -> None:
    person: Person = conn.person
    # An outcome: a membership or room made this turn may yet be refused.
    core.turn.outcome(conn, Asked(encode(joined(core, person, room, ref))), ref)
    if since is not None:
        if core.ops:
            core.commit()  # the backlog holds this turn's messages too
        if person.key not in room.members:  # the commit was refused
            return
        # Streamed like a login's backlog: a burst now, the rest as it is read.
        frames, rest = core.burst(room, room.log.after(since), v1=False)
        if rest is not None and conn.backlog is None:
            conn.backlog = rest
            core.turn.unicast(conn, BacklogHead(b"".join(frames)), len(frames))
            return
        if rest is not None:  # a login backlog still streams: this one goes whole
            frames.extend(rest)
        if frames:
            core.turn.unicast(conn, Asked(b"".join(frames)), len(frames))


def _full(core: Core, person: Person, ref: str | None) -> None:
    if len(person.rooms) >= core.settings.max_rooms:
        raise ProtocolError("not_allowed", f"you are in {core.settings.max_rooms} rooms, "
                            "the most allowed", ref=ref)


def join(core: Core, conn: Connection, msg: Message, ref: str | None) -> None:
    person: Person = conn.person
    name = msg["room"]
    since = msg.get("since")
    problem = room_name_problem(name)
    if problem is not None:
        raise ProtocolError("bad_room", problem, ref=ref)
    room = core.rooms.get(room_key(name))
    if room is not None:
        if person.key in room.members:
            _joined(core, conn, room, since, ref)
            return
        if person.key in room.bans or room.is_dm:
            raise ProtocolError("not_allowed", f"you may not join {room.name!r}", ref=ref)
        if room.kind == PRIVATE and person.key not in room.invites and room.owner != person.key:
            raise ProtocolError("not_allowed", f"{room.name!r} is private", ref=ref)
        _full(core, person, ref)
        core.enter(room, person, core.new_role(room, person))
        _joined(core, conn, room, since, ref)
        return
    if is_dm_name(name):
        raise ProtocolError("no_such_room", f"there is no dm room {name!r} (use dm)", ref=ref)
    policy = core.settings.room_creation
    private = msg.get("private") is True
    if policy == "operators" or (policy == "accounts" and not person.account) or (
            private and not person.account):
        raise ProtocolError("not_allowed", "you may not create rooms", ref=ref)
    _full(core, person, ref)
    room = core.create_room(name, PRIVATE if private else PUBLIC,
                            person if person.account else None)
    core.add_member(room, person, OWNER if person.account else MEMBER)
    _joined(core, conn, room, since, ref)


def part(core: Core, conn: Connection, msg: Message, ref: str | None) -> None:
    person: Person = conn.person
    room = core.member_room(person, msg["room"], ref)
    if room.is_dm:
        raise ProtocolError("not_allowed", "a dm room cannot be left", ref=ref)
    core.remove_member(room, person)
    core.turn.outcome(conn, encode(m.with_ref({"type": "parted", "room": room.name}, ref)), ref)
    core.turn.broadcast(room.chan, encode(m.room_event(
        "part", room.name, core.ts, name=person.name, reason="part")), durable=True)
    if room.key == LOBBY:
        core.lobby_leave(person, "quit")


def rooms(core: Core, conn: Connection, msg: Message, ref: str | None) -> None:
    core.turn.unicast(conn, encode(rooms_reply(core, conn.person, ref)))


def rooms_reply(core: Core, person: Person | None, ref: str | None) -> Message:
    """§13 ``rooms``: what ``person`` may see; every room for an operator (None)."""
    out = []
    for room in sorted(core.rooms.values(), key=lambda r: r.name.casefold()):
        member = person is not None and person.key in room.members
        invited = person is not None and person.key in room.invites
        if person is not None and not (room.is_public or member or invited):
            continue
        out.append({"room": room.name, "kind": room.kind, "topic": room.topic,
                    "members": len(room.members), "member": member, "invited": invited})
    return m.with_ref({"type": "rooms", "rooms": out}, ref)


def members(core: Core, conn: Connection, msg: Message, ref: str | None) -> None:
    room = core.member_room(conn.person, msg["room"], ref, readable=True)
    core.turn.unicast(conn, Asked(encode(m.with_ref(
        {"type": "members", "room": room.name, "members": core.members_list(room)}, ref))))


def topic(core: Core, conn: Connection, msg: Message, ref: str | None) -> None:
    person: Person = conn.person
    room = core.member_room(person, msg["room"], ref)
    text = clean_topic(msg["topic"], ref=ref)
    if room.owner is not None and not core.role_ok(room, person):
        raise ProtocolError("not_allowed", "only the owner and ops set the topic", ref=ref)
    set_topic(core, room, text, by=person.name, conn=conn, ref=ref)


def set_topic(core: Core, room: Room, text: str, *, by: str, conn: Connection,
              ref: str | None) -> None:
    core.save_room(room, topic=text)
    core.changed(conn, ref, room, "topic", topic=text, by=by)


def invite(core: Core, conn: Connection, msg: Message, ref: str | None) -> None:
    person: Person = conn.person
    room = core.member_room(person, msg["room"], ref)
    target = core.account(msg["name"], ref)
    if room.kind != PRIVATE or not core.role_ok(room, person):
        raise ProtocolError("not_allowed", "only the owner and ops of a private room invite",
                            ref=ref)
    core.set_invite(room, target.key, True)
    core.turn.outcome(conn, encode(m.ok(ref)), ref)
    event = encode(m.room_event("invited", room.name, core.ts, by=person.name))
    if target.conn is not None and target.conn.proto == PROTO_V2:
        core.turn.outcome(target.conn, event, None, silent=True)
    else:
        core.elsewhere(target.key, "u2", target.key, event, known=False)


def kick(core: Core, conn: Connection, msg: Message, ref: str | None) -> None:
    person: Person = conn.person
    room = core.member_room(person, msg["room"], ref)
    reason = msg.get("reason")
    if reason is not None:
        reason = clean_text(reason, core.settings.max_text, ref=ref)
    target = _member(core, room, msg["name"], ref)
    if not core.role_ok(room, person) or target.key == room.owner or (
            room.role_of(person.key) == OP and room.role_of(target.key) == OP):
        raise ProtocolError("not_allowed", f"you may not kick {target.name!r}", ref=ref)
    remove(core, room, target, by=person.name, reason=reason, ban=msg.get("ban") is True,
           conn=conn, ref=ref)


def _member(core: Core, room: Room, name: str, ref: str | None) -> Person:
    person = core.people.get(name_key(name))
    if person is None or person.key not in room.members:
        raise ProtocolError("no_such_user", f"{name!r} is not in {room.name!r}", ref=ref)
    return person


def remove(core: Core, room: Room, target: Person, *, by: str, reason: str | None, ban: bool,
           conn: Connection, ref: str | None) -> None:
    """A kick (by a member or an operator): ``part`` to every online member and
    to the one kicked; a version 1 session kicked from lobby ends."""
    core.remove_member(room, target)
    core.set_invite(room, target.key, False)
    if ban:
        core.set_ban(room, target.key, True)
    core.turn.outcome(conn, encode(m.ok(ref)), ref)
    out = encode(m.room_event("part", room.name, core.ts, name=target.name,
                              reason="banned" if ban else "kicked", by=by, message=reason))
    core.turn.broadcast(room.chan, out, durable=True)
    session = target.conn
    if session is not None and session.proto == PROTO_V2:
        core.turn.outcome(session, out, None, silent=True)
    if room.key == LOBBY:
        if session is not None and session.proto != PROTO_V2:
            core.commit()  # a close cannot be taken back: the kick must be stored first
            if target.key not in room.members:
                core.close(session, encode(m.bye("kicked", reason)), "kicked")
        else:
            core.lobby_leave(target, "kicked")


def unban(core: Core, conn: Connection, msg: Message, ref: str | None) -> None:
    person: Person = conn.person
    room = core.member_room(person, msg["room"], ref)
    if not core.role_ok(room, person):
        raise ProtocolError("not_allowed", "only the owner and ops unban", ref=ref)
    lift_ban(core, room, msg["name"], conn, ref)


def lift_ban(core: Core, room: Room, name: str, conn: Connection, ref: str | None) -> None:
    core.set_ban(room, name_key(name), False)
    core.turn.outcome(conn, encode(m.ok(ref)), ref)


def op(core: Core, conn: Connection, msg: Message, ref: str | None) -> None:
    person: Person = conn.person
    room = core.member_room(person, msg["room"], ref)
    target = core.account(msg["name"], ref)
    if room.owner != person.key:
        raise ProtocolError("not_allowed", "only the owner makes ops", ref=ref)
    set_op(core, room, target, msg["op"], by=person.name, conn=conn, ref=ref)


def set_op(core: Core, room: Room, target: Person, is_op: bool, *, by: str, conn: Connection,
           ref: str | None) -> None:
    if target.key not in room.members or target.key == room.owner:
        raise ProtocolError("not_allowed", f"{target.name!r} cannot be made op or member here",
                            ref=ref)
    role = OP if is_op else MEMBER
    if room.members[target.key] != role:
        core.set_role(room, target, role)
    core.changed(conn, ref, room, "role", name=target.name, role=role, by=by)


def dm(core: Core, conn: Connection, msg: Message, ref: str | None) -> None:
    person: Person = conn.person
    target = core.account(msg["to"], ref)
    if not person.account:
        raise ProtocolError("not_allowed", "guests have no dm rooms", ref=ref)
    key = dm_name(person.key, target.key)
    room = core.rooms.get(key)
    if room is None:
        if len(person.rooms) >= core.settings.max_rooms or \
                len(target.rooms) >= core.settings.max_rooms:
            raise ProtocolError("not_allowed", "too many rooms for a new dm room", ref=ref)
        room = core.create_room(key, DM, None)
        core.add_member(room, person, MEMBER)
        core.add_member(room, target, MEMBER)
        _joined(core, conn, room, None, ref)
        other = target.conn
        if other is not None and other is not conn and other.proto == PROTO_V2:
            core.turn.outcome(other, Asked(encode(joined(core, target, room, None))), None,
                              silent=True)
        elif other is None:
            core.elsewhere(target.key, "u2", target.key, encode(joined(core, target, room, None)),
                           known=False)
        return
    if person.key not in room.members:  # an operator removed it from its own dm
        raise ProtocolError("not_allowed", f"you are no longer in {room.name!r}", ref=ref)
    _joined(core, conn, room, None, ref)


V2: dict[str, Handler] = {
    "join": join,
    "part": part,
    "rooms": rooms,
    "members": members,
    "topic": topic,
    "invite": invite,
    "kick": kick,
    "unban": unban,
    "op": op,
    "dm": dm,
}

