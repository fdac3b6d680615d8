"""Service-manager notifications: systemd's ``sd_notify`` protocol, without libsystemd.

The server reports its state as ``KEY=VALUE`` lines (``READY=1``, ``STATUS=...``,
``STOPPING=1``) through one callable, ``notify(state)``. Under systemd
(``Type=notify``) that callable sends each state as one datagram to the
``AF_UNIX`` socket named by ``$NOTIFY_SOCKET``; ``chatd start`` chains a second
one that tells the waiting parent process the server is ready.

The sender never blocks: the server loop calls it, and a service manager that
does not read must not stall the chat. A datagram that cannot be sent at once
is dropped (systemd's own ``sd_notify`` does the same) and logged once.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

Notify = Callable[[str], None]

NOTIFY_SOCKET = "NOTIFY_SOCKET"


def socket_address(path: str) -> str | bytes:
    """The ``sendto`` address for a ``$NOTIFY_SOCKET`` value.

    A leading ``@`` names a socket in Linux's abstract namespace, whose real
    address starts with a NUL byte instead.
    """
    if path.startswith("@"):
        return b"\0" + path[1:].encode()
    return path


class SystemdNotifier:
    """Sends states to the service manager's notification socket, never blocking."""

    def __init__(self, path: str) -> None:
        self.address = socket_address(path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.setblocking(False)
        self._warned = False

    def __call__(self, state: str) -> None:
        try:
            self._sock.sendto(state.encode(), self.address)
        except OSError as exc:
            if not self._warned:  # a dead or slow manager: say so once, not per status
                self._warned = True
                log.warning("cannot notify the service manager at %s: %s", self.address, exc)

    def close(self) -> None:
        self._sock.close()


def from_environment(environ: Mapping[str, str]) -> SystemdNotifier | None:
    """A notifier for ``$NOTIFY_SOCKET`` if the service manager set one, else None."""
    path = environ.get(NOTIFY_SOCKET, "")
    return SystemdNotifier(path) if path else None


def chain(*notifiers: Notify | None) -> Notify | None:
    """One callable that passes each state to every given notifier (None if none)."""
    present = [n for n in notifiers if n is not None]
    if not present:
        return None
    if len(present) == 1:
        return present[0]

    def notify(state: str) -> None:
        for each in present:
            each(state)

    return notify
