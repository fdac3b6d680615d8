"""How a room's messages read in the log: runs of text with Tk tag names.

Pure functions, no Tk: the window inserts the runs with one ``insert`` call per
turn, and tests check the runs without a display. A message is a *block*:
an optional day separator, an optional "new messages" line (at the read
marker), a header line (sender in the sender's colour, time) unless the
message continues a group, and the body. Every run of a block carries the tag
``m<seq>`` and the body runs also ``b<seq>``, so the window can find a message
under the pointer and replace its body in place when it is edited or deleted.
"""

from __future__ import annotations

import re
import time
import zlib
from dataclasses import dataclass

from chatclient.events import ChatMessage
from chatgui.scripts import right_to_left, visual

#: Sender colours, readable on white and distinct from each other.
PALETTE = ("#c62828", "#ad1457", "#6a1b9a", "#4527a0", "#1565c0", "#00838f",
           "#2e7d32", "#827717", "#ef6c00", "#6d4c41", "#37474f", "#00695c")
GROUP_GAP_MS = 5 * 60 * 1000  # a pause longer than this starts a new group
MENTION = re.compile(r"@[\w.\-]+")


@dataclass(frozen=True, slots=True)
class Run:
    text: str
    tags: tuple[str, ...]


def user_tag(name: str) -> str:
    """The colour tag of a sender: the same in every window and every run."""
    return f"u{zlib.crc32(name.casefold().encode()) % len(PALETTE)}"


def day_key(ts: int) -> tuple[int, int, int]:
    local = time.localtime(ts / 1000)
    return (local.tm_year, local.tm_mon, local.tm_mday)


def day_label(ts: int) -> str:
    local = time.localtime(ts / 1000)
    return time.strftime(f"%A {local.tm_mday} %B %Y", local)


def hhmm(ts: int) -> str:
    return time.strftime("%H:%M", time.localtime(ts / 1000))


def grouped(msg: ChatMessage, prev: ChatMessage | None) -> bool:
    """``msg`` continues ``prev``'s group: same sender, same day, a short pause."""
    return (prev is not None and prev.sender == msg.sender
            and day_key(prev.ts) == day_key(msg.ts) and 0 <= msg.ts - prev.ts < GROUP_GAP_MS)


def text_runs(text: str, me: str, tags: tuple[str, ...]) -> list[Run]:
    """``text`` with every ``@name`` marked; ``@me`` (casefolded) more strongly."""
    runs: list[Run] = []
    at = 0
    mine = "@" + me.casefold()
    for found in MENTION.finditer(text):
        if found.start() > at:
            runs.append(Run(text[at:found.start()], tags))
        word = found.group()
        runs.append(Run(word, (*tags, "mention-me" if word.casefold() == mine else "mention")))
        at = found.end()
    if at < len(text):
        runs.append(Run(text[at:], tags))
    return runs


def body_runs(msg: ChatMessage, me: str) -> list[Run]:
    """The body of a message, ending with its newline (what an edit replaces)."""
    tags = (f"m{msg.seq}", f"b{msg.seq}", "body")
    if msg.deleted:
        return [Run("message deleted\n", (*tags, "deleted"))]
    runs: list[Run] = []
    lines = msg.text.split("\n")
    for index, line in enumerate(lines):
        line_tags = (*tags, "rtl") if right_to_left(line) else tags  # Tk justifies by line
        runs += text_runs(visual(line), me, line_tags)
        if index < len(lines) - 1:
            runs.append(Run("\n", line_tags))
    if msg.edited is not None:
        runs.append(Run(" (edited)", (*tags, "edited")))
    runs.append(Run("\n", tags))
    return runs


def message_runs(msg: ChatMessage, prev: ChatMessage | None, me: str,
                 new_line: bool = False) -> list[Run]:
    """One message's block; ``new_line`` puts the "new messages" line before it."""
    runs: list[Run] = []
    if prev is None or day_key(prev.ts) != day_key(msg.ts):
        runs.append(Run(f"{day_label(msg.ts)}\n", ("day",)))
    if new_line:
        runs.append(Run("new messages\n", ("new",)))
    if new_line or not grouped(msg, prev):
        tag = f"m{msg.seq}"
        runs.append(Run(msg.sender, (tag, "sender", user_tag(msg.sender))))
        runs.append(Run(f"  {hhmm(msg.ts)}\n", (tag, "time")))
    runs += body_runs(msg, me)
    return runs


def room_runs(msgs: list[ChatMessage], me: str, read: int,
              prev: ChatMessage | None = None) -> list[Run]:
    """The blocks of consecutive messages; the "new messages" line goes before
    the first one after the read marker ``read`` that is not mine (-1: none)."""
    runs: list[Run] = []
    marked = read < 0
    for msg in msgs:
        new_line = not marked and msg.seq > read and not msg.mine
        marked = marked or new_line
        runs += message_runs(msg, prev, me, new_line)
        prev = msg
    return runs
