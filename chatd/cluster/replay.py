"""What another node did, applied here: its changes to the shared state, the
frames they caused (for this node's own clients), who came and went, and
guests' memberships (kept in memory only, as on the node of the guest).

The origin node applied each change when it made it; here the same store ops
are applied to the core's memory the way :meth:`chatd.core.Core._load` reads a
snapshot, plus what follows for this node's sessions (a membership gained or
lost subscribes or unsubscribes them). Frames are replayed BEFORE the ops, so
a member this node loses (kicked, banned, its room removed) still gets the
event that tells it so.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from chatd import records
from chatd.cluster import codec
from chatd.connection import USER
from chatd.records import Op
from chatd.rooms import Person, Room
from protocol import encode
from protocol import messages as m
from protocol.framing import frame
from protocol.limits import LOBBY, PROTO_V2

if TYPE_CHECKING:
    from chatd.connection import Connection
    from chatd.core import Core


def apply(core: Core, shared: Iterable[list[Any]], ops: Sequence[Op]) -> None:
    turn = core.turn
    record, turn.record = turn.record, None
    try:
        # Who came first: a guest's memberships of the same turn name it.
        for item in shared:
            if item[0] == "p" and item[3]:
                _presence(core, item)
        for item in shared:
            kind = item[0]
            if kind == "p":
                if not item[3]:
                    _presence(core, item)
                continue
            if kind == "g":
                continue
            if kind in ("u", "u2", "x"):
                _to_user(core, item, record)
                continue
            kind, key, payload, lazy = item
            room = core.rooms.get(key)
            if room is not None:
                channel = room.chan if kind == "r" else room.chan1
                if channel is not None:
                    turn.broadcast(channel, frame(payload.encode()), lazy=lazy)
        for op in ops:
            _apply_op(core, op, record)
        for item in shared:  # guests' memberships, in rooms the ops may have made
            if item[0] == "g":
                _apply_op(core, codec.op_from_json(item[1]), record)
    finally:
        turn.record = record


def _ended(core: Core, conn: Connection, final: bytes, reason: str,
           record: list[list[Any]] | None) -> None:
    """Close a session of this node: the other nodes hear it went, as usual."""
    core.turn.record = record
    try:
        core.close(conn, final, reason)
    finally:
        core.turn.record = None


def _to_user(core: Core, item: list[Any], record: list[list[Any]] | None) -> None:
    """A frame for one of this node's users (``x``: its last, then closed)."""
    conn = core.online.get(item[1])
    if conn is None or (item[0] == "u2" and conn.proto != PROTO_V2):  # u2: version 2 only
        return
    data = frame(item[2].encode())
    if item[0] != "x":
        core.turn.unicast(conn, data)
    else:  # (the node that ended it told the others: see end_elsewhere)
        _ended(core, conn, data, item[3], None)


def end_elsewhere(core: Core, key: str, name: str, final: bytes, reason: str) -> None:
    """End a session of another node (an operator's kick, its account
    removed): everyone else hears it is gone from here, at once and in the
    order of this turn (before the ``part``s that may follow); its node
    closes it with ``final``."""
    offline(core, key, name, reason, None)
    record = core.turn.record
    if record is not None:
        record.append(["x", key, final, reason])


def _presence(core: Core, item: list[Any]) -> None:
    _, key, name, online, reason, rooms, in_lobby = item
    if online:
        person = core.people.get(key)
        if person is None:  # a guest of another node
            person = core.people[key] = Person(key, name, account=False)
        core.remote_online[key] = (name, list(rooms))
        if in_lobby:
            core.lobby_online_set(person, True)
        core.presence_to([core.rooms[r] for r in rooms if r in core.rooms], person, True,
                         None)
        core.turn.broadcast(core.watch, encode(m.join(name, core.ts)), lazy=True)
    else:
        offline(core, key, name, reason, rooms)


def offline(core: Core, key: str, name: str, reason: str | None,
            rooms: list[str] | None) -> None:
    """A user of another node is gone (its node said so, or its lease lapsed)."""
    seen = core.remote_online.pop(key, None)
    if key in core.online:
        return  # it logged in here meanwhile
    person = core.people.get(key)
    if rooms is None:
        if person is not None and person.account:
            rooms = list(person.rooms)
        else:
            rooms = seen[1] if seen is not None else []
    if person is None:
        person = Person(key, name, account=False)
    elif not person.account and person.conn is None:  # a guest of that node: gone
        core.people.pop(key, None)
        for room in person.rooms.values():
            room.members.pop(key, None)
        person.rooms.clear()
    core.lobby_leave(person, reason or "lost")
    core.presence_to([core.rooms[r] for r in rooms if r in core.rooms], person, False, reason)
    core.presence_shared(person, False, reason, rooms, LOBBY in rooms)
    core.turn.broadcast(core.watch, encode(m.leave(name, core.ts, reason or "lost")), lazy=True)


def kicked(core: Core, key: str) -> None:
    """This node's session of ``key`` was taken over on another node."""
    conn = core.online.get(key)
    if conn is not None:
        core.close(conn, encode(m.bye("replaced")), None, moved=True)


def _apply_op(core: Core, op: Op, record: list[list[Any]] | None) -> None:
    turn = core.turn
    if isinstance(op, records.PutAccount):
        acc = op.account
        person = core.people.get(acc.key)
        if person is None or not person.account:
            if person is not None and person.conn is not None:  # a guest here: it ends
                _ended(core, person.conn, encode(m.bye("kicked", "the name is now an account")),
                       "kicked", record)
            core.people[acc.key] = Person(acc.key, acc.name, account=True, hash=acc.hash)
        else:
            person.hash = acc.hash
    elif isinstance(op, records.RemoveAccount):
        gone = core.people.get(op.account)
        if gone is not None and gone.account:
            if gone.conn is not None:  # (its node is told first, by an "x" item)
                _ended(core, gone.conn, encode(m.bye("kicked", "the account was removed")),
                       "kicked", record)
            core.people.pop(op.account, None)
    elif isinstance(op, records.PutRoom):
        rec = op.room
        room = core.rooms.get(rec.key)
        if room is None:
            core.rooms[rec.key] = Room(rec, core.store.log(rec.key), lobby=rec.key == LOBBY)
        else:
            room.name, room.kind, room.topic, room.owner = rec.name, rec.kind, rec.topic, rec.owner
    elif isinstance(op, records.RemoveRoom):
        removed = core.rooms.pop(op.room, None)
        core.echoed(op.room)  # its messages' echoes will not come
        if removed is None:
            return
        for key in list(removed.members):
            person = core.people.get(key)
            if person is None:
                continue
            person.rooms.pop(op.room, None)
            if person.conn is not None:
                turn.unsubscribe(person.conn, removed.chan)
                if person.conn.proto == PROTO_V2:
                    turn.unicast(person.conn, encode(m.room_event(
                        "part", removed.name, core.ts, name=person.name, reason="removed")))
        for person in core.people.values():
            person.markers.pop(op.room, None)
    elif isinstance(op, records.PutMember | records.RemoveMember):
        room, person = core.rooms.get(op.room), core.people.get(op.account)
        if room is None or person is None:
            return
        conn = person.conn
        live = conn is not None and conn.proto == PROTO_V2 and conn.state == USER
        if isinstance(op, records.PutMember):
            fresh = person.key not in room.members
            room.members[person.key] = op.role
            person.rooms[room.key] = room
            if fresh and live and conn is not None:
                turn.subscribe(conn, room.chan)
        elif room.members.pop(person.key, None) is not None:
            person.rooms.pop(room.key, None)
            if live and conn is not None:
                turn.unsubscribe(conn, room.chan)
    elif isinstance(op, records.PutBan | records.RemoveBan):
        room = core.rooms.get(op.room)
        if room is not None:
            if isinstance(op, records.PutBan):
                room.bans.add(op.name)
            else:
                room.bans.discard(op.name)
    elif isinstance(op, records.PutInvite | records.RemoveInvite):
        room = core.rooms.get(op.room)
        if room is not None:
            if isinstance(op, records.PutInvite):
                room.invites.add(op.account)
            else:
                room.invites.discard(op.account)
    elif isinstance(op, records.PutMarker | records.RemoveMarker):
        person = core.people.get(op.account)
        if person is not None:
            if isinstance(op, records.PutMarker):
                person.markers[op.room] = op.seq
            else:
                person.markers.pop(op.room, None)
    # EditMessage and DeleteMessage reach the caches through the room streams.
