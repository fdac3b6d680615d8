"""A non-blocking link to a server's control socket, for the monitor window.

Like :class:`chatclient.net.Connection` it is driven by ``poll()`` and never
waits: it connects (a Unix socket connects or fails at once), asks to
``watch``, asks for ``status`` every few seconds, and when the server goes away
it tries again every ``RETRY`` seconds. No GUI code here.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

from chatd.control_client import connect_unix
from protocol import limits
from protocol.errors import ProtocolError
from protocol.framing import Decoder, Message, encode
from protocol.messages import SERVER_EVENTS, validate

RETRY = 2.0
STATUS_EVERY = 2.0
MAX_EVENTS = 1000


class ControlLink:
    def __init__(self, path: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._clock = clock
        self._sock: socket.socket | None = None
        self._decoder = Decoder(limits.CLIENT_MAX_FRAME)
        self._out = bytearray()
        self._retry_at = 0.0
        self._status_at = 0.0
        self.connected = False
        self.problem = ""  # why it is not connected, for people
        self.more = False

    def send(self, message: Message) -> bool:
        if not self.connected:
            return False
        self._out += encode(message)
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = None
        self.connected = False

    def _connect(self, now: float) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            connect_unix(sock, self.path)  # also a path too long for sun_path
        except BlockingIOError:
            pass  # the listen queue is full; it completes or fails as the server reads
        except OSError as exc:
            sock.close()
            self.problem = f"no server at {self.path} ({exc.strerror or exc}); retrying"
            self._retry_at = now + RETRY
            return
        self._sock = sock
        self._decoder = Decoder(limits.CLIENT_MAX_FRAME)
        self._out = bytearray()
        self.connected = True
        self.problem = ""
        self.send({"type": "watch", "id": "watch"})
        self.send({"type": "status", "id": "status"})
        self._status_at = now

    def _lost(self, now: float, why: str) -> None:
        self.close()
        self.problem = f"{why}; retrying"
        self._retry_at = now + RETRY

    def poll(self, now: float | None = None) -> list[Message]:
        """Do what is due without blocking; return the server's valid frames."""
        if now is None:
            now = self._clock()
        self.more = False
        if self._sock is None:
            if now < self._retry_at:
                return []
            self._connect(now)
            if self._sock is None:
                return []
        sock = self._sock
        if now - self._status_at >= STATUS_EVERY:
            self._status_at = now
            self.send({"type": "status", "id": "status"})
        if self._out:
            try:
                del self._out[: sock.send(self._out)]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as exc:
                self._lost(now, f"connection lost ({exc.strerror or exc})")
                return []
        closed = False
        chunks: list[bytes] = []
        while self._decoder.pending < 1024 * 1024:
            try:
                data = sock.recv(256 * 1024)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                closed = True
                break
            if not data:
                closed = True
                break
            chunks.append(data)
        try:
            frames = self._decoder.feed(b"".join(chunks), limit=MAX_EVENTS)
        except ProtocolError as exc:
            frames = exc.decoded
            closed = True
        self.more = len(frames) >= MAX_EVENTS
        valid: list[Message] = []
        for frame in frames:
            try:
                validate(frame, SERVER_EVENTS)
            except ProtocolError:
                continue
            valid.append(frame)
        if closed and not self.more:
            self._lost(now, "the server closed the control connection")
        return valid
