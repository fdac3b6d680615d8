"""Right-to-left text (Persian, Arabic, Hebrew) made displayable by Tk.

Tk 8.6 draws characters in logical order and does not join Arabic letters, so
a Persian line shows backwards and unjoined. A line that holds right-to-left
characters is reshaped (joined letter forms, ``arabic-reshaper``) and put in
visual order (the Unicode bidi algorithm, ``python-bidi``) before it is drawn.
Both packages are optional: without them the text is drawn as Tk can.
Only what is drawn changes; the message keeps its text (copy, edit, search).
A line whose first strong character is right-to-left (the paragraph direction
of the bidi algorithm, rules P2-P3) is also aligned to the right by the log.
"""

from __future__ import annotations

import functools
import importlib
import unicodedata
from collections.abc import Callable
from typing import Any

RTL = frozenset({"R", "AL"})
STRONG = frozenset({"L", "R", "AL"})


@functools.cache
def _shapers() -> tuple[Callable[[str], str], Callable[[str], str]] | None:
    try:
        reshaper: Any = importlib.import_module("arabic_reshaper")
        bidi: Any = importlib.import_module("bidi")
    except ImportError:
        return None
    return reshaper.reshape, bidi.get_display


def has_rtl(text: str) -> bool:
    return any(unicodedata.bidirectional(ch) in RTL for ch in text)


def right_to_left(line: str) -> bool:
    """The line reads right to left: its first strong character is R or AL."""
    for ch in line:
        kind = unicodedata.bidirectional(ch)
        if kind in STRONG:
            return kind in RTL
    return False


def visual(text: str) -> str:
    """``text`` as Tk must be given it to show right; unchanged if all left-to-right."""
    if not has_rtl(text):
        return text
    shapers = _shapers()
    if shapers is None:
        return text
    reshape, display = shapers
    return "\n".join(display(reshape(line)) if has_rtl(line) else line
                     for line in text.split("\n"))
