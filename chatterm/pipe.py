"""``chat`` in a pipe: stdin lines are messages, events are lines on stdout.

Each stdin line is a message to the current room (``--room``) or a command
(``/join``, ``/dm`` ... move the current room). Messages go to stdout as
``[room] <name> text``; news and errors to stderr. At the end of input the
client waits (at most ``--wait`` seconds) until the server has acknowledged
every message, says ``bye`` (whose answer comes after every reply still owed,
so a ``/rooms`` at the end of input is answered) and exits 0; so
``printf 'hi\\n' | chat --name bot --room ops`` is a one-shot sender. A refusal
or an unreachable server is one ``chat: ...`` line on stderr and exit 1.

Unlike the server this program may wait: it sleeps in ``selectors`` on stdin
and the connection's socket, never longer than the session's next timer.
"""

from __future__ import annotations

import os
import selectors
import time
from collections.abc import Iterable
from typing import TextIO

from chatclient.events import Event
from chatclient.net import Connection
from chatterm.chat import Chat
from chatterm.lines import NEWS_STYLES, Line

TICK = 0.5  # longest sleep when the session names no timer


class StdinLines:
    """Lines of a file descriptor, read without ever reading past what it holds.

    One buffer for the whole input, so the ``--password-stdin`` line read
    first and the messages after it cannot be split by two readers' buffers.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.partial = b""
        self.done = False

    def read(self) -> list[str]:
        """One ``read`` (it blocks only if nothing is there): the lines it completed."""
        data = os.read(self.fd, 65536)
        self.done = not data
        self.partial += data
        return self.buffered()

    def buffered(self) -> list[str]:
        """The whole lines in the buffer; at the end of input, the last one even
        without its newline."""
        *complete, self.partial = self.partial.split(b"\n")
        if self.done and self.partial:
            complete.append(self.partial)
            self.partial = b""
        return [raw.decode("utf-8", "replace") for raw in complete]

    def first_line(self) -> str | None:
        """Block until one whole line (or the end) is there; the rest stays buffered."""
        while b"\n" not in self.partial and not self.done:
            data = os.read(self.fd, 65536)
            self.done = not data
            self.partial += data
        if not self.partial:
            return None
        line, _, self.partial = self.partial.partition(b"\n")
        return line.decode("utf-8", "replace").rstrip("\r")


def show(lines: Iterable[Line], out: TextIO, err: TextIO) -> None:
    for line in lines:
        if line.style == "fatal":
            continue  # reported once, as the exit reason
        (err if line.style in NEWS_STYLES else out).write(line.text + "\n")


def apply(chat: Chat, events: Iterable[Event], out: TextIO, err: TextIO) -> None:
    now = time.monotonic()
    for event in events:
        show(chat.apply(event, now), out, err)
    out.flush()
    err.flush()


def run(chat: Chat, conn: Connection, stdin: StdinLines, out: TextIO, err: TextIO, *,
        wait: float) -> int:
    """Until the input ends and everything is acknowledged; the exit status."""
    selector = selectors.DefaultSelector()
    lines = stdin.buffered()  # what came with the --password-stdin line
    try:
        # Left blocking (a tty's flags are shared with the shell): a read after
        # select said "readable" returns what is there without waiting.
        if not stdin.done:
            selector.register(stdin.fd, selectors.EVENT_READ)
    except PermissionError:  # a regular file (``chat < file``): it never blocks
        while not stdin.done:
            lines += stdin.read()
    wait_until: float | None = None
    registered: int | None = None
    while True:
        apply(chat, conn.poll(), out, err)
        if chat.me:  # requests before the login would be refused as "offline"
            for line in lines:
                show(chat.handle(line), out, err)
            lines = []
            apply(chat, conn.poll(), out, err)
        if chat.failure is not None:
            err.write(f"chat: {chat.failure}\n")
            return 1
        if chat.closed:
            return 0
        now = time.monotonic()
        if (stdin.done or chat.quit_requested) and wait_until is None:
            wait_until = now + wait
        if wait_until is not None and chat.me and not lines and not chat.session.outbox:
            return _close(chat, conn, out, err, 0)
        if wait_until is not None and now >= wait_until:
            unsent = len(lines) + len(chat.session.outbox)
            err.write(f"chat: {unsent} line(s) not acknowledged within {wait:g} s\n")
            return _close(chat, conn, out, err, 1)
        fd = conn.fileno()
        if fd != registered:
            if registered is not None:
                selector.unregister(registered)
            registered = None
            if fd is not None:
                selector.register(fd, selectors.EVENT_READ)
                registered = fd
        if fd is not None:
            selector.modify(fd, selectors.EVENT_READ
                            | (selectors.EVENT_WRITE if conn.wants_write() else 0))
        timer = conn.timeout(now)
        timeout = TICK if timer is None else min(timer, TICK)
        if wait_until is not None:
            timeout = min(timeout, max(0.0, wait_until - now))
        for key, _ in selector.select(max(0.0, timeout)):
            if key.fd == stdin.fd and not stdin.done:
                lines += stdin.read()
                if stdin.done:
                    selector.unregister(stdin.fd)


def _close(chat: Chat, conn: Connection, out: TextIO, err: TextIO, status: int) -> int:
    """Say bye and show what arrives until the server's answer (replies still owed)."""
    apply(chat, conn.close_and_wait(), out, err)
    return status
