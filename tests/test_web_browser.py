"""The web client in a real browser (headless Chromium under Selenium): two
browser sessions and a TCP client in two rooms, a reconnect across a server
restart, and a page of a foreign origin refused."""

from __future__ import annotations

import contextlib
import http.server
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.client_support import free_port
from tests.web_support import CHROMEDRIVER, CHROMIUM, chromium, web_server

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(shutil.which(CHROMIUM) is None or shutil.which(CHROMEDRIVER) is None,
                       reason="needs Debian's chromium and chromium-driver"),
]

WAIT = 15.0


def wait(driver: Any, what: str, cond: Callable[[], Any], timeout: float = WAIT) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(
        lambda _: cond(), message=f"timed out waiting for {what}")


def by_testid(driver: Any, name: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, f'[data-testid="{name}"]')


def texts(driver: Any) -> list[str]:
    """The shown room's message texts, pending ones marked with a leading '…'."""
    result: list[str] = driver.execute_script(
        "return Array.from(document.querySelectorAll('#message-list .msg')).map("
        "li => (li.classList.contains('pending') ? '…' : '') +"
        " li.querySelector('.text').firstChild.textContent)")
    return result


def rooms(driver: Any) -> dict[str, str]:
    """Room list: name -> unread count ('' when none)."""
    result: dict[str, str] = driver.execute_script(
        "const out = {}; for (const b of document.querySelectorAll('[data-room]'))"
        " out[b.dataset.room] = (b.querySelector('.unread') || {}).textContent || '';"
        " return out")
    return result


def next_of(client: Any, kind: str, **members: Any) -> dict[str, Any]:
    """The TCP client's next frame of ``kind`` with ``members`` (others skipped)."""
    found: dict[str, Any] = client.drain_until(lambda m: m["type"] == kind and all(
        m.get(key) == value for key, value in members.items()), WAIT)[-1]
    return found


def login(driver: Any, port: int, name: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"http://127.0.0.1:{port}/")
    driver.find_element(By.CSS_SELECTOR, 'input[name="mode"][value="guest"]').click()
    by_testid(driver, "login-name").send_keys(name)
    by_testid(driver, "login-submit").click()
    wait(driver, f"{name} logged in", lambda: "lobby" in rooms(driver))


def say(driver: Any, text: str) -> None:
    by_testid(driver, "composer").send_keys(text)
    by_testid(driver, "send").click()


def open_room(driver: Any, room: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, f'[data-room="{room}"]').click()
    wait(driver, f"room {room} shown", lambda: by_testid(driver, "room-title").text == "#" + room)


def join(driver: Any, room: str) -> None:
    by_testid(driver, "join-room").send_keys(room)
    by_testid(driver, "join-room").submit()
    wait(driver, f"joined {room}", lambda: by_testid(driver, "room-title").text == "#" + room)


def test_two_browsers_and_a_tcp_client_talk_in_two_rooms(tmp_path: Path) -> None:
    with web_server(tmp_path) as (server, port), chromium() as alice, chromium() as bob:
        carol = server.client()
        carol.send({"type": "hello", "proto": 2, "name": "carol"})
        carol.expect("welcome")
        carol.send({"type": "join", "room": "dev"})
        carol.expect("joined", room="dev")
        login(alice, port, "alice")
        login(bob, port, "bob")
        join(alice, "dev")
        join(bob, "dev")
        say(alice, "hello dev from alice")
        from_alice = next_of(carol, "msg", room="dev", **{"from": "alice"})
        assert from_alice["text"] == "hello dev from alice"
        wait(bob, "alice's message at bob", lambda: texts(bob) == ["hello dev from alice"])
        carol.send({"type": "say", "room": "lobby", "text": "lobby news from carol", "id": "c1"})
        carol.send({"type": "say", "room": "dev", "text": "carol in dev, hi @bob"})
        wait(bob, "carol's dev message",
             lambda: texts(bob) == ["hello dev from alice", "carol in dev, hi @bob"])
        wait(bob, "the mention highlighted", lambda: bob.execute_script(
            "return document.querySelectorAll('#message-list .msg.mention').length") == 1)
        wait(alice, "an unread message in lobby", lambda: rooms(alice)["lobby"] == "1")
        open_room(alice, "lobby")
        wait(alice, "lobby's history", lambda: texts(alice) == ["lobby news from carol"])
        assert rooms(alice)["lobby"] == ""
        say(alice, "alice in lobby")
        assert next_of(carol, "msg", room="lobby", **{"from": "alice"})["text"] == "alice in lobby"
        assert [m for m in carol.barrier() if m["type"] == "msg"] == []  # nothing twice
        # Edit and delete of one's own message, seen by everyone.
        say(bob, "typo mesage")
        wait(bob, "bob's message acknowledged", lambda: texts(bob)[-1] == "typo mesage")
        seq = next_of(carol, "msg", room="dev", **{"from": "bob"})["seq"]
        bob.execute_script(
            f"document.querySelector('#message-list [data-seq=\"{seq}\"] .tools button').click()")
        composer = by_testid(bob, "composer")
        composer.clear()
        composer.send_keys("typo fixed")
        by_testid(bob, "send").click()
        assert next_of(carol, "edited", room="dev", seq=seq)["text"] == "typo fixed"
        wait(bob, "the edit shown", lambda: texts(bob)[-1] == "typo fixed")
        # Search finds it.
        by_testid(alice, "search").send_keys("fixed")
        by_testid(alice, "search").submit()
        wait(alice, "a search result", lambda: "typo fixed" in by_testid(alice, "result-list").text)
        carol.close()


@contextlib.contextmanager
def static_site(page: bytes) -> Iterator[int]:
    """A plain HTTP server of one page, on its own port: another origin."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: object) -> None:
            pass

    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=site.serve_forever, daemon=True)
    thread.start()
    try:
        yield site.server_address[1]
    finally:
        site.shutdown()
        site.server_close()


OPEN_WS = """
const done = arguments[arguments.length - 1];
const ws = new WebSocket(arguments[0], ["chat.v2"]);
ws.onopen = () => { ws.close(); done("open"); };
ws.onclose = (event) => done("closed " + event.code);
"""


def test_a_page_of_a_foreign_origin_is_refused(tmp_path: Path) -> None:
    with static_site(b"<!doctype html><title>elsewhere</title>") as foreign, \
            static_site(b"<!doctype html><title>friend</title>") as friend:
        allowed = f"http://127.0.0.1:{friend}"
        with web_server(tmp_path, "--allowed-origins", allowed) as (_, port), \
                chromium() as driver:
            url = f"ws://127.0.0.1:{port}/ws"
            driver.set_script_timeout(WAIT)
            driver.get(f"http://127.0.0.1:{foreign}/")
            assert driver.execute_async_script(OPEN_WS, url) == "closed 1006"
            driver.get(f"http://127.0.0.1:{friend}/")
            assert driver.execute_async_script(OPEN_WS, url) == "open"
            driver.get(f"http://127.0.0.1:{port}/")
            assert driver.execute_async_script(OPEN_WS, url) == "open"


def test_reconnect_after_a_server_restart_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    db = str(tmp_path / "history.sqlite3")
    port = free_port()
    with chromium() as driver:
        with web_server(tmp_path, http_port=port, db=db) as (server, _):
            login(driver, port, "alice")
            join(driver, "dev")
            say(driver, "before the restart")
            wait(driver, "acknowledged", lambda: texts(driver) == ["before the restart"])
        wait(driver, "the page to see the server gone",
             lambda: by_testid(driver, "connection").text.startswith("Connection lost"))
        say(driver, "typed while the server was down")
        assert texts(driver) == ["before the restart", "…typed while the server was down"]
        with web_server(tmp_path, http_port=port, db=db) as (server, _):
            carol = server.client()
            carol.send({"type": "hello", "proto": 2, "name": "carol"})
            carol.expect("welcome")
            carol.send({"type": "join", "room": "dev"})
            carol.expect("joined", room="dev")
            carol.send({"type": "say", "room": "dev", "text": "said after the restart"})
            want = {"before the restart", "typed while the server was down",
                    "said after the restart"}
            wait(driver, "everything once, nothing pending",
                 lambda: sorted(texts(driver)) == sorted(want), timeout=30)
            carol.send({"type": "history", "room": "dev", "before": 100})
            stored = [m["text"] for m in next_of(carol, "history")["msgs"]]
            assert sorted(stored) == sorted(want)  # each exactly once on the server
            carol.close()
