"""Right-to-left lines in the log, without a display: reshaped, reordered, aligned right."""

from __future__ import annotations

import unicodedata

import pytest

from chatclient.events import ChatMessage
from chatgui.render import body_runs
from chatgui.scripts import right_to_left, visual

SALAM = "سلام"  # Persian "hello": four letters, joined when shown


def message(text: str) -> ChatMessage:
    return ChatMessage(room="lobby", seq=7, ts=0, sender="carol", text=text, ident=None,
                       edited=None, deleted=False, mine=False, mentions_me=False)


@pytest.mark.parametrize(("line", "rtl"), [
    (SALAM, True),
    ("  123 " + SALAM + " ok", True),  # digits and spaces are not strong: the Persian decides
    ("ok " + SALAM, False),
    ("שלום", True),  # Hebrew
    ("早上好 🎉", False),
    ("123 !", False),
    ("", False),
])
def test_paragraph_direction(line, rtl):
    assert right_to_left(line) is rtl


def test_persian_is_joined_and_in_visual_order():
    shown = visual(SALAM)
    # Joined: contextual forms from Arabic Presentation Forms-B (lam and alef become
    # one ligature), and the first letter typed (seen) is drawn last, at the right.
    assert [unicodedata.name(ch) for ch in shown] == [
        "ARABIC LETTER MEEM ISOLATED FORM",
        "ARABIC LIGATURE LAM WITH ALEF FINAL FORM",
        "ARABIC LETTER SEEN INITIAL FORM",
    ]


def test_left_to_right_text_is_left_alone():
    text = "早上好 今天发布 🎉 @alice"
    assert visual(text) == text


def test_only_right_to_left_lines_are_tagged_rtl():
    runs = body_runs(message(f"{SALAM} به همه\nhello"), "alice")
    text = "".join(r.text for r in runs)
    assert text.endswith("\nhello\n")
    rtl = "".join(r.text for r in runs if "rtl" in r.tags)
    assert rtl == visual(f"{SALAM} به همه") + "\n"
    assert all(f"m{7}" in r.tags and "b7" in r.tags for r in runs)  # found and edited as one
