"""`chatd start` / `status` / `stop` against a real daemon on an ephemeral port."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatd.pidfile import holder, wait_gone
from tests.support import TestClient

CLI_TIMEOUT = 60.0  # bound on one chatd command (start waits up to 30 s itself)
STARTED = re.compile(r"^chatd started \(pid (\d+)\), listening on (\S+):(\d+); log (.+)$")
STATUS_MEMBERS = {"server", "uptime_s", "clients", "users", "seq", "msgs_in", "frames_out",
                  "bytes_in", "bytes_out"}


def chatd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CHATD_")}
    full_env.pop("NOTIFY_SOCKET", None)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "chatd", *args], capture_output=True,
                          text=True, timeout=CLI_TIMEOUT, env=full_env, check=False,
                          stdin=subprocess.DEVNULL)


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """A data directory; whatever daemon still holds its pid file is killed after."""
    path = tmp_path / "d"
    yield path
    pid = holder(path / "chatd.pid")
    if pid:
        os.kill(pid, signal.SIGKILL)
        wait_gone(pid, 10)


class Daemon:
    def __init__(self, data_dir: Path, out: str) -> None:
        match = STARTED.match(out.strip())
        assert match is not None, out
        self.pid = int(match.group(1))
        self.host = match.group(2)
        self.port = int(match.group(3))
        self.log = Path(match.group(4))
        self.data_dir = data_dir

    def login(self, name: str) -> TestClient:
        client = TestClient.connect(self.host, self.port)
        client.login(name)
        return client


def start(data_dir: Path, *flags: str) -> Daemon:
    proc = chatd("start", "--port", "0", "--data-dir", str(data_dir), "--db", ":memory:",
                 *flags)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return Daemon(data_dir, proc.stdout)


def one_line(text: str) -> str:
    assert text.count("\n") == 1 and text.endswith("\n"), repr(text)
    assert "Traceback" not in text
    return text


def test_start_status_stop_round_trip(data_dir: Path) -> None:
    daemon = start(data_dir)
    assert daemon.host == "127.0.0.1" and daemon.port > 0
    assert daemon.log == data_dir / "chatd.log"
    assert holder(data_dir / "chatd.pid") == daemon.pid
    assert (data_dir / "control.sock").exists()
    alice = daemon.login("alice")
    alice.send({"type": "say", "text": "hello"})
    alice.expect("msg", seq=1, text="hello")

    status = chatd("status", "--json", "--data-dir", str(data_dir))
    assert status.returncode == 0, status.stderr
    reply = json.loads(status.stdout)
    assert reply.keys() >= STATUS_MEMBERS
    assert reply["type"] == "status"
    assert reply["users"] == ["alice"]
    assert reply["clients"] == 1 and reply["seq"] == 1 and reply["msgs_in"] == 1

    table = chatd("status", "--data-dir", str(data_dir))
    assert table.returncode == 0, table.stderr
    assert "users online: 1" in table.stdout.splitlines()
    assert "  alice" in table.stdout.splitlines()

    stop = chatd("stop", "--data-dir", str(data_dir))
    assert stop.returncode == 0, stop.stderr
    assert stop.stdout == f"chatd stopped (pid {daemon.pid})\n"
    assert wait_gone(daemon.pid, 0)  # stop returned only once the process was gone
    assert {"type": "bye", "reason": "shutdown"}.items() <= alice.wait_closed()[-1].items()
    alice.close()
    assert not (data_dir / "chatd.pid").exists()
    assert not (data_dir / "control.sock").exists()
    log = daemon.log.read_text()
    assert "listening on" in log and "chatd exited with code 0" in log

    again = chatd("stop", "--data-dir", str(data_dir))
    assert again.returncode == 1
    assert "no server running" in one_line(again.stderr)


def test_second_start_is_refused(data_dir: Path, tmp_path: Path) -> None:
    daemon = start(data_dir)
    same_dir = chatd("start", "--port", "0", "--data-dir", str(data_dir), "--db", ":memory:")
    assert same_dir.returncode == 1
    assert f"already running (pid {daemon.pid}" in one_line(same_dir.stderr)
    assert same_dir.stdout == ""

    other_dir = tmp_path / "other"
    same_port = chatd("start", "--port", str(daemon.port), "--data-dir", str(other_dir),
                      "--db", ":memory:")
    assert same_port.returncode == 1
    assert str(daemon.port) in one_line(same_port.stderr)
    assert holder(other_dir / "chatd.pid") is None  # the refused one left nothing running

    # The running server was not disturbed.
    with daemon.login("bob") as bob:
        bob.send({"type": "bye"})
    assert holder(data_dir / "chatd.pid") == daemon.pid
    assert chatd("stop", "--data-dir", str(data_dir)).returncode == 0


def test_stale_pid_file_and_control_socket_are_replaced(data_dir: Path) -> None:
    """What a killed server leaves behind: a pid file naming a live pid, a dead socket."""
    data_dir.mkdir()
    (data_dir / "chatd.pid").write_text(f"{os.getpid()}\n")  # alive, but holds no lock
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(data_dir / "control.sock"))  # bound, not listening: refuses
    dead.close()
    daemon = start(data_dir)
    assert holder(data_dir / "chatd.pid") == daemon.pid
    assert chatd("status", "--data-dir", str(data_dir)).returncode == 0
    assert chatd("stop", "--data-dir", str(data_dir)).returncode == 0


def test_kill_9_leaves_files_that_the_next_start_replaces(data_dir: Path) -> None:
    first = start(data_dir)
    os.kill(first.pid, signal.SIGKILL)
    assert wait_gone(first.pid, 10)
    assert (data_dir / "chatd.pid").exists() and (data_dir / "control.sock").exists()
    status = chatd("status", "--data-dir", str(data_dir))
    assert status.returncode == 1
    assert "connection refused" in one_line(status.stderr)
    second = start(data_dir)
    assert second.pid != first.pid
    assert chatd("stop", "--data-dir", str(data_dir)).returncode == 0


def test_sigterm_gives_every_client_bye_shutdown(data_dir: Path) -> None:
    daemon = start(data_dir)
    clients = [daemon.login(name) for name in ("alice", "bob", "carol")]
    for client in clients:
        client.barrier()  # joins and backlog are in; only the shutdown remains
    os.kill(daemon.pid, signal.SIGTERM)
    for client in clients:
        frames = client.wait_closed(timeout=15)
        client.close()
        assert [(f["type"], f.get("reason")) for f in frames] == [("bye", "shutdown")]
    assert wait_gone(daemon.pid, 15)
    assert "chatd exited with code 0" in daemon.log.read_text()
    assert not (data_dir / "chatd.pid").exists()


def test_start_reports_an_unusable_data_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    proc = chatd("start", "--port", "0", "--data-dir", str(blocker / "d"))
    assert proc.returncode == 1
    assert "cannot create data directory" in one_line(proc.stderr)
    proc = chatd("start", "--port", "0", "--data-dir", str(blocker))
    assert proc.returncode == 1
    assert f"data directory {blocker} is not a directory" in one_line(proc.stderr)


def test_start_reports_why_the_daemon_could_not_start(tmp_path: Path) -> None:
    """The daemon's startup error travels back to the command through the pipe."""
    bad_db = tmp_path / "bad.sqlite3"
    bad_db.write_bytes(b"this is not a database" * 100)
    data_dir = tmp_path / "d"
    proc = chatd("start", "--port", "0", "--data-dir", str(data_dir), "--db", str(bad_db))
    assert proc.returncode == 1
    assert str(bad_db) in one_line(proc.stderr)
    assert proc.stdout == ""
    assert not (data_dir / "chatd.pid").exists()
    assert str(bad_db) in (data_dir / "chatd.log").read_text()  # and the log says it too


def test_stop_waits_for_a_foreground_server_too(tmp_path: Path) -> None:
    """`chatd run` writes the pid file as well, so `stop` finds and waits for it."""
    from tests.support import running_server

    with running_server(tmp_path) as server:
        assert holder(server.data_dir / "chatd.pid") == server.pid
        stop = chatd("stop", "--data-dir", str(server.data_dir))
        assert stop.returncode == 0, stop.stderr
        assert server.wait_exit(10) == 0
        assert not (server.data_dir / "chatd.pid").exists()


def test_stop_falls_back_to_sigterm_without_a_control_socket(tmp_path: Path) -> None:
    from tests.support import running_server

    with running_server(tmp_path) as server:
        alice = server.login("alice")
        server.control_path.unlink()  # an operator deleted it: only the pid file is left
        stop = chatd("stop", "--data-dir", str(server.data_dir))
        assert stop.returncode == 0, stop.stderr
        assert stop.stdout == f"chatd stopped (pid {server.pid})\n"
        assert server.wait_exit(10) == 0
        assert alice.wait_closed()[-1]["reason"] == "shutdown"
        alice.close()


def test_stop_gives_up_at_its_deadline(tmp_path: Path) -> None:
    """A process that holds the pid file and ignores SIGTERM: one line, exit 1."""
    pid_path = tmp_path / "chatd.pid"
    code = (
        "import signal, sys; from pathlib import Path; from chatd.pidfile import PidFile\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"PidFile(Path({str(pid_path)!r})).acquire(); print('held', flush=True)\n"
        "sys.stdin.read()\n"
    )
    with subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as stubborn:
        try:
            assert stubborn.stdout is not None and stubborn.stdout.readline() == "held\n"
            stop = chatd("stop", "--data-dir", str(tmp_path), "--timeout", "1")
            assert stop.returncode == 1
            assert (f"chatd (pid {stubborn.pid}) is still running after 1 s"
                    in one_line(stop.stderr))
            assert stubborn.poll() is None
        finally:
            stubborn.kill()


def test_stop_of_a_server_that_ends_meanwhile_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pid file named a server that was gone before SIGTERM reached it."""
    from chatd import daemon
    from chatd.settings import Settings

    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True, timeout=CLI_TIMEOUT)
    pid = int(ended.stdout)  # reaped: no such process any more
    monkeypatch.setattr(daemon, "holder", lambda path: pid)
    assert daemon.stop(Settings(data_dir=tmp_path), timeout=5) == pid
