"""The terminal client ``chat`` in a pipe, against a real chatd."""

from __future__ import annotations

import socket
import subprocess
import sys

from tests.support import running_server

RUN_TIMEOUT = 20


def chat(port: int, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chatgui.terminal", "--host", "127.0.0.1", "--port", str(port),
         *args],
        input=stdin, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False)


def test_pipe_sends_everything_then_says_bye(tmp_path):
    with running_server(tmp_path) as server, server.control() as watch, \
            server.login("carol") as carol:
        watch.send({"type": "watch"})
        watch.expect("ok")
        done = chat(server.port, "--name", "bot",
                    stdin="hi\n\n   \n/msg carol just for you\nlast line, no newline")
        assert done.returncode == 0, done.stderr
        assert "<bot> hi" in done.stdout and "<bot> last line, no newline" in done.stdout
        seen = watch.drain_until(lambda m: m["type"] == "leave" and m["name"] == "bot")
        said = [m["text"] for m in seen if m["type"] == "msg"]
        assert said == ["hi", "last line, no newline"]  # blank lines were not sent
        assert seen[-1]["reason"] == "quit"  # it said bye
        got = carol.drain_until(lambda m: m["type"] == "leave")
        assert [m["text"] for m in got if m["type"] == "pm"] == ["just for you"]


def test_refusal_is_one_line_and_exit_1(tmp_path):
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


def test_bad_name_is_refused_before_connecting():
    done = chat(1, "--name", "no spaces please", stdin="hi\n")
    assert done.returncode == 1
    assert done.stderr.startswith("chat: bad name 'no spaces please'")


def test_unknown_command_is_reported_not_sent(tmp_path):
    with running_server(tmp_path) as server, server.control() as watch:
        watch.send({"type": "watch"})
        watch.expect("ok")
        done = chat(server.port, "--name", "bot", stdin="/frobnicate\r\n//slash\r\n")  # CRLF
        assert done.returncode == 0
        assert "unknown command /frobnicate" in done.stderr
        seen = watch.drain_until(lambda m: m["type"] == "leave")
        assert [m["text"] for m in seen if m["type"] == "msg"] == ["/slash"]


def test_port_out_of_range_is_a_usage_error():
    done = chat(99999, "--name", "bot", stdin="hi\n")  # getaddrinfo would wrap it silently
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1].endswith("invalid port_number value: '99999'")


def test_reader_gone_ends_without_a_traceback(tmp_path):
    with running_server(tmp_path) as server, server.login("carol") as carol:
        proc = subprocess.Popen(
            [sys.executable, "-m", "chatgui.terminal", "--port", str(server.port),
             "--name", "bot"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write("hi\n")
            proc.stdin.flush()
            assert proc.stdout.readline().endswith("<bot> hi\n")
            proc.stdout.close()  # ``chat | head -1``: the reader is gone
            carol.send({"type": "say", "text": "are you there?"})  # stdin stays open
            assert proc.wait(RUN_TIMEOUT) == 1
            assert proc.stderr is not None and "Traceback" not in proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(RUN_TIMEOUT)
            for stream in (proc.stdin, proc.stderr):
                if stream is not None:
                    stream.close()
