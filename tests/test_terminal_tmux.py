"""``chat`` on a terminal, used as a person would: keys in, the screen read back.

Each test runs the client in its own tmux server (a private socket, a fixed
80x20 window), types with ``send-keys`` and reads what a person would see with
``capture-pane``, against a real ``chatd``. Waits are for something to appear
on the screen or on the wire, with a deadline; the screen is read again every
few hundredths of a second until then.

tmux is a Debian package that ``.ci/run`` installs when it is missing.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import ServerProcess, TestClient, running_server

DEADLINE = 10.0
READ_AGAIN = 0.05  # between two reads of the screen while waiting for it to change
WIDTH, HEIGHT = 80, 20
PASSWORD = "correct horse battery"
EXITED = "chat exited with status"

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None,
                                reason="tmux is not installed (.ci/run installs it)")


class Pane:
    """One ``chat`` in a tmux window of its own."""

    def __init__(self, tmp_path: Path, server: ServerProcess, *args: str) -> None:
        self.socket = tmp_path / "tmux.sock"
        config = tmp_path / "tmux.conf"
        config.write_text("set -g remain-on-exit on\nset -g status off\n")  # exit status stays
        command = shlex.join([sys.executable, "-m", "chatterm", "--host", server.host,
                              "--port", str(server.port), *args])
        # The shell prints the exit status where a person would see it (tmux's own
        # pane_dead_status can lag behind the pane's end).
        self.tmux("-f", str(config), "new-session", "-d", "-x", str(WIDTH), "-y", str(HEIGHT),
                  "env", "TERM=xterm-256color", "sh", "-c", f'{command}; echo "{EXITED} $?"')

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-S", str(self.socket), *args], check=True,
                              capture_output=True, text=True, timeout=DEADLINE).stdout

    def type(self, text: str) -> None:
        """Characters as typed (no key names)."""
        self.tmux("send-keys", "-l", text)

    def keys(self, *names: str) -> None:
        """Named keys: ``Enter``, ``C-n``, ``M-1`` ..."""
        self.tmux("send-keys", *names)

    def screen(self, scrolled: int = 0) -> list[str]:
        """The rows on screen, after the last ``scrolled`` rows that scrolled off it."""
        return self.tmux("capture-pane", "-p", "-S", str(-scrolled)).splitlines()

    def wait(self, check: Callable[[list[str]], bool], what: str,
             scrolled: int = 0) -> list[str]:
        deadline = time.monotonic() + DEADLINE
        while True:
            rows = self.screen(scrolled)
            if check(rows):
                return rows
            if time.monotonic() > deadline:
                raise AssertionError(f"not on screen in time: {what}\n" + "\n".join(rows))
            time.sleep(READ_AGAIN)

    def wait_text(self, text: str) -> list[str]:
        return self.wait(lambda rows: any(text in row for row in rows), repr(text))

    def status_line(self, rows: list[str]) -> str:
        return rows[HEIGHT - 2]

    def input_line(self, rows: list[str]) -> str:
        return rows[HEIGHT - 1] if len(rows) >= HEIGHT else ""

    def wait_exit(self) -> int:
        # tmux's "Pane is dead" line below it can scroll it off the screen
        rows = self.wait(lambda rows: any(row.startswith(EXITED) for row in rows), "the exit",
                         scrolled=HEIGHT)
        return int(next(row for row in rows if row.startswith(EXITED)).split()[-1])

    def close(self) -> None:
        subprocess.run(["tmux", "-S", str(self.socket), "kill-server"], check=False,
                       capture_output=True, timeout=DEADLINE)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    with running_server(tmp_path, "--registration", "open") as srv:
        yield srv


@pytest.fixture
def open_pane(tmp_path: Path, server: ServerProcess) -> Iterator[Callable[..., Pane]]:
    panes: list[Pane] = []

    def start(*args: str) -> Pane:
        pane = Pane(tmp_path, server, *args)
        panes.append(pane)
        return pane

    yield start
    for pane in panes:
        pane.close()


def v2(server: ServerProcess, name: str, **hello: Any) -> TestClient:
    return server.login(name, proto=2, **hello)


def said(client: TestClient, text: str) -> dict[str, Any]:
    """The ``msg`` with ``text`` that ``client`` receives."""
    return client.drain_until(lambda m: m["type"] == "msg" and m.get("text") == text)[-1]


def test_a_line_being_typed_is_not_broken_by_arriving_messages(server, open_pane):
    pane = open_pane("--name", "alice")
    pane.wait_text("logged in as alice")
    with v2(server, "bob") as bob:
        pane.type("half a thought")
        for text in ("one", "two", "three"):
            bob.send({"type": "say", "room": "lobby", "text": text})
        rows = pane.wait_text("[lobby] <bob> three")
        assert pane.input_line(rows) == "[lobby] half a thought"
        assert [r[6:] for r in rows if "<bob>" in r] == [
            "[lobby] <bob> one", "[lobby] <bob> two", "[lobby] <bob> three"]
        pane.keys("Enter")
        assert said(bob, "half a thought")["from"] == "alice"
        rows = pane.wait_text("[lobby] <alice> half a thought")
        assert pane.input_line(rows) == "[lobby]"


def test_rooms_switch_with_keys_and_unread_counts_show_in_the_status_line(server, open_pane):
    pane = open_pane("--name", "alice")
    pane.wait_text("logged in as alice")
    pane.type("/join ops")
    pane.keys("Enter")
    rows = pane.wait_text("you are in ops")
    assert "1:lobby 2:ops" in pane.status_line(rows)
    assert pane.input_line(rows) == "[ops]"
    with v2(server, "bob") as bob:
        bob.send({"type": "say", "room": "lobby", "text": "psst"})
        bob.send({"type": "say", "room": "lobby", "text": "over here"})
        rows = pane.wait(lambda rows: "1:lobby(2)" in pane.status_line(rows), "lobby(2)")
        assert not any("over here" in row for row in rows)  # another room's log
        pane.keys("C-p")  # previous room
        rows = pane.wait_text("[lobby] <bob> over here")
        assert "1:lobby 2:ops" in pane.status_line(rows)  # read now
        assert pane.input_line(rows) == "[lobby]"
        pane.keys("M-2")  # Alt+2: the second room
        rows = pane.wait(lambda rows: pane.input_line(rows) == "[ops]", "back in ops")
        assert not any("over here" in row for row in rows)


def test_help_speaks_of_keys_a_terminal_has(open_pane):
    pane = open_pane("--name", "alice")
    pane.wait_text("logged in as alice")
    pane.type("/help")
    pane.keys("Enter")
    rows = pane.wait_text("Ctrl+N")
    text = "\n".join(rows).lower()
    assert "/join [-private] room" in text and "/dm name" in text
    assert max(len(row.rstrip()) for row in rows) <= WIDTH  # nothing wraps
    assert "click" not in text and "shift+enter" not in text


def test_an_account_password_is_asked_without_echo(server, open_pane):
    assert server.request({"type": "account_add", "name": "alice",
                           "password": PASSWORD})["type"] == "ok"
    pane = open_pane("--name", "alice", "--account")
    pane.wait_text("password for alice:")
    pane.type(PASSWORD)
    pane.keys("Enter")
    rows = pane.wait_text("logged in as alice (account)")
    assert not any("horse" in row for row in rows)


def test_register_asks_twice_then_logs_in_to_the_new_account(server, open_pane):
    pane = open_pane("--name", "dora", "--register")
    pane.wait_text("password for dora:")
    pane.type(PASSWORD)
    pane.keys("Enter")
    pane.wait_text("the same again:")
    pane.type(PASSWORD)
    pane.keys("Enter")
    pane.wait_text("logged in as dora (account)")
    reply = server.request({"type": "accounts"})
    assert reply["accounts"] == ["dora"]


def test_edit_redraws_my_line_and_delete_leaves_a_tombstone(server, open_pane):
    pane = open_pane("--name", "alice")
    pane.wait_text("logged in as alice")
    with v2(server, "bob") as bob:
        pane.type("teh cat")
        pane.keys("Enter")
        seq = said(bob, "teh cat")["seq"]
        pane.type("/edit the cat")
        pane.keys("Enter")
        edited = bob.drain_until(lambda m: m["type"] == "edited")[-1]
        assert (edited["seq"], edited["text"]) == (seq, "the cat")
        rows = pane.wait_text("[lobby] <alice> the cat (edited)")
        assert not any("teh cat" in row for row in rows)
        pane.type("/delete")
        pane.keys("Enter")
        assert bob.drain_until(lambda m: m["type"] == "deleted")[-1]["seq"] == seq
        pane.wait_text("[lobby] <alice> (deleted)")


def test_dm_opens_a_conversation_that_typed_lines_go_to(server, open_pane):
    for name in ("alice", "bob"):
        server.request({"type": "account_add", "name": name, "password": PASSWORD})
    pane = open_pane("--name", "alice", "--account")
    pane.wait_text("password for alice:")
    pane.type(PASSWORD)
    pane.keys("Enter")
    pane.wait_text("logged in as alice")
    with v2(server, "bob", password=PASSWORD) as bob:
        pane.type("/dm bob")
        pane.keys("Enter")
        rows = pane.wait(lambda rows: pane.input_line(rows) == "[@bob]", "in @bob")
        assert "@bob" in pane.status_line(rows)
        pane.type("just us")
        pane.keys("Enter")
        assert said(bob, "just us")["room"] == "@alice@bob"


def test_ctrl_d_on_an_empty_line_quits_and_says_bye(server, open_pane):
    with v2(server, "bob") as bob:
        pane = open_pane("--name", "alice")
        pane.wait_text("logged in as alice")
        pane.type("x")
        pane.keys("C-d")  # not empty: deletes nothing, quits nothing
        pane.keys("BSpace", "C-d")
        assert pane.wait_exit() == 0
        gone = bob.drain_until(lambda m: m["type"] == "presence" and not m["online"])[-1]
        assert (gone["name"], gone["reason"]) == ("alice", "quit")


def test_page_up_shows_earlier_lines_and_page_down_comes_back(server, open_pane):
    pane = open_pane("--name", "alice")
    pane.wait_text("logged in as alice")
    with v2(server, "bob") as bob:
        for number in range(1, 41):
            bob.send({"type": "say", "room": "lobby", "text": f"line {number:02}"})
        rows = pane.wait_text("<bob> line 40")
        assert not any("line 01" in row for row in rows)
        pane.keys("PageUp", "PageUp")
        rows = pane.wait_text("<bob> line 01")
        assert "more below" in pane.status_line(rows)
        assert not any("line 40" in row for row in rows)
        pane.keys("PageDown", "PageDown")
        rows = pane.wait_text("<bob> line 40")
        assert "more below" not in pane.status_line(rows)


def test_who_is_typing_shows_in_the_status_line(server, open_pane):
    pane = open_pane("--name", "alice")
    pane.wait_text("logged in as alice")
    with v2(server, "bob") as bob:
        bob.send({"type": "typing", "room": "lobby"})
        rows = pane.wait(lambda rows: "bob typing" in pane.status_line(rows), "bob typing")
        assert pane.input_line(rows) == "[lobby]"


def test_a_wrong_password_is_shown_and_quitting_exits_1(server, open_pane):
    server.request({"type": "account_add", "name": "alice", "password": PASSWORD})
    pane = open_pane("--name", "alice", "--account")
    pane.wait_text("password for alice:")
    pane.type("not it at all")
    pane.keys("Enter")
    pane.wait_text("auth_failed")
    pane.keys("C-d")
    assert pane.wait_exit() == 1
    assert any(row.startswith("chat: auth_failed") for row in pane.screen(HEIGHT))
