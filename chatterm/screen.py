"""``chat`` on a terminal: a full-screen interface in the manner of irssi.

Three parts, top to bottom: the log of the current room, a status line (the
time, who I am, the rooms by number with their unread counts, who is typing,
the connection) and the input line. The input line is a widget of its own
(``prompt_toolkit``), so a line being typed is never broken by messages
arriving: they go to the log above it.

Keys: Ctrl+N / Ctrl+P or Alt+Right / Alt+Left for the next / previous room,
Alt+1..9 for a room by number, PageUp / PageDown to scroll, Ctrl+D on an
empty line or Ctrl+C to quit.

The connection is driven from prompt_toolkit's asyncio loop: the socket is a
reader (and a writer while output waits) of that loop, and a timer wakes it
when the session has a timer of its own (heartbeats, reconnects) or a second
has passed (the clock and the typing notice).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from prompt_toolkit.application import Application
from prompt_toolkit.buffer import Buffer
from prompt_toolkit.data_structures import Point
from prompt_toolkit.filters import Condition
from prompt_toolkit.formatted_text import StyleAndTextTuples
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.layout import HSplit, Layout, Window
from prompt_toolkit.layout.controls import BufferControl, FormattedTextControl
from prompt_toolkit.layout.processors import BeforeInput
from prompt_toolkit.styles import Style

from chatclient.events import Event, HistoryPage
from chatclient.net import Connection
from chatterm.chat import Chat
from chatterm.lines import Line, changed, clock

#: The session's status in the status line (nothing while it is ready).
STATES = {"idle": "offline", "connecting": "connecting", "handshake": "logging in",
          "waiting": "offline", "closing": "closing", "done": "closed"}

KEEP_LINES = 5000  # per room; older lines scroll away for good
TICK = 1.0  # the longest the screen goes without a redraw (clock, typing notice)
NOWHERE = ""  # the buffer for news before any room is known

STYLE = Style.from_dict({
    "own": "ansicyan",
    "history": "ansibrightblack",
    "pm": "ansimagenta",
    "system": "ansigreen",
    "answer": "ansiyellow",
    "edited": "ansigreen",
    "deleted": "ansigreen",
    "error": "ansired bold",
    "fatal": "ansired bold",
    "time": "ansibrightblack",
    "status": "reverse",
    "status.current": "reverse bold",
    "status.unread": "reverse ansiyellow bold",
    "prompt": "bold",
})


class Screen:
    """The full-screen face of one :class:`Chat` and its :class:`Connection`."""

    def __init__(self, chat: Chat, conn: Connection) -> None:
        self.chat = chat
        self.conn = conn
        self.logs: dict[str, deque[Line]] = {}
        self.scroll = 0  # lines scrolled back from the newest
        self.input = Buffer(multiline=False, accept_handler=self._accept,
                            on_text_changed=self._typing)
        self._reader: int | None = None
        self._writing = False
        self._timer: asyncio.TimerHandle | None = None
        self.app: Application[None] = Application(
            layout=self._layout(), key_bindings=self._keys(), style=STYLE,
            full_screen=True, mouse_support=False)

    # --- layout -------------------------------------------------------------------------

    def _layout(self) -> Layout:
        log = Window(FormattedTextControl(self._log_text, get_cursor_position=self._log_cursor,
                                          show_cursor=False),
                     wrap_lines=True, always_hide_cursor=True)
        status = Window(FormattedTextControl(self._status_text), height=1, style="class:status")
        prompt = BeforeInput(lambda: [("class:prompt", f"[{self.chat.where(self.chat.current)}] ")])
        entry = Window(BufferControl(self.input, input_processors=[prompt]), height=1)
        return Layout(HSplit([log, status, entry]), focused_element=entry)

    def _lines(self) -> deque[Line]:
        return self.logs.setdefault(self.chat.current or NOWHERE, deque(maxlen=KEEP_LINES))

    def _shown(self) -> list[Line]:
        """The log up to where it is scrolled back to; the window shows its end."""
        lines = list(self._lines())
        return lines[:len(lines) - self.scroll]

    def _log_text(self) -> StyleAndTextTuples:
        fragments: StyleAndTextTuples = []
        for line in self._shown():
            fragments += [("class:time", clock(line.ts) + " "),
                          (f"class:{line.style}", line.text), ("", "\n")]
        return fragments[:-1]

    def _log_cursor(self) -> Point:
        """The last line shown: the window keeps it in view, at the bottom."""
        rows = sum(line.text.count("\n") + 1 for line in self._shown())
        return Point(0, max(0, rows - 1))

    def _status_text(self) -> StyleAndTextTuples:
        chat, now = self.chat, time.monotonic()
        parts: StyleAndTextTuples = [("class:status", f" {clock()} [{chat.me or '...'}] ")]
        for number, key in enumerate(chat.ordered(), 1):
            unread = chat.unread(key)
            style = ("class:status.current" if key == chat.current
                     else "class:status.unread" if unread else "class:status")
            count = f"({unread})" if unread else ""
            parts.append((style, f"{number}:{chat.where(key)}{count}"))
            parts.append(("class:status", " "))
        typers = chat.typers(now)
        if typers:
            parts.append(("class:status", f"| {', '.join(typers)} typing "))
        if self.scroll:
            parts.append(("class:status", "| -- more below -- "))
        connection = self._connection_text(now)
        if connection:
            parts.append(("class:status.unread", f"| {connection} "))
        return parts

    def _connection_text(self, now: float) -> str:
        """The connection in words, when it is not simply up."""
        session = self.chat.session
        if self.chat.failure:
            return f"{self.chat.failure} (Ctrl+D quits)"
        retry = session.next_attempt_at()
        if session.status == "waiting" and retry is not None:
            return f"offline, trying again in {max(0.0, retry - now):.0f} s"
        return STATES.get(session.status, "")

    # --- keys -----------------------------------------------------------------------------

    def _keys(self) -> KeyBindings:
        keys = KeyBindings()

        @keys.add("c-n")
        @keys.add("escape", "right")
        def _next(event: KeyPressEvent) -> None:
            self._switch(+1)

        @keys.add("c-p")
        @keys.add("escape", "left")
        def _previous(event: KeyPressEvent) -> None:
            self._switch(-1)

        for digit in "123456789":
            keys.add("escape", digit)(self._by_number)

        @keys.add("pageup")
        def _back(event: KeyPressEvent) -> None:
            self.scroll = min(self.scroll + self._page(), max(0, len(self._lines()) - 1))

        @keys.add("pagedown")
        def _forward(event: KeyPressEvent) -> None:
            self.scroll = max(0, self.scroll - self._page())

        @keys.add("c-c")
        @keys.add("c-d", filter=Condition(lambda: not self.input.text))
        def _quit(event: KeyPressEvent) -> None:
            self.chat.quit_requested = True
            event.app.exit()

        return keys

    def _page(self) -> int:
        """Lines of a page: the log is all but the status and input rows."""
        return max(1, self.app.output.get_size().rows - 3)

    def _switch(self, delta: int) -> None:
        self.chat.step(delta, time.monotonic())
        self._after_switch()

    def _by_number(self, event: KeyPressEvent) -> None:
        keys = self.chat.ordered()
        number = int(event.key_sequence[-1].key)
        if number <= len(keys):
            self.chat.view(keys[number - 1], time.monotonic())
            self._after_switch()

    def _after_switch(self) -> None:
        self.scroll = 0
        self.chat.wants_history()
        self._pump()

    # --- input ------------------------------------------------------------------------------

    def _accept(self, buffer: Buffer) -> bool:
        shown = self.chat.handle(buffer.text)
        for line in shown:
            self._add(line)
        self.scroll = 0
        if self.chat.quit_requested:
            self.app.exit()
        self._pump()
        return False  # clear the input line

    def _typing(self, buffer: Buffer) -> None:
        if buffer.text and not buffer.text.startswith("/"):
            self.chat.typed()
            self._pump()

    # --- the connection ------------------------------------------------------------------------

    def _pump(self) -> None:
        """Drive the connection, show its events, and arrange the next wake-up."""
        before = self.chat.current
        for event in self.conn.poll():
            self._show(event)
        if self.chat.current != before:
            self.scroll = 0
        self.chat.tick(time.monotonic())  # the read marker, if a message came too soon for it
        if self.chat.wants_history():
            for event in self.conn.poll():
                self._show(event)
        self._watch()
        self.app.invalidate()

    def _show(self, event: Event) -> None:
        lines = self.chat.apply(event, time.monotonic())
        if isinstance(event, HistoryPage) and lines:
            log = self.logs.setdefault(lines[0].room or NOWHERE, deque(maxlen=KEEP_LINES))
            log.extendleft(reversed(lines))  # older than everything shown so far
            return
        for line in lines:
            self._add(line)

    def _add(self, line: Line) -> None:
        key = line.room if line.room is not None else self.chat.current or NOWHERE
        log = self.logs.setdefault(key, deque(maxlen=KEEP_LINES))
        if line.style in ("edited", "deleted"):
            for index, old in enumerate(log):
                if old.seq == line.seq and old.sender:
                    log[index] = changed(old, self.chat.where(key), line)
                    return
        log.append(line)
        if self.scroll and key == self.chat.current:
            self.scroll += 1  # scrolled back: the view stays where it is

    def _watch(self) -> None:
        """Readers, writers and the timer of the event loop for the connection as it is now."""
        loop = asyncio.get_running_loop()
        fd = self.conn.fileno()
        if fd != self._reader:
            if self._reader is not None:
                loop.remove_reader(self._reader)
                loop.remove_writer(self._reader)
                self._writing = False
            self._reader = fd
            if fd is not None:
                loop.add_reader(fd, self._pump)
        if fd is not None and self.conn.wants_write() != self._writing:
            self._writing = not self._writing
            if self._writing:
                loop.add_writer(fd, self._pump)
            else:
                loop.remove_writer(fd)
        if self._timer is not None:
            self._timer.cancel()
        timer = self.conn.timeout()
        self._timer = loop.call_later(TICK if timer is None else min(timer, TICK), self._pump)

    def run(self) -> None:
        """Until the user quits; then say bye (bounded)."""
        self.app.run(pre_run=self._pump)
        if self._timer is not None:
            self._timer.cancel()
        self.conn.close_and_wait()

