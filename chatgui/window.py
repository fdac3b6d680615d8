"""The main chat window: the log, who is online, the input, the status bar.

One thread: the event loop calls ``window.read(timeout=...)`` and then polls
the session, so the socket is served between GUI events and nothing waits on
the network. A turn handles at most the session's ``max_events`` messages and
renders them in one batched insert (see :mod:`chatgui.logview`); while more is
queued the next read does not wait, so a flood is drained as fast as the
window can draw it, and clicks and keys are still served every turn.

``--state-file`` makes the window dump what it shows (title, status, users,
log lines, pending messages, turn times) as JSON a few times a second, so tests
and operators can check the window's own state without reading pixels.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import tkinter as tk
from pathlib import Path
from typing import Any

import PySimpleGUI as sg

from chatgui import commands
from chatgui.lines import Line, event_lines, message_line, pending_line, system_line
from chatgui.logview import MAX_LINES, LogView
from chatgui.session import CONNECTED, CONNECTING, RECONNECTING, Event, Session
from protocol.errors import ProtocolError

FONT = ("DejaVu Sans", 11)
MONO = ("DejaVu Sans Mono", 10)
IDLE_MS = 50  # read timeout when nothing is queued
STATE_EVERY = 0.2  # seconds between state-file dumps
USERS_FG, USERS_STALE_FG = "#1b1b1b", "#9a9a9a"
WORK_BUDGET = 0.03  # seconds of our own work per turn, leaving Tk time to draw
MIN_BATCH, START_BATCH, MAX_BATCH = 50, 250, 2000  # messages per turn: _adapt_batch


def title_for(session: Session) -> str:
    return f"{session.name} @ {session.address} — chat"


class Stats:
    """Event-loop turn times, to show the window stays responsive (``--stats``).

    A *turn* runs from one ``read`` return to the next: our work (polling and
    rendering) plus what Tk does inside ``read`` (layout, redraw), without an
    idle wait. Wall time counts time the OS gave to other processes too, so the
    process CPU time of each turn is kept as well: on a shared machine that is
    the figure that says what the window itself costs.
    """

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.busy_turns = 0

    def record(self, wall: float, cpu: float, busy: bool) -> None:
        if len(self.wall) < 1_000_000:  # bounded memory (16 MB); later turns are not kept
            self.wall.append(wall)
            self.cpu.append(cpu)
        self.busy_turns += busy

    @staticmethod
    def _summary(values: list[float], prefix: str) -> dict[str, float]:
        if not values:
            return {}
        ordered = sorted(values)

        def pick(q: float) -> float:
            return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)

        return {f"{prefix}_p50_ms": pick(0.5), f"{prefix}_p99_ms": pick(0.99),
                f"{prefix}_max_ms": round(ordered[-1] * 1000, 1),
                f"{prefix}_over_100ms": sum(v > 0.1 for v in values)}

    def as_dict(self) -> dict[str, Any]:
        return {"turns": len(self.wall), "busy_turns": self.busy_turns,
                **self._summary(self.wall, "turn"), **self._summary(self.cpu, "cpu")}


class ChatWindow:
    def __init__(self, session: Session, *, state_file: Path | None = None,
                 stats: bool = False, max_lines: int = MAX_LINES) -> None:
        self.session = session
        session.max_events = min(session.max_events, START_BATCH)
        self.state_file = state_file
        self.show_stats = stats
        self.stats = Stats()
        self.messages = 0  # message events seen (for state dumps and stats)
        self.closing = False
        self.destroyed = False  # the window was destroyed from outside (not closed by us)
        self.logged_in = session.welcome is not None
        self.login_failure: str | None = None  # the first login failed: back to the login window
        self._users: list[str] = []
        self._status_text = ""
        self._history_mode = False  # the previous line was from the backlog
        self._announced = False  # the first "connected" went to the status bar only
        self._offline_reason = ""
        self._last_status = ""
        self._users_live = True
        self._state_dirty = True
        self._state_at = 0.0
        self.window = self._build()
        widget = self.window["-LOG-"].Widget
        self.log = LogView(widget, max_lines=max_lines)
        self._bind_keys()

    # ---------------------------------------------------------------- layout

    def _build(self) -> sg.Window:
        log = sg.Multiline("", key="-LOG-", size=(72, 26), disabled=True, write_only=True,
                           expand_x=True, expand_y=True, font=MONO, background_color="white",
                           border_width=1, sbar_width=12, sbar_arrow_width=10)
        users = sg.Listbox([], key="-USERS-", size=(18, 20), expand_y=True, font=FONT,
                           background_color="white", sbar_width=12, sbar_arrow_width=10,
                           tooltip="double-click a user to send a private message")
        side = sg.Column([[sg.Text("Online (0)", key="-COUNT-", font=(FONT[0], 11, "bold"))],
                          [users]], expand_y=True, pad=((6, 0), 0))
        entry = sg.Multiline("", key="-INPUT-", size=(60, 3), expand_x=True, font=FONT,
                             focus=True, no_scrollbar=True, border_width=1,
                             background_color="white")
        buttons = sg.Column([[sg.Button("Send", key="-SEND-", size=(7, 1))],
                             [sg.Button("Exit", key="-EXIT-", size=(7, 1))]])
        status = sg.StatusBar("", key="-STATUS-", size=(80, 1), expand_x=True, font=FONT)
        layout = [
            [sg.Column([[log]], expand_x=True, expand_y=True, pad=0), side],
            [entry, buttons],
            [status],
        ]
        window = sg.Window(title_for(self.session), layout, finalize=True, resizable=True,
                           enable_close_attempted_event=True, font=FONT)
        window["-USERS-"].bind("<Double-Button-1>", "+DOUBLE")
        toplevel = window.TKroot

        def on_destroy(event: tk.Event) -> None:
            if event.widget is toplevel:
                self.destroyed = True

        toplevel.bind("<Destroy>", on_destroy, add="+")
        return window

    def _bind_keys(self) -> None:
        entry = self.window["-INPUT-"].Widget

        def on_enter(_event: object) -> str:
            self.send_input()
            return "break"  # no newline: Enter sends

        def on_shift_enter(_event: object) -> str:
            entry.insert("insert", "\n")
            return "break"

        entry.bind("<Return>", on_enter)
        entry.bind("<KP_Enter>", on_enter)
        entry.bind("<Shift-Return>", on_shift_enter)
        entry.focus_force()

    # ---------------------------------------------------------------- input

    def input_text(self) -> str:
        return str(self.window["-INPUT-"].Widget.get("1.0", "end-1c"))

    def set_input(self, text: str) -> None:
        widget = self.window["-INPUT-"].Widget
        widget.delete("1.0", "end")
        widget.insert("1.0", text)
        widget.mark_set("insert", "end-1c")
        widget.focus_set()

    def send_input(self) -> None:
        """Act on the input box: a message, a command, or nothing if it is empty."""
        command = commands.parse(self.input_text())
        if command.kind == "none":
            self.set_input("")  # only blanks: cleared, nothing sent
            return
        lines: list[Line] = []
        try:
            if command.kind == "say":
                ident = self.session.say(command.text)
                entry = self.session.outbox[-1]
                self.log.add_pending(ident, pending_line("say", entry.text, None))
            elif command.kind == "pm":
                ident = self.session.pm(command.to, command.text)
                entry = self.session.outbox[-1]
                self.log.add_pending(ident, pending_line("pm", entry.text, entry.to))
            elif command.kind == "who":
                if not self.session.who():
                    lines.append(system_line("not connected", style="error"))
            elif command.kind == "quit":
                self.quit()
            elif command.kind == "help":
                lines += [system_line(row) for row in commands.HELP.splitlines()]
            else:
                lines.append(system_line(command.text, style="error"))
                self.log.append(lines)
                return  # keep the input so it can be corrected
        except ProtocolError as exc:
            self.log.append([system_line(f"not sent: {exc.message}", style="error")])
            return
        self.set_input("")
        self.log.append(lines)
        self._state_dirty = True

    def quit(self) -> None:
        """Exit, /quit or the window manager's close: say bye, then close."""
        if not self.closing:
            self.closing = True
            self.session.close()

    # ---------------------------------------------------------------- events

    def render(self, events: list[Event]) -> None:
        """Show one turn's events with one insert into the log."""
        batch: list[Line] = []
        users_changed = False
        me = self.session.name
        for event in events:
            kind = event.kind
            if kind == "acked":
                self.log.drop_pending(event.ident)
                continue
            if kind == "message":
                self.messages += 1
                if event.history and not self._history_mode:
                    if not self.log.lines and not batch:
                        self.log.pinned = 1  # older pages go below this header
                    batch.append(Line("separator", "— history —"))
                elif not event.history and self._history_mode:
                    batch.append(Line("separator", "— now —"))
                self._history_mode = event.history
            elif kind == "history":
                self._show_history(event)
                continue
            elif kind in ("join", "leave", "users", "welcome"):
                users_changed = True
                if kind == "welcome":
                    self.logged_in = True
                    self.window.set_title(title_for(self.session))
            elif kind == "error" and event.ident:
                self.log.drop_pending(event.ident)
            elif kind == "failed":
                self._offline_reason = event.detail
                if not self.logged_in:
                    self.login_failure = event.detail
            if kind == "status":
                previous, self._last_status = self._last_status, event.status
                users_changed = True  # the list greys out or comes back
                if event.status == CONNECTED and not self._announced:
                    self._announced = True  # the first connect is in the status bar
                    continue
                if event.status == RECONNECTING and previous != CONNECTED:
                    continue  # one line for the loss; the countdown is in the status bar
            if kind != "message" and self._history_mode and event_lines(event, me):
                batch.append(Line("separator", "— now —"))
                self._history_mode = False
            batch += event_lines(event, me)
        self.log.append(batch)
        if users_changed:
            self._show_users()
        if events:
            self._state_dirty = True

    def _show_history(self, event: Event) -> None:
        msgs = event.msg["msgs"]
        me = self.session.name
        if msgs:
            self.log.prepend([message_line(m, me, history=True) for m in msgs])
        else:
            self.log.prepend([Line("separator", "— start of history —")])

    def _show_users(self) -> None:
        """The user list and its count; greyed while offline (it may be stale)."""
        names = sorted(self.session.users.values(), key=str.casefold)
        live = self.session.status == CONNECTED
        if names != self._users or live != self._users_live:
            self._users, self._users_live = names, live
            self.window["-USERS-"].update(values=names)
            self.window["-USERS-"].Widget.configure(fg=USERS_FG if live else USERS_STALE_FG)
            self.window["-COUNT-"].update(f"Online ({len(names)})" if live else
                                          f"Offline (last seen {len(names)})")

    def _update_status(self) -> None:
        session = self.session
        pending = len(session.outbox)
        if session.status == CONNECTED:
            text = f"connected to {session.address} as {session.name}"
        elif session.status == CONNECTING:
            text = f"connecting to {session.address}…"
        elif session.status == RECONNECTING:
            wait = session.retry_in()
            text = (f"reconnecting in {math.ceil(wait)} s" if wait > 0 else "reconnecting…")
        else:
            text = f"offline — {self._offline_reason}" if self._offline_reason else "offline"
        if pending:
            text += f" · {pending} pending"
        if text != self._status_text:
            self._status_text = text
            self.window["-STATUS-"].update(text)
            self._state_dirty = True

    def _maybe_load_history(self) -> None:
        if self.log.at_top():
            oldest = self.log.oldest_seq()
            if oldest:
                self.session.request_history(oldest)

    # ---------------------------------------------------------------- state

    def state(self) -> dict[str, Any]:
        return {
            "title": title_for(self.session),
            "name": self.session.name,
            "status": self.session.status,
            "status_text": self._status_text,
            "users": self._users,
            "lines": [{"style": s, "text": t} for s, t in self.log.texts],
            "line_count": self.log.lines,
            "pending": list(self.log.pending.values()),
            "messages": self.messages,
            "input_focus": str(self.window.TKroot.focus_lastfor()) == str(
                self.window["-INPUT-"].Widget),
            "input": self.input_text(),
            "user_rows": self._user_rows(),
            "boxes": {key.strip("-").lower(): self._box(self.window[key].Widget)
                      for key in ("-LOG-", "-SEND-", "-EXIT-")},
            **self.stats.as_dict(),
        }

    @staticmethod
    def _box(widget: tk.Widget) -> list[int]:
        """A widget's screen rectangle (for tests that click)."""
        return [widget.winfo_rootx(), widget.winfo_rooty(), widget.winfo_width(),
                widget.winfo_height()]

    def _user_rows(self) -> dict[str, list[int]]:
        """Screen rectangles of the visible user-list rows (for tests that click)."""
        box = self.window["-USERS-"].Widget
        rows: dict[str, list[int]] = {}
        for index, name in enumerate(self._users):
            bbox = box.bbox(index)
            if bbox:
                x, y, w, h = bbox
                rows[name] = [box.winfo_rootx() + x, box.winfo_rooty() + y, w, h]
        return rows

    def write_state(self, now: float, force: bool = False) -> None:
        if self.state_file is None or not (force or self._state_dirty):
            return
        if not force and now - self._state_at < STATE_EVERY:
            return
        self._state_at = now
        self._state_dirty = False
        self._write_state_file(self.state())

    def _write_state_file(self, state: dict[str, Any] | None = None) -> None:
        """Atomically replace the state file; at exit only ``closed`` is added."""
        assert self.state_file is not None
        if state is None:
            try:
                state = json.loads(self.state_file.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                state = {}
            state.update(self.stats.as_dict())
            state["status"] = self.session.status
        state["closed"] = self.session.finished and self.closing
        tmp = self.state_file.with_name(self.state_file.name + ".tmp")
        tmp.write_text(json.dumps(state), encoding="utf-8")
        os.replace(tmp, self.state_file)

    # ---------------------------------------------------------------- loop

    def run(self, early: list[Event] | None = None) -> int:
        """The event loop; returns the exit status once the window is closed."""
        if early:
            self.render(early)
        self._show_users()
        window = self.window
        last = time.perf_counter()
        last_cpu = time.process_time()
        busy = False
        while True:
            was_busy = busy
            event, _values = window.read(timeout=0 if was_busy else IDLE_MS)
            start, start_cpu = time.perf_counter(), time.process_time()
            if event == sg.WIN_CLOSED or self.destroyed:
                break
            try:
                busy = self.turn(event)
            except tk.TclError:  # a widget vanished: the window was destroyed
                break
            end, end_cpu = time.perf_counter(), time.process_time()
            self._adapt_batch(end - start, busy)
            # An idle read may wait IDLE_MS on purpose; that is not part of a turn.
            if was_busy:
                self.stats.record(end - last, end_cpu - last_cpu, busy)
            else:
                self.stats.record(end - start, end_cpu - start_cpu, busy)
            last, last_cpu = end, end_cpu
            self.write_state(end)
            if (self.closing or self.login_failure) and self.session.finished:
                break
        if not self.session.finished:  # destroyed under us: say bye without a window
            self.closing = True
            self.session.close_and_wait()
        if self.state_file is not None:
            self._write_state_file()
        if self.show_stats:
            print(f"chatgui: {json.dumps(self.stats.as_dict())} messages={self.messages} "
                  f"lines={self.log.lines}", file=sys.stderr)
        window.close()
        return 0

    def _adapt_batch(self, work: float, busy: bool) -> None:
        """Keep a turn's work near WORK_BUDGET whatever the machine's speed.

        The session handles at most ``max_events`` messages per poll. On a slow
        or busy machine a fixed number could take too long, so the batch halves
        after a slow turn and grows again while turns are quick and work waits.
        """
        session = self.session
        if work > WORK_BUDGET:
            session.max_events = max(MIN_BATCH, session.max_events // 2)
        elif busy and work < WORK_BUDGET / 2:
            session.max_events = min(MAX_BATCH, session.max_events * 3 // 2)

    def turn(self, event: object) -> bool:
        """One turn after ``read``; True if the session has more queued right now."""
        window = self.window
        if event != sg.TIMEOUT_KEY:
            self._state_dirty = True
        if event in (sg.WINDOW_CLOSE_ATTEMPTED_EVENT, "-EXIT-"):
            self.quit()
        elif event == "-SEND-":
            self.send_input()
        elif event == "-USERS-+DOUBLE":
            chosen = window["-USERS-"].get()
            if chosen:
                self.set_input(f"/msg {chosen[0]} ")
        self.render(self.session.poll())
        busy = self.session.more
        self._update_status()
        if not busy:
            self._maybe_load_history()
        return busy
