"""Test support for the web listener: a server with one, a blocking WebSocket
client (wsproto over a socket, every wait with a deadline), and a headless
Chromium driven by Selenium (Debian's ``chromium`` and ``chromium-driver``;
nothing is downloaded at run time)."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Event,
    Message,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from tests.client_support import free_port
from tests.support import RECV_TIMEOUT, ServerProcess, running_server

Msg = dict[str, Any]
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@contextlib.contextmanager
def web_server(tmp_path: Path, *flags: str, http_port: int = 0,
               db: str = ":memory:") -> Iterator[tuple[ServerProcess, int]]:
    """A running chatd with its web listener; yields it and the web port (a
    fixed one: 0 would turn the listener off)."""
    port = http_port or free_port()
    with running_server(tmp_path, "--http-port", str(port), "--tls-port", "0", *flags,
                        db=db) as server:
        yield server, port


class WsClosed(AssertionError):
    """The server closed the WebSocket (``code``) while a message was expected."""

    def __init__(self, code: int) -> None:
        super().__init__(f"WebSocket closed with code {code}")
        self.code = code


class WsClient:
    """A blocking WebSocket client of ``/ws``; JSON messages in and out."""

    __test__ = False

    def __init__(self, port: int, origin: str | None = None,
                 subprotocols: tuple[str, ...] = ("chat.v2",),
                 timeout: float = RECV_TIMEOUT) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.timeout = timeout
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.events: list[Event] = []
        self.parts: list[str] = []
        headers = [(b"Origin", origin.encode())] if origin is not None else []
        self.sock.sendall(self.ws.send(Request(
            host=f"127.0.0.1:{port}", target="/ws", subprotocols=list(subprotocols),
            extra_headers=headers)))
        first = self._event()
        self.accepted: AcceptConnection | None = None
        self.status = 101
        if isinstance(first, AcceptConnection):
            self.accepted = first
        elif isinstance(first, RejectConnection):
            self.status = first.status_code
        else:
            raise AssertionError(f"unexpected first event {first!r}")

    def __enter__(self) -> WsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def _event(self) -> Event:
        deadline = time.monotonic() + self.timeout
        while not self.events:
            self.events.extend(self.ws.events())
            if self.events:
                break
            if time.monotonic() > deadline:
                raise TimeoutError("no WebSocket event in time")
            data = self.sock.recv(65536)
            self.ws.receive_data(data or None)
        return self.events.pop(0)

    def send(self, message: Msg) -> None:
        self.send_event(TextMessage(data=json.dumps(message)))

    def send_event(self, event: Event) -> None:
        self.sock.sendall(self.ws.send(event))

    def recv(self) -> Msg:
        """The next whole text message as JSON (pongs and other control events skipped)."""
        while True:
            event = self._event()
            if isinstance(event, CloseConnection):
                raise WsClosed(event.code)
            if isinstance(event, Message):
                self.parts.append(str(event.data))
                if event.message_finished:
                    text, self.parts = "".join(self.parts), []
                    loaded: Msg = json.loads(text)
                    return loaded
            elif isinstance(event, RejectData):
                continue

    def recv_type(self, kind: str) -> Msg:
        """Skip frames until one of type ``kind``."""
        while True:
            message = self.recv()
            if message.get("type") == kind:
                return message

    def next_event(self) -> Event:
        return self._event()

    def close_code(self) -> int:
        """Read until the server's close frame; its code."""
        while True:
            event = self._event()
            if isinstance(event, CloseConnection):
                return event.code

    def login(self, name: str, **hello: Any) -> Msg:
        self.send({"type": "hello", "proto": 2, "name": name, **hello})
        return self.recv_type("welcome")


@contextlib.contextmanager
def chromium(width: int = 1280, height: int = 800) -> Iterator[Any]:
    """A headless Chromium under Selenium with a fresh profile; quit on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="chat-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                 f"--window-size={width},{height}"):
        options.add_argument(flag)
    if width < 500:  # below the smallest window: a phone's viewport, emulated
        options.add_experimental_option("mobileEmulation", {"deviceMetrics": {
            "width": width, "height": height, "pixelRatio": 1}})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
