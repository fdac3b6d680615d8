"""The chat log: a Tk text widget that stays small and fast however much arrives.

The log keeps at most ``max_lines`` lines (trimmed from the top in batches of
``trim_batch`` once it is over, while the user follows the live end), and one
turn's new lines go in with a single ``insert`` call; a turn that brings more
lines than the log keeps renders only the last ``max_lines`` of them. So the
cost of a turn depends on the log's bound, not on how fast messages arrive.

Layout of the widget: finished lines, then the mark ``live``, then the pending
lines (typed, not yet acknowledged; each tagged ``p-<id>``). New lines go in
at ``live``, so pending lines stay at the bottom until their acknowledgement
deletes them and the real message, in the server's order, takes their place.
"""

from __future__ import annotations

import tkinter as tk
from collections import deque

from chatgui.lines import Line

MAX_LINES = 2000
TRIM_BATCH = 500

#: style -> Tk tag options. Each style is visibly distinct.
STYLES: dict[str, dict[str, str]] = {
    "own": {"foreground": "#0b4fa8"},
    "other": {"foreground": "#1b1b1b"},
    "pm": {"foreground": "#7b1fa2", "background": "#f5e9fa"},
    "system": {"foreground": "#5f6b73"},
    "error": {"foreground": "#c62828"},
    "pending": {"foreground": "#9a9a9a"},
    "history": {"foreground": "#8d8d8d"},
    "separator": {"foreground": "#8d8d8d", "justify": "center"},
}


class LogView:
    """Bounded, styled, append-mostly text over a ``tk.Text``."""

    def __init__(self, widget: tk.Text, max_lines: int = MAX_LINES,
                 trim_batch: int = TRIM_BATCH) -> None:
        self.widget = widget
        self.max_lines = max_lines
        self.trim_batch = trim_batch
        # One entry per finished line block: (seq or 0, number of text lines).
        self.entries: deque[tuple[int, int]] = deque()
        self.lines = 0  # text lines before the ``live`` mark
        self.texts: deque[tuple[str, str]] = deque()  # (style, text) for state dumps
        self.pending: dict[str, str] = {}  # ident -> text of its pending line
        self.pinned = 0  # one-line header entries kept above history pages (0 or 1)
        for style, options in STYLES.items():
            widget.tag_configure(style, **options)
        widget.mark_set("live", "end-1c")
        widget.mark_gravity("live", "right")

    def _editable(self) -> None:
        self.widget.configure(state="normal")

    def _readonly(self) -> None:
        self.widget.configure(state="disabled")

    def at_bottom(self) -> bool:
        return self.widget.yview()[1] >= 0.999

    def at_top(self) -> bool:
        """The first line is in view (also when the whole log fits the window)."""
        return bool(self.widget.yview()[0] <= 0.0)

    def oldest_seq(self) -> int:
        """The seq of the oldest message shown, or 0 if none is."""
        return next((seq for seq, _ in self.entries if seq), 0)

    def append(self, lines: list[Line]) -> None:
        """Add one turn's lines at the live end, in one insert."""
        if not lines:
            return
        lines = lines[-self.max_lines:]
        follow = self.at_bottom()
        args: list[str] = []
        for line in lines:
            text = line.text + "\n"
            args += [text, line.style]
            count = text.count("\n")
            self.entries.append((line.seq, count))
            self.texts.append((line.style, line.text))
            self.lines += count
        self._editable()
        self.widget.insert("live", *args)
        self._trim(follow)
        self._readonly()
        if follow:
            self.widget.see("end")

    def prepend(self, lines: list[Line]) -> None:
        """Add older lines (a history page) at the top, keeping the view still.

        They go below a pinned header line (``pinned``), if the log has one.
        """
        if not lines:
            return
        args: list[str] = []
        added = 0
        for line in lines:
            text = line.text + "\n"
            args += [text, line.style]
            added += text.count("\n")
        for line in reversed(lines):
            self.entries.insert(self.pinned, (line.seq, line.text.count("\n") + 1))
            self.texts.insert(self.pinned, (line.style, line.text))
        self.lines += added
        self._editable()
        self.widget.insert(f"{self.pinned + 1}.0", *args)
        self._readonly()
        self.widget.yview(f"{self.pinned + added + 1}.0")  # the old top line stays in view

    def _trim(self, follow: bool) -> None:
        """Drop the oldest lines once over the bound (always past three bounds)."""
        if self.lines <= self.max_lines + self.trim_batch:
            return
        if not follow and self.lines <= 3 * self.max_lines:
            return  # the user is reading back: leave the text alone for now
        drop = 0
        self.pinned = 0  # the header goes first
        while self.entries and self.lines - drop > self.max_lines:
            drop += self.entries.popleft()[1]
            self.texts.popleft()
        self.widget.delete("1.0", f"{drop + 1}.0")
        self.lines -= drop

    def add_pending(self, ident: str, line: Line) -> None:
        start = self.widget.index("end-1c")
        first = not self.pending
        self._editable()
        self.widget.insert(start, line.text + "\n", ("pending", "p-" + ident))
        self._readonly()
        if first:  # ``live`` sat at the end and slid past the new line: put it back
            self.widget.mark_set("live", start)
        self.pending[ident] = line.text
        if self.at_bottom():
            self.widget.see("end")

    def drop_pending(self, ident: str) -> None:
        """The message was acknowledged (or refused): its pending line goes."""
        if self.pending.pop(ident, None) is None:
            return
        ranges = self.widget.tag_ranges("p-" + ident)
        self._editable()
        if ranges:
            self.widget.delete(ranges[0], ranges[-1])
        self.widget.tag_delete("p-" + ident)
        self._readonly()
