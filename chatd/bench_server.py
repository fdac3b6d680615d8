"""The server under test, as the load generator sees it: an address and a pid.

``chatd bench`` usually starts its own ``python -m chatd run`` on a free port
(one fresh server per run, so runs do not inherit each other's history or
memory) and reads its CPU time, RSS and thread count from ``/proc``. It can
start the server from another source tree (an older release checked out with
``git worktree``), so that two releases are measured by the same generators.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

_LISTENING = re.compile(r"listening on \[?([^\s\]]+?)\]?:(\d+)\b")
_START_TIMEOUT = 20.0
_STOP_TIMEOUT = 15.0


class BenchError(Exception):
    """The bench cannot go on; the message says why, in one line."""


@dataclass
class Server:
    """A server to load: its address, and its pid when it is on this machine."""

    host: str
    port: int
    pid: int | None = None
    proc: subprocess.Popen[bytes] | None = None
    data_dir: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)

    def _proc_file(self, name: str) -> str | None:
        if self.pid is None:
            return None
        try:
            return Path(f"/proc/{self.pid}/{name}").read_text()
        except OSError:
            return None

    def cpu_seconds(self) -> float | None:
        """User + system CPU time the server has used so far."""
        stat = self._proc_file("stat")
        if stat is None:
            return None
        fields = stat[stat.rindex(")") + 2 :].split()  # the name may hold spaces
        ticks = int(fields[11]) + int(fields[12])  # utime, stime
        return ticks / os.sysconf("SC_CLK_TCK")

    def run_delay(self) -> float | None:
        """Seconds the server has spent runnable but waiting for a CPU.

        On a shared machine this is the interference: time another process
        (or a load generator, if not pinned apart) held the server's CPU.
        """
        return run_delay(self._proc_file("schedstat"))

    def _status(self, key: str) -> int | None:
        status = self._proc_file("status")
        if status is None:
            return None
        for line in status.splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        return None

    def helpers_cpu_seconds(self) -> float | None:
        """CPU time of the server's child processes (its password hash workers)."""
        children = self._proc_file(f"task/{self.pid}/children")
        if children is None:
            return None
        total = 0.0
        for pid in children.split():
            seconds = Server("", 0, int(pid)).cpu_seconds()
            total += seconds or 0.0
        return total

    def unpin_helpers(self) -> None:
        """Let the server's hash workers run on any CPU. They inherit the pin
        that shields the server from the load generators, and at a lower
        priority on the server's own CPU a busy server starves them: logins
        would measure the pin, not the server."""
        children = self._proc_file(f"task/{self.pid}/children")
        everywhere = set(range(os.cpu_count() or 1))
        for pid in (children or "").split():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(int(pid), everywhere)

    @property
    def control(self) -> Path | None:
        """The control socket of a server this bench started (in its data directory)."""
        return None if self.data_dir is None else Path(self.data_dir.name) / "control.sock"

    def rss_kib(self) -> int | None:
        return self._status("VmRSS")

    def threads(self) -> int | None:
        return self._status("Threads")

    def log_tail(self, lines: int = 5) -> str:
        """The last lines of a started server's log, for a failure message."""
        if self.data_dir is None:
            return ""
        try:
            text = (Path(self.data_dir.name) / "server.log").read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM (graceful: clients get ``bye``), then SIGKILL if it hangs."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.data_dir is not None:
            self.data_dir.cleanup()
            self.data_dir = None


def run_delay(schedstat: str | None) -> float | None:
    """The run-queue wait (seconds) from a ``/proc/PID/schedstat`` text."""
    if not schedstat:
        return None
    return int(schedstat.split()[1]) / 1e9


def start_server(
    db: str, extra: list[str], cpus: set[int] | None, tree: Path | None = None
) -> Server:
    """Start ``python -m chatd run`` on a free port and wait until it listens.

    ``db`` is ``:memory:``, ``store`` (the default database in the data
    directory) or a path. ``cpus`` pins the server to those CPUs. ``tree``
    runs the server's code from that source tree (its ``chatd`` and
    ``protocol`` packages) with this interpreter and its installed libraries:
    it goes first on ``PYTHONPATH`` and is the working directory, which ``-m``
    puts before everything else on ``sys.path``.
    """
    data_dir = tempfile.TemporaryDirectory(prefix="chatd-bench-")
    log_path = Path(data_dir.name) / "server.log"
    cmd = [
        sys.executable, "-m", "chatd", "run", "--host", "127.0.0.1", "--port", "0",
        "--rate", "0", "--data-dir", data_dir.name,
        # Receivers never speak; do not let the server ping or time them out.
        "--heartbeat", "3600",
    ]
    if db != "store":
        cmd += ["--db", db]
    cmd += extra
    env = dict(os.environ)
    # No listener on the fixed TLS and web ports unless a flag asks for one
    # (flags beat the environment; an older release ignores these).
    env.setdefault("CHATD_TLS_PORT", "0")
    env.setdefault("CHATD_HTTP_PORT", "0")
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tree), env.get("PYTHONPATH")]))
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                env=env, cwd=tree)
    server = Server("127.0.0.1", 0, proc.pid, proc, data_dir)
    if cpus:
        os.sched_setaffinity(proc.pid, cpus)
    deadline = time.monotonic() + _START_TIMEOUT
    while True:
        text = log_path.read_text(errors="replace")
        found = _LISTENING.search(text)
        if found:
            server.host, server.port = found.group(1), int(found.group(2))
            if cpus:
                server.unpin_helpers()
            return server
        if proc.poll() is not None or time.monotonic() > deadline:
            server.stop()
            tail = " | ".join(text.strip().splitlines()[-3:]) or "no output"
            why = f"exited with {proc.returncode}" if proc.returncode is not None else "timed out"
            raise BenchError(f"server {why} before listening: {tail}")
        time.sleep(0.02)  # the bench is a client; it may wait
