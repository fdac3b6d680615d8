"""A blocking client for the control socket (contract §8, §18), for the ``chatd`` commands.

It may block (with timeouts): it runs in a short-lived command, never in the
server loop. Every failure is a :class:`ControlError` whose message is one line
fit for an operator, so the command line can print it and exit 1.
"""

from __future__ import annotations

import itertools
import socket
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from chatd.unix_path import unix_address
from protocol import Decoder, Message, ProtocolError, encode
from protocol.limits import CLIENT_MAX_FRAME

DEFAULT_TIMEOUT = 10.0  # seconds to wait for a reply; a loaded server still answers


def connect_unix(sock: socket.socket, path: Path) -> None:
    """Connect to a Unix socket, also when its path is too long for ``sun_path``."""
    with unix_address(path) as address:
        sock.connect(address)


class ControlError(Exception):
    """A control request failed; ``code`` is the server's error code, if it sent one."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class NotRunning(ControlError):
    """Nothing listens on the control socket: no server is running there."""


class ControlClient:
    """One connection to a server's control socket."""

    def __init__(self, path: Path, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.path = path
        self.timeout: float | None = timeout
        self._decoder = Decoder(CLIENT_MAX_FRAME)
        self._ready: list[Message] = []
        self._ids = (f"c{n}" for n in itertools.count(1))
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self._sock.settimeout(timeout)
        try:
            connect_unix(self._sock, path)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            self._sock.close()
            why = "no such file" if isinstance(exc, FileNotFoundError) else "connection refused"
            raise NotRunning(f"no server running (control socket {path}: {why})") from None
        except OSError as exc:
            self._sock.close()
            raise ControlError(
                f"cannot connect to control socket {path}: {exc.strerror or exc}"
            ) from None

    def send(self, message: Message) -> str:
        """Send a request with a fresh ``id``; return that id (its reply's ``ref``)."""
        ident = next(self._ids)
        try:
            self._sock.sendall(encode({**message, "id": ident}))
        except OSError as exc:
            raise ControlError(f"control socket {self.path}: cannot send: {exc}") from None
        return ident

    def receive(self) -> Message | None:
        """The next frame from the server, or None once it has closed the connection."""
        while not self._ready:
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                raise ControlError(
                    f"control socket {self.path}: no reply within {self.timeout or 0:g} s"
                ) from None
            except OSError as exc:
                raise ControlError(f"control socket {self.path}: {exc}") from None
            if not data:
                return None
            try:
                self._ready.extend(self._decoder.feed(data))
            except ProtocolError as exc:
                raise ControlError(f"control socket {self.path}: bad reply: {exc}") from None
        return self._ready.pop(0)

    def reply(self, ref: str) -> Message:
        """Wait for the reply to request ``ref``; a server ``error`` is a ControlError."""
        while True:
            message = self.receive()
            if message is None:
                raise ControlError(
                    f"control socket {self.path}: the server closed the connection"
                )
            answers = message.get("ref") == ref
            if message.get("type") == "error" and (answers or message.get("fatal")):
                code = message.get("code")
                raise ControlError(f"{code}: {message.get('message', '')}", code=code)
            if answers:
                return message

    def request(self, message: Message) -> Message:
        """Send one request and return its reply (``ok``, ``status``, ``accounts``,
        ``rooms``)."""
        return self.reply(self.send(message))

    def set_timeout(self, timeout: float | None) -> None:
        """Seconds :meth:`receive` waits for a frame (None: as long as it takes)."""
        self.timeout = timeout
        self._sock.settimeout(timeout)

    def events(self) -> Iterator[Message]:
        """Every frame the server sends from now on, waiting as long as it takes."""
        self.set_timeout(None)
        while (message := self.receive()) is not None:
            yield message

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
