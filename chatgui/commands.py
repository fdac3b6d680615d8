"""What a line the user typed means: a message, or one of the slash commands.

Shared by the desktop window and the terminal client so both understand the
same commands and answer mistakes with the same words.
"""

from __future__ import annotations

from dataclasses import dataclass

HELP = """commands:
  /msg NAME text   a private message to NAME (double-click a user to start one)
  /who             list who is online
  /quit            leave the chat
  /help            this help
  //text           a message that starts with '/'
in the window, Enter sends and Shift+Enter starts a new line"""


@dataclass(frozen=True)
class Command:
    """``kind`` is say, pm, who, quit, help, error (``text`` says what is wrong) or none."""

    kind: str
    text: str = ""
    to: str = ""


def parse(line: str) -> Command:
    """Interpret one input: text without a leading ``/`` is a public message."""
    if not line.strip():
        return Command("none")  # empty input is ignored without a server round trip
    stripped = line.lstrip()
    if not stripped.startswith("/"):
        return Command("say", line)
    if stripped.startswith("//"):
        return Command("say", stripped[1:])
    word, _, rest = stripped[1:].partition(" ")
    word = word.strip().lower()
    if word in ("msg", "m", "pm"):
        to, _, text = rest.strip().partition(" ")
        if not to or not text.strip():
            return Command("error", "usage: /msg NAME text")
        return Command("pm", text, to)
    if word in ("who", "quit", "help") and not rest.strip():
        return Command(word)
    if word in ("who", "quit", "help"):
        return Command("error", f"/{word} takes no arguments")
    return Command("error", f"unknown command /{word} (try /help)")
