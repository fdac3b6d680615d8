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
from protocol.limits import HISTORY_LIMIT_MAX, MAX_INT, PROTO_VERSION
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

#: Operator to server on the control socket (§8).
CONTROL_REQUESTS: Table = {
    "status": {},
    "kick": {"name": (STR, True), "reason": (STR, False)},
    "announce": {"text": (STR, True)},
    "watch": {},
    "shutdown": {},
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
    if kind == "history" and table is CHAT_REQUESTS:
        if message["before"] < 1:
            raise ProtocolError("bad_request", "history.before must be at least 1", ref=ref)
        if not 1 <= message.get("limit", 1) <= HISTORY_LIMIT_MAX:
            raise ProtocolError(
                "bad_request", f"history.limit must be 1 to {HISTORY_LIMIT_MAX}", ref=ref
            )
    return ref


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
