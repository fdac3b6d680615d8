"""How the terminal shows things: one :class:`Line` per message or piece of news.

A message reads ``[room] <name> text`` in a pipe and on the screen alike (the
screen adds the local time in front), so a script can ``grep '^\\[ops\\] '``.
Direct conversations show as ``@partner`` rather than their wire name
(``@alice@bob``), which names both sides and reads badly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from chatclient.events import ChatMessage, RoomInfo

#: Styles the pipe prints on stderr (news, not conversation).
NEWS_STYLES = frozenset({"system", "error", "fatal", "edited", "deleted"})

PART_WORDS = {
    "part": "left",
    "kicked": "was kicked",
    "banned": "was banned",
    "removed": "was removed",
    "gone": "are no longer a member",
}


@dataclass(frozen=True)
class Line:
    """One line to show.

    ``room`` is the room key it belongs to (None: no room, e.g. a /who answer).
    ``style``: ``message`` (someone's), ``own``, ``history`` (sent before I
    looked), ``pm``, ``answer`` (to /who, /rooms, /members, /search),
    ``system`` (news), ``error``, ``fatal`` (the session is over),
    and ``edited``/``deleted`` (news about message ``seq``, which the screen
    applies to that message's line).
    ``sender`` and ``body`` let a message's line be redrawn after an edit.
    """

    room: str | None
    style: str
    text: str
    ts: int | None = None  # server time (ms) of what the line tells, if it has one
    seq: int = 0
    sender: str = ""
    body: str = ""


def clock(ts: int | None = None) -> str:
    """``HH:MM`` local time of a server ``ts`` (ms), or of now."""
    return time.strftime("%H:%M", time.localtime(time.time() if ts is None else ts / 1000))


def label(info: RoomInfo) -> str:
    """What a room is called on screen: its name, or ``@partner`` for a dm."""
    return f"@{info.with_}" if info.kind == "dm" and info.with_ else info.name


def indent(text: str) -> str:
    """Continuation lines of a multi-line message, indented so they do not look like lines."""
    return text.replace("\n", "\n    ")


def message_text(where: str, sender: str, body: str, *, edited: bool, deleted: bool) -> str:
    """``[room] <name> text``; a deleted message as its tombstone."""
    if deleted:
        return f"[{where}] <{sender}> (deleted)"
    return f"[{where}] <{sender}> {indent(body)}{' (edited)' if edited else ''}"


def message_line(key: str, where: str, msg: ChatMessage, live: bool) -> Line:
    style = "own" if msg.mine else "message" if live else "history"
    text = message_text(where, msg.sender, msg.text, edited=msg.edited is not None,
                        deleted=msg.deleted)
    return Line(key, style, text, msg.ts, msg.seq, msg.sender, msg.text)


def changed(line: Line, where: str, change: Line) -> Line:
    """``line`` (a message's) after ``change`` (an ``edited`` or ``deleted`` line)."""
    deleted = change.style == "deleted"
    body = "" if deleted else change.body
    text = message_text(where, line.sender, body, edited=not deleted, deleted=deleted)
    return replace(line, text=text, body=body)


def news(key: str | None, where: str | None, text: str, style: str = "system") -> Line:
    prefix = f"[{where}] " if where else ""
    return Line(key, style, f"{prefix}-- {text}")
