"""What a line typed in the window's composer means (version 2: rooms).

The window's own commands; the terminal has :mod:`chatterm.commands`. Text
without a leading ``/`` is a message to the room in front; ``//text`` sends
text that starts with ``/``.
"""

from __future__ import annotations

from dataclasses import dataclass

HELP = """commands:
  /join ROOM        join (or create) a public room     /private ROOM   create a private room
  /leave            leave the room in front            /invite NAME    invite to this room
  /dm NAME          open a direct conversation          /topic TEXT     set this room's topic
  /search WORDS     search your rooms                  /msg NAME text  a private message
  /who              who is online                      /quit           leave the chat
Enter sends, Shift+Enter starts a new line, Up edits your last message, Esc cancels."""

#: command -> (argument shape, usage): "" none, "word" one word, "text" the rest
SHAPES = {
    "join": "word", "private": "word", "leave": "", "part": "", "invite": "word",
    "dm": "word", "topic": "text?", "search": "text", "msg": "word text", "who": "",
    "quit": "", "help": "",
}


@dataclass(frozen=True, slots=True)
class Command:
    """``kind``: say, none, error (``text`` says why), or a command of SHAPES."""

    kind: str
    arg: str = ""
    text: str = ""


def parse(line: str) -> Command:
    if not line.strip():
        return Command("none")
    stripped = line.lstrip()
    if not stripped.startswith("/"):
        return Command("say", text=line)
    if stripped.startswith("//"):
        return Command("say", text=stripped[1:])
    word, _, rest = stripped[1:].partition(" ")
    word = word.strip().lower()
    shape = SHAPES.get(word)
    if shape is None:
        return Command("error", text=f"unknown command /{word} (try /help)")
    kind = "leave" if word == "part" else word
    rest = rest.strip()
    if shape == "":
        return Command(kind) if not rest else Command("error", text=f"/{word} takes nothing")
    if shape == "word":
        if not rest or " " in rest:
            return Command("error", text=f"usage: /{word} NAME")
        return Command(kind, arg=rest)
    if shape == "word text":
        arg, _, text = rest.partition(" ")
        if not arg or not text.strip():
            return Command("error", text=f"usage: /{word} NAME text")
        return Command(kind, arg=arg, text=text)
    if shape == "text" and not rest:
        return Command("error", text=f"usage: /{word} TEXT")
    return Command(kind, text=rest)
