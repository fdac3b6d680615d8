"""Load generator for the rooms workload: many small version 2 rooms at once.

The one-room fan-out measures the server's cost per recipient; a server of
many small rooms pays more per message (one ``say`` decoded, one ``msg``
encoded and stored for every ten deliveries). Each worker logs in its share of
the clients as version 2 guests, takes each out of the rooms the server put it
in at login (``welcome.rooms``: else every guest would share that room, and
every login would tell all the others) and into its own room, then runs the
same fan-out as the one room (:func:`~chatd.bench_load.run_fanout`).

Logins are pipelined as in the idle workload: at most ``login_window`` clients
per worker between connect and ``joined``; setup frames are decoded (a
refusal must be seen), the measured window only counts frames.
"""

from __future__ import annotations

import selectors
import socket
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection

from chatd.bench_load import (
    RECV_SIZE,
    SETUP_TIMEOUT,
    RoomClient,
    barrier,
    hello,
    run_fanout,
    start_together,
    work,
)
from chatd.bench_server import BenchError
from protocol.framing import Decoder, encode
from protocol.limits import CLIENT_MAX_FRAME, PROTO_V2


@dataclass(frozen=True)
class RoomsSpec:
    """One worker's share of the clients."""

    host: str
    port: int
    names: list[str]
    rooms: list[str]  # the room of each client
    senders: list[bool]
    size: int  # text length
    window: int  # most unacknowledged messages per sender
    login_window: int  # most clients between connect and `joined`


class _Entering:
    """Clients on their way into their rooms: welcome, part, join, joined."""

    def __init__(self) -> None:
        self.sel = selectors.DefaultSelector()
        self.rooms: dict[RoomClient, str] = {}

    def add(self, client: RoomClient, room: str) -> None:
        self.rooms[client] = room
        self.sel.register(client.sock, selectors.EVENT_READ, client)

    def pump(self, timeout: float) -> None:
        for key, _ in self.sel.select(timeout):
            client: RoomClient = key.data
            data = client.sock.recv(RECV_SIZE)
            if not data:
                raise BenchError(f"{client.name}: server closed the connection while joining")
            assert client.decoder is not None
            for message in client.decoder.feed(data):
                if self._step(client, message):
                    break

    def _step(self, client: RoomClient, message: dict[str, object]) -> bool:
        """Act on one setup frame; True once the client is in its room."""
        kind = message.get("type")
        room = self.rooms[client]
        if kind == "welcome":
            rooms = message.get("rooms")
            if not isinstance(rooms, list):
                raise BenchError(f"{client.name}: welcome without rooms: not a version 2 server?")
            frames = [encode({"type": "part", "room": r["room"]}) for r in rooms]
            client.sock.sendall(b"".join(frames) + encode({"type": "join", "room": room}))
        elif kind == "joined" and message.get("room") == room:
            self.sel.unregister(client.sock)
            del self.rooms[client]
            return True
        elif kind in ("error", "bye"):
            raise BenchError(f"{client.name}: {kind} {message.get('code') or message.get('reason')}"
                             f": {message.get('message', '')} (entering room {room})")
        return False

    def until(self, most: int) -> None:
        deadline = time.monotonic() + SETUP_TIMEOUT
        while len(self.rooms) > most:
            if time.monotonic() > deadline:
                raise BenchError("timed out logging in and joining rooms")
            self.pump(1.0)


def _enter(spec: RoomsSpec, clients: list[RoomClient]) -> None:
    """Log every client in and into its room, ``login_window`` at a time."""
    entering = _Entering()
    say_frames: dict[str, bytes] = {}
    try:
        for name, room, sender in zip(spec.names, spec.rooms, spec.senders, strict=True):
            entering.until(spec.login_window - 1)
            sock = socket.create_connection((spec.host, spec.port), timeout=SETUP_TIMEOUT)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(hello(name, PROTO_V2))
            sock.setblocking(False)
            say = b""
            if sender:
                say = say_frames.setdefault(
                    room, encode({"type": "say", "room": room, "text": "x" * spec.size}))
            client = RoomClient(sock, name, 0 if sender else -1, False,
                                Decoder(CLIENT_MAX_FRAME), say=say)
            clients.append(client)
            entering.add(client, room)
        entering.until(0)
    finally:
        entering.sel.close()


def rooms_worker(pipe: Connection, spec: RoomsSpec) -> None:
    """Enter the rooms, barrier, run the fan-out, report; steered by the parent."""
    clients: list[RoomClient] = []

    def body() -> None:
        _enter(spec, clients)
        times = start_together(pipe, lambda: barrier(clients))
        pipe.send(("done", run_fanout(spec.window, clients, times)))

    try:
        work(pipe, body)
    finally:
        for client in clients:
            client.sock.close()
