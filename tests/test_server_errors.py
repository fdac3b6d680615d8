"""Every row of the contract's error table (§6) and the login order (§3.2)."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from protocol import encode
from tests.support import ServerProcess, TestClient, running_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the module: each test uses its own user names."""
    tmp_path = tmp_path_factory.mktemp("errors")
    with running_server(tmp_path, "--max-text", "10", "--max-frame", "5000") as srv:
        yield srv


def _frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def _fatal_close(client: TestClient, code: str, **members: Any) -> dict[str, Any]:
    """The connection's last frame is this fatal error, then it closes."""
    frames = client.wait_closed()
    assert frames, "closed without an error frame"
    error = frames[-1]
    assert error["type"] == "error" and error["code"] == code, frames
    assert error["fatal"] is True
    assert isinstance(error["message"], str) and error["message"]
    for key, value in members.items():
        assert error.get(key) == value, error
    return error


BAD_PAYLOADS = [
    b"\xff\xfe{}",  # not UTF-8
    b"\xed\xa0\x80",  # an encoded surrogate
    b"\xc0\xaf",  # an overlong form
    b"\xef\xbb\xbf{\"type\":\"who\"}",  # BOM
    b"{\"type\":",  # not JSON
    b"[1,2]",  # not an object
    b"{\"type\":1}",  # no string type
    b"{\"t\":\"who\"}",  # no type at all
    b"{\"type\":\"who\",\"x\":NaN}",  # NaN is not JSON
    b"{\"type\":\"who\",\"x\":1e400}",  # outside the double range
    b"{\"type\":\"who\",\"x\":" + b"[" * 40 + b"]" * 40 + b"}",  # too deep
]


@pytest.mark.parametrize("payload", BAD_PAYLOADS)
def test_bad_frame_before_login(server: ServerProcess, payload: bytes) -> None:
    with server.client() as client:
        client.send_raw(_frame(payload))
        _fatal_close(client, "bad_frame")


def test_bad_frame_after_login_gives_leave_error(server: ServerProcess) -> None:
    with server.login("alice1") as alice, server.login("bob1") as bob:
        alice.expect("join")
        bob.send_raw(_frame(b"not json"))
        _fatal_close(bob, "bad_frame")
        assert alice.expect("leave", name="bob1")["reason"] == "error"


def test_frames_before_a_bad_frame_are_handled(server: ServerProcess) -> None:
    with server.login("alice2") as alice:
        alice.send_raw(encode({"type": "say", "text": "first"}) + _frame(b"{"))
        frames = alice.wait_closed()
        assert frames[0]["type"] == "msg" and frames[0]["text"] == "first"
        assert frames[-1]["code"] == "bad_frame"


@pytest.mark.parametrize("length", [0, 4097, 2**32 - 1])
def test_frame_too_large_before_login_from_the_header_alone(
    server: ServerProcess, length: int
) -> None:
    with server.client() as client:
        client.send_raw(struct.pack(">I", length))  # no payload follows
        _fatal_close(client, "frame_too_large")


def test_frame_limit_rises_after_welcome(server: ServerProcess) -> None:
    big_say = encode({"type": "say", "text": "x", "pad": "p" * 4500})
    assert 4096 < len(big_say) - 4 <= 5000
    with server.client() as client:
        # The hello and the big frame in one write: the second is judged by max_frame.
        client.send_raw(encode({"type": "hello", "proto": 1, "name": "big5"}) + big_say)
        client.expect("welcome")
        client.drain_until(lambda m: m.get("text") == "x")
        client.send_raw(struct.pack(">I", 5001))
        _fatal_close(client, "frame_too_large")


def test_not_logged_in(server: ServerProcess) -> None:
    with server.client() as client:
        client.send({"type": "say", "text": "hi", "id": "s"})
        _fatal_close(client, "not_logged_in", ref="s")
    with server.client() as client:
        client.send({"type": "nonsense"})
        _fatal_close(client, "not_logged_in")


@pytest.mark.parametrize(
    ("hello", "code"),
    [
        ({"name": "a"}, "bad_request"),  # proto missing
        ({"proto": 1}, "bad_request"),  # name missing
        ({"proto": "1", "name": "a"}, "bad_request"),
        ({"proto": True, "name": "a"}, "bad_request"),
        ({"proto": 1, "name": 5}, "bad_request"),
        ({"proto": 1, "name": "a", "since": -1}, "bad_request"),
        ({"proto": 1, "name": "a", "token": None}, "bad_request"),
        ({"proto": 1, "name": "a", "id": ""}, "bad_request"),
        ({"proto": 3, "name": "a"}, "unsupported_proto"),
        ({"proto": 3, "name": "bad name"}, "unsupported_proto"),  # proto first
        ({"proto": 1, "name": "bad name"}, "bad_name"),
        ({"proto": 1, "name": ""}, "bad_name"),
        ({"proto": 1, "name": "x" * 33}, "bad_name"),
        ({"proto": 1, "name": "Server"}, "bad_name"),
        ({"proto": 1, "name": "a\u200bb"}, "bad_name"),
    ],
)
def test_hello_errors_are_fatal_and_ordered(
    server: ServerProcess, hello: dict[str, Any], code: str
) -> None:
    with server.client() as client:
        client.send({"type": "hello", **hello})
        _fatal_close(client, code)


def test_hello_error_carries_ref(server: ServerProcess) -> None:
    with server.client() as client:
        client.send({"type": "hello", "proto": 9, "name": "a", "id": "h1"})
        _fatal_close(client, "unsupported_proto", ref="h1")


def test_auth_failed_comes_after_bad_name(tmp_path: Path) -> None:
    with running_server(tmp_path, "--password", "sesame") as srv:
        for hello, code in (({"name": "bad name"}, "bad_name"),
                            ({"name": "ok"}, "auth_failed"),
                            ({"name": "ok", "password": "wrong"}, "auth_failed")):
            with srv.client() as client:
                client.send({"type": "hello", "proto": 1, **hello})
                _fatal_close(client, code)
        with srv.client() as client:
            assert client.login("ok", password="sesame")["name"] == "ok"


def test_server_full_counts_sessions(tmp_path: Path) -> None:
    with running_server(tmp_path, "--max-clients", "2") as srv:
        with srv.login("a") as first, srv.login("b"):
            with srv.client() as third:
                third.send({"type": "hello", "proto": 1, "name": "a"})  # name_taken first
                _fatal_close(third, "name_taken")
            with srv.client() as third:
                third.send({"type": "hello", "proto": 1, "name": "c", "id": "f"})
                _fatal_close(third, "server_full", ref="f")
            # A takeover is not a new session: allowed when full.
            with srv.client() as again:
                again.login("a", token=first.welcome["token"])
        with srv.login("c"):
            pass


def test_non_fatal_errors_leave_the_session(server: ServerProcess) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"type": "hello", "proto": 1, "name": "again"}, "already_logged_in"),
        ({"type": "hello"}, "already_logged_in"),
        ({"type": "dance"}, "unknown_type"),
        ({"type": "say"}, "bad_request"),
        ({"type": "say", "text": 5}, "bad_request"),
        ({"type": "say", "text": None}, "bad_request"),
        ({"type": "pm", "text": "x"}, "bad_request"),
        ({"type": "say", "text": " \n\t "}, "empty_message"),
        ({"type": "say", "text": "x" * 11}, "text_too_long"),
        ({"type": "say", "text": "bell\x07"}, "bad_text"),
        ({"type": "say", "text": "\ud800"}, "bad_text"),
        ({"type": "say", "text": "\x00" + " " * 20}, "bad_text"),  # bad_text first
        ({"type": "say", "text": "   "}, "empty_message"),
        ({"type": "pm", "to": "nobody", "text": "x"}, "no_such_user"),
    ]
    with server.login("alice3", since=10**9) as alice:
        for i, (request, code) in enumerate(cases):
            alice.send({**request, "id": f"r{i}"})
            error = alice.expect("error", code=code)
            assert error["fatal"] is False
            assert error["ref"] == f"r{i}"
        # A bad id gets bad_request without a ref.
        alice.send({"type": "who", "id": 7})
        assert "ref" not in alice.expect("error", code="bad_request")
        alice.send({"type": "say", "text": "1234567890"})  # exactly max_text
        assert alice.expect("msg")["text"] == "1234567890"


def test_raw_lone_surrogate_escape_is_bad_text(server: ServerProcess) -> None:
    with server.login("alice4", since=10**9) as alice:
        alice.send_raw(_frame(b'{"type":"say","text":"a\\udc00b","id":"s"}'))
        alice.expect("error", code="bad_text", ref="s", fatal=False)


def test_rate_limit(tmp_path: Path) -> None:
    with running_server(tmp_path, "--rate", "0.5", "--burst", "3") as srv, \
            srv.login("alice") as alice:
        for i in range(6):
            alice.send({"type": "say", "text": f"m{i}", "id": f"s{i}"})
        alice.send({"type": "pong", "t": 0})  # takes no token
        frames = [alice.recv() for _ in range(6)]
        assert [f["type"] for f in frames] == ["msg"] * 3 + ["error"] * 3
        for i, error in enumerate(frames[3:], start=3):
            assert error["code"] == "rate_limited" and error["fatal"] is False
            assert error["ref"] == f"s{i}"
            assert error["retry_after_ms"] > 0
        alice.send({"type": "bye"})  # takes no token either
        assert alice.wait_closed()[-1] == {"type": "bye", "reason": "quit"}


def test_rate_zero_is_off(tmp_path: Path) -> None:
    with running_server(tmp_path, "--rate", "0", "--burst", "1") as srv, \
            srv.login("alice") as alice:
        for i in range(300):
            alice.send({"type": "say", "text": f"m{i}"})
        msgs = alice.drain_until(lambda m: m.get("seq") == 300, timeout=10)
        assert all(m["type"] == "msg" for m in msgs)
