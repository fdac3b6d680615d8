"""The load generator's WebSocket clients (``chatd bench fanout --ws``).

A bench client on the server's web listener speaks the contract's §21: an
HTTP upgrade at ``/ws`` with the subprotocol ``chat.v1``, then one chat
payload per text message, without the 4-byte length. wsproto does the
handshake, frames (and masks) what the clients send, and decodes the
messages of the login and the barrier (:class:`WsSession`).

Under load, receivers count the server's frames from their WebSocket headers
alone (:class:`WsFrameCounter`), as the TCP generator counts length headers
(see :mod:`chatd.bench_wire`): decoding every message with wsproto would cost
the generator more CPU per delivery than the server spends, so the figure
would be the generator's. A sender's acknowledgements are still found with
:class:`~chatd.bench_wire.MarkerCounter`: the server's frames are not masked,
so its payloads are in the stream as they are.
"""

from __future__ import annotations

import socket
from typing import Any

from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, RejectConnection, Request, TextMessage

from chatd.bench_server import BenchError
from protocol.framing import Message, decode_payload, encode
from protocol.limits import HEADER_SIZE

WS_PATH = "/ws"
SUBPROTOCOL = "chat.v1"  # the bench's clients speak version 1, as on TCP
_FIN = 0x80
_MASKED = 0x80
_CONTROL = 0x08  # opcodes 8-15: close, ping, pong


class WsSession:
    """One client's WebSocket state in wsproto: frames out, messages in."""

    __slots__ = ("accepted", "conn", "parts")

    def __init__(self) -> None:
        self.conn = WSConnection(ConnectionType.CLIENT)
        self.accepted = False
        self.parts: list[str] = []  # a text message received in fragments

    def upgrade(self, host: str, port: int) -> bytes:
        return self.conn.send(Request(host=f"{host}:{port}", target=WS_PATH,
                                      subprotocols=[SUBPROTOCOL]))

    def frame(self, message: dict[str, Any]) -> bytes:
        """``message`` as one masked text message (the contract's payload)."""
        payload = encode(message)[HEADER_SIZE:]
        return self.conn.send(TextMessage(data=payload.decode()))

    def feed(self, data: bytes) -> list[Message]:
        """The server's bytes in, its complete chat messages out."""
        self.conn.receive_data(data)
        messages: list[Message] = []
        for event in self.conn.events():
            if isinstance(event, AcceptConnection):
                self.accepted = True
            elif isinstance(event, RejectConnection):
                raise BenchError(f"WebSocket upgrade refused with HTTP {event.status_code}")
            elif isinstance(event, CloseConnection):
                raise BenchError(f"server closed the WebSocket ({event.code} {event.reason})")
            elif isinstance(event, TextMessage):
                self.parts.append(event.data)
                if event.message_finished:
                    text, self.parts = "".join(self.parts), []
                    messages.append(decode_payload(text.encode()))
        return messages

    @property
    def pending(self) -> bool:
        """A message begun and not finished."""
        return bool(self.parts)


def ws_login(host: str, port: int, name: str, hello: dict[str, Any], timeout: float) -> tuple[
    socket.socket, WsSession, list[Message]
]:
    """Blocking upgrade and login; the socket (blocking, with ``timeout``), the
    session, and the messages received so far (the first is the answer to
    ``hello``)."""
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    session = WsSession()
    sock.sendall(session.upgrade(host, port))
    messages: list[Message] = []
    sent = False
    while not messages:
        if session.accepted and not sent:
            sock.sendall(session.frame(hello))
            sent = True
        try:
            data = sock.recv(65536)
        except ConnectionError as exc:
            raise BenchError(f"{name}: {exc.strerror} before welcome") from None
        if not data:
            raise BenchError(f"{name}: server closed the connection before welcome")
        messages = session.feed(data)
        if messages and not sent:
            raise BenchError(f"{name}: a message before the upgrade was accepted")
    return sock, session, messages


class WsFrameCounter:
    """Counts the server's complete messages by walking WebSocket frame headers.

    A frame counts when it is complete, is not a control frame and has FIN
    set (the last of a message). Payloads are skipped; a header split across
    reads is kept and joined to the next.
    """

    __slots__ = ("_counts", "_head", "_skip")

    def __init__(self) -> None:
        self._skip = 0  # bytes of the current frame still to come
        self._counts = 0  # 1 if the current frame ends a message
        self._head = b""  # a header split across reads

    def feed(self, buf: bytearray, n: int) -> int:
        """Messages completed by the first ``n`` bytes of ``buf``."""
        data: bytes | bytearray = buf
        end = n
        if self._head:  # rare: copy this read once to join the header
            data = self._head + bytes(buf[:n])
            end = len(data)
            self._head = b""
        pos = self._skip
        frames = 0
        if pos:
            if pos > end:
                self._skip = pos - end
                return 0
            frames = self._counts
        while end - pos >= 2:
            first, second = data[pos], data[pos + 1]
            size = second & 0x7F
            extended = 2 if size == 126 else 8 if size == 127 else 0
            head = 2 + extended + (4 if second & _MASKED else 0)
            if end - pos < head:
                break
            if extended:
                size = int.from_bytes(data[pos + 2 : pos + 2 + extended], "big")
            counts = 1 if first & _FIN and not first & _CONTROL else 0
            stop = pos + head + size
            if stop > end:
                self._skip = stop - end
                self._counts = counts
                return frames
            frames += counts
            pos = stop
        self._skip = 0
        self._head = bytes(data[pos:end])
        return frames
