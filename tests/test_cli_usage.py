"""The chatd command line without a server: usage, bad values, not running."""

from __future__ import annotations

import socket
import subprocess
import sys
import types
from pathlib import Path

import pytest

from chatd import __version__
from chatd.cli import main
from chatd.control_client import ControlClient, ControlError, NotRunning


def _one_line(text: str) -> str:
    assert text.endswith("\n") and text.count("\n") == 1, repr(text)
    assert "Traceback" not in text
    return text


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"chatd {__version__}\n"


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["run", "--no-such-flag"],
        ["status", "--port", "7000"],  # status finds the server by its control socket
        ["kick"],
        ["announce"],
        ["start", "--timeout", "0"],
        ["stop", "--timeout", "soon"],
        ["stop", "--timeout", "1e300"],  # would overflow select()
        ["account"],
        ["account", "rename", "bob"],
        ["account", "add"],
        ["account", "add", "bob", "s3cret-password"],  # a password is never an argument
        ["account", "passwd", "bob", "--password", "x"],
        ["account", "list", "extra"],
        ["room"],
        ["room", "add"],
        ["room", "add", "dev", "--private", "yes"],
        ["room", "remove"],
        ["announce", "--room"],
        ["announce", "--room", "dev"],
    ],
)
def test_usage_errors_exit_2_with_one_line(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = _one_line(capsys.readouterr().err)
    assert err.startswith("chatd")


@pytest.mark.parametrize(
    ("argv", "env", "fragment"),
    [
        (["run", "--port", "abc"], {}, "--port: bad port 'abc'"),
        (["run", "--max-clients", "0"], {}, "--max-clients"),
        (["status", "--control", "/tmp/" + "c" * 200], {}, "socket's file name is longer"),
        (["start", "--rate", "-2"], {}, "--rate"),
        (["run"], {"CHATD_HEARTBEAT": "0"}, "CHATD_HEARTBEAT"),
        (["status"], {"CHATD_LOG_LEVEL": "loud"}, "CHATD_LOG_LEVEL"),
        (["run", "--config", "/nonexistent/chatd.toml"], {}, "cannot read config file"),
        (["run"], {"CHATD_CONFIG": "/nonexistent/chatd.toml"}, "cannot read config file"),
        (["run", "--guests", "maybe"], {}, "--guests: bad guests 'maybe': must be true or false"),
        (["run", "--registration", "code"], {}, "give --join-code"),
        (["run", "--default-rooms", "lobby,@a@b"], {}, "'@a@b' is not a room name"),
        (["start"], {"CHATD_ROOM_CREATION": "admins"}, "CHATD_ROOM_CREATION"),
        (["run", "--max-rooms", "0"], {}, "--max-rooms"),
        (["run", "--hash-workers", "-1"], {}, "--hash-workers"),
        (["run", "--edit-window", "-5"], {}, "--edit-window"),
    ],
)
def test_bad_setting_exits_2_with_one_line(
    argv: list[str], env: dict[str, str], fragment: str,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(argv) == 2
    err = _one_line(capsys.readouterr().err)
    assert fragment in err


def test_bad_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "chatd.toml"
    config.write_text("max_clients = 10\nmaxclients = 5\n")
    assert main(["run", "--config", str(config)]) == 2
    assert "unknown setting 'maxclients'" in _one_line(capsys.readouterr().err)
    config.write_text("max_clients = \n")
    assert main(["run", "--config", str(config)]) == 2
    assert "not valid TOML" in _one_line(capsys.readouterr().err)


def test_bad_value_in_a_real_process_has_no_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "chatd", "run", "--port", "99999", "--data-dir", str(tmp_path)],
        check=False, capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "must be 0..65535" in _one_line(proc.stderr)


@pytest.mark.parametrize(
    "argv",
    [["status"], ["status", "--json"], ["stop"], ["kick", "bob"], ["announce", "hi"], ["watch"],
     ["account", "list"], ["account", "remove", "bob"], ["room", "list"],
     ["room", "add", "dev"], ["room", "remove", "dev"], ["announce", "--room", "dev", "hi"],
     # The server is looked for before a password is asked or read.
     ["account", "add", "bob"], ["account", "passwd", "bob"]],
)
def test_commands_without_a_server_exit_1_with_one_line(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*argv, "--data-dir", str(tmp_path)]) == 1
    err = _one_line(capsys.readouterr().err)
    assert f"no server running (control socket {tmp_path / 'control.sock'}: no such file)" in err


@pytest.mark.parametrize("argv", [["status"], ["stop"], ["kick", "bob"]])
def test_data_dir_that_is_a_file_exits_1_with_one_line(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert main([*argv, "--data-dir", str(blocker)]) == 1
    assert "Not a directory" in _one_line(capsys.readouterr().err)


def test_refused_control_socket_is_not_running(tmp_path: Path) -> None:
    """A socket file left by a dead server refuses connections."""
    path = tmp_path / "control.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))  # bound, never listening: what a crashed server leaves
    try:
        with pytest.raises(NotRunning, match="connection refused"):
            ControlClient(path)
    finally:
        dead.close()


def test_silent_server_is_a_timeout_not_a_hang(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.bind(str(path))
    silent.listen()
    try:
        with ControlClient(path, timeout=0.2) as client, \
                pytest.raises(ControlError, match=r"no reply within 0\.2 s"):
            client.request({"type": "status"})
    finally:
        silent.close()


def test_bench_forwards_every_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    """`chatd bench` owns its flags: they reach chatd.bench.main untouched."""
    seen: list[list[str]] = []

    def fake_main(argv: list[str]) -> int:
        seen.append(argv)
        return 3

    monkeypatch.setitem(sys.modules, "chatd.bench", types.SimpleNamespace(main=fake_main))
    assert main(["bench", "--clients", "10", "-h", "--port", "x"]) == 3
    assert main(["bench"]) == 3
    assert seen == [["--clients", "10", "-h", "--port", "x"], []]


def test_run_help_documents_every_version_2_setting(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    entries = [("--guests true|false", "(default: true)"),
               ("--registration closed|open|code", "(default: closed)"),
               ("--join-code TEXT", "--registration code"),
               ("--room-creation everyone|accounts|operators", "(default: everyone)"),
               ("--edit-window S", "(0 = no limit) (default: 900.0)"),
               ("--default-rooms NAME[,NAME...]", "(default: lobby)"),
               ("--max-rooms N", "(default: 1000)"),
               ("--hash-workers N", "(default: 1)"),
               ("exit status:", "")]
    # Each help entry (after the usage line) runs until the next one.
    starts = [text.rindex(flag) for flag, _ in entries]
    assert starts == sorted(starts)
    for (flag, shown), start, end in zip(entries, starts, starts[1:], strict=False):
        assert shown in text[start:end], flag
