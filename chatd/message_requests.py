"""Requests about messages and the session (contract §4, §12, §14, §16).

Version 1 sessions (:data:`V1`) see ``lobby`` as the one room; version 2
sessions (:data:`V2`, with chatd.room_requests) name a room in each request.
Each handler checks in the order of §17 and raises ProtocolError for the
first rule a request breaks; the core turns it into the one error frame.
"""

from __future__ import annotations

import unicodedata
from typing import TYPE_CHECKING, Any

from chatd.connection import Asked, Connection
from chatd.login import set_password
from chatd.records import DeleteMessage, EditMessage, Stored
from chatd.replies import unreadable
from chatd.rooms import Person, Room
from protocol import ProtocolError, clean_text, encode, encode_payload, name_key
from protocol import messages as m
from protocol.framing import frame
from protocol.limits import HISTORY_LIMIT_DEFAULT, SEARCH_LIMIT_DEFAULT
from protocol.values import clean_query, new_password

if TYPE_CHECKING:
    from chatd.core import Core, Handler

Message = dict[str, Any]


# --- both versions -----------------------------------------------------------------


def pm(core: Core, conn: Connection, msg: Message, ref: str | None) -> None:
    text = clean_text(msg["text"], core.settings.max_text, ref=ref)
    key = name_key(msg["to"])
    target = core.online.get(key)
    if target is None:
        if core.cluster is None:
            raise ProtocolError("no_such_user", f"{msg['to']!r} is not online", ref=ref)

        def found(holder: tuple[str, str, str] | None) -> None:  # on another node?
            if holder is None:
                raise ProtocolError("no_such_user", f"{msg['to']!r} is not online", ref=ref)
            out = encode(m.pm(conn.name, holder[2], core.ts, text, msg.get("id")))
            core.elsewhere(key, "u", key, out, known=False)
            core.turn.unicast(conn, out)
            core.msgs_in += 1

        core.online_elsewhere(conn, key, found)
        return
    out = encode(m.pm(conn.name, target.name, core.ts, text, msg.get("id")))
    core.turn.unicast(target, out)
    if target is not conn:
        core.turn.unicast(conn, out)
    core.msgs_in += 1


def ping(core: Core, conn: Connection, msg: Message, ref: str | None) -> None:
    core.turn.unicast(conn, encode(m.pong(msg, ref)))


def pong(core: Core, conn: Connection, msg: Message, ref: str | None) -> None:
    """Nothing to do: any frame proves the client alive (``last_rx``)."""


def bye(core: Core, conn: Connection, msg: Message, ref: str | None) -> None:
    core.close(conn, encode(m.bye("quit")), "quit")


def _idempotent(core: Core, room: Room, conn: Connection, ident: str | None,
                ref: str | None, *, v1: bool) -> bool:
    """An id this user already had accepted in the room: resend the message as
    it is now retained, to this connection only (§4, §14)."""
    if ident is None:
        return False
    person: Person = conn.person
    # This turn's messages are not in the store yet (no commit per message).
    original = core.pending_ids.get((room.key, person.key, ident))
    try:
        if original is None:
            original = room.log.find(person.key, ident)
    except Exception as exc:
        raise unreadable("an idempotency check", exc, ref) from None
    if original is None:
        return False
    core.turn.unicast(conn, core.msg_frame(room, original, v1=v1, with_id=True))
    return True


def _say(core: Core, conn: Connection, room: Room, msg: Message, ref: str | None, *,
         v1: bool) -> None:
    person: Person = conn.person
    ident = msg.get("id")
    text = msg["text"]
    if _idempotent(core, room, conn, ident, ref, v1=v1):
        return
    clean = clean_text(text, core.settings.max_text, ref=ref)
    core.publish(room, person.name, person.key, clean, ident=ident, conn=conn, ok=b"", ref=ref)


def _history_reply(core: Core, room: Room | None, lobby: Room, msg: Message, ref: str | None
                   ) -> bytes:
    before = msg["before"]
    target = room or lobby
    if core.ops:
        core.commit()
    try:
        found = target.log.before(before, msg.get("limit", HISTORY_LIMIT_DEFAULT))
    except Exception as exc:
        raise unreadable("a history request", exc, ref) from None
    v1 = room is None
    # Version 2 entries are ``msg`` without ``type``: with ``room`` (§14).
    shown = None if v1 else target.name
    entries = [m.entry(s.seq, s.ts, s.sender, s.text, ident=s.ident, edited=s.edited,
                       deleted=s.deleted, room=shown, v1=v1) for s in found]
    reply = m.history(before, entries, ref)
    if not v1:
        reply = {"type": "history", "room": target.name, **{k: v for k, v in reply.items()
                                                             if k != "type"}}
    return encode(reply)


# --- version 1 (§4): lobby is the one room ----------------------------------------


def say_v1(core: Core, conn: Connection, msg: Message, ref: str | None) -> None:
    _say(core, conn, core.lobby, msg, ref, v1=True)


def who_v1(core: Core, conn: Connection, msg: Message, ref: str | None) -> None:
    payload = encode_payload(m.users([], ref)).replace(b"[]", core.roster(), 1)
    core.turn.unicast(conn, frame(payload))


def history_v1(core: Core, conn: Connection, msg: Message, ref: str | None) -> None:
    core.turn.unicast(conn, Asked(_history_reply(core, None, core.lobby, msg, ref)))


# --- version 2 (§14, §15, §16) ---------------------------------------------------------


def say(core: Core, conn: Connection, msg: Message, ref: str | None) -> None:
    room = core.member_room(conn.person, msg["room"], ref)
    _say(core, conn, room, msg, ref, v1=False)


def who(core: Core, conn: Connection, msg: Message, ref: str | None) -> None:
    names = [c.name for c in core.online.values()]
    names += [name for name, _ in core.remote_online.values()]  # cluster: other nodes'
    core.reply(conn, m.users(names, ref))


def history(core: Core, conn: Connection, msg: Message, ref: str | None) -> None:
    room = core.member_room(conn.person, msg["room"], ref, readable=True)
    core.turn.unicast(conn, Asked(_history_reply(core, room, core.lobby, msg, ref)))


def _retained(core: Core, room: Room, seq: int, ref: str | None) -> Stored:
    """The retained, undeleted message ``seq`` of the room, or ``no_such_message``."""
    if core.ops:
        core.commit()  # an edit or delete earlier this turn counts
    try:
        stored = room.log.get(seq)
    except Exception as exc:
        raise unreadable("an edit", exc, ref) from None
    if stored is None or stored.deleted:
        raise ProtocolError("no_such_message", f"message {seq} is not retained", ref=ref)
    return stored


def edit(core: Core, conn: Connection, msg: Message, ref: str | None) -> None:
    person: Person = conn.person
    room = core.member_room(person, msg["room"], ref)
    text = clean_text(msg["text"], core.settings.max_text, ref=ref)
    seq = msg["seq"]
    stored = _retained(core, room, seq, ref)
    if name_key(stored.sender) != person.key:
        raise ProtocolError("not_allowed", "only its author may edit a message", ref=ref)
    window = core.settings.edit_window
    if window and core.ts - stored.ts > window * 1000:
        raise ProtocolError("not_allowed", f"messages can be edited for {window:g} s", ref=ref)
    core.change(EditMessage(room.key, seq, text, core.ts), lambda: None)
    core.changed(conn, ref, room, "edited", seq=seq, text=text)


def delete(core: Core, conn: Connection, msg: Message, ref: str | None) -> None:
    person: Person = conn.person
    room = core.member_room(person, msg["room"], ref)
    seq = msg["seq"]
    stored = _retained(core, room, seq, ref)
    if name_key(stored.sender) != person.key and not core.role_ok(room, person):
        raise ProtocolError("not_allowed", "only its author, an owner or an op may delete "
                            "a message", ref=ref)
    core.change(DeleteMessage(room.key, seq), lambda: None)
    core.changed(conn, ref, room, "deleted", seq=seq, by=person.name)


def typing(core: Core, conn: Connection, msg: Message, ref: str | None) -> None:
    room = core.member_room(conn.person, msg["room"], ref)
    out = {"type": "typing", "room": room.name, "name": conn.name}
    core.turn.broadcast(room.chan, encode(out), skip=conn)


def mark(core: Core, conn: Connection, msg: Message, ref: str | None) -> None:
    person: Person = conn.person
    room = core.member_room(person, msg["room"], ref)
    seq = msg["seq"]
    if seq > room.seq:
        raise ProtocolError("bad_request", f"mark.seq is above the room's seq {room.seq}",
                            ref=ref)
    stored = max(seq, person.markers.get(room.key, 0))
    if stored != person.markers.get(room.key, 0):
        core.set_marker(room, person, stored)
    core.turn.outcome(conn, encode(m.with_ref(
        {"type": "marked", "room": room.name, "seq": stored}, ref)), ref)


def search(core: Core, conn: Connection, msg: Message, ref: str | None) -> None:
    person: Person = conn.person
    name = msg.get("room")
    rooms = ([core.member_room(person, name, ref, readable=True)] if name is not None
             else list(person.rooms.values()))
    query = clean_query(msg["query"], ref=ref)
    terms = [unicodedata.normalize("NFC", term).casefold() for term in query.split()]
    if core.ops:
        core.commit()
    by_key = {room.key: room for room in rooms}
    try:
        found = core.store.search(list(by_key), terms,
                                  msg.get("limit", SEARCH_LIMIT_DEFAULT), msg.get("before"))
    except Exception as exc:
        raise unreadable("a search", exc, ref) from None
    entries = []
    for key, s in found:
        room = by_key[key]
        entries.append(m.entry(s.seq, s.ts, s.sender, s.text, ident=s.ident, edited=s.edited,
                               room=room.name))
    reply: Message = {"type": "results", "query": query}
    if name is not None:
        reply["room"] = rooms[0].name
    reply["msgs"] = entries
    core.turn.unicast(conn, Asked(encode(m.with_ref(reply, ref))))


def password(core: Core, conn: Connection, msg: Message, ref: str | None) -> None:
    """Change one's own password (§12): the old one is checked in the worker."""
    person: Person = conn.person
    new = new_password(msg.get("new"), ref=ref, fatal=False)  # before not_allowed (§17)
    if not person.account:
        raise ProtocolError("not_allowed", "guests have no password", ref=ref)
    wait = core.throttle.blocked(conn.address, person.key, core.now)
    if wait:
        raise ProtocolError("not_allowed", "too many failed passwords; wait", ref=ref,
                            retry_after_ms=wait)

    def verified(ok: Any) -> None:
        if ok is None:
            raise ProtocolError("unavailable", "cannot check passwords now", ref=ref,
                                retry_after_ms=1000)
        if not ok:
            raise ProtocolError("not_allowed", "the old password is wrong", ref=ref)
        core.submit(conn, "hash", new, None, hashed)

    def hashed(record: Any) -> None:
        if not isinstance(record, str):
            raise ProtocolError("unavailable", "cannot hash passwords now", ref=ref,
                                retry_after_ms=1000)
        set_password(core, person, record)
        core.turn.outcome(conn, encode(m.ok(ref)), ref)

    core.check_password(conn, person.key, msg["old"], person.hash, verified)


V1: dict[str, Handler] = {
    "say": say_v1,
    "pm": pm,
    "who": who_v1,
    "history": history_v1,
    "ping": ping,
    "pong": pong,
    "bye": bye,
}

V2: dict[str, Handler] = {
    "say": say,
    "pm": pm,
    "who": who,
    "history": history,
    "ping": ping,
    "pong": pong,
    "bye": bye,
    "edit": edit,
    "delete": delete,
    "typing": typing,
    "mark": mark,
    "search": search,
    "password": password,
}
