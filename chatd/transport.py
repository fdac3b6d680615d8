"""Transports: the byte pipe under each connection, driven only by the loop.

The loop reads, writes and closes every connection through these few calls,
so every kind of connection shares one :class:`~chatd.connection.Connection`,
one out-buffer and one backpressure check; the chat core never sees a
transport. :class:`SocketTransport` serves TCP and Unix sockets. Encrypting or
framing transports (TLS over ``ssl.MemoryBIO``/``SSLObject`` as asyncio's
sslproto does it; WebSocket with h11 + wsproto) wrap another transport for
their raw bytes, so they stack (WebSocket over TLS over a socket).

The rules the loop's turn depends on, for every transport:

- Nothing blocks, and each call makes at most one system call on the socket:
  the loop allows one read and one write per connection per turn.
- :meth:`~Transport.recv` returns the application bytes it could get (a view
  of the loop's buffer, or bytes of its own), ``b""`` if none are ready yet
  (would block; only handshake or control bytes came), ``None`` at the peer's
  orderly end; it raises :class:`OSError` when the connection is broken. It
  never holds decoded input back: the selector cannot report bytes that are
  already off the socket, so they would wait for the peer's next bytes. (A
  TLS transport therefore reads at most ``len(buf)`` minus the ciphertext it
  still holds: what that decrypts to fits in ``buf``.)
- :meth:`~Transport.send` takes a prefix of the concatenated ``buffers`` and
  returns its length (0 when nothing could go); it may be called with no
  buffers, to send what the transport holds itself.
- :attr:`~Transport.wants_write` says it holds bytes of its own (a TLS
  handshake, a WebSocket pong, ciphertext the kernel did not take): the loop
  then waits for the socket to be writable and calls ``send`` even while the
  connection has no output.
- :meth:`~Transport.shutdown_write` ends our sending side after everything
  taken so far (TLS sends ``close_notify`` first, WebSocket a close frame).
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Protocol

Chunk = bytes | memoryview


class Transport(Protocol):
    """What the loop needs of a connection's byte pipe (see the module rules)."""

    def fileno(self) -> int:
        """The descriptor the selector watches."""

    def recv(self, buf: memoryview) -> Chunk | None:
        """Application bytes, ``b""`` if none yet, ``None`` at EOF; OSError if broken."""

    def send(self, buffers: Sequence[Chunk]) -> int:
        """Bytes taken from the head of ``buffers``; OSError if broken."""

    @property
    def wants_write(self) -> bool:
        """Whether it holds bytes of its own to send (an attribute, not a
        call, for a plain socket: the loop asks after every send)."""

    def shutdown_write(self) -> None:
        """End our sending side after what was taken; OSError if broken."""

    def close(self) -> None:
        """Release the socket at once (again is harmless)."""


class SocketTransport:
    """A non-blocking stream socket (TCP or Unix) as it is: no bytes of its own."""

    __slots__ = ("sock",)

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def fileno(self) -> int:
        return self.sock.fileno()

    def recv(self, buf: memoryview) -> Chunk | None:
        try:
            count = self.sock.recv_into(buf)
        except (BlockingIOError, InterruptedError):
            return b""
        return buf[:count] if count else None

    def send(self, buffers: Sequence[Chunk]) -> int:
        try:
            if len(buffers) == 1:  # the common case: one shared blob, one send
                return self.sock.send(buffers[0])
            if buffers:
                return self.sock.sendmsg(buffers)
        except (BlockingIOError, InterruptedError):
            pass
        return 0

    wants_write = False

    def shutdown_write(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.sock.close()
