"""``chat``: the chat session in a terminal or a pipe.

Lines from stdin are messages (or slash commands, see ``/help``); the chat goes
to stdout, one line per message with its local time, and connection news and
errors to stderr. At the end of input the client waits (at most ``--wait``
seconds) until the server has acknowledged everything it sent, says ``bye`` and
exits 0, so ``printf 'hi\\n' | chat --name bot`` is a one-shot sender. A refusal
or an unreachable server is one line on stderr and exit status 1.

Unlike the server, this program may wait: it sleeps in ``selectors`` on stdin
and the session's socket, never longer than the session's next timer.
"""

from __future__ import annotations

import argparse
import os
import selectors
import socket
import sys
import time
from collections.abc import Sequence
from typing import TextIO

from chatd import __version__
from chatgui import commands
from chatgui.lines import event_lines, pending_line
from chatgui.session import OFFLINE, Session, port_number
from protocol import limits
from protocol.errors import ProtocolError
from protocol.values import name_problem

TICK = 0.1  # longest sleep between session polls (its timers are that precise)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chat", description="Chat from a terminal or a pipe.")
    parser.add_argument("--version", action="version", version=f"chat {__version__}")
    parser.add_argument("--name", required=True, help="your user name")
    parser.add_argument("--host", default=limits.DEFAULT_HOST, help="server address")
    parser.add_argument("--port", type=port_number, default=limits.DEFAULT_PORT, help="server port")
    parser.add_argument("--password", default=os.environ.get("CHAT_PASSWORD"),
                        help="server password (default: $CHAT_PASSWORD)")
    parser.add_argument("--wait", type=float, default=10.0, metavar="S",
                        help="at end of input, wait this long for acknowledgements")
    return parser


class Terminal:
    """Glue between stdin/stdout and a :class:`Session`."""

    def __init__(self, session: Session, out: TextIO, err: TextIO) -> None:
        self.session = session
        self.out = out
        self.err = err
        self.failure: str | None = None
        self.quit_requested = False

    def show_events(self) -> None:
        for event in self.session.poll():
            if event.kind == "failed":
                self.failure = event.detail
                continue
            if event.kind == "status" and event.status == OFFLINE:
                continue  # the reason was already reported as it happened
            for line in event_lines(event, self.session.name):
                stream = self.out if line.style not in ("system", "error") else self.err
                stream.write(line.text + "\n")
        self.out.flush()
        self.err.flush()

    def handle_line(self, line: str) -> None:
        command = commands.parse(line.rstrip("\r\n"))  # a CRLF file works too
        try:
            if command.kind in ("say", "pm"):
                if command.kind == "say":
                    self.session.say(command.text)
                else:
                    self.session.pm(command.to, command.text)
                if self.session.status == OFFLINE:  # queued until the first connection
                    entry = self.session.outbox[-1]
                    self.err.write(pending_line(entry.kind, entry.text, entry.to).text + "\n")
            elif command.kind == "who":
                if not self.session.who():
                    self.err.write("chat: not connected\n")
            elif command.kind == "quit":
                self.quit_requested = True
            elif command.kind == "help":
                self.err.write(commands.HELP + "\n")
            elif command.kind == "error":
                self.err.write(f"chat: {command.text}\n")
        except ProtocolError as exc:
            self.err.write(f"chat: not sent: {exc.message}\n")


def run(args: argparse.Namespace, stdin: TextIO, out: TextIO, err: TextIO) -> int:
    problem = name_problem(args.name)
    if problem is not None:
        err.write(f"chat: bad name {args.name!r}: {problem}\n")
        return 1
    session = Session(args.name, args.host, args.port, password=args.password,
                      agent=f"chat/{__version__}")
    term = Terminal(session, out, err)
    selector = selectors.DefaultSelector()
    stdin_fd = stdin.fileno()
    partial = b""
    input_done = False
    try:
        # Left blocking (a tty's flags are shared with the shell): a read after
        # select said "readable" returns what is there without waiting.
        selector.register(stdin_fd, selectors.EVENT_READ)
    except PermissionError:  # a regular file (``chat < file``): it never blocks
        for raw in stdin.buffer.read().split(b"\n"):
            term.handle_line(raw.decode("utf-8", "replace"))
        input_done = True
    wait_until: float | None = None
    registered: socket.socket | None = None
    while True:
        term.show_events()
        if term.failure is not None:
            err.write(f"chat: {term.failure}\n")
            return 1
        if session.finished:
            return 0
        if (input_done or term.quit_requested) and wait_until is None:
            wait_until = time.monotonic() + args.wait
        if wait_until is not None and (not session.outbox or time.monotonic() >= wait_until):
            if session.outbox:
                err.write(f"chat: {len(session.outbox)} message(s) not acknowledged "
                          f"within {args.wait:g} s\n")
                session.close_and_wait()
                return 1
            session.close_and_wait()
            return 0
        sock = session.socket
        if sock is not registered:
            if registered is not None:
                selector.unregister(registered)  # closed already: selectors copes
            registered = None
            if sock is not None:
                selector.register(sock, selectors.EVENT_READ)
                registered = sock
        if sock is not None:
            want = selectors.EVENT_READ | (selectors.EVENT_WRITE if session.wants_write else 0)
            selector.modify(sock, want)
        for key, _ in selector.select(0 if session.more else TICK):
            if key.fd != stdin_fd or input_done:
                continue
            data = os.read(stdin_fd, 65536)
            if not data:
                input_done = True
                selector.unregister(stdin_fd)
                if partial:
                    term.handle_line(partial.decode("utf-8", "replace"))
                continue
            partial += data
            *complete, partial = partial.split(b"\n")
            for raw in complete:
                term.handle_line(raw.decode("utf-8", "replace"))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args, sys.stdin, sys.stdout, sys.stderr)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (``chat | head``): no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nor at exit's flush
        return 1


if __name__ == "__main__":
    sys.exit(main())
