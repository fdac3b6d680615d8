"""Desktop notifications without blocking the window's loop.

The freedesktop notification service is asked through ``gdbus`` in a child
process (``Popen``, reaped later with ``poll``), so a slow or absent bus never
stalls a turn. Without a session bus, or once a call has failed, notifications
go to the window's own banner instead: ``reap`` hands back those that could not
be shown on the desktop (with the room each is about, so the banner can lead
there), and ``notify`` returns False when it did not try.
"""

from __future__ import annotations

import os
import shutil
import subprocess

TIMEOUT_MS = 6000
Alert = tuple[str, str, str]  # room ("" for none), title, body
MAX_CHILDREN = 4  # more at once than this and the banner shows them


class Notifier:
    def __init__(self, app: str = "chat", desktop: bool | None = None) -> None:
        self.app = app
        self.gdbus = shutil.which("gdbus")
        if desktop is None:
            desktop = bool(self.gdbus and os.environ.get("DBUS_SESSION_BUS_ADDRESS"))
        self.desktop = desktop
        self.children: list[tuple[subprocess.Popen[bytes], Alert]] = []

    def notify(self, room: str, title: str, body: str) -> bool:
        """Raise a desktop notification; False if the window must show it itself."""
        if not self.desktop or self.gdbus is None or len(self.children) >= MAX_CHILDREN:
            return False
        argv = [self.gdbus, "call", "--session", "--dest", "org.freedesktop.Notifications",
                "--object-path", "/org/freedesktop/Notifications",
                "--method", "org.freedesktop.Notifications.Notify",
                self.app, "0", "", title, body[:300], "[]", "{}", str(TIMEOUT_MS)]
        try:
            child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        except OSError:
            self.desktop = False
            return False
        self.children.append((child, (room, title, body)))
        return True

    def reap(self) -> list[Alert]:
        """Collect finished children; (room, title, body) of those that failed."""
        failed: list[Alert] = []
        running = []
        for child, alert in self.children:
            code = child.poll()
            if code is None:
                running.append((child, alert))
            elif code != 0:
                self.desktop = False  # no notification service: the banner from now on
                failed.append(alert)
        self.children = running
        return failed
