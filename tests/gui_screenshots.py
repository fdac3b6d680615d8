"""The README's pictures of ``chatgui``, made again from scratch.

    .venv/bin/python -m tests.gui_screenshots docs/

starts Xvfb, a ``chatd`` with three accounts, fills a few rooms through plain
protocol clients, opens alice's window and drives it with xdotool (as the GUI
tests do), and writes:

- ``screenshot-rooms.png``: rooms with unread counts, a mention and a dm waiting;
- ``screenshot-scripts.png``: a room with Persian, Chinese and emoji lines;
- ``screenshot-search.png``: search results over the room in front;
- ``screenshot-login.png``: the login window, a new account with a join code.

Each picture is taken when the window's state shows what it is about and the
screen has stopped changing. The times in the pictures are the time of the run.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.gui_tools import settled_screenshot, xvfb
from tests.support import TestClient, running_server
from tests.test_gui_xvfb import Gui
from tests.v2_support import PASSWORD, call, login2, say

SCRIPTS = [
    ("carol", "صبح بخیر! جلسه ساعت ده است."),  # good morning! the meeting is at ten.
    ("bob", "早上好，今天下午发布 2.4 版本 🎉"),  # noqa: RUF001 (a Chinese comma)
    ("carol", "عالیه 👍 یادداشت‌های انتشار آماده است"),  # great, the release notes are ready
    ("bob", "emoji check: ☕ 🚀 ✅ ❤️"),
]


def window_box(gui: Gui, wid: int) -> tuple[int, int, int, int]:
    shell = dict(line.split("=", 1) for line in
                 gui.xdotool("getwindowgeometry", "--shell", str(wid)).splitlines())
    return int(shell["X"]), int(shell["Y"]), int(shell["WIDTH"]), int(shell["HEIGHT"])


def room(state: dict[str, Any], name: str) -> dict[str, Any]:
    return next((r for r in state.get("rooms", []) if r["name"] == name), {})


def click_room(gui: Gui, wid: int, name: str) -> None:
    box = gui.wait(f"{name} listed", lambda s: name in s.get("room_rows", {}))["room_rows"][name]
    gui.click(wid, box)
    gui.wait(f"{name} in front", lambda s: s["front"] == name)


def take(gui: Gui, wid: int, path: Path) -> None:
    gui.xdotool("windowraise", str(wid))
    path.write_bytes(settled_screenshot(gui.display, window_box(gui, wid)))
    print(f"wrote {path}")


def fill(server: Any) -> tuple[TestClient, TestClient]:
    """Rooms and a morning's talk, before alice opens her window."""
    for name in ("alice", "bob", "carol"):
        assert server.request({"type": "account_add", "name": name,
                               "password": PASSWORD})["type"] == "ok"
    alice = login2(server, "alice", password=PASSWORD)
    for name in ("dev", "design", "releases"):
        call(alice, {"type": "join", "room": name})
    call(alice, {"type": "topic", "room": "dev", "topic": "build, CI and releases"})
    alice.send({"type": "bye"})
    alice.close()
    bob = login2(server, "bob", password=PASSWORD)
    carol = login2(server, "carol", password=PASSWORD)
    for client in (bob, carol):
        for name in ("dev", "design"):
            call(client, {"type": "join", "room": name})
    say(bob, "dev", "the nightly build failed on the arm runner")
    say(bob, "dev", "looks like a flaky network test, re-running")
    say(carol, "dev", "CI is green again 👍")
    say(bob, "dev", "great, I will tag 2.4 after lunch")
    for sender, text in SCRIPTS:
        say(bob if sender == "bob" else carol, "lobby", text)
    return bob, carol


def main_window(display: str, tmp: Path, out: Path) -> None:
    with running_server(tmp) as server:
        bob, carol = fill(server)
        gui = Gui(display, tmp, "alice", "--name", "alice", "--account", "--password",
                  PASSWORD, "--port", str(server.port))
        try:
            gui.wait("alice connected", lambda s: s.get("status") == "connected")
            wid = gui.window("^alice @ ")
            click_room(gui, wid, "dev")
            gui.wait("dev read", lambda s: room(s, "dev").get("unread") == 0
                     and "great, I will tag 2.4 after lunch" in s["lines"])
            say(carol, "lobby", "@alice can you look at the release notes?")
            say(carol, "design", "new logo drafts are up")
            say(bob, "design", "the blue one gets my vote")
            call(bob, {"type": "dm", "to": "alice"})
            say(bob, "@alice@bob", "lunch at noon? 🍜")
            gui.wait("badges", lambda s: room(s, "@alice@bob").get("alerts") == 1
                     and room(s, "design").get("unread") == 2
                     and room(s, "lobby").get("alerts") == 1)
            take(gui, wid, out / "screenshot-rooms.png")

            click_room(gui, wid, "lobby")
            gui.wait("the scripts", lambda s: SCRIPTS[-1][1] in s["lines"])
            take(gui, wid, out / "screenshot-scripts.png")

            gui.click(wid, gui.state()["boxes"]["search"])
            gui.xdotool("type", "--delay", "5", "2.4")
            gui.xdotool("key", "Return")
            gui.wait("results", lambda s: len(s["results"]) >= 2)
            take(gui, wid, out / "screenshot-search.png")
        finally:
            gui.stop()
        login_window(display, tmp, server.port, out)


def login_window(display: str, tmp: Path, port: int, out: Path) -> None:
    (tmp / "dana.settings.json").write_text(
        f'{{"name": "dana", "host": "127.0.0.1", "port": {port}, "mode": "account"}}',
        encoding="utf-8")
    gui = Gui(display, tmp, "dana")
    try:
        wid = gui.window("log in$")
        gui.wait("the form", lambda s: s.get("window") == "login")
        gui.xdotool("windowraise", str(wid))
        gui.xdotool("windowfocus", "--sync", str(wid))
        # Tab from the name field to the "New account" radio button, then on to the
        # password and the join code (the state file holds neither: the screen shows them).
        gui.xdotool("key", "Tab", "Tab", "Tab", "Tab", "Tab", "space")
        gui.wait("new account chosen", lambda s: s.get("register"))
        gui.xdotool("key", "Tab")
        gui.xdotool("type", "--delay", "5", "correct horse")
        gui.xdotool("key", "Tab")
        gui.xdotool("type", "--delay", "5", "team-2026")
        take(gui, wid, out / "screenshot-login.png")
    finally:
        gui.stop()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(argv[0])
    with xvfb() as display, tempfile.TemporaryDirectory() as tmp:
        main_window(display, Path(tmp), out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
