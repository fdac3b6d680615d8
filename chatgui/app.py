"""``chatgui``: the desktop chat client (and, with ``--monitor``, the operator window).

``chatgui`` opens the login window (last values remembered);
``chatgui --name alice [--account|--register] [--host H --port P]`` skips it
(a guest unless told), so a shell can open one window per user. If that direct
login is refused, the login window opens with the reason. ``--tls`` (the default
when the saved server was TLS) or ``--ca FILE`` connect with TLS; see
:mod:`chatgui.trust` for the first-use question. ``chatgui --monitor
[--control PATH]`` watches a server through its control socket instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from chatclient.net import port_number
from protocol import __version__, limits

SETTINGS_ENV = "CHATGUI_SETTINGS"  # where the login window keeps its last values


def _at_least_ten(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 10:
        raise argparse.ArgumentTypeError("keep at least 10 lines")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chatgui", description="The chat desktop client.")
    parser.add_argument("--version", action="version", version=f"chatgui {__version__}")
    parser.add_argument("--name", help="log in as NAME without the login window")
    parser.add_argument("--host", help=f"server address (default {limits.DEFAULT_HOST})")
    parser.add_argument("--port", type=port_number,
                        help=f"server port (default {limits.DEFAULT_PORT}, with TLS "
                        f"{limits.DEFAULT_TLS_PORT})")
    parser.add_argument("--tls", action="store_true",
                        help="connect with TLS (implied by --ca; the default when the saved "
                        "server was TLS): the certificate's fingerprint is asked about at "
                        "first use and pinned")
    parser.add_argument("--ca", type=Path, metavar="FILE",
                        help="trust the server if CAs in this PEM file vouch for it")
    parser.add_argument("--password", default=os.environ.get("CHAT_PASSWORD"),
                        help="the account's password, or a guest's server password "
                        "(default: $CHAT_PASSWORD)")
    how = parser.add_mutually_exclusive_group()
    how.add_argument("--account", action="store_true",
                     help="with --name: log in to the account NAME (needs --password)")
    how.add_argument("--register", action="store_true",
                     help="with --name: create the account NAME with --password")
    parser.add_argument("--code", help="the server's join code, to --register")
    parser.add_argument("--room", action="append", metavar="ROOM",
                        help="a room to join (a guest; repeatable; default: those open "
                        "at the last exit)")
    parser.add_argument("--monitor", action="store_true",
                        help="open the operator window over the server's control socket")
    parser.add_argument("--control", type=Path, metavar="PATH",
                        help="control socket for --monitor (default: the server's default)")
    parser.add_argument("--settings-file", type=Path, metavar="PATH",
                        default=os.environ.get(SETTINGS_ENV),
                        help=f"where to remember the login values (default: ${SETTINGS_ENV} "
                        "or PySimpleGUI's settings folder)")
    parser.add_argument("--state-file", type=Path, metavar="PATH",
                        help="debugging and tests: dump what the window shows here as JSON")
    parser.add_argument("--stats", action="store_true",
                        help="print event-loop turn times to stderr at exit")
    parser.add_argument("--max-lines", type=_at_least_ten, default=None, metavar="N",
                        help="log lines kept in the window (default 2000)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import tkinter

    try:
        tkinter.Tk().destroy()  # fail with one line, not a traceback, without a display
    except tkinter.TclError as exc:
        print(f"chatgui: cannot open a window: {exc}", file=sys.stderr)
        return 1
    return run(args)


def run(args: argparse.Namespace) -> int:
    import PySimpleGUI as sg  # imported here so ``--help`` works without a display

    sg.theme("LightGrey1")
    # PySimpleGUI refreshes its built-in debugger on every read(), and that
    # starts with inspect.stack(): 5-12 ms per call, every turn of our loop.
    # We never open that debugger; this class flag is how PySimpleGUI itself
    # skips the refresh (it is set while the debugger reads).
    sg.Window._read_call_from_debugger = True
    if args.monitor:
        from chatgui.monitor import run_monitor

        return run_monitor(args.control, state_file=args.state_file)
    from chatgui import trust
    from chatgui.login import (
        Form,
        LoggedIn,
        check,
        default_port,
        login,
        saved_rooms,
        saved_tls,
        start,
    )
    from chatgui.logview import MAX_LINES
    from chatgui.window import ChatWindow

    settings = sg.UserSettings(filename=str(args.settings_file or "chatgui.json"),
                               silent_on_error=True)
    store = trust.pin_store()
    host = args.host or limits.DEFAULT_HOST
    tls = args.tls or args.ca is not None \
        or saved_tls(settings, host, args.port or limits.DEFAULT_TLS_PORT)
    port = args.port or default_port(tls)
    error = ""
    attempt: LoggedIn | None = None
    if args.name:
        mode = "register" if args.register else "account" if args.account else "guest"
        form = Form(args.name, host, str(port), mode, args.password or "", args.code or "",
                    tls)
        problem = check(form)
        if problem is None:
            try:
                attempt = start(form, args.room or saved_rooms(settings), store, args.ca)
            except ValueError as exc:
                problem = f"Name: {exc}."
        error = problem or ""
    while True:
        if attempt is None:
            attempt = login(settings, store, name=args.name or "", host=args.host or "",
                            port=args.port or 0, tls=args.tls, ca=args.ca, error=error,
                            state_file=args.state_file)
            if attempt is None:
                return 0
        window = ChatWindow(attempt.session, attempt.conn, attempt.address,
                            state_file=args.state_file, stats=args.stats,
                            keep=args.max_lines or MAX_LINES)
        code = window.run(attempt.events)
        if window.login_failure is None:
            if window.logged_in:
                settings["rooms"] = window.open_rooms()
            return code
        refused = attempt.conn.refused  # a direct login's first use (or a changed pin)
        if refused is not None and trust.settle(refused, attempt.conn.host, attempt.conn.port,
                                                store, args.state_file):
            attempt = start(attempt.form, args.room or saved_rooms(settings), store, args.ca)
            continue
        error, attempt = window.login_failure, None


if __name__ == "__main__":
    sys.exit(main())
