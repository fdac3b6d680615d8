"""Operator commands through the CLI against a real server: kick, announce, watch,
accounts and rooms (contract §18); systemd notification from `chatd run`;
settings precedence end to end."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ServerProcess, running_server

CLI_TIMEOUT = 30.0
TIME = r"\d\d:\d\d:\d\d  "


def chatd(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """``chatd ARGS`` in a child process; ``stdin`` is piped in (else it is empty)."""
    return subprocess.run([sys.executable, "-m", "chatd", *args], capture_output=True,
                          text=True, timeout=CLI_TIMEOUT, check=False, input=stdin,
                          stdin=subprocess.DEVNULL if stdin is None else None)


def refused(result: subprocess.CompletedProcess[str], code: str) -> bool:
    """Whether a command failed with exit 1 and the server's ``code``, in one line."""
    return (result.returncode == 1 and f": {code}: " in result.stderr
            and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr)


class Lines:
    """Lines of a child's stdout, each awaited with a deadline."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self.fd = proc.stdout.fileno()
        self.buf = b""

    def next(self, timeout: float = 10.0) -> str | None:
        """The next line, or None at end of file."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            remaining = deadline - time.monotonic()
            readable, _, _ = select.select([self.fd], [], [], max(0.0, remaining))
            if not readable:
                raise AssertionError(f"no line in time; have {self.buf!r}")
            chunk = os.read(self.fd, 4096)
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    with running_server(tmp_path) as running:
        yield running


def watch(server: ServerProcess) -> tuple[subprocess.Popen[bytes], Lines]:
    proc = subprocess.Popen([sys.executable, "-m", "chatd", "watch", "--data-dir",
                             str(server.data_dir)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    return proc, Lines(proc)


def test_kick_announce_and_watch(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        where = ("--data-dir", str(server.data_dir))
        watcher, lines = watch(server)
        try:
            assert lines.next() == "online (0): (nobody)"  # printed once the watch is on
            alice = server.login("alice")
            alice.send({"type": "say", "text": "hi"})
            alice.expect("msg", seq=1, text="hi")

            announce = chatd("announce", "hello", "all", *where)
            assert (announce.returncode, announce.stdout) == (0, "announced\n")
            assert alice.expect("msg", seq=2, text="hello all")["from"] == "server"
            empty = chatd("announce", "   ", *where)
            assert empty.returncode == 1
            assert "empty_message" in empty.stderr and empty.stderr.count("\n") == 1

            missing = chatd("kick", "bob", *where)
            assert missing.returncode == 1
            assert "no_such_user" in missing.stderr and missing.stderr.count("\n") == 1
            kick = chatd("kick", "ALICE", "--reason", "spam", *where)
            assert (kick.returncode, kick.stdout) == (0, "kicked ALICE\n")
            assert alice.wait_closed()[-1] == {"type": "bye", "reason": "kicked",
                                               "message": "spam"}
            alice.close()

            expected = [
                TIME + r"--> alice joined",
                TIME + r"lobby #1 <alice> hi",  # watchers get version 2 messages (§10)
                TIME + r"lobby #2 <server> hello all",
                TIME + r"<-- alice left \(kicked\)",
            ]
            for pattern in expected:
                line = lines.next()
                assert line is not None and re.fullmatch(pattern, line), (pattern, line)
            server.proc.send_signal(signal.SIGTERM)
            assert server.wait_exit() == 0
            line = lines.next()
            assert line is not None and line.endswith("the server closed the connection")
            assert watcher.wait(10) == 0
        finally:
            watcher.kill()
            watcher.wait(10)
            for stream in (watcher.stdout, watcher.stderr):
                if stream is not None:
                    stream.close()


def test_watch_shows_who_is_online_and_ends_on_ctrl_c(server: ServerProcess) -> None:
    bob = server.login("bob")
    bob.send({"type": "bye"})
    bob.wait_closed()
    bob.close()
    carol = server.login("Carol")
    dave = server.login("dave")
    watcher, lines = watch(server)
    try:
        assert lines.next() == "online (2): Carol, dave"
        watcher.send_signal(signal.SIGINT)
        assert watcher.wait(10) == 0
        assert watcher.stderr is not None and b"Traceback" not in watcher.stderr.read()
    finally:
        watcher.kill()
        watcher.wait(10)
        for stream in (watcher.stdout, watcher.stderr):
            if stream is not None:
                stream.close()
        carol.close()
        dave.close()


@pytest.mark.parametrize("abstract", [False, True])
def test_run_notifies_systemd_ready_status_and_stopping(tmp_path: Path, abstract: bool) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if abstract:
        name = f"chatd-test-notify-{os.getpid()}"
        sock.bind(b"\0" + name.encode())
        address = "@" + name
    else:
        address = str(tmp_path / "notify.sock")
        sock.bind(address)
    sock.settimeout(10)
    try:
        with running_server(tmp_path, env={"NOTIFY_SOCKET": address}) as server:
            ready = sock.recv(4096).decode().splitlines()
            assert "READY=1" in ready
            assert f"STATUS=listening on {server.host}:{server.port}" in ready
            server.proc.send_signal(signal.SIGTERM)
            states = []
            while "STOPPING=1" not in states:
                states.extend(sock.recv(4096).decode().splitlines())
            assert server.wait_exit() == 0
    finally:
        sock.close()


@pytest.mark.parametrize(
    ("flag", "env", "config", "expected"),
    [("30", "20", "10", 30), (None, "20", "10", 20), (None, None, "10", 10)],
)
def test_settings_precedence_reaches_the_server(
    tmp_path: Path, flag: str | None, env: str | None, config: str, expected: int
) -> None:
    config_file = tmp_path / "chatd.toml"
    config_file.write_text(f"max-text = {config}\n")
    flags = ["--config", str(config_file)] + (["--max-text", flag] if flag else [])
    env_vars = {"CHATD_MAX_TEXT": env} if env else None
    with running_server(tmp_path, *flags, env=env_vars) as server, \
            server.login("alice") as alice:
        assert alice.welcome["max_text"] == expected


def test_output_nobody_can_take_is_no_traceback(server: ServerProcess) -> None:
    """`chatd status | head -0`, or stdout on a full disk: a quiet or one-line end."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before chatd writes a byte
    try:
        gone = subprocess.run([sys.executable, "-m", "chatd", "status", "--data-dir",
                               str(server.data_dir)], stdout=write_end, stderr=subprocess.PIPE,
                              text=True, timeout=CLI_TIMEOUT, check=False)
    finally:
        os.close(write_end)
    assert (gone.returncode, gone.stderr) == (128 + signal.SIGPIPE, "")
    if not Path("/dev/full").exists():
        return
    with open("/dev/full", "wb") as full:
        failed = subprocess.run([sys.executable, "-m", "chatd", "status", "--json",
                                 "--data-dir", str(server.data_dir)], stdout=full,
                                stderr=subprocess.PIPE, text=True, timeout=CLI_TIMEOUT,
                                check=False)
    assert failed.returncode == 1
    assert failed.stderr.startswith("chatd status: ") and failed.stderr.count("\n") == 1
    assert "No space left on device" in failed.stderr


def test_accounts_end_to_end(server: ServerProcess) -> None:
    where = ("--data-dir", str(server.data_dir))
    assert chatd("account", "list", *where).stdout == "accounts: 0\n"
    add = chatd("account", "add", "Bob", *where, stdin="horse battery staple\n")
    assert (add.returncode, add.stdout, add.stderr) == (0, "account Bob added\n", "")
    assert refused(chatd("account", "add", "BOB", *where, stdin="another password\n"),
                   "account_exists")
    assert refused(chatd("account", "add", "two words", *where, stdin="long enough pw\n"),
                   "bad_name")
    assert refused(chatd("account", "add", "carol", *where, stdin="short\n"), "weak_password")
    no_password = chatd("account", "add", "carol", *where)
    assert no_password.returncode == 2 and "stdin is empty" in no_password.stderr
    assert chatd("account", "list", *where).stdout == "accounts: 1\n  Bob\n"
    status = json.loads(chatd("status", "--json", *where).stdout)
    assert status["accounts"] == 1

    with server.client() as bob:
        bob.send({"type": "hello", "proto": 2, "name": "bob",
                  "password": "horse battery staple"})
        assert bob.expect("welcome", account=True)["name"] == "Bob"
        passwd = chatd("account", "passwd", "bob", *where, stdin="a new password\n")
        assert (passwd.returncode, passwd.stdout) == (0, "password of bob changed\n")
        with server.client() as old:
            old.send({"type": "hello", "proto": 2, "name": "bob",
                      "password": "horse battery staple"})
            assert old.expect("error")["code"] == "auth_failed"
        remove = chatd("account", "remove", "BOB", *where)
        assert (remove.returncode, remove.stdout) == (0, "account BOB removed\n")
        closing = bob.wait_closed()
        assert {"type": "bye", "reason": "kicked"}.items() <= closing[-1].items()
    assert refused(chatd("account", "remove", "bob", *where), "no_such_user")
    assert refused(chatd("account", "passwd", "bob", *where, stdin="a new password\n"),
                   "no_such_user")
    assert chatd("account", "list", *where).stdout == "accounts: 0\n"


def test_rooms_and_announcements_end_to_end(server: ServerProcess) -> None:
    where = ("--data-dir", str(server.data_dir))
    listing = chatd("room", "list", *where)
    assert listing.returncode == 0
    assert listing.stdout.splitlines()[1].split()[:2] == ["lobby", "public"]
    assert (chatd("room", "add", "Dev", *where).stdout,
            chatd("room", "add", "staff", "--private", *where).stdout) == (
        "room Dev added\n", "room staff added (private)\n")
    assert refused(chatd("room", "add", "DEV", *where), "not_allowed")
    assert refused(chatd("room", "add", "@a@b", *where), "not_allowed")
    assert refused(chatd("room", "add", "two words", *where), "bad_room")
    rows = [line.split()[:3] for line in chatd("room", "list", *where).stdout.splitlines()]
    assert rows == [["ROOM", "KIND", "MEMBERS"], ["Dev", "public", "0"],
                    ["lobby", "public", "0"], ["staff", "private", "0"], ["rooms:", "3"]]
    assert json.loads(chatd("status", "--json", *where).stdout)["rooms"] == 3

    with server.client() as alice:
        alice.send({"type": "hello", "proto": 2, "name": "alice"})
        alice.expect("welcome")
        alice.send({"type": "join", "room": "dev", "id": "j"})
        alice.expect("joined", room="Dev")
        announce = chatd("announce", "--room", "DEV", "build", "is", "green", *where)
        assert (announce.returncode, announce.stdout) == (0, "announced in DEV\n")
        said = alice.expect("msg", room="Dev", seq=1, text="build is green")
        assert said["from"] == "server"
        assert refused(chatd("announce", "--room", "nowhere", "hi", *where), "no_such_room")
        assert refused(chatd("announce", "--room", "a b", "hi", *where), "bad_room")
        remove = chatd("room", "remove", "dev", *where)
        assert (remove.returncode, remove.stdout) == (0, "room dev removed\n")
        alice.expect("part", room="Dev", name="alice", reason="removed")
    assert refused(chatd("room", "remove", "lobby", *where), "not_allowed")
    assert refused(chatd("room", "remove", "dev", *where), "no_such_room")
    assert json.loads(chatd("status", "--json", *where).stdout)["rooms"] == 2


def test_v2_settings_reach_the_server(tmp_path: Path) -> None:
    """Flags other tools start the server with: guests off, open registration."""
    with running_server(tmp_path, "--guests", "false", "--registration", "open",
                        "--default-rooms", "lobby,Welcome") as server:
        with server.client() as guest:
            guest.send({"type": "hello", "proto": 2, "name": "guest"})
            assert guest.expect("error")["code"] == "auth_failed"
        with server.client() as dana:
            dana.send({"type": "hello", "proto": 2, "name": "dana", "register": True,
                       "password": "long enough pw"})
            welcome = dana.expect("welcome", account=True)
            assert [room["room"] for room in welcome["rooms"]] == ["lobby", "Welcome"]
