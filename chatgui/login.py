"""The login window: account, guest or a new account; the server; checked before connecting.

The window stays open while the session makes its first connection (polled
from this window's own loop, so it never freezes) and shows any refusal in
place, ready for another try. What logged in last is remembered with
PySimpleGUI's user settings: server (and whether it is TLS), name, how
(account, guest, register) and, at exit, the rooms that were open. The
password never goes into that file: it is kept in the system keyring when
the user asks and a keyring is there (:mod:`chatgui.passwords`), else not at all.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import PySimpleGUI as sg

from chatclient import events as ev
from chatclient.net import Connection, port_number
from chatclient.pins import PinStore
from chatclient.session import ClientSession
from chatgui import passwords, trust
from protocol import __version__, limits
from protocol.values import name_problem, password_problem

IDLE_MS = 50
ERROR_COLOR = "#c62828"
BUSY_COLOR = "#5f6b73"
MODES = ("account", "guest", "register")


@dataclass
class LoggedIn:
    """A session that logged in, its connection, and the events so far."""

    form: Form
    session: ClientSession
    conn: Connection
    address: str
    events: list[ev.Event]


@dataclass(frozen=True)
class Form:
    name: str
    host: str
    port: str
    mode: str = "account"
    password: str = ""
    code: str = ""
    tls: bool = False


def check(form: Form) -> str | None:
    """What is wrong with the form, in the words the window shows, or None."""
    problem = name_problem(form.name)
    if problem is not None:
        return f"Name: {problem}."
    if not form.host.strip():
        return "Server: enter a host name or address."
    if not _port(form.port):
        return "Port: a number from 1 to 65535."
    if form.mode == "account" and not form.password:
        return "Password: an account needs its password (or log in as a guest)."
    if form.mode == "register":
        problem = password_problem(form.password)
        if problem is not None:
            return f"Password: {problem}."
    return None


def _port(text: object) -> int:
    """``text`` as a port number, or 0 if it is not one (a settings file may hold anything)."""
    try:
        return port_number(text)
    except ValueError:
        return 0


def saved_rooms(settings: sg.UserSettings) -> list[str]:
    rooms = settings.get("rooms", [])
    return [r for r in rooms if isinstance(r, str)] if isinstance(rooms, list) else []


def saved_tls(settings: sg.UserSettings, host: str, port: int) -> bool:
    """Whether ``host:port`` is the saved server and that was TLS."""
    return (settings.get("tls") is True and settings.get("host") == host
            and _port(settings.get("port")) == port)


def remember(settings: sg.UserSettings, form: Form) -> None:
    settings["name"] = form.name
    settings["host"] = form.host.strip()
    settings["port"] = _port(form.port)
    settings["tls"] = form.tls
    settings["mode"] = form.mode if form.mode != "register" else "account"


def start(form: Form, rooms: list[str], store: PinStore, ca: Path | None = None) -> LoggedIn:
    """A session and its connection for a checked form (the connect has begun);
    TLS trusts ``ca``, else the fingerprint pinned in ``store``."""
    session = ClientSession(
        form.name, password=form.password or None, register=form.mode == "register",
        code=form.code or None, agent=f"chatgui/{__version__}",
        rooms=rooms if form.mode == "guest" else ())
    host, port = form.host.strip(), _port(form.port)
    tls = trust.options(form.tls, ca, host, port, store)
    return LoggedIn(form, session, Connection(session, host, port, tls), f"{host}:{port}", [])


def default_port(tls: bool) -> int:
    return limits.DEFAULT_TLS_PORT if tls else limits.DEFAULT_PORT


def dump_state(path: Path | None, values: dict[str, Any], error: str) -> None:
    """For tests: what the login window shows (see ``--state-file``); no password."""
    if path is None:
        return
    state = {"window": "login", "error": error,
             **{key.strip("-").lower(): value for key, value in values.items()
                if key not in ("-PASSWORD-", "-CODE-")}}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state), encoding="utf-8")
    os.replace(tmp, path)


def form_of(values: dict[str, Any]) -> Form:
    mode = next((m for m in MODES if values.get(f"-{m.upper()}-")), "account")
    return Form(str(values["-NAME-"]), str(values["-HOST-"]), str(values["-PORT-"]), mode,
                str(values["-PASSWORD-"]), str(values["-CODE-"]), bool(values["-TLS-"]))


def login(settings: sg.UserSettings, store: PinStore, *, name: str = "", host: str = "",
          port: int = 0, tls: bool = False, ca: Path | None = None, error: str = "",
          state_file: Path | None = None) -> LoggedIn | None:
    """Show the window until a session is logged in (returned) or the user gives up.

    A refused certificate is settled (:func:`chatgui.trust.settle`) on the spot:
    once trusted, the same form connects again."""
    name = name or str(settings.get("name", ""))
    host = host or str(settings.get("host", limits.DEFAULT_HOST))
    port = port or _port(settings.get("port"))
    tls = tls or ca is not None or saved_tls(settings, host, port)
    port = port or default_port(tls)
    mode = str(settings.get("mode", "guest"))
    mode = mode if mode in MODES else "guest"
    keyring = passwords.available()
    stored = passwords.load(passwords.account_key(name, host, port)) if keyring and name else None
    label = {"size": (9, 1)}
    layout = [
        [sg.Text("Log in to chat", font=("DejaVu Sans", 14, "bold"))],
        [sg.Text("Name", **label), sg.Input(name, key="-NAME-", size=(30, 1), focus=True)],
        [sg.Text("Server", **label), sg.Input(host, key="-HOST-", size=(22, 1)),
         sg.Input(str(port), key="-PORT-", size=(6, 1)),
         sg.Checkbox("TLS", key="-TLS-", default=tls, disabled=ca is not None,
                     enable_events=True,
                     tooltip="encrypted; the server's certificate is checked")],
        [sg.Text("", **label),
         sg.Radio("Account", "mode", key="-ACCOUNT-", default=mode == "account",
                  enable_events=True),
         sg.Radio("Guest", "mode", key="-GUEST-", default=mode == "guest", enable_events=True),
         sg.Radio("New account", "mode", key="-REGISTER-", enable_events=True)],
        [sg.Text("Password", **label),
         sg.Input(stored or "", key="-PASSWORD-", size=(30, 1), password_char="•",
                  tooltip="an account's password; for a guest, the server's, if it has one")],
        [sg.Text("Join code", **label),
         sg.Input("", key="-CODE-", size=(30, 1), disabled=True,
                  tooltip="only if the server registers new accounts with a code")],
        [sg.Text("", **label),
         sg.Checkbox("Remember the password in the system keyring", key="-KEEP-",
                     default=bool(stored), disabled=not keyring,
                     tooltip="no keyring on this system: the password is not stored"
                     if not keyring else "kept by the system keyring, never in a file")],
        [sg.Text(error, key="-ERROR-", text_color=ERROR_COLOR, size=(48, 2))],
        [sg.Push(), sg.Button("Connect", key="-CONNECT-", bind_return_key=True),
         sg.Button("Cancel", key="-CANCEL-")],
    ]
    window = sg.Window("chat — log in", layout, finalize=True, font=("DejaVu Sans", 11))
    attempt: LoggedIn | None = None
    form = Form(name, host, str(port))
    shown = ""
    try:
        while True:
            event, values = window.read(timeout=IDLE_MS)
            if values is not None:
                text = str(window["-ERROR-"].get())
                if text + json.dumps(values) != shown:
                    shown = text + json.dumps(values)
                    dump_state(state_file, values, text)
            if event in (sg.WIN_CLOSED, "-CANCEL-"):
                if attempt is not None:
                    attempt.conn.close()
                return None
            if event in ("-ACCOUNT-", "-GUEST-", "-REGISTER-"):
                window["-CODE-"].update(disabled=event != "-REGISTER-")
            if event == "-TLS-" and _port(values["-PORT-"]) == default_port(not values["-TLS-"]):
                window["-PORT-"].update(str(default_port(bool(values["-TLS-"]))))
            if event == "-CONNECT-" and attempt is None:
                form = form_of(values)
                problem = check(form)
                if problem is not None:
                    window["-ERROR-"].update(problem, text_color=ERROR_COLOR)
                    continue
                try:
                    attempt = start(form, saved_rooms(settings), store, ca)
                except ValueError as exc:
                    window["-ERROR-"].update(str(exc), text_color=ERROR_COLOR)
                    continue
                window["-ERROR-"].update(f"Connecting to {attempt.address}…",
                                         text_color=BUSY_COLOR)
                window["-CONNECT-"].update(disabled=True)
            if attempt is None:
                continue
            polled = attempt.conn.poll(time.monotonic())
            attempt.events += polled
            failed = next((e for e in polled if isinstance(e, ev.Failed)), None)
            if failed is not None:
                attempt.conn.close()
                refused, attempt = attempt.conn.refused, None
                if refused is not None:
                    trusted = trust.settle(refused, form.host.strip(), _port(form.port), store,
                                           state_file)
                    shown = ""  # the dialog wrote its own state
                    if trusted:
                        attempt = start(form, saved_rooms(settings), store, ca)
                        continue
                window["-ERROR-"].update(failed.detail or failed.code, text_color=ERROR_COLOR)
                window["-CONNECT-"].update(disabled=False)
            elif any(isinstance(e, ev.LoggedIn) for e in polled):
                remember(settings, form)
                if keyring and form.mode != "guest":
                    key = passwords.account_key(form.name, form.host.strip(), _port(form.port))
                    passwords.save(key, form.password if values["-KEEP-"] else None)
                return attempt
    finally:
        window.close()
