"""Running the server process: in the foreground, as a daemon, and stopping it.

``chatd run`` and ``chatd start`` share one path, :func:`serve_here`: the server
process takes the pid file (refusing if a live server holds it), runs
:func:`chatd.loop.serve`, and removes the pid file when it returns.

``chatd start`` must not return before the server accepts, and must say why if
it never will. So the command forks once and keeps a pipe to the child; the
child becomes a daemon with python-daemon (which forks twice more, keeping the
pipe's write end), and its ``notify`` callback writes ``READY <pid>`` into the
pipe when the server listens, or ``ERROR <reason>`` if it cannot start. The
command waits for that line with a deadline; end of file without it means the
daemon died, and its log file says why.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import sys
import time

from chatd.control_client import ControlClient, ControlError
from chatd.errors import StartupError
from chatd.notify import Notify, chain, from_environment
from chatd.pidfile import PidFile, holder, wait_gone
from chatd.settings import Settings

log = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class StopError(Exception):
    """``chatd stop`` could not stop the server; the message is one line."""


def configure_logging(level: str) -> None:
    """Log to stderr: the terminal for ``run``, the log file for a daemon."""
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr, force=True)


def _make_data_dir(settings: Settings) -> None:
    try:
        settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError:  # exist_ok covers directories only: this is something else
        raise StartupError(f"data directory {settings.data_dir} is not a directory") from None
    except OSError as exc:
        raise StartupError(
            f"cannot create data directory {settings.data_dir}: {exc.strerror}"
        ) from None


def serve_here(settings: Settings, notify: Notify | None) -> int:
    """Run the server in this process, holding the pid file while it runs."""
    from chatd.loop import serve

    _make_data_dir(settings)
    with PidFile(settings.pid_path):
        return serve(settings, notify)


class _ReadyPipe:
    """A notifier that tells the waiting ``chatd start`` the outcome, then goes quiet.

    The write never blocks for long: one short line into an empty pipe.
    """

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def __call__(self, state: str) -> None:
        lines = state.splitlines()
        if "READY=1" in lines:
            status = [line.removeprefix("STATUS=") for line in lines if line.startswith("STATUS=")]
            self._send(f"READY {os.getpid()} {' '.join(status)}")

    def fail(self, reason: str) -> None:
        self._send("ERROR " + " ".join(reason.split()))

    def _send(self, line: str) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):  # the parent gave up; the log file tells
            os.write(self._fd, line.encode() + b"\n")
        os.close(self._fd)
        self._fd = None


def _daemon_main(settings: Settings, ready_fd: int) -> int:
    """In the forked child: become a daemon and run the server; return its exit code."""
    import daemon  # python-daemon; imported here so `run` works without it

    ready = _ReadyPipe(ready_fd)
    try:
        _make_data_dir(settings)
        log_fd = os.open(settings.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    except (StartupError, OSError) as exc:
        ready.fail(str(exc) if isinstance(exc, StartupError)
                   else f"cannot open log file {settings.log_path}: {exc.strerror}")
        return 1
    log_file = os.fdopen(log_fd, "a")
    context = daemon.DaemonContext(
        detach_process=True,  # also when started from a socket or by init
        umask=0o077,  # the control socket, log and history are the operator's alone
        files_preserve=[ready_fd],
        stdout=log_file,
        stderr=log_file,
    )
    try:
        context.open()
    except Exception as exc:  # python-daemon raises several kinds; all end the start
        ready.fail(f"cannot become a daemon: {exc}")
        return 1
    configure_logging(settings.log_level)
    try:
        code = serve_here(settings, chain(from_environment(os.environ), ready))
    except StartupError as exc:
        log.error("%s", exc)
        ready.fail(str(exc))
        return 1
    except BaseException:
        log.exception("chatd crashed")
        return 1
    # Nobody waits for a daemon's exit status: the log keeps it.
    log.info("chatd exited with code %d", code)
    return code


def start(settings: Settings, timeout: float) -> tuple[int, str]:
    """Start the server as a daemon; once it accepts, return its pid and status.

    The status is what the server reported with READY (``listening on
    HOST:PORT``: the real port, also when the setting was 0).

    Raises :class:`StartupError` (one line) if it cannot start or does not
    report ready within ``timeout`` seconds.
    """
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the daemon; its tests see it from outside
        os.close(read_fd)
        code = 1
        try:
            code = _daemon_main(settings, write_fd)
        finally:
            logging.shutdown()
            os._exit(code)
    os.close(write_fd)
    try:
        os.waitpid(child, 0)  # python-daemon's first fork: that child exits at once
        line = _read_line(read_fd, timeout)
    finally:
        os.close(read_fd)
    if line is None:
        raise StartupError(f"chatd did not report ready within {timeout:g} s; "
                           f"see {settings.log_path}")
    kind, _, rest = line.partition(" ")
    pid, _, status = rest.partition(" ")
    if kind == "READY" and pid.isdigit():
        return int(pid), status
    if kind == "ERROR":
        raise StartupError(rest)
    raise StartupError(f"chatd exited during start-up; see {settings.log_path}")


def _read_line(fd: int, timeout: float) -> str | None:
    """The first line written to ``fd``; "" at end of file, None at the deadline."""
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        readable, _, _ = select.select([fd], [], [], remaining)
        if not readable:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            return ""
        data += chunk
    return data.split(b"\n", 1)[0].decode(errors="replace")


def stop(settings: Settings, timeout: float) -> int | None:
    """Shut the server down gracefully and wait until its process has ended.

    Asks through the control socket (``shutdown``), or if that does not answer,
    sends SIGTERM to the pid in the pid file. Returns the pid (None if the
    server kept no pid file here: then the end of the control connection is
    the best sign of its end). Raises :class:`~chatd.control_client.NotRunning`
    if no server runs, and :class:`StopError` if it still runs at the deadline
    (or its pid file cannot be read, or it may not be signalled).
    """
    deadline = time.monotonic() + timeout
    try:
        pid = holder(settings.pid_path)
    except OSError as exc:
        raise StopError(f"cannot read pid file {settings.pid_path}: {exc.strerror}") from None
    try:
        # Half the time at most for the polite way, so SIGTERM still has its turn.
        with ControlClient(settings.control_path, timeout=timeout / 2) as client:
            client.request({"type": "shutdown"})
            if not pid:
                _wait_closed(client, deadline)
    except ControlError:
        if not pid:  # None: no pid file; 0: a server that has not written its pid yet
            raise
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass  # it ended between reading the pid file and now: what stop wants
        except PermissionError:
            raise StopError(f"not allowed to signal chatd (pid {pid})") from None
    if pid and not wait_gone(pid, deadline - time.monotonic()):
        raise StopError(f"chatd (pid {pid}) is still running after {timeout:g} s")
    return pid or None


def _wait_closed(client: ControlClient, deadline: float) -> None:
    """Read the control connection until the shutting-down server closes it."""
    client.set_timeout(max(0.001, deadline - time.monotonic()))
    while client.receive() is not None:
        pass
