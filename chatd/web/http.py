"""What the web listener answers to one HTTP request (h11 events in, h11 events out).

Only ``GET`` and ``HEAD``: the client's files at their paths, and at
``/ws`` the WebSocket upgrade of RFC 6455 with the checks of contract §21
(a foreign ``Origin`` is ``403``; the subprotocol ``chat.v2`` or ``chat.v1``
that the client offers is selected). Pure: no sockets, no state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import h11
from wsproto.utilities import generate_accept_token

from chatd.web.assets import SECURITY_HEADERS, Asset, load_assets
from chatd.web.origin import OriginRule

WS_PATH = "/ws"
SUBPROTOCOLS = ("chat.v2", "chat.v1")  # preferred first
SERVER = "chatd"

Headers = list[tuple[str, str]]


@dataclass(frozen=True)
class Answer:
    """The response to send, its body, and for an accepted upgrade ``upgrade`` True."""

    response: h11.Response | h11.InformationalResponse
    body: bytes = b""
    upgrade: bool = False


@dataclass
class Site:
    """One web listener's rules: its scheme, the other origins it trusts, its files."""

    scheme: str = "http"
    allowed_origins: tuple[str, ...] = ()
    assets: dict[str, Asset] = field(default_factory=load_assets)

    def __post_init__(self) -> None:
        self.origins = OriginRule(self.scheme, self.allowed_origins)

    def answer(self, request: h11.Request) -> Answer:
        method = request.method.decode("ascii", "replace")
        path = request.target.decode("ascii", "replace").split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            return _plain(405, "method not allowed\n", [("Allow", "GET, HEAD")])
        if path == WS_PATH:
            return self._upgrade(request)
        asset = self.assets.get(path)
        if asset is None:
            return _plain(404, "not found\n")
        headers = [("Content-Type", asset.content_type), ("ETag", asset.etag),
                   ("Cache-Control", "no-cache"), *SECURITY_HEADERS]
        if asset.etag in _values(request, b"if-none-match"):
            return Answer(h11.Response(status_code=304, headers=_with_server(headers)))
        headers.append(("Content-Length", str(len(asset.body))))
        body = asset.body if method == "GET" else b""
        return Answer(h11.Response(status_code=200, headers=_with_server(headers)), body)

    def _upgrade(self, request: h11.Request) -> Answer:
        headers = {name: value for name, value in request.headers}
        upgrade = headers.get(b"upgrade", b"").lower()
        connection = [word.lower() for word in _values(request, b"connection")]
        key = headers.get(b"sec-websocket-key")
        if upgrade != b"websocket" or "upgrade" not in connection or key is None:
            return _plain(426, "a WebSocket upgrade is expected here\n",
                          [("Upgrade", "websocket")])
        if headers.get(b"sec-websocket-version") != b"13":
            return _plain(426, "WebSocket version 13 only\n", [("Sec-WebSocket-Version", "13")])
        origin = headers.get(b"origin")
        host = headers.get(b"host")
        if not self.origins.allows(
            None if origin is None else origin.decode("latin-1"),
            None if host is None else host.decode("latin-1"),
        ):
            return _plain(403, "this page's origin may not connect\n")
        reply = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                 ("Sec-WebSocket-Accept", generate_accept_token(key).decode("ascii"))]
        offered = _values(request, b"sec-websocket-protocol")
        chosen = next((name for name in SUBPROTOCOLS if name in offered), None)
        if chosen is not None:
            reply.append(("Sec-WebSocket-Protocol", chosen))
        response = h11.InformationalResponse(status_code=101, headers=_with_server(reply))
        return Answer(response, upgrade=True)


def _values(request: h11.Request, name: bytes) -> list[str]:
    """A comma-separated header's items, over all its lines."""
    items: list[str] = []
    for key, value in request.headers:
        if key == name:
            items.extend(item.strip() for item in value.decode("latin-1").split(","))
    return items


def _with_server(headers: Headers) -> Headers:
    return [("Server", SERVER), *headers]


def _plain(status: int, text: str, extra: Headers | None = None) -> Answer:
    body = text.encode()
    headers = [("Content-Type", "text/plain; charset=utf-8"),
               ("Content-Length", str(len(body))), ("Cache-Control", "no-store"),
               *(extra or []), *SECURITY_HEADERS]
    return Answer(h11.Response(status_code=status, headers=_with_server(headers)), body)
