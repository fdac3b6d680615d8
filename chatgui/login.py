"""The login window: name, server address and password, checked before connecting.

The window stays open while the session makes its first connection (polled from
this window's own event loop, so it never freezes) and shows any refusal or
connection problem in place, ready for another try. The last values that
logged in are remembered with PySimpleGUI's user settings.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import PySimpleGUI as sg

from chatd import __version__
from chatgui.logview import STYLES
from chatgui.session import Event, Session, port_number
from protocol import limits
from protocol.values import name_problem

IDLE_MS = 50
ERROR_COLOR = STYLES["error"]["foreground"]
BUSY_COLOR = STYLES["system"]["foreground"]


def check(name: str, host: str, port: str) -> str | None:
    """What is wrong with the form, in the words the window shows, or None."""
    problem = name_problem(name)
    if problem is not None:
        return f"Name: {problem}."
    if not host.strip():
        return "Server: enter a host name or address."
    if not _port(port):
        return "Port: a number from 1 to 65535."
    return None


def _port(text: object) -> int:
    """``text`` as a port number, or 0 if it is not one (a settings file may hold anything)."""
    try:
        return port_number(text)
    except ValueError:
        return 0


def remember(settings: sg.UserSettings, session: Session) -> None:
    settings["name"] = session.name
    settings["host"] = session.host
    settings["port"] = session.port


def dump_state(path: Path | None, values: dict[str, Any], error: str) -> None:
    """For tests: what the login window shows (see ``--state-file``)."""
    if path is None:
        return
    state = {"window": "login", "error": error,
             **{key.strip("-").lower(): value for key, value in values.items()
                if key != "-PASSWORD-"}}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state), encoding="utf-8")
    os.replace(tmp, path)


def login(settings: sg.UserSettings, *, name: str = "", host: str = "", port: int = 0,
          error: str = "", state_file: Path | None = None,
          ) -> tuple[Session, list[Event]] | None:
    """Show the window until a session is logged in (returned) or the user gives up."""
    name = name or str(settings.get("name", ""))
    host = host or str(settings.get("host", limits.DEFAULT_HOST))
    port = port or _port(settings.get("port")) or limits.DEFAULT_PORT
    label = {"size": (9, 1)}
    layout = [
        [sg.Text("Join the chat", font=("DejaVu Sans", 13, "bold"))],
        [sg.Text("Name", **label), sg.Input(name, key="-NAME-", size=(28, 1), focus=True)],
        [sg.Text("Server", **label), sg.Input(host, key="-HOST-", size=(20, 1)),
         sg.Input(str(port), key="-PORT-", size=(6, 1))],
        [sg.Text("Password", **label),
         sg.Input("", key="-PASSWORD-", size=(28, 1), password_char="•",
                  tooltip="only if the server asks for one")],
        [sg.Text(error, key="-ERROR-", text_color=ERROR_COLOR, size=(44, 2))],
        [sg.Push(), sg.Button("Connect", key="-CONNECT-", bind_return_key=True),
         sg.Button("Cancel", key="-CANCEL-")],
    ]
    window = sg.Window("chat — log in", layout, finalize=True, font=("DejaVu Sans", 11))
    session: Session | None = None
    shown: tuple[str, str] = ("", "")
    try:
        while True:
            event, values = window.read(timeout=IDLE_MS)
            if values is not None:
                text = str(window["-ERROR-"].get())
                if (text, json.dumps(values)) != shown:
                    shown = (text, json.dumps(values))
                    dump_state(state_file, values, text)
            if event in (sg.WIN_CLOSED, "-CANCEL-"):
                if session is not None:
                    session.close_and_wait()
                return None
            if event == "-CONNECT-" and session is None:
                problem = check(values["-NAME-"], values["-HOST-"], values["-PORT-"])
                if problem is not None:
                    window["-ERROR-"].update(problem, text_color=ERROR_COLOR)
                    continue
                session = Session(values["-NAME-"], values["-HOST-"].strip(),
                                  _port(values["-PORT-"]),
                                  password=values["-PASSWORD-"] or None,
                                  agent=f"chatgui/{__version__}")
                window["-ERROR-"].update(f"Connecting to {session.address}…",
                                         text_color=BUSY_COLOR)
                window["-CONNECT-"].update(disabled=True)
            if session is None:
                continue
            events = session.poll()
            for item in events:
                if item.kind == "failed":
                    window["-ERROR-"].update(item.detail, text_color=ERROR_COLOR)
                    window["-CONNECT-"].update(disabled=False)
                    session = None
                    break
                if item.kind == "welcome":
                    remember(settings, session)
                    return session, events
    finally:
        window.close()
