"""What a version 2 server sends (contract §5, §12-§16), checked and turned into values.

A client must survive any server: a frame that breaks its table here is
ignored (never a crash), and members it does not know are ignored too (§1,
forward compatibility). List members are checked item by item where they are
read, so one bad entry drops that entry, not the frame.

The table belongs next to :data:`protocol.messages.SERVER_EVENTS` (version 1);
it lives here while ``protocol`` has no version 2 table for clients.
"""

from __future__ import annotations

import re
from typing import Any

from chatclient.events import ChatMessage, Member, RoomListEntry
from protocol.errors import ProtocolError
from protocol.framing import Message
from protocol.messages import ANY, BOOL, INT, LIST, NUMBER, STR, Table, validate
from protocol.values import name_key

_ENTRY = {"room": (STR, True), "seq": (INT, True), "ts": (INT, True), "from": (STR, True),
          "text": (STR, False), "id": (STR, False), "edited": (INT, False),
          "deleted": (BOOL, False)}
_ROOM = {"room": (STR, True), "kind": (STR, True), "topic": (STR, True), "seq": (INT, True),
         "oldest": (INT, True), "read": (INT, True), "role": (STR, True), "with": (STR, False)}

#: Server to client, version 2, as this client reads it.
V2_EVENTS: Table = {
    "welcome": {"proto": (INT, True), "name": (STR, True), "token": (STR, True),
                "heartbeat": (NUMBER, True), "max_frame": (INT, True), "max_text": (INT, True),
                "account": (BOOL, False), "rooms": (LIST, True)},
    "msg": _ENTRY,
    "pm": {"from": (STR, True), "to": (STR, True), "ts": (INT, True), "text": (STR, True),
           "id": (STR, False)},
    "joined": {**_ROOM, "members": (LIST, True)},
    "parted": {"room": (STR, True)},
    "rooms": {"rooms": (LIST, True)},
    "members": {"room": (STR, True), "members": (LIST, True)},
    "join": {"room": (STR, True), "name": (STR, True)},
    "part": {"room": (STR, True), "name": (STR, True), "reason": (STR, True),
             "by": (STR, False), "message": (STR, False)},
    "topic": {"room": (STR, True), "topic": (STR, True), "by": (STR, True)},
    "role": {"room": (STR, True), "name": (STR, True), "role": (STR, True), "by": (STR, True)},
    "invited": {"room": (STR, True), "by": (STR, True)},
    "edited": {"room": (STR, True), "seq": (INT, True), "text": (STR, True), "ts": (INT, True)},
    "deleted": {"room": (STR, True), "seq": (INT, True), "by": (STR, True)},
    "typing": {"room": (STR, True), "name": (STR, True)},
    "marked": {"room": (STR, True), "seq": (INT, True)},
    "presence": {"name": (STR, True), "online": (BOOL, True), "reason": (STR, False)},
    "history": {"room": (STR, True), "before": (INT, True), "msgs": (LIST, True)},
    "results": {"query": (STR, True), "room": (STR, False), "msgs": (LIST, True)},
    "users": {"users": (LIST, True)},
    "ok": {},
    "ping": {"t": (ANY, False)},
    "pong": {"t": (ANY, False)},
    "bye": {"reason": (STR, True), "message": (STR, False)},
    "error": {"code": (STR, True), "message": (STR, True), "fatal": (BOOL, True),
              "retry_after_ms": (INT, False)},
}
_ROOM_SUMMARY: Table = {"room": _ROOM}
_MEMBER: Table = {"member": {"name": (STR, True), "role": (STR, True), "online": (BOOL, True)}}
_ENTRY_TABLE: Table = {"entry": _ENTRY}
_LIST_ENTRY: Table = {"entry": {"room": (STR, True), "kind": (STR, True), "topic": (STR, True),
                                "members": (INT, True), "member": (BOOL, True),
                                "invited": (BOOL, True)}}


def checked(message: Message) -> bool:
    """Whether ``message`` is a frame this client understands (known type, members typed)."""
    try:
        validate(message, V2_EVENTS)
    except ProtocolError:
        return False
    return True


def _items(values: list[Any], table: Table) -> list[Message]:
    """The entries of a list member that have the shape of ``table``'s one type."""
    (kind,) = table
    out: list[Message] = []
    for value in values:
        if isinstance(value, dict):
            candidate = {**value, "type": kind}
            try:
                validate(candidate, table)
            except ProtocolError:
                continue
            out.append(value)
    return out


def room_summaries(values: list[Any]) -> list[Message]:
    """``welcome.rooms`` entries (also the shape of ``joined``, §12)."""
    return _items(values, _ROOM_SUMMARY)


def members(values: list[Any]) -> tuple[Member, ...]:
    return tuple(Member(m["name"], m["role"], m["online"]) for m in _items(values, _MEMBER))


def room_list(values: list[Any]) -> tuple[RoomListEntry, ...]:
    return tuple(RoomListEntry(e["room"], e["kind"], e["topic"], e["members"], e["member"],
                               e["invited"]) for e in _items(values, _LIST_ENTRY))


def entries(values: list[Any], room: str | None = None) -> list[Message]:
    """``history``/``results`` entries; ``room`` fills in a missing ``room`` member."""
    filled = [{"room": room, **v} if room is not None and isinstance(v, dict) else v
              for v in values]
    return _items(filled, _ENTRY_TABLE)


class Reader:
    """Turns entries into :class:`ChatMessage` for one user (what is mine, what
    mentions me): the user's name is known only after ``welcome``."""

    def __init__(self, name: str) -> None:
        self.key = name_key(name)
        # A mention is the name as a whole word: not inside a longer name.
        self._mention = re.compile(
            rf"(?<![\w.\-]){re.escape(self.key)}(?![\w\-]|\.\w)")

    def message(self, entry: Message) -> ChatMessage:
        deleted = entry.get("deleted") is True
        text = "" if deleted else str(entry.get("text", ""))
        mine = name_key(entry["from"]) == self.key
        return ChatMessage(
            room=entry["room"], seq=entry["seq"], ts=entry["ts"], sender=entry["from"],
            text=text, ident=entry.get("id"), edited=entry.get("edited"), deleted=deleted,
            mine=mine, mentions_me=not mine and self.mentions(text))

    def mentions(self, text: str) -> bool:
        return self._mention.search(text.casefold()) is not None
