"""``chat``: the command line of the terminal client (protocol version 2).

On a terminal it is a full-screen interface (:mod:`chatterm.screen`); in a
pipe, lines in and lines out (:mod:`chatterm.pipe`). Both log in the same way:

- as a guest (the default; ``--password-stdin`` gives a server password);
- as an account: ``--account`` asks for the password without echo, or
  ``--password-stdin`` reads it from the first line of standard input;
- ``--register`` creates the account first (asking twice on a terminal).

A password is never an argument: arguments are visible to every user of the
machine (``ps``) and stay in shell histories.

TLS (``--tls``, implied by ``--ca`` or ``--fingerprint``): the server is checked
against the CAs of ``--ca``, or by its pinned fingerprint (:mod:`chatclient.pins`).
At first use the fingerprint is shown and asked about on the terminal, or must
be given with ``--fingerprint`` (which also replaces an old pin on purpose).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from chatclient import pins
from chatclient.net import Connection, TLSOptions, port_number
from chatclient.session import ClientSession
from chatterm import pipe
from chatterm.chat import Chat
from protocol import __version__, limits
from protocol.values import name_problem, room_name_problem


class Refused(Exception):
    """A reason not to start, for one ``chat: ...`` line and exit status 1."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chat", description="Chat from a terminal (full screen) or a pipe (lines).",
        allow_abbrev=False)  # else ``--password SECRET`` would pass for --password-stdin
    parser.add_argument("--version", action="version", version=f"chat {__version__}")
    parser.add_argument("--name", required=True, help="your user or account name")
    parser.add_argument("--host", default=limits.DEFAULT_HOST, help="server address")
    parser.add_argument("--port", type=port_number,
                        help=f"server port (default {limits.DEFAULT_PORT}, with TLS "
                        f"{limits.DEFAULT_TLS_PORT})")
    parser.add_argument("--tls", action="store_true",
                        help="connect with TLS (implied by --ca and --fingerprint)")
    trust = parser.add_mutually_exclusive_group()
    trust.add_argument("--ca", type=Path, metavar="FILE",
                       help="trust the server if CAs in this PEM file vouch for it")
    trust.add_argument("--fingerprint", type=_fingerprint, metavar="SHA256",
                       help="trust the server's certificate with this SHA-256 fingerprint "
                       "(as 'chatd status' shows it) and pin it")
    parser.add_argument("--room", help="the room to be in (joined if need be); "
                        "a pipe's lines go there")
    who = parser.add_mutually_exclusive_group()
    who.add_argument("--account", action="store_true",
                     help="log in to your account: asks for its password (no echo)")
    who.add_argument("--register", action="store_true",
                     help="create the account NAME, then log in to it")
    parser.add_argument("--code", metavar="CODE",
                        help="the server's join code, with --register where the server "
                        "asks for one")
    parser.add_argument("--password-stdin", action="store_true",
                        help="read the password (an account's, or the server's for a guest) "
                        "from the first line of standard input")
    parser.add_argument("--plain", action="store_true",
                        help="lines in, lines out, even on a terminal")
    parser.add_argument("--wait", type=float, default=10.0, metavar="S",
                        help="in a pipe, at end of input wait this long for acknowledgements")
    return parser


def _fingerprint(text: str) -> str:
    try:
        return pins.normalize(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def tls_options(args: argparse.Namespace, store: pins.PinStore) -> TLSOptions | None:
    """How to trust the server, asking the person at first use (see the module doc)."""
    if not (args.tls or args.ca or args.fingerprint):
        return None
    if args.ca is not None:
        return TLSOptions(ca=args.ca)
    if args.fingerprint is not None:
        store.pin(args.host, args.port, args.fingerprint)
        return TLSOptions(fingerprint=args.fingerprint)
    pinned = store.get(args.host, args.port)
    if pinned is not None:
        return TLSOptions(fingerprint=pinned)
    server = pins.server_key(args.host, args.port)
    try:
        offered = pins.fetch_fingerprint(args.host, args.port)
    except OSError as exc:
        raise Refused(f"cannot reach {server} with TLS: {exc}") from None
    if not ask_tty(f"The TLS certificate of {server} is new to this computer.\n"
                   f"Its SHA-256 fingerprint is\n  {pins.grouped(offered)}\n"
                   "Compare it with the one the operator's 'chatd status' shows.\n"
                   "Trust it and remember it? [y/N] "):
        raise Refused(f"the TLS certificate of {server} is not trusted: its fingerprint is "
                      f"{offered}; if the operator confirms it, give --fingerprint {offered}")
    store.pin(args.host, args.port, offered)
    return TLSOptions(fingerprint=offered)


def ask_tty(question: str) -> bool:
    """A yes on the controlling terminal (not stdin: it may be the pipe's lines)."""
    try:
        tty = open("/dev/tty", "r+", encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError:
        return False  # no terminal: only --fingerprint can pin
    with tty:
        tty.write(question)
        tty.flush()
        return tty.readline().strip().lower() in ("y", "yes")


def password(args: argparse.Namespace, stdin: pipe.StdinLines) -> str | None:
    """The password to log in with, from stdin or a prompt without echo (None: a guest)."""
    if args.password_stdin and not os.isatty(stdin.fd):
        line = stdin.first_line()
        if line is None:
            raise Refused("--password-stdin: standard input is empty")
        return line
    if not (args.account or args.register or args.password_stdin):
        return None
    if not os.isatty(stdin.fd):
        raise Refused("no terminal to ask for the password on: use --password-stdin")
    secret = getpass.getpass(f"password for {args.name}: ")
    if args.register and getpass.getpass("the same again: ") != secret:
        raise Refused("the two passwords differ")
    return secret


def run(args: argparse.Namespace) -> int:
    problem = name_problem(args.name)
    if problem is not None:
        raise Refused(f"bad name {args.name!r}: {problem}")
    if args.room is not None and room_name_problem(args.room) is not None:
        raise Refused(f"bad room {args.room!r}: {room_name_problem(args.room)}")
    if args.port is None:
        args.port = limits.DEFAULT_TLS_PORT if (args.tls or args.ca or args.fingerprint) \
            else limits.DEFAULT_PORT
    tls = tls_options(args, pins.PinStore())
    stdin = pipe.StdinLines(sys.stdin.fileno())
    on_screen = not args.plain and sys.stdin.isatty() and sys.stdout.isatty()
    session = ClientSession(args.name, password=password(args, stdin), register=args.register,
                            code=args.code, agent=f"chat/{__version__}",
                            rooms=[args.room] if args.room else ())
    chat = Chat(session, args.room, auto_mark=on_screen)
    conn = Connection(session, args.host, args.port, tls)
    if on_screen:
        from chatterm.screen import Screen  # a pipe needs no prompt_toolkit
        Screen(chat, conn).run()
        if chat.failure is not None:
            raise Refused(chat.failure)
        return 0
    return pipe.run(chat, conn, stdin, sys.stdout, sys.stderr, wait=args.wait)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except Refused as exc:
        sys.stderr.write(f"chat: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (``chat | head``): no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nor at exit's flush
        return 1
