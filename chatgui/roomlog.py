"""The log of the room in front: a Tk text widget drawn from :mod:`chatgui.render` runs.

One widget serves every room: putting another room in front redraws it from
that room's bounded buffer with one ``insert``; messages of rooms in the back
only touch the buffer, so a hundred busy rooms cost no drawing. New messages of
the front room go in with one ``insert`` per turn at the ``live`` mark; pending
lines (typed, not yet acknowledged) sit after it, as in :mod:`chatgui.logview`.
The widget keeps at most ``keep`` messages while the user follows the end
(trimmed from the top in batches, the same rule as the old log).
"""

from __future__ import annotations

import tkinter as tk
from collections import deque
from typing import Any

from chatclient.events import ChatMessage
from chatgui.render import PALETTE, Run, body_runs, message_runs, room_runs

TRIM_BATCH = 500
BASE = "DejaVu Sans"


def configure_tags(widget: tk.Text, size: int = 11) -> None:
    """Every style of the log, in one place."""
    tags: dict[str, dict[str, Any]] = {
        "day": {"foreground": "#6b6b6b", "justify": "center", "spacing1": 6, "spacing3": 4,
                "font": (BASE, size - 1, "bold")},
        "new": {"foreground": "#d32f2f", "justify": "center", "font": (BASE, size - 1, "bold")},
        "sender": {"font": (BASE, size, "bold"), "spacing1": 5},
        "time": {"foreground": "#8a8a8a", "font": (BASE, size - 2)},
        "body": {"lmargin1": 14, "lmargin2": 14},
        "rtl": {"justify": "right", "rmargin": 14},
        "mention": {"foreground": "#1565c0"},
        "mention-me": {"foreground": "#000000", "background": "#ffe082",
                       "font": (BASE, size, "bold")},
        "edited": {"foreground": "#8a8a8a", "font": (BASE, size - 2)},
        "deleted": {"foreground": "#9a9a9a", "font": (BASE, size - 1, "italic")},
        "note": {"foreground": "#5f6b73", "lmargin1": 4},
        "pm": {"foreground": "#7b1fa2", "background": "#f5e9fa", "lmargin1": 4},
        "error": {"foreground": "#c62828", "lmargin1": 4},
        "pending": {"foreground": "#9a9a9a", "lmargin1": 14},
        "found": {"background": "#fff59d"},
    }
    for index, colour in enumerate(PALETTE):
        tags[f"u{index}"] = {"foreground": colour}
    for name, options in tags.items():
        widget.tag_configure(name, cnf=options)
    widget.tag_raise("mention-me")
    widget.tag_raise("found")


class RoomLog:
    def __init__(self, widget: tk.Text, keep: int = 2000, trim_batch: int = TRIM_BATCH) -> None:
        self.widget = widget
        self.keep = keep
        self.trim_batch = trim_batch
        self.me = ""
        self.shown: deque[int] = deque()  # seqs drawn, oldest first
        self.last: ChatMessage | None = None  # for grouping the next one
        self.marker_at: int | None = None  # read marker when the room came in front
        # (None once the "new messages" line is drawn)
        self.pending: dict[str, str] = {}  # ident -> text
        self.notes = 0
        configure_tags(widget)
        widget.mark_set("live", "end-1c")
        widget.mark_gravity("live", "right")

    # ---------------------------------------------------------------- view

    def at_bottom(self) -> bool:
        return self.widget.yview()[1] >= 0.999

    def at_top(self) -> bool:
        return bool(self.widget.yview()[0] <= 0.0)

    def seq_at(self, x: int, y: int) -> int:
        """The seq of the message under a point of the widget, or 0."""
        for tag in self.widget.tag_names(f"@{x},{y}"):
            if tag[0] == "m" and tag[1:].isdigit():
                return int(tag[1:])
        return 0

    def box_of(self, seq: int) -> list[int] | None:
        """Screen rectangle of a visible message's first line (for tests that click)."""
        ranges = self.widget.tag_ranges(f"m{seq}")
        if not ranges:
            return None
        box = self.widget.bbox(ranges[0])
        if not box:
            return None
        x, y, w, h = box
        return [self.widget.winfo_rootx() + x, self.widget.winfo_rooty() + y, max(w, 40), h]

    def scroll_to(self, seq: int) -> None:
        ranges = self.widget.tag_ranges(f"m{seq}")
        if ranges:
            self.widget.tag_remove("found", "1.0", "end")
            self.widget.tag_add("found", ranges[0], ranges[-1])
            self.widget.see(ranges[-1])
            self.widget.see(ranges[0])

    # ---------------------------------------------------------------- drawing

    def _insert(self, index: str, runs: list[Run]) -> None:
        if not runs:
            return
        args: list[object] = []
        for run in runs:
            args += [run.text, run.tags]
        self.widget.configure(state="normal")
        self.widget.insert(index, *args)  # type: ignore[arg-type]
        self.widget.configure(state="disabled")

    def reset(self, msgs: list[ChatMessage], read: int, me: str, limit: int = 0) -> None:
        """Draw a room from its buffer (it came in front, or a page replaced it):
        its newest ``keep`` messages, or ``limit`` (a user reading back)."""
        self.me = me
        widget = self.widget
        widget.configure(state="normal")
        widget.delete("1.0", "end")
        for ident in self.pending:
            widget.tag_delete("p-" + ident)
        widget.configure(state="disabled")
        self.pending.clear()
        self.notes = 0
        drawn = msgs[-max(limit, self.keep):]
        self.shown = deque(m.seq for m in drawn)
        unread = any(m.seq > read and not m.mine for m in drawn)
        self.marker_at = None if unread or read < 0 else read
        self.last = drawn[-1] if drawn else None
        widget.mark_set("live", "end-1c")
        self._insert("live", room_runs(drawn, me, read))
        widget.see("end")

    def append(self, msgs: list[ChatMessage]) -> None:
        """One turn's new messages of the front room, in one insert."""
        if not msgs:
            return
        msgs = msgs[-self.keep:]
        follow = self.at_bottom()
        runs: list[Run] = []
        for msg in msgs:
            new_line = (self.marker_at is not None and msg.seq > self.marker_at
                        and not msg.mine and not follow)  # one who watches the end saw it
            if new_line:
                self.marker_at = None
            runs += message_runs(msg, self.last, self.me, new_line)
            self.last = msg
            self.shown.append(msg.seq)
        self._insert("live", runs)
        self._trim(follow)
        if follow:
            self.widget.see("end")

    def _trim(self, follow: bool) -> None:
        over = len(self.shown) - self.keep
        if over <= self.trim_batch and not (over > 0 and len(self.shown) > 3 * self.keep):
            return
        if not follow and len(self.shown) <= 3 * self.keep:
            return  # the user is reading back: leave the text alone for now
        while len(self.shown) > self.keep:
            self.shown.popleft()
        ranges = self.widget.tag_ranges(f"m{self.shown[0]}")
        if ranges:
            self.widget.configure(state="normal")
            self.widget.delete("1.0", f"{ranges[0]} linestart")
            self.widget.configure(state="disabled")

    def replace(self, msg: ChatMessage) -> None:
        """An edited or deleted message: its body is redrawn in place."""
        ranges = self.widget.tag_ranges(f"b{msg.seq}")
        if not ranges:
            return
        start = self.widget.index(ranges[0])
        self.widget.configure(state="normal")
        self.widget.delete(ranges[0], ranges[-1])
        self.widget.configure(state="disabled")
        self._insert(start, body_runs(msg, self.me))
        if self.last is not None and self.last.seq == msg.seq:
            self.last = msg

    def note(self, style: str, text: str) -> None:
        follow = self.at_bottom()
        self._insert("live", [Run(text + "\n", (style,))])
        if follow:
            self.widget.see("end")

    # ---------------------------------------------------------------- pending

    def add_pending(self, ident: str, text: str) -> None:
        widget = self.widget
        start = widget.index("end-1c")
        first = not self.pending
        self._insert(start, [Run(f"{text}  (sending…)\n", ("pending", "p-" + ident))])
        if first:  # ``live`` slid past the new line: put it back
            widget.mark_set("live", start)
        self.pending[ident] = text
        widget.see("end")

    def drop_pending(self, ident: str) -> None:
        if self.pending.pop(ident, None) is None:
            return
        ranges = self.widget.tag_ranges("p-" + ident)
        self.widget.configure(state="normal")
        if ranges:
            self.widget.delete(ranges[0], ranges[-1])
        self.widget.tag_delete("p-" + ident)
        self.widget.configure(state="disabled")
