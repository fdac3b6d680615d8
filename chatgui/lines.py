"""How session events read as lines of a chat log, for the window and the terminal.

Each line has a *style* so a user interface can tell them apart at a glance:
``own`` (my messages), ``other``, ``pm``, ``system`` (joins, leaves,
connection news), ``error``, ``pending`` (typed, not yet acknowledged) and
``history`` (sent before I logged in). Times are the server's ``ts`` shown in
local time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from chatgui.session import CONNECTED, OFFLINE, RECONNECTING, Event
from protocol.framing import Message

LEAVE_WORDS = {
    "quit": "left",
    "lost": "lost the connection",
    "timeout": "timed out",
    "error": "was disconnected after an error",
    "kicked": "was kicked",
    "slow_consumer": "was disconnected (too slow)",
    "shutdown": "left (server shutdown)",
}


@dataclass(frozen=True)
class Line:
    style: str
    text: str
    seq: int = 0  # of a public message, else 0


def clock(ts: int | None = None) -> str:
    """``HH:MM:SS`` local time of a server ``ts`` (ms), or of now."""
    seconds = time.time() if ts is None else ts / 1000
    return time.strftime("%H:%M:%S", time.localtime(seconds))


def indent(text: str) -> str:
    """Continuation lines of a multi-line message, indented under its first line."""
    return text.replace("\n", "\n           ")


def message_line(msg: Message, me: str, history: bool = False) -> Line:
    """``me`` is the name as the server holds it (from ``welcome``): what ``from`` carries."""
    sender = msg["from"]
    style = "history" if history else "own" if sender == me else "other"
    return Line(style, f"{clock(msg['ts'])} <{sender}> {indent(msg['text'])}", msg["seq"])


def pm_line(msg: Message) -> Line:
    return Line("pm", f"{clock(msg['ts'])} [{msg['from']} -> {msg['to']}] {indent(msg['text'])}")


def pending_line(kind: str, text: str, to: str | None) -> Line:
    target = f"[-> {to}] " if kind == "pm" and to else ""
    return Line("pending", f"{clock()} (sending) {target}{indent(text)}")


def system_line(text: str, ts: int | None = None, style: str = "system") -> Line:
    return Line(style, f"{clock(ts)} -- {text}")


def who_line(names: list[str]) -> Line:
    """The answer to ``/who``: the names in alphabetical order."""
    ordered = sorted((n for n in names if isinstance(n, str)), key=str.casefold)
    return system_line(f"online ({len(ordered)}): {', '.join(ordered)}")


def event_lines(event: Event, me: str) -> list[Line]:
    """The log lines for one event (none for events a log does not show)."""
    kind, msg = event.kind, event.msg
    if kind == "message":
        return [message_line(msg, me, event.history)]
    if kind == "pm":
        return [pm_line(msg)]
    if kind == "join":
        return [system_line(f"{msg['name']} joined", msg["ts"])]
    if kind == "leave":
        words = LEAVE_WORDS.get(msg["reason"], f"left ({msg['reason']})")
        return [system_line(f"{msg['name']} {words}", msg["ts"])]
    if kind == "users":
        return [who_line(msg["users"])] if msg.get("ref") == "who" else []
    if kind == "error":
        return [system_line(f"error: {event.detail} ({event.code})", style="error")]
    if kind == "failed":
        return [system_line(event.detail, style="error")]
    if kind == "status":
        if event.status == RECONNECTING and event.delay:
            return [system_line(f"{event.detail}; reconnecting in {event.delay:.1f} s")]
        if event.status in (CONNECTED, OFFLINE):
            return [system_line(event.detail)]
    return []
