"""Screenshots of the web client for the README (desktop and phone width).

Run ``.venv/bin/python -m tests.web_screenshots`` from the project root; it
starts a server, fills a few rooms from TCP clients, and writes
``docs/screenshot-web-desktop.png`` and ``docs/screenshot-web-phone.png``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from tests.support import TestClient
from tests.test_web_browser import by_testid, join, next_of, open_room, rooms, say, wait
from tests.web_support import chromium, web_server

DOCS = Path(__file__).resolve().parent.parent / "docs"
PASSWORD = "correct horse battery"


def account(server: Any, name: str) -> TestClient:
    client: TestClient = server.client()
    client.send({"type": "hello", "proto": 2, "name": name, "password": PASSWORD,
                 "register": True})
    client.expect("welcome")
    return client


def sign_in(driver: Any, port: int, name: str) -> None:
    driver.get(f"http://127.0.0.1:{port}/")
    by_testid(driver, "login-name").send_keys(name)
    by_testid(driver, "login-password").send_keys(PASSWORD)
    by_testid(driver, "login-submit").click()
    wait(driver, "signed in", lambda: "lobby" in rooms(driver))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, \
            web_server(Path(tmp), "--registration", "open") as (server, port):
        alice, bob, carol = (account(server, name) for name in ("alice", "bob", "carol"))
        alice.close()
        for client in (bob, carol):
            for room in ("design", "release"):
                client.send({"type": "join", "room": room})
                next_of(client, "joined", room=room)
        lines = [
            (bob, "design", "Morning! The new room list is in the staging build."),
            (carol, "design", "Looks good. Unread counts update as soon as you switch rooms."),
            (carol, "design", "And dms have their own section now."),
            (bob, "design", "@alice could you check the phone layout?"),
            (carol, "release", "Tagging 2.0 after lunch."),
            (bob, "lobby", "Welcome to the web client, everyone."),
        ]
        with chromium(1280, 760) as desk:
            sign_in(desk, port, "alice")
            join(desk, "design")
            join(desk, "release")
            open_room(desk, "design")
            for client, room, text in lines:
                client.send({"type": "say", "room": room, "text": text})
                next_of(client, "msg", room=room, text=text)
            bob.send({"type": "dm", "to": "alice"})
            dm = next_of(bob, "joined")["room"]
            bob.send({"type": "say", "room": dm, "text": "Lunch at noon?"})
            wait(desk, "the dm listed", lambda: dm in rooms(desk))
            say(desk, "On it. Reconnects resend anything I typed while offline.")
            by_testid(desk, "composer").send_keys("Typing in the composer…")
            wait(desk, "messages shown", lambda: "phone layout" in
                 by_testid(desk, "message-list").text)
            desk.save_screenshot(str(DOCS / "screenshot-web-desktop.png"))
        with chromium(390, 844) as phone:
            sign_in(phone, port, "alice")
            phone.find_element("id", "menu-button").click()  # the rooms drawer
            wait(phone, "the drawer open", lambda: phone.execute_script(
                "return document.getElementById('sidebar').getBoundingClientRect().left") >= 0)
            open_room(phone, "design")
            wait(phone, "history shown", lambda: "phone layout" in
                 by_testid(phone, "message-list").text)
            phone.save_screenshot(str(DOCS / "screenshot-web-phone.png"))


if __name__ == "__main__":
    main()
