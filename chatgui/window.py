"""The main chat window: rooms and direct messages, the room in front, its members.

One thread: the loop calls ``window.read(timeout=...)`` and then polls the
connection (:class:`chatclient.net.Connection`, which never blocks), so the
socket is served between GUI events and nothing waits on the network. Events
are queued (a poll reads a bounded amount) and a turn handles at most
``batch`` of them (halved after a slow turn, grown while turns are quick),
folded into :class:`chatgui.rooms.Rooms`; the widgets are then touched once
for the whole batch. While events are queued or the socket has more, the next
read does not wait, so a flood drains as fast as the window can draw,
and clicks and keys are still served every turn.

``--state-file`` makes the window dump what it shows (rooms and their counts,
the log's lines, members, alerts, pending messages, turn times, screen boxes
for tests that click) as JSON a few times a second.
"""

from __future__ import annotations

import functools
import json
import math
import os
import select
import sys
import time
import tkinter as tk
from collections import deque
from pathlib import Path
from typing import Any

import PySimpleGUI as sg

from chatclient import events as ev
from chatclient.net import Connection
from chatclient.pins import CertificateRefused
from chatclient.session import ClientSession
from chatgui import slash, trust
from chatgui.notify import Notifier
from chatgui.render import hhmm
from chatgui.roomlog import RoomLog
from chatgui.rooms import Room, Rooms
from chatgui.stats import Stats
from protocol.errors import ProtocolError
from protocol.values import room_key

FONT = ("DejaVu Sans", 11)
IDLE_MS = 50  # read timeout when nothing is queued
STATE_EVERY = 0.2  # seconds between state-file dumps
WORK_BUDGET = 0.03  # seconds of our own work per turn, leaving Tk time to draw
MIN_BATCH, START_BATCH, MAX_BATCH = 50, 250, 4000  # events per turn: _adapt_batch
BANNER_SECONDS = 8.0
HISTORY_PAGE = 50
STATE_TEXTS = 200  # per room, the newest texts written to the state file
HEADER_FG, MUTED_FG, UNREAD_FG, ALERT_BG = "#5f6b73", "#8a8a8a", "#111111", "#ffcc80"


def dm_room_name(a: str, b: str) -> str:
    """The contract's name of the dm room of two accounts (§11)."""
    return "@" + "@".join(sorted((a.casefold(), b.casefold())))


class ChatWindow:
    def __init__(self, session: ClientSession, conn: Connection, address: str, *,
                 state_file: Path | None = None, stats: bool = False, keep: int = 2000,
                 notifier: Notifier | None = None) -> None:
        self.session = session
        self.conn = conn
        self.address = address
        self.rooms = Rooms(session.name, keep)
        self.state_file = state_file
        self.show_stats = stats
        self.stats = Stats()
        self.notifier = notifier or Notifier()
        self.queue: deque[ev.Event] = deque()
        self.batch = START_BATCH
        self.events_seen = 0
        self.status = "connecting"
        self.status_text = ""
        self.retry_at: float | None = None
        self.offline_reason = ""
        self.finished = False  # the session is over (closed or failed)
        self.closing = False
        self.close_deadline = 0.0
        self.destroyed = False
        self.logged_in = False
        self.login_failure: str | None = None
        self.editing: tuple[str, int] | None = None  # (room, seq) the composer edits
        self.pending: dict[str, tuple[str, str]] = {}  # say ident -> (room, text), until acked
        self.alerts: list[dict[str, Any]] = []  # every alert raised, for the state file
        self.banner_until = 0.0
        self.banner_room = ""
        self.results: list[ev.ChatMessage] = []
        self.result_query = ""
        self.menu_seq = 0
        self.menu_open = False
        self._room_rows: list[str | None] = []  # listbox row -> room key (None: a header)
        self._row_texts: list[tuple[str, str, str]] = []
        self._member_rows: list[str] = []
        self.members_asked: set[str] = set()  # rooms whose member list was asked for
        self._typing_text = ""
        self._state_dirty = True
        self._state_at = 0.0
        self.window = self._build()
        self.log = RoomLog(self.window["-LOG-"].Widget, keep=keep)
        self._bind()

    # ---------------------------------------------------------------- layout

    def _build(self) -> sg.Window:
        bold = (FONT[0], 11, "bold")
        side = sg.Column([
            [sg.Input("", key="-SEARCH-", size=(18, 1), tooltip="search your rooms (Enter)"),
             sg.Button("🔍", key="-FIND-", size=(2, 1), tooltip="search")],
            [sg.Listbox([], key="-ROOMS-", size=(24, 24), expand_y=True, font=FONT,
                        enable_events=True, background_color="white", sbar_width=10,
                        sbar_arrow_width=8, select_mode=sg.LISTBOX_SELECT_MODE_SINGLE)],
            [sg.Input("", key="-NEWROOM-", size=(12, 1), tooltip="a room's name"),
             sg.Button("Join", key="-JOIN-", tooltip="join or create a public room"),
             sg.Button("Private", key="-PRIVATE-", tooltip="create a private room")],
        ], expand_y=True, pad=(0, 0))
        header = [
            sg.Text("", key="-ROOMNAME-", font=(FONT[0], 13, "bold")),
            sg.Text("", key="-TOPIC-", text_color=HEADER_FG, expand_x=True),
            sg.Input("", key="-INVITEE-", size=(12, 1), tooltip="an account to invite"),
            sg.Button("Invite", key="-INVITE-"), sg.Button("Leave", key="-LEAVE-"),
        ]
        results = sg.Column([
            [sg.Text("", key="-RESULTSTITLE-", font=bold, expand_x=True),
             sg.Button("Close", key="-CLOSERESULTS-")],
            [sg.Listbox([], key="-RESULTS-", size=(56, 6), expand_x=True, enable_events=True,
                        font=FONT, background_color="#fffde7")],
        ], key="-RESULTSBOX-", visible=False, expand_x=True, pad=(0, 0))
        banner = sg.Text("", key="-BANNER-", background_color="#fff3cd", text_color="#5d4037",
                         expand_x=True, enable_events=True, visible=False, font=bold)
        log = sg.Multiline("", key="-LOG-", size=(56, 24), disabled=True, write_only=True,
                           expand_x=True, expand_y=True, font=FONT, background_color="white",
                           border_width=1, sbar_width=12, sbar_arrow_width=10)
        composer = sg.Multiline("", key="-INPUT-", size=(48, 3), expand_x=True, font=FONT,
                                focus=True, no_scrollbar=True, border_width=1,
                                background_color="white")
        center = sg.Column([
            header,
            [sg.pin(banner, expand_x=True)],
            [sg.pin(results, expand_x=True)],
            [log],
            [sg.Text("", key="-TYPING-", text_color=MUTED_FG, font=(FONT[0], 9, "italic"),
                     expand_x=True),
             sg.pin(sg.Button("Jump to latest", key="-LIVE-", visible=False))],
            [composer, sg.Column([[sg.Button("Send", key="-SEND-", size=(7, 1))],
                                  [sg.Button("Exit", key="-EXIT-", size=(7, 1))]])],
        ], expand_x=True, expand_y=True, pad=((6, 6), 0))
        members = sg.Column([
            [sg.Text("Members", key="-COUNT-", font=bold)],
            [sg.Listbox([], key="-MEMBERS-", size=(18, 24), expand_y=True, font=FONT,
                        background_color="white", sbar_width=10, sbar_arrow_width=8,
                        tooltip="double-click a member to open a direct conversation")],
        ], expand_y=True, pad=(0, 0))
        status = sg.StatusBar("", key="-STATUS-", size=(80, 1), expand_x=True, font=FONT)
        layout = [[side, center, members], [status]]
        window = sg.Window(self._title(), layout, finalize=True, resizable=True,
                           enable_close_attempted_event=True, font=FONT, size=(1140, 720))
        toplevel = window.TKroot

        def on_destroy(event: tk.Event) -> None:
            if event.widget is toplevel:
                self.destroyed = True

        toplevel.bind("<Destroy>", on_destroy, add="+")
        return window

    def _title(self) -> str:
        return f"{self.session.name} @ {self.address} — chat"

    def _bind(self) -> None:
        window = self.window
        entry = window["-INPUT-"].Widget

        def on_enter(_event: object) -> str:
            self.send_input()
            return "break"  # no newline: Enter sends

        def on_shift_enter(_event: object) -> str:
            entry.insert("insert", "\n")
            return "break"

        def on_up(_event: object) -> str | None:
            if self.input_text().strip():
                return None  # moving the cursor in a multi-line draft
            return "break" if self.edit_last() else None

        def on_escape(_event: object) -> str:
            self.editing = None
            self.set_input("")
            self._hint("")
            return "break"

        def on_key(event: tk.Event) -> None:
            if event.keysym not in ("Return", "KP_Enter", "Up", "Escape", "Shift_L",
                                    "Shift_R", "Control_L", "Control_R"):
                self._typed()

        entry.bind("<Return>", on_enter)
        entry.bind("<KP_Enter>", on_enter)
        entry.bind("<Shift-Return>", on_shift_enter)
        entry.bind("<Up>", on_up)
        entry.bind("<Escape>", on_escape)
        entry.bind("<KeyPress>", on_key, add="+")
        window["-SEARCH-"].bind("<Return>", "+ENTER")
        window["-NEWROOM-"].bind("<Return>", "+ENTER")
        window["-INVITEE-"].bind("<Return>", "+ENTER")
        window["-MEMBERS-"].bind("<Double-Button-1>", "+DOUBLE")
        window["-RESULTS-"].bind("<Double-Button-1>", "+DOUBLE")
        toplevel = window.TKroot
        toplevel.bind("<FocusIn>", lambda _e: self._focus(True), add="+")
        toplevel.bind("<FocusOut>", lambda _e: self._focus(False), add="+")
        self.menu = tk.Menu(toplevel, tearoff=0)
        self.menu.bind("<Unmap>", lambda _e: setattr(self, "menu_open", False))
        self.log.widget.bind("<Button-3>", self._context_menu)
        entry.focus_force()

    def _focus(self, focused: bool) -> None:
        self.rooms.focused = focused

    # ---------------------------------------------------------------- composer

    def input_text(self) -> str:
        return str(self.window["-INPUT-"].Widget.get("1.0", "end-1c"))

    def set_input(self, text: str) -> None:
        widget = self.window["-INPUT-"].Widget
        widget.delete("1.0", "end")
        widget.insert("1.0", text)
        widget.mark_set("insert", "end-1c")
        widget.focus_set()

    def _hint(self, text: str) -> None:
        self._typing_text = ""
        self.window["-TYPING-"].update(text)

    def _typed(self) -> None:
        """A key in the composer: the session tells the room (at most every 3 s)."""
        room = self.rooms.front_room()
        if room is not None and not self.input_text().startswith("/"):
            self.session.typing(room.name)

    def edit_last(self) -> bool:
        """Up-arrow in an empty composer: edit my newest message of the room in front."""
        room = self.rooms.front_room()
        msg = room.last_mine() if room is not None else None
        if room is None or msg is None:
            return False
        self.editing = (room.name, msg.seq)
        self.set_input(msg.text)
        self._hint("editing your message — Enter saves, Esc cancels")
        return True

    def send_input(self) -> None:
        """Act on the composer: a message, an edit, a command, or nothing if empty."""
        try:
            self._send_input(self.input_text())
        except ProtocolError as exc:  # the text breaks a value rule: kept, to be fixed
            self.log.note("error", f"not sent: {exc.message}")

    def _send_input(self, text: str) -> None:
        if self.editing is not None:
            room_name, seq = self.editing
            self.editing = None
            self._hint("")
            if text.strip():
                self.session.edit(room_name, seq, text)
            else:
                self.session.delete(room_name, seq)
            self.set_input("")
            return
        command = slash.parse(text)
        if command.kind == "none":
            self.set_input("")
            return
        if command.kind == "error":
            self.log.note("error", command.text)
            return  # kept, so it can be corrected
        room = self.rooms.front_room()
        if command.kind == "say":
            if room is None:
                self.log.note("error", "not in a room: /join one first")
                return
            ident = self.session.say(room.name, command.text)
            self.pending[ident] = (room.name, command.text)
            self.log.add_pending(ident, command.text)
        elif not self.run_command(command, room):
            return
        self.set_input("")
        self._state_dirty = True

    def run_command(self, command: slash.Command, room: Room | None) -> bool:
        """A slash command; False if it needs a room and there is none."""
        session = self.session
        kind = command.kind
        if kind in ("leave", "invite", "topic") and room is None:
            self.log.note("error", f"/{kind}: not in a room")
            return False
        if kind in ("join", "private"):
            self.join(command.arg, private=kind == "private")
        elif kind == "leave" and room is not None:
            session.part(room.name)
        elif kind == "invite" and room is not None:
            session.invite(room.name, command.arg)
            self.log.note("note", f"invited {command.arg}")
        elif kind == "topic" and room is not None:
            session.topic(room.name, command.text)
        elif kind == "dm":
            self.open_dm(command.arg)
        elif kind == "search":
            self.search(command.text)
        elif kind == "msg":
            session.pm(command.arg, command.text)
        elif kind == "who":
            session.who()
        elif kind == "quit":
            self.quit()
        elif kind == "help":
            for row in slash.HELP.splitlines():
                self.log.note("note", row)
        return True

    # ---------------------------------------------------------------- intents

    def join(self, name: str, private: bool = False) -> None:
        name = name.strip().lstrip("#")
        if not name:
            return
        existing = self.rooms.get(name)
        if existing is not None:
            self.show(existing.name)
            return
        self.rooms.want_front = room_key(name)
        self.session.join(name, private=private)

    def open_dm(self, name: str) -> None:
        key = room_key(dm_room_name(self.session.name, name))
        if key in self.rooms.rooms:
            self.show(self.rooms.rooms[key].name)
            return
        self.rooms.want_front = key
        self.session.dm(name)

    def search(self, query: str) -> None:
        if query.strip():
            self.result_query = query.strip()
            self.session.search(query.strip())

    def show(self, name: str) -> None:
        if self.rooms.show(name) is not None:
            self.editing = None

    def jump(self, msg: ev.ChatMessage) -> None:
        front = self.rooms.front_room()
        drawn = front is not None and room_key(front.name) == room_key(msg.room) \
            and msg.seq in self.log.shown
        if self.rooms.jump(msg.room, msg.seq, drawn):
            room = self.rooms.get(msg.room)
            if room is not None:
                room.asked_before = msg.seq + HISTORY_PAGE // 2
                self.session.history(room.name, room.asked_before, HISTORY_PAGE)

    def back_to_live(self) -> None:
        room = self.rooms.front_room()
        if room is not None:
            self.rooms.back_to_live(room.name)

    def open_rooms(self) -> list[str]:
        """The rooms to open again at the next login (dm rooms come by themselves)."""
        return [r.name for r in self.rooms.rooms.values() if not r.is_dm]

    def quit(self) -> None:
        """Exit, /quit or the window manager's close: say bye, then close."""
        if not self.closing:
            self.closing = True
            self.close_deadline = time.monotonic() + 2.0
            if self.finished:
                return
            self.session.bye()

    # ---------------------------------------------------------------- context menu

    def _context_menu(self, event: tk.Event) -> str:
        seq = self.log.seq_at(event.x, event.y)
        room = self.rooms.front_room()
        if not seq or room is None or seq not in room.messages:
            return "break"
        msg = room.messages[seq]
        self.menu_seq = seq
        menu = self.menu
        menu.delete(0, "end")
        items = self.menu_items(room, msg)
        for label in items:
            menu.add_command(label=label, command=functools.partial(self._menu, label))
        self.menu_open = True
        self._state_dirty = True
        menu.tk_popup(event.x_root, event.y_root)
        return "break"

    def menu_items(self, room: Room, msg: ev.ChatMessage) -> list[str]:
        items = []
        if msg.mine and not msg.deleted:
            items.append("Edit")
        if not msg.deleted and (msg.mine or room.info.role in ("owner", "op")):
            items.append("Delete")
        if not msg.deleted:
            items.append("Copy")
        return items

    def _menu(self, label: str) -> None:
        self.menu_open = False
        room = self.rooms.front_room()
        if room is None or self.menu_seq not in room.messages:
            return
        msg = room.messages[self.menu_seq]
        if label == "Edit":
            self.editing = (room.name, msg.seq)
            self.set_input(msg.text)
            self._hint("editing your message — Enter saves, Esc cancels")
        elif label == "Delete":
            self.session.delete(room.name, msg.seq)
        elif label == "Copy":
            root = self.window.TKroot
            root.clipboard_clear()
            root.clipboard_append(msg.text)
        self._state_dirty = True

    # ---------------------------------------------------------------- events

    def take_events(self, now: float) -> list[ev.Event]:
        """The next batch: read the connection only once the queue is drained."""
        if not self.queue and not self.finished:
            self.queue.extend(self.conn.poll(now))
        count = min(len(self.queue), self.batch)
        return [self.queue.popleft() for _ in range(count)]

    def handle(self, events: list[ev.Event], now: float) -> None:
        rooms = self.rooms
        for event in events:
            self.events_seen += 1
            match event:
                case ev.Connecting():
                    self.status = "connecting"
                case ev.Connected():
                    pass
                case ev.LoggedIn():
                    first = not self.logged_in
                    self.logged_in = True
                    self.status = "connected"
                    self.offline_reason = ""
                    self.retry_at = None
                    for room in rooms.rooms.values():
                        room.asked_before = 0
                    self.members_asked.clear()
                    rooms.changes.members = True
                    if not first:
                        self.log.note("note", "reconnected")
                case ev.Reconnecting() if self.conn.refused is not None:
                    self.certificate_changed(self.conn.refused)
                case ev.Reconnecting(delay=delay, reason=reason):
                    if self.status == "connected":
                        self.log.note("note", f"connection lost ({reason}); reconnecting")
                    self.status = "reconnecting"
                    self.retry_at = now + delay
                case ev.Failed(code=code, detail=detail):
                    self.status, self.finished = "offline", True
                    self.offline_reason = detail or code
                    if not self.logged_in:
                        self.login_failure = self.offline_reason
                    self.log.note("error", self.offline_reason)
                case ev.Closed():
                    self.status, self.finished = "offline", True
                case ev.SearchResults(query=query, msgs=msgs):
                    self.show_results(query, list(msgs))
                case ev.Users(names=names):
                    ordered = sorted(names, key=str.casefold)
                    self.log.note("note", f"online ({len(ordered)}): {', '.join(ordered)}")
                case ev.RoomList(rooms=listed):
                    public = ", ".join(r.name for r in listed if r.kind != "dm")
                    self.log.note("note", f"rooms: {public}")
            rooms.apply(event, now)
        self.render(now)
        if events:
            self._state_dirty = True

    def render(self, now: float) -> None:
        rooms = self.rooms
        changes = rooms.take()
        front = rooms.front_room()
        if changes.front_reset:
            if front is None:
                self.log.reset([], 0, self.session.name)
            else:
                self.log.reset(list(front.messages.values()), front.info.read,
                               self.session.name,  # a page around a hit: all of it
                               limit=len(front.messages) if front.detached else 0)
                self._redraw_pending(front)
            self.window["-LIVE-"].update(visible=bool(front and front.detached))
        else:
            if changes.front_older and front is not None:
                self._prepend(front)
            self.log.append(changes.front_added)
            for msg in changes.front_changed:
                self.log.replace(msg)
        if changes.jump_to:
            self.log.scroll_to(changes.jump_to)
        for ident in changes.acked:
            self.pending.pop(ident, None)
            self.log.drop_pending(ident)
        for style, text in changes.notes:
            self.log.note(style, f"{hhmm(int(time.time() * 1000))} — {text}")
        if changes.room_list:
            self._show_rooms()
        if changes.header:
            self._show_header(front)
        if changes.members:
            self._show_members(front)
            if front is not None and not front.members and self.status == "connected" \
                    and room_key(front.name) not in self.members_asked:
                self.members_asked.add(room_key(front.name))
                self.session.members(front.name)
        for alert in changes.alerts:
            self._alert(alert.room, alert.title, alert.body, now)

    def _prepend(self, front: Room) -> None:
        """An older page came: redraw, keeping the old top message in view."""
        top = self.log.shown[0] if self.log.shown else 0
        self.log.reset(list(front.messages.values()), -1, self.session.name,
                       limit=len(front.messages))
        self._redraw_pending(front)
        ranges = self.log.widget.tag_ranges(f"m{top}")
        if ranges:
            self.log.widget.yview(ranges[0])

    def _redraw_pending(self, front: Room) -> None:
        for ident, (room_name, text) in self.pending_says().items():
            if room_key(room_name) == room_key(front.name):
                self.log.add_pending(ident, text)

    def pending_says(self) -> dict[str, tuple[str, str]]:
        """ident -> (room, text) of the says not yet acknowledged."""
        return self.pending

    def show_results(self, query: str, msgs: list[ev.ChatMessage]) -> None:
        self.results = msgs
        rows = []
        for msg in msgs:
            room = self.rooms.get(msg.room)
            label = room.label if room else msg.room
            text = msg.text.replace("\n", " ")
            rows.append(f"{label} · {msg.sender} {hhmm(msg.ts)}: {text}")
        self.window["-RESULTSTITLE-"].update(
            f"{len(msgs)} result{'s' if len(msgs) != 1 else ''} for “{query}”")
        self.window["-RESULTS-"].update(values=rows or ["nothing found"])
        self.window["-RESULTSBOX-"].update(visible=True)

    def _alert(self, room: str, title: str, body: str, now: float) -> None:
        desktop = self.notifier.notify(room, title, body)
        self.alerts.append({"room": room, "title": title, "body": body, "desktop": desktop})
        del self.alerts[:-50]
        if not desktop:
            self._banner(room, title, body, now)

    def _banner(self, room: str, title: str, body: str, now: float) -> None:
        text = f"🔔 {title}: {body}".replace("\n", " ")
        self.window["-BANNER-"].update(text[:160], visible=True)
        self.banner_until = now + BANNER_SECONDS
        self.banner_room = room

    # ---------------------------------------------------------------- side panels

    def room_rows(self) -> list[tuple[str | None, str, str, str]]:
        """(room key, text, fg, bg) of each row of the room list, headers included."""
        rooms, dms = self.rooms.ordered()
        rows: list[tuple[str | None, str, str, str]] = [(None, "ROOMS", HEADER_FG, "white")]
        for section, members in ((None, rooms), ("DIRECT MESSAGES", dms)):
            if section:
                rows.append((None, section, HEADER_FG, "white"))
            for room in members:
                if room.is_dm:
                    partner = (room.info.with_ or "").casefold()
                    online = any(m.online for k, m in room.members.items() if k == partner)
                    mark = "●" if online else "○"
                else:
                    mark = "#" if room.info.kind == "public" else "🔒"
                text = f"  {mark} {room.label}"
                if room.alerts:
                    text += f"   @{room.alerts}"
                if room.unread:
                    text += f"   ({room.unread})"
                fg = UNREAD_FG if room.unread else MUTED_FG
                bg = ALERT_BG if room.alerts else "white"
                rows.append((room_key(room.name), text, fg, bg))
        return rows

    def _show_rooms(self) -> None:
        rows = self.room_rows()
        box = self.window["-ROOMS-"].Widget
        keys = [key for key, *_ in rows]
        texts = [(text, fg, bg) for _, text, fg, bg in rows]
        if keys != self._room_rows:
            box.delete(0, "end")
            box.insert("end", *[t for t, _, _ in texts])
            self._row_texts = []
        for index, (text, fg, bg) in enumerate(texts):
            if index < len(self._row_texts) and self._row_texts[index] == (text, fg, bg):
                continue
            if index < len(self._row_texts) and self._row_texts[index][0] != text:
                box.delete(index)
                box.insert(index, text)
            box.itemconfigure(index, foreground=fg, background=bg,
                              selectbackground="#1565c0" if keys[index] else bg,
                              selectforeground="white" if keys[index] else fg)
        self._room_rows = keys
        self._row_texts = texts
        box.selection_clear(0, "end")
        if self.rooms.front in keys:
            box.selection_set(keys.index(self.rooms.front))
        self.window.set_title(self._title())

    def _show_header(self, front: Room | None) -> None:
        if front is None:
            self.window["-ROOMNAME-"].update("no room")
            self.window["-TOPIC-"].update("join a room: type its name under the list")
            return
        kind = {"private": "🔒 ", "dm": "@ "}.get(front.info.kind, "# ")
        self.window["-ROOMNAME-"].update(kind + front.label)
        self.window["-TOPIC-"].update(front.info.topic or ("direct messages" if front.is_dm
                                                         else "no topic"))
        self.window["-LEAVE-"].update(disabled=front.is_dm)
        self.window["-INVITE-"].update(disabled=front.info.kind != "private")

    def _show_members(self, front: Room | None) -> None:
        members = sorted(front.members.values(), key=lambda m: (not m.online,
                                                                m.name.casefold())) \
            if front else []
        rows = []
        for member in members:
            role = f"  ({member.role})" if member.role != "member" else ""
            rows.append(f"{'●' if member.online else '○'} {member.name}{role}")
        self._member_rows = [m.name for m in members]
        box = self.window["-MEMBERS-"].Widget
        box.delete(0, "end")
        if rows:
            box.insert("end", *rows)
        for index, member in enumerate(members):
            box.itemconfigure(index, foreground="#2e7d32" if member.online else MUTED_FG)
        online = sum(m.online for m in members)
        self.window["-COUNT-"].update(f"Members {online}/{len(members)} online")

    def _update_status(self, now: float) -> None:
        if self.status == "connected":
            text = f"connected to {self.address} as {self.session.name}"
        elif self.status == "connecting":
            text = f"connecting to {self.address}…"
        elif self.status == "reconnecting":
            wait = (self.retry_at or now) - now
            text = f"reconnecting in {math.ceil(wait)} s" if wait > 0 else "reconnecting…"
        else:
            text = f"offline — {self.offline_reason}" if self.offline_reason else "offline"
        pending = len(self.pending_says())
        if pending:
            text += f" · {pending} pending"
        if text != self.status_text:
            self.status_text = text
            self.window["-STATUS-"].update(text)
            self._state_dirty = True

    def _update_typing(self, now: float) -> None:
        if self.editing is not None:
            return
        names = self.rooms.typing_names(now)
        if not names:
            text = ""
        elif len(names) == 1:
            text = f"{names[0]} is typing…"
        else:
            text = f"{', '.join(names[:3])} are typing…"
        if text != self._typing_text:
            self._typing_text = text
            self.window["-TYPING-"].update(text)
            self._state_dirty = True

    def _need_history(self) -> None:
        """Ask for the page the front room needs: a first look, or older on scroll-up."""
        room = self.rooms.front_room()
        if room is None or room.asked_before or self.status != "connected":
            return
        if not room.messages:
            if room.info.seq > 0 and not room.detached:
                room.asked_before = room.info.seq + 1
            elif room.detached:
                return
        elif not room.at_start and self.log.at_top() and len(room.messages) < 3 * self.rooms.keep:
            room.asked_before = room.oldest_buffered()
        if room.asked_before:
            self.session.history(room.name, room.asked_before, HISTORY_PAGE)

    # ---------------------------------------------------------------- GUI events

    def on_gui(self, event: object, values: dict[str, Any] | None) -> None:
        window = self.window
        values = values or {}
        if event != sg.TIMEOUT_KEY:
            self._state_dirty = True
        if event in (sg.WINDOW_CLOSE_ATTEMPTED_EVENT, "-EXIT-"):
            self.quit()
        elif event == "-SEND-":
            self.send_input()
        elif event == "-ROOMS-":
            index = window["-ROOMS-"].Widget.curselection()
            key = self._room_rows[index[0]] if index and index[0] < len(self._room_rows) \
                else None
            if key is not None and key in self.rooms.rooms:
                self.show(self.rooms.rooms[key].name)
            else:
                self.rooms.changes.room_list = True  # a header: back to the front room
        elif event in ("-JOIN-", "-NEWROOM-+ENTER", "-PRIVATE-"):
            self.join(str(values.get("-NEWROOM-", "")), private=event == "-PRIVATE-")
            window["-NEWROOM-"].update("")
        elif event in ("-INVITE-", "-INVITEE-+ENTER"):
            room = self.rooms.front_room()
            name = str(values.get("-INVITEE-", "")).strip()
            if room is not None and name:
                self.run_command(slash.Command("invite", arg=name), room)
                window["-INVITEE-"].update("")
        elif event == "-LEAVE-":
            room = self.rooms.front_room()
            if room is not None:
                self.session.part(room.name)
        elif event == "-MEMBERS-+DOUBLE":
            chosen = window["-MEMBERS-"].Widget.curselection()
            if chosen and chosen[0] < len(self._member_rows):
                name = self._member_rows[chosen[0]]
                if room_key(name) != room_key(self.session.name):
                    self.open_dm(name)
        elif event in ("-FIND-", "-SEARCH-+ENTER"):
            self.search(str(values.get("-SEARCH-", "")))
        elif event in ("-RESULTS-", "-RESULTS-+DOUBLE"):
            chosen = window["-RESULTS-"].Widget.curselection()
            if chosen and chosen[0] < len(self.results):
                self.jump(self.results[chosen[0]])
        elif event == "-CLOSERESULTS-":
            window["-RESULTSBOX-"].update(visible=False)
        elif event == "-LIVE-":
            self.back_to_live()
        elif event == "-BANNER-":
            if self.banner_room:
                self.show(self.banner_room)
            window["-BANNER-"].update(visible=False)

    # ---------------------------------------------------------------- loop

    def turn(self, event: object, values: dict[str, Any] | None) -> bool:
        """One turn after ``read``; True if events wait to be handled."""
        now = time.monotonic()
        self.on_gui(event, values)
        self.handle(self.take_events(now), now)
        self.rooms.following = self.log.at_bottom()
        for room_name, seq in self.rooms.due_marks(now):
            self.session.mark(room_name, seq)
        self.render(now)  # what marking changed (counts cleared)
        self._need_history()
        self._update_typing(now)
        self._update_status(now)
        for room, title, body in self.notifier.reap():
            self._banner(room, title, body, now)
        if self.banner_until and now > self.banner_until:
            self.banner_until = 0.0
            self.window["-BANNER-"].update(visible=False)
        return bool(self.queue) or self._readable()

    def certificate_changed(self, refused: CertificateRefused) -> None:
        """A reconnect met another certificate than the pinned one: stop there
        (never retried behind the person's back) and warn with both fingerprints."""
        self.conn.close()
        self.status, self.finished = "offline", True
        self.offline_reason = str(refused)
        self.log.note("error", self.offline_reason)
        assert refused.pinned is not None  # it logged in once, so something is pinned
        trust.warn_changed(refused, self.conn.address, refused.pinned, self.state_file)
        self._state_dirty = True  # the dialog wrote its own state over the window's

    def _readable(self) -> bool:
        """The server sent more than the last poll took (it reads a bounded amount):
        the next read must not wait IDLE_MS for it."""
        fd = None if self.finished else self.conn.fileno()
        return fd is not None and bool(select.select([fd], [], [], 0)[0])

    def run(self, early: list[ev.Event] | None = None) -> int:
        """The event loop; returns the exit status once the window is closed."""
        now = time.monotonic()
        self.handle(list(early or []), now)
        self.rooms.changes.room_list = self.rooms.changes.header = True
        self.render(now)
        window = self.window
        last, last_cpu = time.perf_counter(), time.process_time()
        busy = False
        while True:
            was_busy = busy
            event, values = window.read(timeout=0 if was_busy else IDLE_MS)
            start, start_cpu = time.perf_counter(), time.process_time()
            if event == sg.WIN_CLOSED or self.destroyed:
                break
            try:
                busy = self.turn(event, values)
            except tk.TclError:  # a widget vanished: the window was destroyed
                break
            end, end_cpu = time.perf_counter(), time.process_time()
            self._adapt_batch(end - start, busy)
            if was_busy:  # an idle read waits IDLE_MS on purpose: not part of a turn
                self.stats.record(end - last, end_cpu - last_cpu, busy)
            else:
                self.stats.record(end - start, end_cpu - start_cpu, busy)
            last, last_cpu = end, end_cpu
            self.write_state(end)
            if self.closing and (self.finished or time.monotonic() > self.close_deadline):
                break
            if self.login_failure and self.finished:
                break
        self.conn.close()
        if self.state_file is not None:
            self._write_state_file(closed=True)
        if self.show_stats:
            print(f"chatgui: {json.dumps(self.stats.as_dict())} events={self.events_seen} "
                  f"rooms={len(self.rooms.rooms)}", file=sys.stderr)
        window.close()
        return 0

    def _adapt_batch(self, work: float, busy: bool) -> None:
        """Keep a turn's work near WORK_BUDGET whatever the machine's speed."""
        if work > WORK_BUDGET:
            self.batch = max(MIN_BATCH, self.batch // 2)
        elif busy and work < WORK_BUDGET / 2:
            self.batch = min(MAX_BATCH, self.batch * 3 // 2)

    # ---------------------------------------------------------------- state

    def state(self) -> dict[str, Any]:
        self.window.TKroot.update_idletasks()  # the layout settled: true screen boxes
        front = self.rooms.front_room()
        rows = {}
        box = self.window["-ROOMS-"].Widget
        for index, key in enumerate(self._room_rows):
            bbox = box.bbox(index) if key else None
            if key and bbox:
                x, y, w, h = bbox
                rows[key] = [box.winfo_rootx() + x, box.winfo_rooty() + y, w, h]
        member_box = self.window["-MEMBERS-"].Widget
        member_rows = {}
        for index, name in enumerate(self._member_rows):
            bbox = member_box.bbox(index)
            if bbox:
                x, y, w, h = bbox
                member_rows[name] = [member_box.winfo_rootx() + x, member_box.winfo_rooty() + y,
                                     w, h]
        result_box = self.window["-RESULTS-"].Widget
        result_rows = []
        for index in range(len(self.results)):
            bbox = result_box.bbox(index)
            if bbox:
                x, y, w, h = bbox
                result_rows.append([result_box.winfo_rootx() + x, result_box.winfo_rooty() + y,
                                    w, h])
        return {
            "title": self._title(),
            "name": self.session.name,
            "status": self.status,
            "status_text": self.status_text,
            "front": front.name if front else None,
            "topic": front.info.topic if front else "",
            "detached": bool(front and front.detached),
            "rooms": [{"name": r.name, "label": r.label, "kind": r.info.kind,
                       "unread": r.unread, "alerts": r.alerts, "read": r.info.read,
                       "seq": r.info.seq,
                       "texts": [m.text if not m.deleted else None
                                 for m in list(r.messages.values())[-STATE_TEXTS:]],
                       "buffered": len(r.messages)}
                      for r in self.rooms.rooms.values()],
            "members": self._member_rows,
            "lines": str(self.log.widget.get("1.0", "end-1c")).splitlines(),
            "shown": list(self.log.shown),
            "pending": list(self.log.pending.values()),
            "alerts": self.alerts,
            "banner": str(self.window["-BANNER-"].get()) if self.banner_until else "",
            "typing": self._typing_text,
            "editing": list(self.editing) if self.editing else None,
            "menu": [self.menu.entrycget(i, "label")
                     for i in range((self.menu.index("end") or -1) + 1)]
            if self.menu_open else [],
            "results": [[m.room, m.seq, m.text] for m in self.results],
            "input": self.input_text(),
            "events": self.events_seen,
            "room_rows": rows,
            "member_rows": member_rows,
            "result_rows": result_rows,
            "message_boxes": {str(seq): box for seq in list(self.log.shown)[-60:]
                              if (box := self.log.box_of(seq))},
            "boxes": {key.strip("-").lower(): self._box(self.window[key].Widget)
                      for key in ("-LOG-", "-INPUT-", "-SEND-", "-EXIT-", "-SEARCH-", "-NEWROOM-",
                                  "-JOIN-", "-PRIVATE-", "-INVITEE-", "-INVITE-", "-LEAVE-",
                                  "-LIVE-", "-BANNER-")},
            **self.stats.as_dict(),
        }

    @staticmethod
    def _box(widget: tk.Widget) -> list[int]:
        return [widget.winfo_rootx(), widget.winfo_rooty(), widget.winfo_width(),
                widget.winfo_height()]

    def write_state(self, now: float) -> None:
        if self.state_file is None or not self._state_dirty or now - self._state_at < STATE_EVERY:
            return
        self._state_at = now
        self._state_dirty = False
        self._write_state_file(self.state())

    def _write_state_file(self, state: dict[str, Any] | None = None,
                          closed: bool = False) -> None:
        assert self.state_file is not None
        if state is None:
            try:
                state = json.loads(self.state_file.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                state = {}
            state.update(self.stats.as_dict())
            state["status"] = self.status
        state["closed"] = closed
        tmp = self.state_file.with_name(self.state_file.name + ".tmp")
        tmp.write_text(json.dumps(state), encoding="utf-8")
        os.replace(tmp, self.state_file)
