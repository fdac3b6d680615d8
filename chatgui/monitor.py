"""``chatgui --monitor``: the operator's window over a server's control socket.

It shows who is online, the live log of messages, joins and leaves (``watch``)
and the server's counters (``status`` every few seconds), and lets the
operator announce a message or kick a user. Same single-threaded loop as the
chat window: ``window.read(timeout=...)``, then a non-blocking poll.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import PySimpleGUI as sg

from chatd.settings import SettingError, Settings, resolve
from chatgui.control import ControlLink
from chatgui.lines import LEAVE_WORDS, Line, message_line, system_line
from chatgui.logview import LogView
from protocol.framing import Message
from protocol.values import name_key

FONT = ("DejaVu Sans", 11)
MONO = ("DejaVu Sans Mono", 10)
IDLE_MS = 100


def uptime(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"


class Monitor:
    def __init__(self, path: Path, state_file: Path | None = None) -> None:
        self.link = ControlLink(path)
        self.state_file = state_file
        self.users: dict[str, str] = {}
        self.status: Message = {}
        self._shown_users: list[str] = []
        self._was_connected = False
        layout = [
            [sg.Text("", key="-STATS-", font=FONT, expand_x=True)],
            [sg.Multiline("", key="-LOG-", size=(80, 26), disabled=True, write_only=True,
                          expand_x=True, expand_y=True, font=MONO, background_color="white",
                          sbar_width=12, sbar_arrow_width=10),
             sg.Column([[sg.Text("Online (0)", key="-COUNT-", font=(FONT[0], 11, "bold"))],
                        [sg.Listbox([], key="-USERS-", size=(18, 20), expand_y=True,
                                    background_color="white", sbar_width=12,
                                    sbar_arrow_width=10)],
                        [sg.Button("Kick", key="-KICK-", size=(8, 1))]], expand_y=True)],
            [sg.Input("", key="-ANNOUNCE-", expand_x=True, background_color="white",
                      tooltip="a message to everyone, from 'server'", focus=True),
             sg.Button("Announce", key="-SEND-", bind_return_key=True)],
            [sg.StatusBar("", key="-STATUS-", size=(80, 1), expand_x=True)],
        ]
        self.window = sg.Window(f"chatd monitor — {path}", layout, finalize=True,
                                resizable=True, font=FONT)
        self.log = LogView(self.window["-LOG-"].Widget)
        self._state_at = 0.0

    def handle(self, frames: list[Message]) -> None:
        batch: list[Line] = []
        if self.link.connected != self._was_connected:
            self._was_connected = self.link.connected
            batch.append(system_line(f"watching {self.link.path}" if self.link.connected
                                     else self.link.problem))
        for frame in frames:
            kind = frame["type"]
            if kind == "msg":
                batch.append(message_line(frame, ""))
            elif kind == "join":
                self.users[name_key(frame["name"])] = frame["name"]
                batch.append(system_line(f"{frame['name']} joined", frame["ts"]))
            elif kind == "leave":
                self.users.pop(name_key(frame["name"]), None)
                words = LEAVE_WORDS.get(frame["reason"], f"left ({frame['reason']})")
                batch.append(system_line(f"{frame['name']} {words}", frame["ts"]))
            elif kind == "status":
                self.status = frame
                self.users = {name_key(u): u for u in frame["users"] if isinstance(u, str)}
            elif kind == "error":
                batch.append(system_line(f"error: {frame['message']} ({frame['code']})",
                                         style="error"))
        self.log.append(batch)

    def refresh(self) -> None:
        names = sorted(self.users.values(), key=str.casefold)
        if names != self._shown_users:
            self._shown_users = names
            self.window["-USERS-"].update(values=names)
            self.window["-COUNT-"].update(f"Online ({len(names)})")
        st = self.status
        if st:
            self.window["-STATS-"].update(
                f"{st['server']}  ·  up {uptime(st['uptime_s'])}  ·  {st['clients']} connections"
                f"  ·  last seq {st['seq']}  ·  {st['msgs_in']} messages in  ·  "
                f"{st['frames_out']} frames / {st['bytes_out']} bytes out")
        text = (f"watching {self.link.path}" if self.link.connected else self.link.problem)
        self.window["-STATUS-"].update(text)

    def state(self) -> dict[str, Any]:
        return {"users": self._shown_users, "connected": self.link.connected,
                "lines": [{"style": s, "text": t} for s, t in self.log.texts],
                "status": self.status}

    def write_state(self, now: float, force: bool = False) -> None:
        if self.state_file is None or (not force and now - self._state_at < 0.2):
            return
        self._state_at = now
        tmp = self.state_file.with_name(self.state_file.name + ".tmp")
        tmp.write_text(json.dumps(self.state()), encoding="utf-8")
        os.replace(tmp, self.state_file)

    def run(self) -> int:
        busy = False
        while True:
            event, values = self.window.read(timeout=0 if busy else IDLE_MS)
            if event == sg.WIN_CLOSED:
                break
            if event == "-SEND-" and values["-ANNOUNCE-"].strip():
                if self.link.send({"type": "announce", "text": values["-ANNOUNCE-"]}):
                    self.window["-ANNOUNCE-"].update("")
            elif event == "-KICK-" and values["-USERS-"]:
                name = values["-USERS-"][0]
                self.link.send({"type": "kick", "name": name, "reason": "kicked by the operator"})
            self.handle(self.link.poll())
            busy = self.link.more
            self.refresh()
            self.write_state(time.monotonic())
        self.write_state(time.monotonic(), force=True)
        self.link.close()
        self.window.close()
        return 0


def default_control_path() -> Path:
    """The control socket a ``chatd run`` with the same environment would use."""
    try:
        return resolve({}).control_path  # honours $CHATD_DATA_DIR, $CHATD_CONTROL, $CHATD_CONFIG
    except SettingError:
        return Settings().control_path


def run_monitor(control: Path | None, *, state_file: Path | None = None) -> int:
    path = control if control is not None else default_control_path()
    return Monitor(path, state_file).run()
