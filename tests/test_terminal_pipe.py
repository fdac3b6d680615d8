"""``chat`` in a pipe (protocol version 2), against a real chatd.

Each stdin line is a message to the current room, events come out one per line
as ``[room] <name> text``, and the client exits once stdin has ended and every
message is acknowledged.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from typing import Any

from tests.support import ServerProcess, TestClient, running_server

RUN_TIMEOUT = 20
PASSWORD = "correct horse battery"


def chat(port: int, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chatterm", "--host", "127.0.0.1", "--port", str(port), *args],
        input=stdin, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False)


def live_bot(server: ServerProcess) -> subprocess.Popen[str]:
    """``chat --name bot`` in a pipe the test keeps feeding and reading."""
    return subprocess.Popen(
        [sys.executable, "-m", "chatterm", "--port", str(server.port), "--name", "bot"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def v2(server: ServerProcess, name: str, **hello: Any) -> TestClient:
    return server.login(name, proto=2, **hello)


def joined(client: TestClient, room: str) -> None:
    client.send({"type": "join", "room": room, "id": "j"})
    client.drain_until(lambda m: m["type"] == "joined")


def texts(frames: list[dict[str, Any]], room: str) -> list[str]:
    return [m["text"] for m in frames if m["type"] == "msg" and m["room"] == room]


def test_lines_go_to_the_room_and_it_exits_once_all_are_acknowledged(tmp_path):
    with running_server(tmp_path) as server, v2(server, "carol") as carol:
        joined(carol, "ops")
        done = chat(server.port, "--name", "bot", "--room", "ops",
                    stdin="hi\n\n   \nlast line, no newline")
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == ["[ops] <bot> hi", "[ops] <bot> last line, no newline"]
        seen = carol.drain_until(lambda m: m["type"] == "presence" and not m["online"])
        assert texts(seen, "ops") == ["hi", "last line, no newline"]  # blank lines not sent
        assert seen[-1]["reason"] == "quit"  # it said bye


def test_join_and_dm_move_where_the_next_lines_go(tmp_path):
    with running_server(tmp_path) as server:
        for name in ("bot", "carol"):
            server.request({"type": "account_add", "name": name, "password": PASSWORD})
        with v2(server, "carol", password=PASSWORD) as carol:
            done = chat(server.port, "--name", "bot", "--password-stdin",
                        stdin=f"{PASSWORD}\nin the lobby\n/join dev\nin dev\n/dm carol\npsst\n")
            assert done.returncode == 0, done.stderr
            assert done.stdout.splitlines() == [
                "[lobby] <bot> in the lobby", "[dev] <bot> in dev", "[@carol] <bot> psst"]
            assert "logged in as bot (account)" in done.stderr
            seen = carol.drain_until(lambda m: m["type"] == "msg" and m["text"] == "psst")
            assert seen[-1]["room"] == "@bot@carol"
            assert texts(seen, "lobby") == ["in the lobby"]


def test_events_of_others_come_out_one_per_line_with_their_room(tmp_path):
    with running_server(tmp_path) as server, v2(server, "carol") as carol:
        proc = live_bot(server)
        try:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write("ready\n")
            proc.stdin.flush()
            assert proc.stdout.readline() == "[lobby] <bot> ready\n"
            carol.send({"type": "say", "room": "lobby", "text": "two\nlines"})
            assert proc.stdout.readline() == "[lobby] <carol> two\n"
            assert proc.stdout.readline() == "    lines\n"  # a continuation, not a message
            proc.stdin.close()
            assert proc.wait(RUN_TIMEOUT) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(RUN_TIMEOUT)
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()


def test_answers_to_commands_go_to_stdout_news_to_stderr(tmp_path):
    with running_server(tmp_path) as server, v2(server, "carol"):
        done = chat(server.port, "--name", "bot", stdin="findme please\n/who\n/search findme\n")
        assert done.returncode == 0, done.stderr
        out = done.stdout.splitlines()
        assert "-- online (2): bot, carol" in out
        assert "[lobby] #1 <bot> findme please" in out
        assert "logged in as bot (guest)" in done.stderr and "logged in" not in done.stdout


def test_an_account_with_a_wrong_password_is_one_line_and_exit_1(tmp_path):
    with running_server(tmp_path) as server:
        server.request({"type": "account_add", "name": "bot", "password": PASSWORD})
        done = chat(server.port, "--name", "bot", "--password-stdin",
                    stdin="not the password\nhi\n")
        assert done.returncode == 1
        assert done.stderr.splitlines() == [done.stderr.splitlines()[-1]]
        assert done.stderr.startswith("chat: auth_failed")
        assert "not the password" not in done.stderr


def test_account_without_a_terminal_asks_for_password_stdin(tmp_path):
    done = chat(1, "--name", "bot", "--account", stdin="hi\n")
    assert done.returncode == 1
    assert done.stderr == "chat: no terminal to ask for the password on: use --password-stdin\n"


def test_register_over_a_pipe_creates_the_account(tmp_path):
    with running_server(tmp_path, "--registration", "open") as server:
        done = chat(server.port, "--name", "newbie", "--register", "--password-stdin",
                    stdin=f"{PASSWORD}\nhello\n")
        assert done.returncode == 0, done.stderr
        assert "logged in as newbie (account)" in done.stderr
        assert server.request({"type": "accounts"})["accounts"] == ["newbie"]


def test_register_with_the_join_code(tmp_path):
    with running_server(tmp_path, "--registration", "code", "--join-code", "class-7b") as server:
        wrong = chat(server.port, "--name", "kid", "--register", "--code", "nope",
                     "--password-stdin", stdin=f"{PASSWORD}\nhello\n")
        assert wrong.returncode == 1 and "auth_failed" in wrong.stderr
        done = chat(server.port, "--name", "kid", "--register", "--code", "class-7b",
                    "--password-stdin", stdin=f"{PASSWORD}\nhello\n")
        assert done.returncode == 0, done.stderr
        assert server.request({"type": "accounts"})["accounts"] == ["kid"]


def test_name_taken_is_one_line_and_exit_1(tmp_path):
    with running_server(tmp_path) as server, server.login("carol"):
        done = chat(server.port, "--name", "CAROL", stdin="hello\n")
        assert done.returncode == 1
        assert done.stderr.strip().splitlines()[-1].startswith("chat: name_taken")


def test_unreachable_server_is_one_line_and_exit_1():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        done = chat(port, "--name", "bot", stdin="hi\n")
    assert done.returncode == 1
    assert done.stderr.splitlines() == [f"chat: cannot connect to 127.0.0.1:{port}: "
                                        "Connection refused"]


def test_bad_name_and_bad_room_are_refused_before_connecting():
    done = chat(1, "--name", "no spaces please", stdin="hi\n")
    assert done.returncode == 1
    assert done.stderr.startswith("chat: bad name 'no spaces please'")
    done = chat(1, "--name", "bot", "--room", "#ops", stdin="hi\n")
    assert done.returncode == 1
    assert done.stderr.startswith("chat: bad room '#ops'")


def test_unknown_command_is_reported_not_sent(tmp_path):
    with running_server(tmp_path) as server, v2(server, "carol") as carol:
        done = chat(server.port, "--name", "bot", stdin="/frobnicate\r\n//slash\r\n")  # CRLF
        assert done.returncode == 0, done.stderr
        assert "unknown command /frobnicate" in done.stderr
        seen = carol.drain_until(lambda m: m["type"] == "presence" and not m["online"])
        assert texts(seen, "lobby") == ["/slash"]


def test_a_refused_message_is_reported_and_does_not_hold_the_exit(tmp_path):
    with running_server(tmp_path) as server:
        done = chat(server.port, "--name", "bot", "--room", "lobby",
                    stdin="/part\nnobody hears this\n")
        assert done.returncode == 0, done.stderr
        assert "not_member" in done.stderr
        assert done.stdout == ""


def test_port_out_of_range_is_a_usage_error():
    done = chat(99999, "--name", "bot", stdin="hi\n")  # getaddrinfo would wrap it silently
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1].endswith("invalid port_number value: '99999'")


def test_password_is_not_an_argument():
    done = chat(1, "--name", "bot", "--password", "secret")
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1].endswith("unrecognized arguments: --password secret")


def test_reader_gone_ends_without_a_traceback(tmp_path):
    with running_server(tmp_path) as server, v2(server, "carol") as carol:
        proc = live_bot(server)
        try:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write("hi\n")
            proc.stdin.flush()
            assert proc.stdout.readline() == "[lobby] <bot> hi\n"
            proc.stdout.close()  # ``chat | head -1``: the reader is gone
            carol.send({"type": "say", "room": "lobby", "text": "are you there?"})
            assert proc.wait(RUN_TIMEOUT) == 1
            assert proc.stderr is not None and "Traceback" not in proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(RUN_TIMEOUT)
            for stream in (proc.stdin, proc.stderr):
                if stream is not None:
                    stream.close()
