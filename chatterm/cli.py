"""``chat``: the command line of the terminal client (protocol version 2).

On a terminal it is a full-screen interface (:mod:`chatterm.screen`); in a
pipe, lines in and lines out (:mod:`chatterm.pipe`). Both log in the same way:

- as a guest (the default; ``--password-stdin`` gives a server password);
- as an account: ``--account`` asks for the password without echo, or
  ``--password-stdin`` reads it from the first line of standard input;
- ``--register`` creates the account first (asking twice on a terminal).

A password is never an argument: arguments are visible to every user of the
machine (``ps``) and stay in shell histories.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Sequence

from chatclient.net import Connection
from chatclient.session import ClientSession
from chatd import __version__
from chatgui.session import port_number
from chatterm import pipe
from chatterm.chat import Chat
from protocol import limits
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
    parser.add_argument("--port", type=port_number, default=limits.DEFAULT_PORT,
                        help="server port")
    parser.add_argument("--room", help="the room to be in (joined if need be); "
                        "a pipe's lines go there")
    who = parser.add_mutually_exclusive_group()
    who.add_argument("--account", action="store_true",
                     help="log in to your account: asks for its password (no echo)")
    who.add_argument("--register", action="store_true",
                     help="create the account NAME, then log in to it")
    parser.add_argument("--password-stdin", action="store_true",
                        help="read the password (an account's, or the server's for a guest) "
                        "from the first line of standard input")
    parser.add_argument("--plain", action="store_true",
                        help="lines in, lines out, even on a terminal")
    parser.add_argument("--wait", type=float, default=10.0, metavar="S",
                        help="in a pipe, at end of input wait this long for acknowledgements")
    return parser


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
    stdin = pipe.StdinLines(sys.stdin.fileno())
    on_screen = not args.plain and sys.stdin.isatty() and sys.stdout.isatty()
    session = ClientSession(args.name, password=password(args, stdin), register=args.register,
                            agent=f"chat/{__version__}",
                            rooms=[args.room] if args.room else ())
    chat = Chat(session, args.room, auto_mark=on_screen)
    conn = Connection(session, args.host, args.port)
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
