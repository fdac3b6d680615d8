"""``chatgui`` version 2 for real, continued: typing, notifications, registering
from the login window, private rooms (invite, join, leave). Windows on Xvfb
driven with xdotool, a real ``chatd``, checks through each window's state.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import time
from collections.abc import Iterator

from tests.support import running_server
from tests.test_gui_rooms import accounts, click_room, composer, room, type_into, window
from tests.test_gui_xvfb import WAIT, Gui, connected, display
from tests.v2_support import PASSWORD, call, login2, say

__all__ = ["display"]  # the fixture, shared with test_gui_xvfb


@contextlib.contextmanager
def session_bus() -> Iterator[str]:
    """A D-Bus session bus with no notification service on it; yields its address."""
    read_end, write_end = os.pipe()
    proc = subprocess.Popen(["dbus-daemon", "--session", "--nofork", "--nopidfile",
                             f"--print-address={write_end}"], pass_fds=[write_end],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_end)
    try:
        address = b""
        deadline = time.monotonic() + WAIT
        while not address.endswith(b"\n"):
            ready, _, _ = select.select([read_end], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, "dbus-daemon did not start in time"
            chunk = os.read(read_end, 256)
            assert chunk, f"dbus-daemon exited with {proc.wait(WAIT)}"
            address += chunk
        yield address.decode().strip()
    finally:
        os.close(read_end)
        proc.terminate()
        proc.wait(WAIT)


def test_a_dm_without_a_notification_service_shows_in_the_window(display, tmp_path):
    with running_server(tmp_path) as server, session_bus() as bus:
        accounts(server, "alice", "bob")
        with window(display, tmp_path, "alice", server.port,
                    env={"DBUS_SESSION_BUS_ADDRESS": bus}) as a:
            bob = login2(server, "bob", password=PASSWORD)
            dm = call(bob, {"type": "dm", "to": "alice"})["room"]
            say(bob, dm, "are you free at three?")
            # The window asks the desktop first (gdbus on a bus with no notification
            # service), the call fails, and the window's own banner shows it instead.
            state = a.wait("the banner", lambda s: "are you free at three?" in s["banner"])
            assert state["alerts"][-1] == {"room": dm, "title": "bob (direct message)",
                                           "body": "are you free at three?", "desktop": True}
            assert state["front"] == "lobby"
            a.click(a.wid, state["boxes"]["banner"])
            a.wait("the dm in front", lambda s: s["front"] == dm
                   and "are you free at three?" in s["lines"])
            click_room(a, "lobby")  # a dm in front of a focused window raises no alert
            say(bob, dm, "ping again")  # the desktop is not asked again: banner at once
            state = a.wait("second alert", lambda s: len(s["alerts"]) == 2)
            assert state["alerts"][-1]["desktop"] is False


def test_private_room_invite_join_typing_and_leave(display, tmp_path):
    with running_server(tmp_path) as server:
        accounts(server, "alice", "bob")
        port = server.port
        with window(display, tmp_path, "alice", port) as a, \
                window(display, tmp_path, "bob", port) as b:
            a.click(a.wid, a.state()["boxes"]["newroom"])
            a.xdotool("type", "--delay", "5", "ops")
            a.click(a.wid, a.state()["boxes"]["private"])
            state = a.wait("ops in front", lambda s: s["front"] == "ops")
            assert room(state, "ops")["kind"] == "private" and state["members"] == ["alice"]
            assert "ops" not in [r["name"] for r in b.state()["rooms"]]

            type_into(a, "invitee", "bob")
            state = b.wait("the invitation", lambda s: s["alerts"]
                           and s["alerts"][-1]["title"] == "alice invited you")
            assert any(line.endswith("alice invited you to ops: /join ops")
                       for line in state["lines"])
            composer(b, "/join ops")
            b.wait("bob in ops", lambda s: s["front"] == "ops")
            a.wait("bob a member", lambda s: s["members"] == ["alice", "bob"])

            composer(b, "draft", key="space")  # typed, not sent
            a.wait("bob typing", lambda s: s["typing"] == "bob is typing…")
            b.xdotool("key", "Return")
            a.wait("the message ends it", lambda s: "draft" in s["lines"] and not s["typing"])

            b.click(b.wid, b.state()["boxes"]["leave"])
            state = b.wait("ops gone", lambda s: "ops" not in [r["name"] for r in s["rooms"]])
            assert state["front"] == "lobby"
            a.wait("bob left ops", lambda s: s["members"] == ["alice"])
            click_room(a, "lobby")  # alice still has both rooms
            assert {r["name"] for r in a.state()["rooms"]} == {"lobby", "ops"}


def test_register_with_a_join_code_from_the_login_window(display, tmp_path):
    with running_server(tmp_path, "--registration", "code", "--join-code", "team-2026") \
            as server:
        (tmp_path / "dana.settings.json").write_text(
            f'{{"name": "dana", "host": "127.0.0.1", "port": {server.port}, '
            '"mode": "account"}', encoding="utf-8")
        gui = Gui(display, tmp_path, "dana")
        try:
            wid = gui.window("log in$")
            gui.wait("the form", lambda s: s.get("window") == "login" and s["name"] == "dana")
            gui.type_text(wid, "")  # raise and focus: the name field has the focus
            # Tab past host, port and the TLS box to the "New account" button,
            # choose it, then to password and code.
            gui.xdotool("key", "Tab", "Tab", "Tab", "Tab", "Tab", "Tab", "space")
            gui.wait("new account", lambda s: s["register"] and not s["account"])
            gui.xdotool("key", "Tab")
            gui.xdotool("type", "--delay", "5", "correct horse")
            gui.xdotool("key", "Tab")
            gui.xdotool("type", "--delay", "5", "team-2025")
            gui.xdotool("key", "Return")
            gui.wait("refused", lambda s: s.get("window") == "login" and s["error"]
                     and not s["error"].startswith("Connecting"))
            assert server.request({"type": "accounts"})["accounts"] == []
            gui.xdotool("key", "BackSpace")  # the code field still has the focus
            gui.xdotool("type", "6")  # team-2026
            gui.xdotool("key", "Return")
            gui.wait("the main window", lambda s: connected(s) and s["name"] == "dana")
            assert server.request({"type": "accounts"})["accounts"] == ["dana"]
        finally:
            gui.stop()
