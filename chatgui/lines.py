"""How watched events read as lines of the operator's monitor log.

Each line has a *style* so the log can tell them apart at a glance: ``own``,
``other``, ``system`` (joins, leaves, connection news), ``error``, ``pending``
and ``history``. Times are the server's ``ts`` shown in local time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

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


def system_line(text: str, ts: int | None = None, style: str = "system") -> Line:
    return Line(style, f"{clock(ts)} -- {text}")
