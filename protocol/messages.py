"""Message types of contract §4, §5 and §8: member tables, validation, builders.

Messages travel as plain dicts (what ``json`` gives and takes, and the cheapest
thing to build on a hot path). Each direction has one table saying which members
a type has, of which JSON type, and whether they are required; :func:`validate`
checks a message against a table. Range rules that are not JSON types (a
``history.limit`` of 1..200) are checked here too, so the server only applies
the value rules of :mod:`protocol.values` and its own state.
"""

from __future__ import annotations

from typing import Any

from protocol.errors import ProtocolError
from protocol.framing import Message
from protocol.limits import HISTORY_LIMIT_MAX, MAX_INT, PROTO_VERSION, SEARCH_LIMIT_MAX
from protocol.values import is_valid_id

# Member kinds.
INT = "integer"  # a JSON integer in 0..2^53-1, never a bool or a float
STR = "string"
BOOL = "boolean"
NUMBER = "number"  # integer or float, never a bool
LIST = "list"
OBJECT = "object"
ANY = "any JSON value"

Table = dict[str, dict[str, tuple[str, bool]]]  # type -> member -> (kind, required)

#: Client to server on the chat port (§4). ``id`` is common to all and checked apart.
CHAT_REQUESTS: Table = {
    "hello": {
        "proto": (INT, True),
        "name": (STR, True),
        "since": (INT, False),
        "token": (STR, False),
        "agent": (STR, False),
        "password": (STR, False),
    },
    "say": {"text": (STR, True)},
    "pm": {"to": (STR, True), "text": (STR, True)},
    "who": {},
    "history": {"before": (INT, True), "limit": (INT, False)},
    "ping": {"t": (ANY, False)},
    "pong": {"t": (ANY, True)},
    "bye": {},
}

#: Members a version 2 ``hello`` checks besides those common to both versions
#: (§12: only the members of the version asked for are type-checked).
HELLO_V2 = {"resume": (OBJECT, False), "register": (BOOL, False), "code": (STR, False)}
#: The ``hello`` members of both versions.
HELLO_COMMON = {name: CHAT_REQUESTS["hello"][name]
                for name in ("proto", "name", "token", "agent", "password")}

#: Client to server, version 2 (§12-§14). ``hello`` is checked by its version.
V2_REQUESTS: Table = {
    "hello": {**HELLO_COMMON, **HELLO_V2},
    "say": {"room": (STR, True), "text": (STR, True)},
    "pm": CHAT_REQUESTS["pm"],
    "who": {},
    "history": {"room": (STR, True), "before": (INT, True), "limit": (INT, False)},
    "ping": CHAT_REQUESTS["ping"],
    "pong": CHAT_REQUESTS["pong"],
    "bye": {},
    "join": {"room": (STR, True), "private": (BOOL, False), "since": (INT, False)},
    "part": {"room": (STR, True)},
    "rooms": {},
    "members": {"room": (STR, True)},
    "topic": {"room": (STR, True), "topic": (STR, True)},
    "invite": {"room": (STR, True), "name": (STR, True)},
    "kick": {"room": (STR, True), "name": (STR, True), "reason": (STR, False),
             "ban": (BOOL, False)},
    "unban": {"room": (STR, True), "name": (STR, True)},
    "op": {"room": (STR, True), "name": (STR, True), "op": (BOOL, True)},
    "dm": {"to": (STR, True)},
    "edit": {"room": (STR, True), "seq": (INT, True), "text": (STR, True)},
    "delete": {"room": (STR, True), "seq": (INT, True)},
    "typing": {"room": (STR, True)},
    "mark": {"room": (STR, True), "seq": (INT, True)},
    "search": {"query": (STR, True), "room": (STR, False), "limit": (INT, False),
               "before": (INT, False)},
    # A missing ``new`` is weak_password, not bad_request (§17).
    "password": {"old": (STR, True), "new": (ANY, False)},
}

#: Operator to server on the control socket (§8, §18). ``kick`` with a
#: ``room`` is a room kick; without, the version 1 kick of a session.
CONTROL_REQUESTS: Table = {
    "status": {},
    "kick": {"name": (STR, True), "reason": (STR, False), "room": (STR, False),
             "ban": (BOOL, False)},
    "announce": {"text": (STR, True), "room": (STR, False)},
    "watch": {},
    "shutdown": {},
    # A missing ``password`` is weak_password, not bad_request (§17).
    "account_add": {"name": (STR, True), "password": (ANY, False)},
    "account_remove": {"name": (STR, True)},
    "account_password": {"name": (STR, True), "password": (ANY, False)},
    "accounts": {},
    "rooms": {},
    "room_add": {"room": (STR, True), "private": (BOOL, False)},
    "room_remove": {"room": (STR, True)},
    "topic": V2_REQUESTS["topic"],
    "unban": V2_REQUESTS["unban"],
    "op": V2_REQUESTS["op"],
}

_MSG_MEMBERS = {
    "seq": (INT, True),
    "ts": (INT, True),
    "from": (STR, True),
    "text": (STR, True),
    "id": (STR, False),
}

#: Server to client (§5, §8), for clients that check what they are sent.
SERVER_EVENTS: Table = {
    "welcome": {
        "proto": (INT, True),
        "name": (STR, True),
        "server": (STR, True),
        "seq": (INT, True),
        "oldest": (INT, True),
        "users": (LIST, True),
        "max_frame": (INT, True),
        "max_text": (INT, True),
        "heartbeat": (NUMBER, True),
        "token": (STR, True),
    },
    "msg": _MSG_MEMBERS,
    "pm": {
        "from": (STR, True),
        "to": (STR, True),
        "ts": (INT, True),
        "text": (STR, True),
        "id": (STR, False),
    },
    "join": {"name": (STR, True), "ts": (INT, True)},
    "leave": {"name": (STR, True), "ts": (INT, True), "reason": (STR, True)},
    "users": {"users": (LIST, True)},
    "history": {"before": (INT, True), "msgs": (LIST, True)},
    "ping": {"t": (ANY, False)},
    "pong": {"t": (ANY, False)},
    "bye": {"reason": (STR, True), "message": (STR, False)},
    "error": {"code": (STR, True), "message": (STR, True), "fatal": (BOOL, True)},
    "ok": {},
    "status": {
        "server": (STR, True),
        "uptime_s": (NUMBER, True),
        "clients": (INT, True),
        "users": (LIST, True),
        "seq": (INT, True),
        "msgs_in": (INT, True),
        "frames_out": (INT, True),
        "bytes_in": (INT, True),
        "bytes_out": (INT, True),
    },
}


def _has_kind(value: Any, kind: str) -> bool:
    if kind == STR:
        return isinstance(value, str)
    if kind == INT:
        return type(value) is int and 0 <= value <= MAX_INT
    if kind == NUMBER:
        return type(value) in (int, float)
    if kind == BOOL:
        return isinstance(value, bool)
    if kind == LIST:
        return isinstance(value, list)
    if kind == OBJECT:
        return isinstance(value, dict)
    return True


def request_ref(message: Message) -> str | None:
    """The request's ``id`` to carry back as ``ref``, if it has a valid one."""
    ident = message.get("id")
    return ident if is_valid_id(ident) else None


def validate(message: Message, table: Table) -> str | None:
    """Check ``message`` against ``table``; return its ``ref``.

    Raises ``unknown_type`` for a type the table lacks and ``bad_request`` for a
    missing or mistyped member, an invalid ``id``, or an out-of-range value.
    """
    kind = message["type"]
    ref = request_ref(message)
    members = table.get(kind)
    if members is None:
        raise ProtocolError("unknown_type", f"unknown message type {kind!r}", ref=ref)
    if "id" in message and ref is None:
        raise ProtocolError("bad_request", "'id' must be a string of 1 to 64 characters")
    for member, (member_kind, required) in members.items():
        if member not in message:
            if required:
                raise ProtocolError(
                    "bad_request", f"{kind!r} needs the member {member!r}", ref=ref
                )
        elif not _has_kind(message[member], member_kind):
            article = "an" if member_kind[0] in "aeiou" else "a"
            raise ProtocolError(
                "bad_request", f"{kind}.{member} must be {article} {member_kind}", ref=ref
            )
    if kind == "history" and table is not CONTROL_REQUESTS:
        _at_least_one(message, "history", "before", ref)
        _limit(message, "history", HISTORY_LIMIT_MAX, ref)
    elif kind == "search" and table is V2_REQUESTS:
        _limit(message, "search", SEARCH_LIMIT_MAX, ref)
        if "before" in message:
            if "room" not in message:
                raise ProtocolError("bad_request", "search.before needs search.room", ref=ref)
            _at_least_one(message, "search", "before", ref)
    return ref


def _at_least_one(message: Message, kind: str, member: str, ref: str | None) -> None:
    if message[member] < 1:
        raise ProtocolError("bad_request", f"{kind}.{member} must be at least 1", ref=ref)


def _limit(message: Message, kind: str, most: int, ref: str | None) -> None:
    if not 1 <= message.get("limit", 1) <= most:
        raise ProtocolError("bad_request", f"{kind}.limit must be 1 to {most}", ref=ref)


# --- builders for what the server sends (§5); one place for member names ---


def _with_ref(message: Message, ref: str | None) -> Message:
    if ref is not None:
        message["ref"] = ref
    return message


def welcome(
    *,
    name: str,
    server: str,
    seq: int,
    oldest: int,
    users: list[str],
    max_frame: int,
    max_text: int,
    heartbeat: float,
    token: str,
    ref: str | None = None,
) -> Message:
    return _with_ref(
        {
            "type": "welcome",
            "proto": PROTO_VERSION,
            "name": name,
            "server": server,
            "seq": seq,
            "oldest": oldest,
            "users": users,
            "max_frame": max_frame,
            "max_text": max_text,
            "heartbeat": heartbeat,
            "token": token,
        },
        ref,
    )


def msg(seq: int, ts: int, sender: str, text: str, ident: str | None = None) -> Message:
    out: Message = {"type": "msg", "seq": seq, "ts": ts, "from": sender, "text": text}
    if ident is not None:
        out["id"] = ident
    return out


def room_msg(room: str, seq: int, ts: int, sender: str, text: str, *,
             ident: str | None = None) -> Message:
    """A new message of a room, version 2 shape (§14)."""
    out: Message = {"type": "msg", "room": room, "seq": seq, "ts": ts, "from": sender,
                    "text": text}
    if ident is not None:
        out["id"] = ident
    return out


def pm(sender: str, to: str, ts: int, text: str, ident: str | None = None) -> Message:
    out: Message = {"type": "pm", "from": sender, "to": to, "ts": ts, "text": text}
    if ident is not None:
        out["id"] = ident
    return out


def join(name: str, ts: int) -> Message:
    return {"type": "join", "name": name, "ts": ts}


def leave(name: str, ts: int, reason: str) -> Message:
    return {"type": "leave", "name": name, "ts": ts, "reason": reason}


def users(names: list[str], ref: str | None = None) -> Message:
    return _with_ref({"type": "users", "users": names}, ref)


def history(before: int, msgs: list[Message], ref: str | None = None) -> Message:
    """``msgs`` are shaped like ``msg`` without ``type``."""
    return _with_ref({"type": "history", "before": before, "msgs": msgs}, ref)


def ping(t: Any) -> Message:
    return {"type": "ping", "t": t}


def pong(message: Message, ref: str | None = None) -> Message:
    """The reply to a ``ping``: the same ``t`` (absent stays absent)."""
    out: Message = {"type": "pong"}
    if "t" in message:
        out["t"] = message["t"]
    return _with_ref(out, ref)


def bye(reason: str, message: str | None = None) -> Message:
    out: Message = {"type": "bye", "reason": reason}
    if message is not None:
        out["message"] = message
    return out


def ok(ref: str | None = None) -> Message:
    return _with_ref({"type": "ok"}, ref)


LEAVE_REASONS = frozenset(
    {"quit", "timeout", "error", "kicked", "slow_consumer", "shutdown", "lost"}
)
BYE_REASONS = frozenset({"quit", "shutdown", "kicked", "replaced"})


# --- version 2 builders (§12-§16) ---------------------------------------------


def room_event(kind: str, room: str, ts: int, **members: Any) -> Message:
    """A room event (``join``, ``part``, ``topic``, ``role``, ``edited``,
    ``deleted``, ``invited``): ``type``, ``room``, the members given (None
    values are left out: optional members are absent, never null), ``ts``."""
    out: Message = {"type": kind, "room": room}
    out.update((key, value) for key, value in members.items() if value is not None)
    out["ts"] = ts
    return out


def entry(seq: int, ts: int, sender: str, text: str, *, ident: str | None = None,
          edited: int | None = None, deleted: bool = False, room: str | None = None,
          v1: bool = False, with_id: bool = False) -> Message:
    """One message as ``msg`` (without ``type``) in either version's shape.

    Version 2 (§14): a tombstone has ``deleted`` and neither ``text`` nor ``id``;
    version 1 (§10): a tombstone has ``text`` "" and ``deleted``. ``with_id``
    keeps the id of a tombstone (the idempotent resend to its author).
    """
    out: Message = {} if room is None else {"room": room}
    out["seq"] = seq
    out["ts"] = ts
    out["from"] = sender
    if deleted:
        if v1:
            out["text"] = ""
        out["deleted"] = True
        if with_id and ident is not None:
            out["id"] = ident
        return out
    out["text"] = text
    if ident is not None:
        out["id"] = ident
    if edited is not None:
        out["edited"] = edited
    return out


def presence(name: str, online: bool, ts: int, reason: str | None = None) -> Message:
    out: Message = {"type": "presence", "name": name, "online": online, "ts": ts}
    if reason is not None:
        out["reason"] = reason
    return out


def with_ref(message: Message, ref: str | None) -> Message:
    """``message`` with ``ref`` set when the request had an ``id``."""
    return _with_ref(message, ref)


PART_REASONS = frozenset({"part", "kicked", "banned", "removed"})
