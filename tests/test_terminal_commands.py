"""What a typed line means (shared by the window and the terminal client)."""

from __future__ import annotations

import io

import pytest

from chatgui.commands import Command, parse
from chatgui.session import Session
from chatgui.terminal import Terminal


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


def test_lines_typed_before_connecting_show_as_pending_and_refusals_do_not():
    session = Session("bot", "127.0.0.1", 1)  # never polled: nothing connects
    out, err = io.StringIO(), io.StringIO()
    term = Terminal(session, out, err)
    term.handle_line("first\n")
    term.handle_line("bell \x07\n")  # bad_text: refused here, nothing queued
    term.handle_line("/msg carol psst\n")
    lines = err.getvalue().splitlines()
    assert len(lines) == 3, lines
    assert lines[0].endswith(" (sending) first")
    assert lines[1].startswith("chat: not sent: ")  # not "first" shown pending again
    assert lines[2].endswith(" (sending) [-> carol] psst")
    assert [p.text for p in session.outbox] == ["first", "psst"] and out.getvalue() == ""
