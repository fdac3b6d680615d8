"""What a typed line means (shared by the window and the terminal client)."""

from __future__ import annotations

import pytest

from chatgui.commands import Command, parse


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("", Command("none")),
        ("  \n\t ", Command("none")),
        ("hello", Command("say", "hello")),
        ("  indented stays as typed", Command("say", "  indented stays as typed")),
        ("line one\nline two", Command("say", "line one\nline two")),
        ("/msg bob hi there", Command("pm", "hi there", "bob")),
        ("/MSG bob  two  spaces", Command("pm", " two  spaces", "bob")),
        ("/m bob x", Command("pm", "x", "bob")),
        ("/msg bob", Command("error", "usage: /msg NAME text")),
        ("/msg bob    ", Command("error", "usage: /msg NAME text")),
        ("/who", Command("who")),
        ("/quit", Command("quit")),
        ("/help", Command("help")),
        ("/who cares", Command("error", "/who takes no arguments")),
        ("/frob", Command("error", "unknown command /frob (try /help)")),
        ("//not a command", Command("say", "/not a command")),
    ],
)
def test_parse(line, expected):
    assert parse(line) == expected
