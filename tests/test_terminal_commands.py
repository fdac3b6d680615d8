"""What a line typed into ``chat`` means (parsed before anything is sent)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatterm.commands import HELP, Command, parse


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("", Command("none")),
        ("  \n\t ", Command("none")),
        ("hello", Command("say", "hello")),
        ("  indented stays as typed", Command("say", "  indented stays as typed")),
        ("//not a command", Command("say", "/not a command")),
        ("/join ops", Command("join", arg="ops")),
        ("/JOIN ops", Command("join", arg="ops")),
        ("/join -private secret", Command("join", arg="secret", private=True)),
        ("/join", Command("error", "usage: /join [-private] ROOM")),
        ("/join a b", Command("error", "usage: /join [-private] ROOM")),
        ("/part", Command("part")),
        ("/part ops", Command("part", arg="ops")),
        ("/part ops dev", Command("error", "usage: /part [ROOM]")),
        ("/rooms", Command("rooms")),
        ("/rooms all", Command("error", "/rooms takes no arguments")),
        ("/dm bob", Command("dm", arg="bob")),
        ("/dm", Command("error", "usage: /dm NAME")),
        ("/msg bob hi there", Command("msg", "hi there", arg="bob")),
        ("/msg bob", Command("error", "usage: /msg NAME text")),
        ("/members", Command("members")),
        ("/members ops", Command("members", arg="ops")),
        ("/topic", Command("topic")),
        ("/topic  release on Friday ", Command("topic", "release on Friday")),
        ("/search build  failed", Command("search", "build  failed")),
        ("/search", Command("error", "usage: /search WORDS")),
        ("/edit fixed typo", Command("edit", "fixed typo")),
        ("/edit #12 fixed typo", Command("edit", "fixed typo", seq=12)),
        ("/edit #12", Command("error", "usage: /edit [#N] text")),
        ("/edit #0 x", Command("error", "message numbers start at #1")),
        ("/edit 12 is the answer", Command("edit", "12 is the answer")),
        ("/delete", Command("delete")),
        ("/delete #7", Command("delete", seq=7)),
        ("/delete #7 now", Command("error", "usage: /delete [#N]")),
        ("/mark", Command("mark")),
        ("/mark ops", Command("mark", arg="ops")),
        ("/who", Command("who")),
        ("/quit", Command("quit")),
        ("/help", Command("help")),
        ("/frob", Command("error", "unknown command /frob (try /help)")),
    ],
)
def test_parse(line, expected):
    assert parse(line) == expected


@given(st.text().filter(lambda t: t.strip() and not t.lstrip().startswith("/")))
def test_a_line_without_a_slash_is_sent_as_typed(text):
    assert parse(text) == Command("say", text)


def test_help_names_every_command_and_no_mouse_or_shift_enter():
    """The v1 help spoke of double-clicking and Shift+Enter, which a terminal has not."""
    for word in ("join", "part", "rooms", "dm", "members", "topic", "search", "edit",
                 "delete", "mark", "msg", "who", "help", "quit"):
        assert f"/{word}" in HELP
        assert parse(f"/{word}").kind != "error" or "usage" in parse(f"/{word}").text
    assert "click" not in HELP.lower() and "shift" not in HELP.lower()
