"""The web listener against a real server: static files, the upgrade, and the
WebSocket edge cases of contract §21."""

from __future__ import annotations

import http.client
import json
import os
import socket
import time
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType
from wsproto.connection import Connection as WsConnection
from wsproto.events import CloseConnection, Ping, Pong, TextMessage

from chatd.web import websocket
from protocol.framing import frame
from tests.web_support import WsClient, WsClosed, web_server

pytestmark = pytest.mark.timeout(60)


def masked(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A client frame written by hand (for what wsproto refuses to send)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    size = len(payload)
    if size < 126:
        head += bytes([0x80 | size])
    elif size < 65536:
        head += bytes([0x80 | 126]) + size.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + size.to_bytes(8, "big")
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def get(port: int, path: str, method: str = "GET",
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def test_static_files_have_types_caching_and_a_closed_csp(tmp_path: Path) -> None:
    with web_server(tmp_path) as (_, port):
        status, headers, body = get(port, "/")
        assert status == 200
        assert headers["content-type"] == "text/html; charset=utf-8"
        assert b'data-testid="message-list"' in body
        csp = headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp
        assert "unsafe-inline" not in csp and "*" not in csp
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["cache-control"] == "no-cache"
        for path, kind in (("/app.js", "text/javascript"), ("/client.js", "text/javascript"),
                           ("/style.css", "text/css"), ("/icon.svg", "image/svg+xml")):
            status, headers, body = get(port, path)
            assert (status, headers["content-type"].split(";")[0]) == (200, kind), path
            assert int(headers["content-length"]) == len(body) > 0
        etag = get(port, "/app.js")[1]["etag"]
        assert get(port, "/app.js", headers={"If-None-Match": etag})[0] == 304
        status, headers, body = get(port, "/style.css", "HEAD")
        assert (status, body) == (200, b"") and int(headers["content-length"]) > 0
        assert get(port, "/nothing.js")[0] == 404
        assert get(port, "/../setup.cfg")[0] == 404
        assert get(port, "/", "POST")[0] == 405
        assert get(port, "/ws")[0] == 426  # no upgrade


def test_keep_alive_serves_several_requests_on_one_connection(tmp_path: Path) -> None:
    with web_server(tmp_path) as (_, port):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        for path in ("/", "/app.js", "/style.css"):
            conn.request("GET", path)
            response = conn.getresponse()
            assert response.status == 200
            response.read()
        conn.close()


def test_subprotocol_is_selected_and_both_versions_talk(tmp_path: Path) -> None:
    with web_server(tmp_path) as (_, port), \
            WsClient(port, subprotocols=("chat.v1", "chat.v2")) as ws2:
        assert ws2.accepted is not None and ws2.accepted.subprotocol == "chat.v2"
        ws2.login("alice")
        with WsClient(port, subprotocols=("chat.v1",)) as ws1:
            assert ws1.accepted is not None and ws1.accepted.subprotocol == "chat.v1"
            ws1.send({"type": "hello", "proto": 1, "name": "bob"})
            assert ws1.recv_type("welcome")["proto"] == 1
            ws1.send({"type": "say", "text": "from v1", "id": "x"})
            assert ws1.recv_type("msg")["text"] == "from v1"
            msg = ws2.recv_type("msg")
            assert (msg["room"], msg["from"], msg["text"]) == ("lobby", "bob", "from v1")


def test_origin_check(tmp_path: Path) -> None:
    with web_server(tmp_path, "--allowed-origins", "https://app.example") as (_, port):
        assert WsClient(port, origin="http://evil.example").status == 403
        assert WsClient(port, origin="null").status == 403
        assert WsClient(port, origin=f"http://127.0.0.1:{port + 1}").status == 403
        for origin in (f"http://127.0.0.1:{port}", "https://app.example:443", None):
            with WsClient(port, origin=origin) as ws:
                assert ws.status == 101, origin
                assert ws.login("carol")["name"] == "carol"
                ws.send({"type": "bye"})
                assert ws.close_code() == 1000


def test_binary_message_is_a_fatal_bad_frame_closed_with_1008(tmp_path: Path) -> None:
    with web_server(tmp_path) as (_, port), WsClient(port) as ws:
        ws.login("dave")
        ws.sock.sendall(masked(0x2, b'{"type":"ping"}'))
        error = ws.recv_type("error")
        assert (error["code"], error["fatal"]) == ("bad_frame", True)
        assert ws.close_code() == 1008


def test_text_that_is_not_utf8_is_a_bad_frame(tmp_path: Path) -> None:
    with web_server(tmp_path) as (_, port), WsClient(port) as ws:
        ws.sock.sendall(masked(0x1, b'{"type":"hello","name":"\xc0\xaf"}'))
        assert ws.recv_type("error")["code"] == "bad_frame"
        assert ws.close_code() == 1008


def test_oversize_messages_are_frame_too_large_closed_with_1009(tmp_path: Path) -> None:
    with web_server(tmp_path, "--max-frame", "10000") as (_, port):
        with WsClient(port) as ws:  # before login the limit is 4096
            ws.send({"type": "hello", "proto": 2, "name": "x" * 5000})
            error = ws.recv_type("error")
            assert (error["code"], error["fatal"]) == ("frame_too_large", True)
            assert ws.close_code() == 1009
        with WsClient(port) as ws:  # after login max_frame; sent in fragments
            ws.login("erin")
            ws.send({"type": "say", "room": "lobby", "text": "y" * 3000})  # fine now
            assert ws.recv_type("msg")["text"] == "y" * 3000
            for _ in range(4):
                ws.send_event(TextMessage(data="z" * 3000, message_finished=False))
            ws.send_event(TextMessage(data="", message_finished=True))
            assert ws.recv_type("error")["code"] == "frame_too_large"
            assert ws.close_code() == 1009


def test_fragmented_and_empty_messages(tmp_path: Path) -> None:
    with web_server(tmp_path) as (_, port), WsClient(port) as ws:
        ws.send_event(TextMessage(data='{"type":"hello",', message_finished=False))
        ws.send_event(TextMessage(data='"proto":2,"name":"frank"}', message_finished=True))
        assert ws.recv_type("welcome")["name"] == "frank"
        ws.send_event(TextMessage(data=""))
        assert ws.recv_type("error")["code"] == "bad_frame"
        assert ws.close_code() == 1008


def test_websocket_pings_are_answered_but_do_not_keep_a_session_alive(tmp_path: Path) -> None:
    with web_server(tmp_path, "--heartbeat", "1") as (_, port), WsClient(port) as ws:
        ws.login("gina")
        ws.sock.settimeout(0.3)
        seen: list[str] = []
        pongs = 0
        ws.send_event(Ping(payload=b"p"))
        deadline = time.monotonic() + 20  # two heartbeats and then some
        while True:
            assert time.monotonic() < deadline, f"no close in time; seen {seen}"
            try:
                event = ws.next_event()
            except TimeoutError:
                ws.send_event(Ping(payload=b"p"))
                continue
            if isinstance(event, Pong):
                pongs += 1
            elif isinstance(event, TextMessage):
                seen.append(event.data)
            elif isinstance(event, CloseConnection):
                code = event.code
                break
        assert pongs >= 1
        assert any('"type":"ping"' in text for text in seen)
        assert any('"code":"timeout"' in text for text in seen)
        assert code == 1008


def test_idle_http_connection_is_closed_after_the_handshake_timeout(tmp_path: Path) -> None:
    with web_server(tmp_path, "--handshake-timeout", "0.5") as (_, port):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        with sock:
            assert sock.recv(100) == b""  # nothing of the core's timeout frame leaks out


def test_client_close_frame_ends_the_session(tmp_path: Path) -> None:
    with web_server(tmp_path) as (server, port):
        with server.client() as watcher:
            watcher.login("hank")
            with WsClient(port) as ws:
                ws.login("ivy")
                watcher.expect("join", name="ivy")
                ws.send_event(CloseConnection(code=1000))
                assert isinstance(ws.next_event(), CloseConnection)
            leave = watcher.expect("leave", name="ivy")
            assert leave["reason"] == "lost"
        with WsClient(port) as ws:  # a first frame that is not hello: fatal, 1008
            ws.send({"type": "bye"})
            assert ws.recv()["code"] == "not_logged_in"
            assert ws.close_code() == 1008
            with pytest.raises(WsClosed):
                ws.recv()


@given(st.lists(st.text(max_size=70_000).map(lambda t: json.dumps({"type": "x", "t": t})),
                min_size=1, max_size=4),
       st.integers(min_value=0, max_value=3))
@example(["x" * 10, "y" * 200, "z" * 70_000], 1)  # all three length forms at once
@settings(max_examples=30)
def test_server_frames_are_read_back_by_a_websocket_client(payloads: list[str],
                                                           cut: int) -> None:
    """Whatever their sizes (the three length forms), the frames written
    without wsproto are exactly the messages a wsproto client reads."""
    stream = b"".join(frame(p.encode()) for p in payloads)
    stream += b"\x00\x00"[:cut % 3]  # a partial header stays behind
    framed, used, last = websocket._messages(stream)
    assert used == len(stream) - cut % 3
    assert last == payloads[-1].encode()
    client = WsConnection(ConnectionType.CLIENT)
    client.receive_data(framed)
    got = [event.data for event in client.events() if isinstance(event, TextMessage)]
    assert got == payloads
