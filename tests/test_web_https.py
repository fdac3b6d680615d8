"""The web listener when TLS is on (contract §21: HTTPS when TLS is on): the
page over HTTPS, the WebSocket inside TLS, and the origin's scheme counted."""

from __future__ import annotations

import http.client
import json
from pathlib import Path
from typing import Any

from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Event, RejectConnection, Request, TextMessage

from tests.tls_support import client_context, free_port, running_tls_server, tls_socket


def _upgrade(port: int, origin: str) -> tuple[Any, WSConnection, Event]:
    sock = tls_socket("127.0.0.1", port)
    ws = WSConnection(ConnectionType.CLIENT)
    sock.sendall(ws.send(Request(host=f"127.0.0.1:{port}", target="/ws",
                                 subprotocols=["chat.v2"],
                                 extra_headers=[(b"Origin", origin.encode())])))
    return sock, ws, _next(sock, ws)


def _next(sock: Any, ws: WSConnection) -> Event:
    while True:
        for event in ws.events():
            return event
        data = sock.recv(65536)  # the socket has a timeout: a silent server fails the test
        ws.receive_data(data or None)


def test_page_and_websocket_over_tls(tmp_path: Path) -> None:
    port = free_port()
    with running_tls_server(tmp_path, "--http-port", str(port)) as tls:
        page = http.client.HTTPSConnection("127.0.0.1", port, context=client_context(),
                                           timeout=5)
        page.request("GET", "/")
        reply = page.getresponse()
        assert reply.status == 200
        assert reply.getheader("Content-Type", "").startswith("text/html")
        assert "Content-Security-Policy" in reply.headers
        page.close()

        sock, ws, first = _upgrade(port, f"https://127.0.0.1:{port}")
        assert isinstance(first, AcceptConnection) and first.subprotocol == "chat.v2"
        sock.sendall(ws.send(TextMessage(data=json.dumps(
            {"type": "hello", "proto": 2, "name": "secure"}))))
        welcome = _next(sock, ws)
        assert isinstance(welcome, TextMessage) and json.loads(welcome.data)["type"] == "welcome"
        assert tls.server.request({"type": "status"})["users"] == ["secure"]
        sock.close()

        # The server's own origin has the listener's scheme: http:// is foreign here.
        sock, _, refused = _upgrade(port, f"http://127.0.0.1:{port}")
        assert isinstance(refused, RejectConnection) and refused.status_code == 403
        sock.close()
