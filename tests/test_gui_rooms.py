"""``chatgui`` version 2 for real: two and three windows on Xvfb, driven with
xdotool like a user would, against a real ``chatd``; checked through each
window's own state (``--state-file``) and through plain protocol clients.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.support import running_server
from tests.test_gui_xvfb import WAIT, Gui, connected, display
from tests.v2_support import PASSWORD, call, login2, say

__all__ = ["display"]  # the fixture, shared with test_gui_xvfb


class Window(Gui):
    wid = 0  # the X window, once it is up


@contextlib.contextmanager
def window(display: str, tmp: Path, name: str, port: int, *args: str,
           env: dict[str, str] | None = None) -> Iterator[Window]:
    gui = Window(display, tmp, name, "--name", name, "--account", "--password", PASSWORD,
                 "--port", str(port), *args, env=env)
    try:
        gui.wait(f"{name} connected", connected)
        gui.wid = gui.window(f"^{name} @ ")
        yield gui
    finally:
        gui.stop()


def room(state: dict[str, Any], name: str) -> dict[str, Any]:
    return next((r for r in state.get("rooms", []) if r["name"] == name), {})


def click_room(gui: Window, name: str) -> None:
    key = name.casefold()
    box = gui.wait(f"{name} listed", lambda s: key in s.get("room_rows", {}))["room_rows"][key]
    gui.click(gui.wid, box)
    gui.wait(f"{name} in front", lambda s: s["front"] == name)


def composer(gui: Window, text: str, key: str = "Return") -> None:
    """Type into the composer (clicked first: the keyboard focus may be elsewhere)."""
    box = gui.wait("the composer", lambda s: "input" in s.get("boxes", {}))["boxes"]["input"]
    gui.click(gui.wid, box)
    gui.type_line(gui.wid, text, key)


def type_into(gui: Window, field: str, text: str) -> None:
    """Click a field of the window (from its state's boxes) and type a line into it."""
    gui.click(gui.wid, gui.state()["boxes"][field])
    gui.xdotool("type", "--delay", "5", text)
    gui.xdotool("key", "Return")


def accounts(server: Any, *names: str) -> None:
    for name in names:
        reply = server.request({"type": "account_add", "name": name, "password": PASSWORD})
        assert reply["type"] == "ok", reply


def test_three_windows_rooms_unread_mentions_edit_delete(display, tmp_path):
    with running_server(tmp_path) as server:
        accounts(server, "alice", "bob", "carol")
        port = server.port
        with window(display, tmp_path, "alice", port) as a, \
                window(display, tmp_path, "bob", port) as b, \
                window(display, tmp_path, "carol", port) as c:
            type_into(a, "newroom", "dev")  # the field under the room list
            a.wait("alice in dev", lambda s: s["front"] == "dev")
            composer(b, "/join dev")
            composer(c, "/join dev")
            for gui in (b, c):
                gui.wait("in dev", lambda s: s["front"] == "dev")
            a.wait("three members", lambda s: len(s["members"]) == 3)
            click_room(a, "lobby")

            composer(b, "hello dev")
            a.wait("one unread", lambda s: room(s, "dev").get("unread") == 1)
            composer(b, "second line")
            a.wait("two unread", lambda s: room(s, "dev").get("unread") == 2)
            assert room(a.state(), "dev")["alerts"] == 0  # no mention yet: no alert

            composer(c, "ping @alice please look")
            state = a.wait("a mention alert", lambda s: room(s, "dev").get("alerts") == 1)
            assert room(state, "dev")["unread"] == 3
            alert = state["alerts"][-1]
            assert alert["room"] == "dev" and alert["body"] == "ping @alice please look"
            assert "ping @alice" in state["banner"]  # no desktop bus here: the window's banner

            click_room(a, "dev")
            state = a.wait("read: counts cleared", lambda s: room(s, "dev")["unread"] == 0
                           and room(s, "dev")["alerts"] == 0)
            lines = state["lines"]
            assert lines.index("new messages") < lines.index("hello dev")
            assert room(state, "dev")["read"] == room(state, "dev")["seq"] == 3

            # Edit with Up-arrow in an empty composer, delete with the context menu.
            b.type_line(b.wid, "", key="Up")  # the composer has the focus
            b.wait("editing", lambda s: s["editing"] is not None and s["input"] == "second line")
            b.xdotool("type", "--delay", "5", " (fixed)")
            b.xdotool("key", "Return")
            for gui in (a, c):
                gui.wait("the edit", lambda s: "second line (fixed) (edited)" in s["lines"])
            seq = 1  # "hello dev"
            box = b.wait("message box", lambda s: str(seq) in s["message_boxes"])[
                "message_boxes"][str(seq)]
            b.xdotool("mousemove", str(box[0] + 5), str(box[1] + box[3] // 2), "click", "3")
            b.wait("the menu", lambda s: s["menu"] == ["Edit", "Delete", "Copy"])
            b.xdotool("key", "Down", "Down", "Return")
            for gui in (a, b, c):
                state = gui.wait("the tombstone", lambda s: "message deleted" in s["lines"])
                assert "hello dev" not in state["lines"]
                assert room(state, "dev")["texts"][:3] == [None, "second line (fixed)",
                                                            "ping @alice please look"]


def test_search_jumps_and_a_dm_waits_for_the_next_login(display, tmp_path):
    with running_server(tmp_path, "--rate", "0") as server:
        accounts(server, "alice", "bob", "writer")
        writer = login2(server, "writer", password=PASSWORD)
        say(writer, "lobby", "the needle is here")
        for i in range(120):
            writer.send({"type": "say", "room": "lobby", "text": f"hay {i}"})
        writer.barrier()
        port = server.port
        with window(display, tmp_path, "alice", port, "--max-lines", "20") as a:
            a.wait("the newest page", lambda s: "hay 119" in s["lines"])
            type_into(a, "search", "needle")
            state = a.wait("a result", lambda s: s["results"])
            assert state["results"] == [["lobby", 1, "the needle is here"]]
            a.click(a.wid, a.wait("its row", lambda s: s["result_rows"])["result_rows"][0])
            state = a.wait("jumped", lambda s: "the needle is here" in s["lines"])
            assert state["front"] == "lobby" and state["detached"] and 1 in state["shown"]
            assert "hay 119" not in state["lines"]  # the page around the hit, not the end
            a.click(a.wid, state["boxes"]["live"])
            a.wait("back at the end", lambda s: "hay 119" in s["lines"] and not s["detached"])
            composer(a, "/quit")
            assert a.exit_code() == 0
        with window(display, tmp_path, "bob", port) as b:
            member = b.wait("alice listed", lambda s: "alice" in s["member_rows"])
            box = member["member_rows"]["alice"]
            b.xdotool("windowraise", str(b.wid))
            b.xdotool("mousemove", str(box[0] + box[2] // 2), str(box[1] + box[3] // 2),
                      "click", "--repeat", "2", "--delay", "80", "1")
            b.wait("the dm in front", lambda s: s["front"] == "@alice@bob")
            composer(b, "are you there? 🙂")
            b.wait("sent", lambda s: not s["pending"] and "are you there? 🙂" in s["lines"])
        with window(display, tmp_path, "alice", port) as a:
            state = a.wait("an unread dm", lambda s: room(s, "@alice@bob").get("unread") == 1)
            assert room(state, "@alice@bob")["label"] == "bob"
            click_room(a, "@alice@bob")
            a.wait("the dm read", lambda s: "are you there? 🙂" in s["lines"]
                   and room(s, "@alice@bob")["unread"] == 0)


def test_server_restart_while_typing_in_two_rooms(display, tmp_path):
    db = str(tmp_path / "history.sqlite3")
    with running_server(tmp_path, db=db) as server:
        accounts(server, "alice")
        port = server.port
        with window(display, tmp_path, "alice", port) as a:
            composer(a, "/join dev")
            a.wait("in dev", lambda s: s["front"] == "dev")
            server.proc.send_signal(signal.SIGKILL)
            server.proc.wait(WAIT)
            a.wait("reconnecting", lambda s: s["status"] == "reconnecting")
            texts = {"dev": ["dev one", "dev two"], "lobby": ["lobby one", "lobby two"]}
            for text in texts["dev"]:
                composer(a, text)
            click_room(a, "lobby")
            for text in texts["lobby"]:
                composer(a, text)
            a.wait("pending", lambda s: len(s["pending"]) == 2  # those of the room in front
                   and s["status_text"].endswith("4 pending"))
            with running_server(tmp_path, "--port", str(port), db=db) as again:
                state = a.wait("all sent", lambda s: connected(s) and not s["pending"]
                               and "pending" not in s["status_text"], timeout=40)
                for name, sent in texts.items():
                    assert [t for t in room(state, name)["texts"] if t in sent] == sent
                with login2(again, "reader") as reader:
                    for name, sent in texts.items():
                        page = call(reader, {"type": "history", "room": name,
                                             "before": 1000})
                        got = [m.get("text") for m in page["msgs"]]
                        assert [t for t in got if t in sent] == sent  # each exactly once
