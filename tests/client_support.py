"""Driving a :class:`chatclient.net.Connection` from a test: wait for events with a deadline.

Nothing sleeps to synchronise: each step waits on the socket with ``select``
(bounded by the connection's own timers) until an event matches, or fails the
test at the deadline.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable

from chatclient.events import Event
from chatclient.net import Connection

WAIT = 10.0


def pump(conn: Connection, until: Callable[[list[Event]], bool],
         timeout: float = WAIT) -> list[Event]:
    """Poll ``conn`` until ``until(all events so far)``; those events."""
    deadline = time.monotonic() + timeout
    seen: list[Event] = []
    while True:
        seen += conn.poll()
        if until(seen):
            return seen
        now = time.monotonic()
        if now >= deadline:
            raise AssertionError(f"no matching event in time; got {seen}")
        due = conn.timeout(now)
        wait = min(0.1, deadline - now, due if due is not None else 0.1)
        fd = conn.fileno()
        if fd is None:
            time.sleep(wait)  # nothing to wait on: the session's backoff timer runs
        else:
            select.select([fd], [fd] if conn.wants_write() else [], [], wait)


def has(kind: type, count: int = 1, **fields: object) -> Callable[[list[Event]], bool]:
    """``until`` for :func:`pump`: ``count`` events of ``kind`` with ``fields``."""
    def check(events: list[Event]) -> bool:
        found = [e for e in events if isinstance(e, kind)
                 and all(getattr(e, k) == v for k, v in fields.items())]
        return len(found) >= count
    return check


def free_port() -> int:
    """A TCP port nobody listens on now (for a server restarted on the same port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
