"""What a line typed into ``chat`` means: a message to the current room, or a command.

The terminal's own command set (version 2: rooms, direct messages, edits); the
desktop window has :mod:`chatgui.slash`. Parsing is pure so every mistake is
answered the same way in a pipe and on the full screen, before anything is sent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

HELP = """a line is a message to the current room (//text: one starting with '/')
  /join [-private] ROOM  join or create a room, and go there
  /part [ROOM]           leave a room (default: this one)
  /rooms                 the rooms you can join
  /dm NAME               a direct conversation with the account NAME
  /msg NAME text         a private message to NAME, online now (not kept)
  /members [ROOM]        who is in the room, and who of them is online
  /topic [text]          show or set the topic
  /search WORDS          messages with all the WORDS in your rooms
  /edit [#N] text        change your message #N (default: your last here)
  /delete [#N]           delete your message #N (default: your last here)
  /mark [ROOM]           mark a room as read
  /who  everyone online     /quit  leave     /help  this help
keys: Ctrl+N / Ctrl+P or Alt+Right / Alt+Left  next / previous room
      Alt+1..9  room by number   PageUp / PageDown  scroll   Ctrl+D  quit"""

#: Commands that take nothing after their word.
BARE = frozenset({"rooms", "who", "help", "quit"})
#: Commands that take at most one room name (none: the current room).
ROOM_OPTIONAL = frozenset({"part", "members", "mark"})

_SEQ = re.compile(r"#(\d+)$")


@dataclass(frozen=True)
class Command:
    """``kind`` is a command word, ``say``, ``none`` or ``error`` (``text`` says what is wrong).

    ``arg`` is the command's one word (a room or a name), ``text`` its free
    text, ``seq`` the message number of ``edit``/``delete`` (0: my last one).
    """

    kind: str
    text: str = ""
    arg: str = ""
    seq: int = 0
    private: bool = False


def parse(line: str) -> Command:
    """Interpret one input line: text without a leading ``/`` is a message."""
    if not line.strip():
        return Command("none")  # an empty line is ignored without a server round trip
    stripped = line.lstrip()
    if not stripped.startswith("/"):
        return Command("say", line)
    if stripped.startswith("//"):
        return Command("say", stripped[1:])
    word, _, rest = stripped[1:].partition(" ")
    word = word.strip().lower()
    words = rest.split()
    if word in BARE:
        return Command(word) if not words else Command("error", f"/{word} takes no arguments")
    if word in ROOM_OPTIONAL:
        if len(words) > 1:
            return Command("error", f"usage: /{word} [ROOM]")
        return Command(word, arg=words[0] if words else "")
    if word == "join":
        private = bool(words) and words[0] == "-private"
        names = words[1:] if private else words
        if len(names) != 1:
            return Command("error", "usage: /join [-private] ROOM")
        return Command("join", arg=names[0], private=private)
    if word == "dm":
        return Command("dm", arg=words[0]) if len(words) == 1 else Command(
            "error", "usage: /dm NAME")
    if word in ("msg", "m"):
        to, _, text = rest.strip().partition(" ")
        if not to or not text.strip():
            return Command("error", "usage: /msg NAME text")
        return Command("msg", text, arg=to)
    if word == "topic":
        return Command("topic", rest.strip())
    if word == "search":
        if not rest.strip():
            return Command("error", "usage: /search WORDS")
        return Command("search", rest.strip())
    if word in ("edit", "delete"):
        return _edit_or_delete(word, rest)
    return Command("error", f"unknown command /{word} (try /help)")


def _edit_or_delete(word: str, rest: str) -> Command:
    """``/edit [#N] text`` and ``/delete [#N]``; without ``#N`` my last message."""
    first, _, text = rest.strip().partition(" ")
    match = _SEQ.match(first)
    seq = int(match.group(1)) if match else 0
    if match and seq == 0:
        return Command("error", "message numbers start at #1")
    if not match:
        text = rest.strip()
    if word == "delete":
        return Command("delete", seq=seq) if not text else Command(
            "error", "usage: /delete [#N]")
    if not text.strip():
        return Command("error", "usage: /edit [#N] text")
    return Command("edit", text.strip(), seq=seq)
