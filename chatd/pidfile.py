"""The server's pid file, locked with ``flock`` for as long as the server runs.

Whether a pid file is stale is decided by its lock, not by whether the pid it
names is alive: the kernel drops the lock when the process ends, however it
ends (even ``kill -9``), and a reused pid after a reboot or a crash cannot make a
dead server look alive. So a pid file left behind is simply taken over, and a
live server's is refused with a one-line :class:`StartupError`.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import time
from pathlib import Path
from types import TracebackType

from chatd.errors import StartupError


def _read_pid(fd: int) -> int:
    """The pid written in an open pid file, 0 while the owner has not written it yet."""
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else 0


def holder(path: Path) -> int | None:
    """The pid of the live server holding ``path`` (0 if not written yet), else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):  # no such file, or no such directory
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd)
        return None  # nobody holds it: a stale file (closing fd drops our probe lock)
    finally:
        os.close(fd)


class PidFile:
    """Context manager: hold the pid file for this process, remove it on exit."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        """Write our pid, replacing a stale file; StartupError if a server holds it."""
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                raise StartupError(f"cannot open pid file {self.path}: {exc.strerror}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = _read_pid(fd)
                os.close(fd)
                raise StartupError(
                    f"chatd is already running (pid {pid or '?'}, pid file {self.path})"
                ) from None
            # A server that was exiting may have unlinked the file we just locked:
            # only the file the path still names counts.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            self._fd = fd
            return
        raise StartupError(f"cannot take pid file {self.path}: it keeps changing")

    def release(self) -> None:
        """Remove the file (if it is still ours), then drop the lock."""
        if self._fd is None:
            return
        try:
            if os.stat(self.path).st_ino == os.fstat(self._fd).st_ino:
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> PidFile:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for process ``pid`` to end; True if it did.

    Uses a pidfd where the kernel has them (no polling; a zombie counts as
    ended), else checks every 50 ms.
    """
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except (AttributeError, OSError):
        return _poll_gone(pid, timeout)
    try:
        readable, _, _ = select.select([fd], [], [], max(0.0, timeout))
        return bool(readable)
    finally:
        os.close(fd)


def _poll_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.kill(pid, 0)
        except OSError as exc:
            if exc.errno == errno.ESRCH:
                return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
