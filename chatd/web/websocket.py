"""Chat frames over a WebSocket (contract §21), on wsproto.

Each text message carries one payload, without the 4-byte length. The core
reads and writes the length-prefixed stream of §1 as on TCP, so this class
translates both ways and the rules of payloads, sessions and errors stay in
one place (the core's decoder). What WebSocket adds maps onto those rules:

- a message is collected until it is complete and then handed on with its
  length; once it passes the frame limit in force (4096 before login,
  ``max_frame`` after) only a header with its length so far goes on, which
  the decoder refuses from the header alone (``frame_too_large``), so an
  oversize message is never buffered further;
- a binary or empty message, text that is not UTF-8, and a WebSocket
  protocol violation go on as a payload that can only be ``bad_frame``;
- after the error (or ``bye``) the close frame's code tells why: 1009 for
  ``frame_too_large``, 1008 for any other fatal error, else 1000. It is read
  from the last frame sent, so the core needs to know nothing of WebSocket.

Pings are answered with pongs here and never reach the core: they are not
protocol traffic and do not count as the client being alive (§7).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Protocol

from wsproto import ConnectionType
from wsproto.connection import Connection, ConnectionState
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage
from wsproto.frame_protocol import CloseReason

from chatd.transport import Chunk
from protocol.limits import HEADER_SIZE

#: A frame whose payload (one 0xFF byte) is not UTF-8: the decoder's bad_frame.
BAD_FRAME = (1).to_bytes(HEADER_SIZE, "big") + b"\xff"


class FrameLimit(Protocol):
    """Where the frame limit in force is read (the connection's decoder)."""

    max_frame: int


class WebSocket:
    """One server-side WebSocket; its bytes to send are appended to ``out``."""

    __slots__ = ("closed", "conn", "dead", "last", "limit", "message", "out", "unframed")

    def __init__(self, out: bytearray, limit: FrameLimit) -> None:
        self.conn = Connection(ConnectionType.SERVER)
        self.out = out
        self.limit = limit
        self.message = bytearray()  # the text message being received, UTF-8
        self.unframed = bytearray()  # outgoing stream bytes short of a whole frame
        self.last = b""  # the last payload sent, for the close code
        self.dead = False  # a fatal frame went to the core: ignore further input
        self.closed = False  # the peer's close frame came

    def feed(self, data: bytes) -> bytes:
        """The peer's bytes in, frames for the core out (``closed`` tells of
        the peer's close frame; it is answered here)."""
        conn = self.conn
        if conn.state is ConnectionState.CLOSED:
            return b""
        conn.receive_data(data)
        frames = bytearray()
        for event in conn.events():
            if isinstance(event, TextMessage):
                if not self.dead:
                    frames += self._collect(event.data.encode(), event.message_finished)
            elif isinstance(event, BytesMessage):
                frames += self._fail()
            elif isinstance(event, Ping):
                if conn.state is ConnectionState.OPEN:
                    self.out += conn.send(event.response())
            elif isinstance(event, CloseConnection):
                if conn.state is ConnectionState.OPEN:  # wsproto found a violation
                    frames += self._fail()
                    continue
                if conn.state is ConnectionState.REMOTE_CLOSING:
                    self.out += conn.send(event.response())
                self.closed = True
        return bytes(frames)

    def _collect(self, part: bytes, finished: bool) -> bytes:
        message = self.message
        message += part
        if len(message) > self.limit.max_frame:
            self.dead = True
            self.message = bytearray()
            return len(message).to_bytes(HEADER_SIZE, "big")
        if not finished:
            return b""
        self.message = bytearray()
        if not message:
            return self._fail()
        return len(message).to_bytes(HEADER_SIZE, "big") + message

    def _fail(self) -> bytes:
        if self.dead:
            return b""
        self.dead = True
        self.message = bytearray()
        return BAD_FRAME

    def take(self, buffers: Sequence[Chunk]) -> int:
        """Take the core's stream bytes; each whole frame becomes a text message.

        A room's frames of a turn reach every member as one shared bytes
        object; its messages are framed once (see :func:`_shared`) and the
        result shared too, so a WebSocket member costs a copy, not a
        conversion per frame.
        """
        taken = 0
        pending = self.unframed
        if self.conn.state is not ConnectionState.OPEN:
            pending.clear()  # closing: nothing more can go out
            return sum(len(chunk) for chunk in buffers)
        for chunk in buffers:
            taken += len(chunk)
            if not pending and type(chunk) is bytes:
                framed, used, last = _shared(chunk)
                if used == len(chunk):
                    self.out += framed
                    if last is not None:
                        self.last = last
                    continue
            pending += chunk
            framed, used, last = _messages(pending)
            self.out += framed
            if last is not None:
                self.last = last
            del pending[:used]
        return taken

    def close(self) -> None:
        """Our close frame, with the code the last frame sent calls for."""
        if self.conn.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            self.out += self.conn.send(CloseConnection(code=close_code(self.last)))


#: Chunks lately framed: id -> (the chunk, kept alive so its id stays its
#: own; its messages; the last payload). A turn's blob goes to every member.
_FRAMED: dict[int, tuple[bytes, bytes, int, bytes | None]] = {}
_FRAMED_MAX = 64


def _shared(chunk: bytes) -> tuple[bytes, int, bytes | None]:
    """:func:`_messages` of a chunk, remembered for the other members it goes to."""
    hit = _FRAMED.get(id(chunk))
    if hit is not None and hit[0] is chunk:
        return hit[1], hit[2], hit[3]
    framed, used, last = _messages(chunk)
    if len(_FRAMED) >= _FRAMED_MAX:
        del _FRAMED[next(iter(_FRAMED))]
    _FRAMED[id(chunk)] = (chunk, framed, used, last)
    return framed, used, last


def _messages(data: bytes | bytearray) -> tuple[bytes, int, bytes | None]:
    """The whole length-prefixed frames at the start of ``data`` as unmasked
    WebSocket text frames (RFC 6455 §5.2; a server never masks), the bytes
    they used, and the last payload (None if there was no whole frame).

    Written here rather than through wsproto's ``send``: per frame per member
    that was 30 times the cost of a TCP delivery. The payloads are the
    server's own JSON, valid UTF-8 by construction (framing.encode_payload).
    """
    out = bytearray()
    view = memoryview(data)
    pos, end, last = 0, len(data), -1
    while end - pos >= HEADER_SIZE:
        size = int.from_bytes(view[pos:pos + HEADER_SIZE], "big")
        start = pos + HEADER_SIZE
        if end - start < size:
            break
        if size < 126:
            out += bytes((0x81, size))
        elif size < 65536:
            out += b"\x81\x7e" + size.to_bytes(2, "big")
        else:
            out += b"\x81\x7f" + size.to_bytes(8, "big")
        out += view[start:start + size]
        last, pos = start, start + size
    payload = bytes(view[last:pos]) if last >= 0 else None
    view.release()
    return bytes(out), pos, payload


def close_code(payload: bytes) -> int:
    """1009 after a fatal ``frame_too_large``, 1008 after another fatal error, else 1000."""
    try:
        message = json.loads(payload)
    except ValueError:
        return CloseReason.NORMAL_CLOSURE
    if not isinstance(message, dict) or message.get("type") != "error" or not message.get("fatal"):
        return CloseReason.NORMAL_CLOSURE
    if message.get("code") == "frame_too_large":
        return CloseReason.MESSAGE_TOO_BIG
    return CloseReason.POLICY_VIOLATION
