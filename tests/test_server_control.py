"""The control socket (contract §8), shutdown (§9) and start-up refusals."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from chatd.control_client import connect_unix
from protocol import encode
from tests.support import running_server


def test_control_socket_mode_and_status(tmp_path: Path) -> None:
    with running_server(tmp_path) as srv:
        assert stat.S_IMODE(os.stat(srv.control_path).st_mode) == 0o600
        with srv.login("alice") as alice:
            alice.send({"type": "say", "text": "hi"})
            alice.expect("msg")
            status = srv.request({"type": "status", "id": "s1"})
        assert status["type"] == "status" and status["ref"] == "s1"
        assert status["server"].startswith("chatd/")
        assert status["users"] == ["alice"] and status["clients"] == 1
        assert status["seq"] == 1 and status["msgs_in"] == 1
        assert status["uptime_s"] >= 0
        for counter in ("frames_out", "bytes_in", "bytes_out"):
            assert isinstance(status[counter], int) and status[counter] > 0


def test_control_errors(tmp_path: Path) -> None:
    with running_server(tmp_path, "--max-text", "5") as srv, srv.control() as ctl:
        for request, code in (({"type": "dance", "id": "a"}, "unknown_type"),
                              ({"type": "kick", "id": "a"}, "bad_request"),
                              ({"type": "kick", "name": "nobody", "id": "a"},
                               "no_such_user"),
                              ({"type": "announce", "text": "", "id": "a"},
                               "empty_message"),
                              ({"type": "announce", "text": "toolong", "id": "a"},
                               "text_too_long"),
                              ({"type": "announce", "text": "\x01", "id": "a"},
                               "bad_text"),
                              ({"type": "hello", "id": "a"}, "unknown_type")):
            ctl.send(request)
            error = ctl.expect("error", code=code, ref="a")
            assert error["fatal"] is False
        ctl.send_raw(b"\x00\x00\x00\x03abc")
        frames = ctl.wait_closed()
        assert frames[-1]["code"] == "bad_frame" and frames[-1]["fatal"] is True


def test_kick(tmp_path: Path) -> None:
    with running_server(tmp_path) as srv, srv.login("alice") as alice, srv.login("Bob") as bob:
        alice.expect("join")
        reply = srv.request({"type": "kick", "name": "BOB", "reason": "spam", "id": "k"})
        assert reply == {"type": "ok", "ref": "k"}
        assert bob.wait_closed()[-1] == {"type": "bye", "reason": "kicked",
                                        "message": "spam"}
        leave = alice.expect("leave", name="Bob")
        assert leave["reason"] == "kicked"


def test_kick_reason_follows_the_text_rules(tmp_path: Path) -> None:
    with running_server(tmp_path) as srv, srv.login("bob") as bob:
        reply = srv.request({"type": "kick", "name": "bob", "reason": "bad\ud800", "id": "k"})
        assert (reply["type"], reply["code"], reply["ref"]) == ("error", "bad_text", "k")
        assert not reply["fatal"]
        bob.send({"type": "ping", "t": 1})
        bob.expect("pong", t=1)  # the refused kick left bob online


def test_announce_is_a_public_message_with_seq(tmp_path: Path) -> None:
    with running_server(tmp_path) as srv, srv.login("alice") as alice:
        alice.send({"type": "say", "text": "one"})
        alice.expect("msg", seq=1)
        assert srv.request({"type": "announce", "text": " maintenance ", "id": "a"}) == {
            "type": "ok", "ref": "a"}
        msg = alice.expect("msg", seq=2)
        assert msg["from"] == "server" and msg["text"] == "maintenance"
        alice.send({"type": "history", "before": 3})
        assert [m["from"] for m in alice.expect("history")["msgs"]] == ["alice", "server"]
        assert srv.request({"type": "status"})["msgs_in"] == 2


def test_watch_sees_messages_joins_and_leaves(tmp_path: Path) -> None:
    with running_server(tmp_path) as srv, srv.control() as watcher:
        watcher.send({"type": "watch", "id": "w"})
        assert watcher.expect("ok") == {"type": "ok", "ref": "w"}
        with srv.login("alice") as alice:
            assert watcher.expect("join")["name"] == "alice"
            alice.send({"type": "say", "text": "watched"})
            alice.send({"type": "pm", "to": "alice", "text": "private"})
            assert watcher.expect("msg")["text"] == "watched"
            alice.send({"type": "bye"})
            alice.wait_closed()
        leave = watcher.expect("leave")
        assert leave["name"] == "alice" and leave["reason"] == "quit"
        watcher.send({"type": "status", "id": "s"})
        assert watcher.expect("status")["watchers"] == 1


def test_control_shutdown(tmp_path: Path) -> None:
    with running_server(tmp_path) as srv:
        with srv.login("alice") as alice, srv.control() as watcher:
            watcher.send({"type": "watch"})
            watcher.expect("ok")
            assert srv.request({"type": "shutdown", "id": "x"}) == {"type": "ok", "ref": "x"}
            assert alice.wait_closed() == [{"type": "bye", "reason": "shutdown"}]
            frames = watcher.wait_closed()
            assert [(m["type"], m["name"], m["reason"]) for m in frames] == [
                ("leave", "alice", "shutdown")]
            assert srv.wait_exit() == 0
        assert not srv.control_path.exists()


def test_sigterm_gives_every_client_bye_and_exits_0(tmp_path: Path) -> None:
    with running_server(tmp_path) as srv:
        clients = [srv.login(f"u{i}") for i in range(5)]
        pending = srv.client()  # not logged in yet
        for client in clients:
            client.barrier()
        srv.proc.send_signal(signal.SIGTERM)
        for client in clients:
            frames = client.wait_closed()
            assert frames[-1] == {"type": "bye", "reason": "shutdown"}
            assert all(m["type"] != "leave" for m in frames)
            client.close()
        assert pending.wait_closed()[-1] == {"type": "bye", "reason": "shutdown"}
        assert srv.wait_exit() == 0
        assert "listening on" in srv.stderr_text()


def test_a_client_that_never_reads_does_not_delay_exit_past_grace(tmp_path: Path) -> None:
    with running_server(tmp_path, "--grace", "1", "--rate", "0") as srv:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((srv.host, srv.port))
        sock.sendall(encode({"type": "hello", "proto": 1, "name": "deaf"}))
        with srv.login("loud") as loud:
            for _ in range(40):
                loud.send({"type": "say", "text": "z" * 3000})
            loud.drain_until(lambda m: m.get("seq") == 40, timeout=10)
            srv.proc.send_signal(signal.SIGTERM)
            assert srv.wait_exit(timeout=10) == 0
        sock.close()


def test_second_sigint_exits_at_once(tmp_path: Path) -> None:
    with running_server(tmp_path, "--grace", "30") as srv:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((srv.host, srv.port))
        sock.sendall(encode({"type": "hello", "proto": 1, "name": "deaf"}))
        with srv.login("loud", since=0) as loud:
            for _ in range(60):
                loud.send({"type": "say", "text": "z" * 3000})
            loud.drain_until(lambda m: m.get("seq") == 60, timeout=10)
            srv.proc.send_signal(signal.SIGINT)
            loud.wait_closed()
            srv.proc.send_signal(signal.SIGINT)
            assert srv.wait_exit(timeout=10) != 0
        sock.close()


def _run_chatd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "chatd", "run", *args],
                          capture_output=True, text=True, timeout=30, check=False)


def test_port_in_use_is_a_one_line_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run_chatd("--port", str(port), "--data-dir", str(tmp_path), "--db",
                            ":memory:")
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_live_control_socket_refuses_a_second_server(tmp_path: Path) -> None:
    with running_server(tmp_path) as srv:
        result = _run_chatd("--port", "0", "--data-dir", str(srv.data_dir), "--db",
                            ":memory:")
        assert result.returncode == 1
        assert "already running" in result.stderr and "Traceback" not in result.stderr
        assert srv.request({"type": "status"})["type"] == "status"  # untouched


def test_stale_control_socket_is_replaced(tmp_path: Path) -> None:
    data_dir = tmp_path / "chatd-data"
    data_dir.mkdir()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path = data_dir / "control.sock"
    if len(os.fsencode(path)) > 100:
        pytest.skip("path too long to bind directly")
    stale.bind(os.fspath(path))  # bound, never listening: connect is refused
    stale.close()
    with running_server(tmp_path) as srv:
        assert srv.request({"type": "status"})["type"] == "status"
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with pytest.raises(OSError):
        connect_unix(probe, path)
    probe.close()


def test_a_file_at_the_control_path_is_refused_not_deleted(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("precious\n")
    result = _run_chatd("--port", "0", "--data-dir", str(tmp_path), "--db", ":memory:",
                        "--control", str(notes))
    assert result.returncode == 1
    assert "is not a socket" in result.stderr and "Traceback" not in result.stderr
    assert notes.read_text() == "precious\n"


def test_control_socket_path_longer_than_sun_path(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    with running_server(deep) as srv:
        assert len(os.fsencode(srv.control_path)) > 108
        assert stat.S_IMODE(os.stat(srv.control_path).st_mode) == 0o600
        assert srv.request({"type": "status"})["type"] == "status"
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.wait_exit() == 0
        assert not srv.control_path.exists()
