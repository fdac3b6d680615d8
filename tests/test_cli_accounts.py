"""The account, room and announce commands against a scripted control socket.

A small fake server (a thread in the test process) records each request and
answers it from a script, so these tests pin down exactly what the commands
send (contract §18) and print, whatever state the real server is in. The
password input rules are tested here too: never argv; no echo on a tty; the
first line of stdin otherwise.
"""

from __future__ import annotations

import getpass
import io
import json
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatd.cli import main
from chatd.password_prompt import PasswordInputError, read_password
from protocol import Decoder, Message, encode
from protocol.limits import CLIENT_MAX_FRAME

STOP_TIMEOUT = 10.0


class FakeControl:
    """A control socket that records every request and answers it by its type.

    A request is recorded before its answer is sent, so once a command has
    its reply the request is in :attr:`requests`.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.answers: dict[str, Message] = {}
        self.requests: list[Message] = []
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(path))
        self._listener.listen()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:  # shut down by close()
                return
            with conn:
                conn.settimeout(STOP_TIMEOUT)
                self._answer(conn)

    def _answer(self, conn: socket.socket) -> None:
        decoder = Decoder(CLIENT_MAX_FRAME)
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            for request in decoder.feed(data):
                self.requests.append(request)
                answer = self.answers.get(str(request.get("type")), {"type": "ok"})
                conn.sendall(encode({**answer, "ref": request.get("id")}))

    def sent(self) -> list[Message]:
        """The requests received, without their (client-chosen) ids."""
        return [{k: v for k, v in r.items() if k != "id"} for r in self.requests]

    def close(self) -> None:
        self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self._listener.close()
        self._thread.join(STOP_TIMEOUT)
        assert not self._thread.is_alive()


class FakeTty(io.StringIO):
    """A stdin that says it is a terminal; empty, so reading it finds no password."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def control(tmp_path: Path) -> Iterator[FakeControl]:
    fake = FakeControl(tmp_path / "control.sock")
    try:
        yield fake
    finally:
        fake.close()


def run(control: FakeControl, *argv: str) -> int:
    return main([*argv, "--control", str(control.path)])


def piped(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(text))


def on_tty(monkeypatch: pytest.MonkeyPatch, *typed: str) -> list[str]:
    """A terminal on which the person types ``typed``; returns the prompts shown."""
    prompts: list[str] = []
    answers = iter(typed)

    def fake_getpass(prompt: str = "Password: ", stream: object = None) -> str:
        prompts.append(prompt)
        try:
            return next(answers)
        except StopIteration:
            raise EOFError from None

    monkeypatch.setattr("sys.stdin", FakeTty())
    monkeypatch.setattr(getpass, "getpass", fake_getpass)
    return prompts


def one_line(text: str) -> str:
    assert text.endswith("\n") and text.count("\n") == 1 and "Traceback" not in text, text
    return text


# -- password input ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "password"),
    [("s3cret pw\n", "s3cret pw"), ("s3cret pw\r\nsecond line\n", "s3cret pw"),
     ("  spaced  ", "  spaced  "), ("\n", ""), ("pässwörd", "pässwörd")],
)
def test_a_piped_password_is_the_first_line_without_its_ending(text: str, password: str) -> None:
    assert read_password(io.StringIO(text), "password: ") == password


def test_a_piped_password_needs_a_line() -> None:
    with pytest.raises(PasswordInputError, match="stdin is empty"):
        read_password(io.StringIO(""), "password: ")
    closed = io.StringIO("x\n")
    closed.close()
    with pytest.raises(PasswordInputError, match="stdin is closed"):
        read_password(closed, "password: ")
    with pytest.raises(PasswordInputError, match="stdin is closed"):
        read_password(None, "password: ")


def test_stdin_that_is_not_text_is_one_line_error() -> None:
    raw = io.TextIOWrapper(io.BytesIO(b"\xff\xfe\n"), encoding="utf-8")
    with pytest.raises(PasswordInputError, match="not text in utf-8"):
        read_password(raw, "password: ")


def test_a_tty_asks_twice_without_echo(monkeypatch: pytest.MonkeyPatch) -> None:
    prompts = on_tty(monkeypatch, "correct horse", "correct horse")
    assert read_password(sys.stdin, "password for bob: ") == "correct horse"
    assert prompts == ["password for bob: ", "repeat the password: "]


@pytest.mark.parametrize(("typed", "fragment"), [
    (("one password", "another one"), "the two passwords differ"),
    (("only once",), "no password given"),  # Ctrl-D at the second prompt
    ((), "no password given"),
])
def test_a_tty_refuses_differing_or_missing_passwords(
    monkeypatch: pytest.MonkeyPatch, typed: tuple[str, ...], fragment: str
) -> None:
    on_tty(monkeypatch, *typed)
    with pytest.raises(PasswordInputError, match=fragment):
        read_password(sys.stdin, "password: ")


# -- accounts ----------------------------------------------------------------------


def test_account_add_sends_the_piped_password(
    control: FakeControl, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    piped(monkeypatch, "horse battery\n")
    assert run(control, "account", "add", "Bob") == 0
    out = capsys.readouterr().out
    assert out == "account Bob added\n"
    assert control.sent() == [{"type": "account_add", "name": "Bob",
                               "password": "horse battery"}]
    assert control.requests[0]["id"]  # so that the reply can be matched by ref


def test_account_add_on_a_tty(
    control: FakeControl, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = on_tty(monkeypatch, "tty secret", "tty secret")
    assert run(control, "account", "add", "carol") == 0
    assert prompts == ["password for carol: ", "repeat the password: "]
    assert control.sent() == [{"type": "account_add", "name": "carol",
                               "password": "tty secret"}]
    assert "tty secret" not in capsys.readouterr().out


def test_differing_passwords_send_nothing_and_exit_2(
    control: FakeControl, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    on_tty(monkeypatch, "first try", "second try")
    assert run(control, "account", "passwd", "carol") == 2
    err = one_line(capsys.readouterr().err)
    assert err.startswith("chatd account passwd: the two passwords differ")
    assert control.requests == []


def test_no_password_on_stdin_exits_2(
    control: FakeControl, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    piped(monkeypatch, "")
    assert run(control, "account", "add", "bob") == 2
    assert "stdin is empty" in one_line(capsys.readouterr().err)
    assert control.requests == []


def test_account_passwd_and_remove(
    control: FakeControl, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    piped(monkeypatch, "new password\n")
    assert run(control, "account", "passwd", "bob") == 0
    assert run(control, "account", "remove", "BOB") == 0
    assert capsys.readouterr().out == "password of bob changed\naccount BOB removed\n"
    assert control.sent() == [
        {"type": "account_password", "name": "bob", "password": "new password"},
        {"type": "account_remove", "name": "BOB"},
    ]


@pytest.mark.parametrize(
    "case",
    [(["account", "add", "bob"], "account_add", "account_exists"),
     (["account", "passwd", "bob"], "account_password", "weak_password"),
     (["account", "remove", "nobody"], "account_remove", "no_such_user"),
     (["room", "add", "lobby"], "room_add", "not_allowed"),
     (["room", "remove", "gone"], "room_remove", "no_such_room"),
     (["announce", "--room", "@x", "hi"], "announce", "bad_room")],
)
def test_a_refusal_is_one_line_and_exit_1(
    control: FakeControl, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    case: tuple[list[str], str, str],
) -> None:
    argv, request_type, code = case
    piped(monkeypatch, "short\n")
    control.answers[request_type] = {"type": "error", "code": code, "message": "refused here"}
    assert run(control, *argv) == 1
    command = " ".join(argv[:1] if argv[0] == "announce" else argv[:2])
    assert one_line(capsys.readouterr().err) == f"chatd {command}: {code}: refused here\n"


def test_account_list(
    control: FakeControl, capsys: pytest.CaptureFixture[str]
) -> None:
    control.answers["accounts"] = {"type": "accounts", "accounts": ["alice", "Bob"]}
    assert run(control, "account", "list") == 0
    assert capsys.readouterr().out == "accounts: 2\n  alice\n  Bob\n"
    assert control.sent() == [{"type": "accounts"}]


# -- rooms and announcements -------------------------------------------------------


def test_room_add_public_and_private(
    control: FakeControl, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(control, "room", "add", "Dev") == 0
    assert run(control, "room", "add", "staff", "--private") == 0
    assert capsys.readouterr().out == "room Dev added\nroom staff added (private)\n"
    assert control.sent() == [{"type": "room_add", "room": "Dev"},
                              {"type": "room_add", "room": "staff", "private": True}]


def test_room_remove_and_list(
    control: FakeControl, capsys: pytest.CaptureFixture[str]
) -> None:
    control.answers["rooms"] = {"type": "rooms", "rooms": [
        {"room": "lobby", "kind": "public", "topic": "hi", "members": 4, "member": False,
         "invited": False}]}
    assert run(control, "room", "remove", "dev") == 0
    assert run(control, "room", "list") == 0
    assert capsys.readouterr().out.splitlines() == [
        "room dev removed", "ROOM   KIND    MEMBERS  TOPIC", "lobby  public        4  hi",
        "rooms: 1"]
    assert control.sent() == [{"type": "room_remove", "room": "dev"}, {"type": "rooms"}]


def test_announce_to_a_room_or_to_lobby(
    control: FakeControl, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(control, "announce", "--room", "dev", "build", "is", "green") == 0
    assert run(control, "announce", "hello") == 0
    assert capsys.readouterr().out == "announced in dev\nannounced\n"
    assert control.sent() == [{"type": "announce", "text": "build is green", "room": "dev"},
                              {"type": "announce", "text": "hello"}]


def test_status_shows_rooms_accounts_and_fingerprint(
    control: FakeControl, capsys: pytest.CaptureFixture[str]
) -> None:
    status = {"type": "status", "server": "chatd/2", "uptime_s": 5, "clients": 0,
              "users": [], "seq": 0, "msgs_in": 0, "frames_out": 0, "bytes_in": 0,
              "bytes_out": 0, "rooms": 3, "accounts": 2, "tls_fingerprint": "0f" * 32}
    control.answers["status"] = status
    assert run(control, "status") == 0
    lines = capsys.readouterr().out.splitlines()
    assert "rooms            3" in lines and "accounts         2" in lines
    assert f"TLS fingerprint  {'0f' * 32}" in lines
    assert run(control, "status", "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["rooms"], shown["accounts"], shown["tls_fingerprint"]) == (3, 2, "0f" * 32)
