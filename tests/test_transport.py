"""SocketTransport: the loop's one recv and one send, EOF, reset, half-close."""

from __future__ import annotations

import selectors
import socket
import struct
from collections.abc import Iterator

import pytest

from chatd.transport import SocketTransport, Transport


@pytest.fixture
def pair() -> Iterator[tuple[Transport, socket.socket]]:
    """Our transport on one end of a Unix socketpair, a plain peer on the other."""
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    peer.settimeout(5.0)
    transport: Transport = SocketTransport(ours)
    yield transport, peer
    transport.close()
    peer.close()


def _wait_readable(transport: Transport) -> None:
    with selectors.DefaultSelector() as sel:
        sel.register(transport, selectors.EVENT_READ)  # the loop registers transports
        assert sel.select(5.0), "no input within 5 s"


def test_recv_lends_a_view_of_the_callers_buffer(pair: tuple[Transport, socket.socket]) -> None:
    transport, peer = pair
    buf = memoryview(bytearray(64))
    peer.sendall(b"hello")
    _wait_readable(transport)
    data = transport.recv(buf)
    assert isinstance(data, memoryview) and data.obj is buf.obj
    assert bytes(data) == b"hello"


def test_recv_takes_at_most_the_buffer(pair: tuple[Transport, socket.socket]) -> None:
    transport, peer = pair
    peer.sendall(b"abcdefgh")
    _wait_readable(transport)
    assert bytes(transport.recv(memoryview(bytearray(3))) or b"?") == b"abc"
    assert bytes(transport.recv(memoryview(bytearray(64))) or b"?") == b"defgh"


def test_recv_with_nothing_ready_is_empty_not_eof(pair: tuple[Transport, socket.socket]) -> None:
    transport, _ = pair
    assert transport.recv(memoryview(bytearray(16))) == b""


def test_recv_at_orderly_eof_is_none(pair: tuple[Transport, socket.socket]) -> None:
    transport, peer = pair
    peer.sendall(b"last")
    peer.shutdown(socket.SHUT_WR)
    buf = memoryview(bytearray(64))
    _wait_readable(transport)
    assert bytes(transport.recv(buf) or b"?") == b"last"
    assert transport.recv(buf) is None


def test_recv_after_a_reset_raises_oserror() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        peer = socket.create_connection(listener.getsockname(), timeout=5.0)
        ours, _ = listener.accept()
    ours.setblocking(False)
    transport = SocketTransport(ours)
    try:
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peer.close()  # linger 0: an RST, not a FIN
        _wait_readable(transport)
        with pytest.raises(OSError):
            transport.recv(memoryview(bytearray(16)))
    finally:
        transport.close()


def test_send_to_a_closed_peer_raises_oserror(pair: tuple[Transport, socket.socket]) -> None:
    transport, peer = pair
    peer.close()
    with pytest.raises(OSError):
        for _ in range(3):  # the first send may still be taken before the error shows
            transport.send([b"x" * 1024])


def test_send_writes_the_buffers_in_order(pair: tuple[Transport, socket.socket]) -> None:
    transport, peer = pair
    head = memoryview(b"0123456789")[4:]  # an out-buffer's partly sent head
    assert transport.send([head, b"ab", b"cd"]) == 10
    assert transport.send([b"one"]) == 3
    assert peer.recv(64) == b"456789abcdone"


def test_partial_send_takes_a_prefix_and_reports_its_length(
    pair: tuple[Transport, socket.socket],
) -> None:
    transport, peer = pair
    chunks = [bytes([65 + i]) * 100_000 for i in range(8)]  # far more than the socket buffer
    stream = b"".join(chunks)
    taken = transport.send(chunks)
    assert 0 < taken < len(stream)
    assert transport.send(chunks) == 0  # full: would block, nothing taken
    got = bytearray()
    while len(got) < taken:
        got += peer.recv(taken - len(got))
    assert got == stream[:taken]


def test_send_of_nothing_sends_nothing(pair: tuple[Transport, socket.socket]) -> None:
    transport, peer = pair
    assert not transport.wants_write  # a socket holds no bytes of its own
    assert transport.send(()) == 0
    peer.setblocking(False)
    with pytest.raises(BlockingIOError):
        peer.recv(1)


def test_shutdown_write_ends_our_side_only(pair: tuple[Transport, socket.socket]) -> None:
    transport, peer = pair
    assert transport.send([b"bye"]) == 3
    transport.shutdown_write()
    assert peer.recv(64) == b"bye"
    assert peer.recv(64) == b""  # the peer sees our FIN ...
    peer.sendall(b"late")  # ... and can still send: we read until it is done
    _wait_readable(transport)
    assert bytes(transport.recv(memoryview(bytearray(64))) or b"?") == b"late"


def test_close_releases_the_socket_and_may_repeat(pair: tuple[Transport, socket.socket]) -> None:
    transport, peer = pair
    assert transport.fileno() >= 0
    transport.close()
    transport.close()
    assert transport.fileno() == -1
    assert peer.recv(64) == b""
