"""The client session against a scripted fake server: the cases a real chatd
will not produce on demand (malformed frames, rate limiting, a bad frame, a
server that never answers). The fake is a listening socket in the test; the
session is polled with deadlines, never slept on.
"""

from __future__ import annotations

import random
import select
import socket
import sys
import time
from collections.abc import Callable, Iterator

import pytest

import chatgui.session as session_module
from chatgui.session import (
    BACKOFF_MAX,
    BACKOFF_MIN,
    CONNECTED,
    RECONNECTING,
    Event,
    Session,
    backoff_delay,
)
from protocol.framing import Decoder, Message, encode

WAIT = 5.0


class Fake:
    """One accepted connection of the fake server, with blocking helpers."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.conn.settimeout(WAIT)
        self.decoder = Decoder(1 << 20)
        self.inbox: list[Message] = []

    def recv(self, session: Session | None = None) -> Message:
        """The next frame from the client, polling ``session`` meanwhile."""
        deadline = time.monotonic() + WAIT
        while not self.inbox:
            assert time.monotonic() < deadline, "no frame from the client"
            if session is not None:
                session.poll()
            ready, _, _ = select.select([self.conn], [], [], 0.02)
            if ready:
                data = self.conn.recv(65536)
                assert data, "client closed"
                self.inbox += self.decoder.feed(data)
        return self.inbox.pop(0)

    def send(self, *messages: Message) -> None:
        self.conn.sendall(b"".join(encode(m) for m in messages))


def welcome(name: str = "alice", seq: int = 0, **extra: object) -> Message:
    return {"type": "welcome", "proto": 1, "name": name, "server": "fake/0", "seq": seq,
            "oldest": 1 if seq else 0, "users": [name], "max_frame": 65536, "max_text": 4000,
            "heartbeat": 30, "token": "t" * 32, **extra}


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        sock.settimeout(WAIT)
        yield sock


def accept(listener: socket.socket, session: Session, events: list[Event]) -> Fake:
    """Poll the session until the fake server has accepted its connection."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        events += session.poll()
        ready, _, _ = select.select([listener], [], [], 0.02)
        if ready:
            conn, _ = listener.accept()
            return Fake(conn)
    raise AssertionError("the session did not connect")


def until(session: Session, events: list[Event], cond: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not cond():
        assert time.monotonic() < deadline, f"not reached; events {events}"
        sock = session.socket
        select.select([sock] if sock is not None else [], [], [], 0.02)
        events += session.poll()


def login(listener: socket.socket, **kwargs: object) -> tuple[Session, Fake, list[Event]]:
    port = listener.getsockname()[1]
    session = Session("alice", "127.0.0.1", port, **kwargs)  # type: ignore[arg-type]
    events: list[Event] = []
    fake = accept(listener, session, events)
    hello = fake.recv(session)
    assert hello["type"] == "hello" and hello["name"] == "alice" and hello["proto"] == 1
    assert "since" not in hello and "token" not in hello  # a first login
    fake.send(welcome())
    until(session, events, lambda: session.status == CONNECTED)
    return session, fake, events


def test_malformed_and_unknown_frames_are_ignored(listener):
    session, fake, events = login(listener)
    fake.send(
        {"type": "sparkle", "glitter": True},  # a newer server's frame type
        {"type": "msg", "seq": "7", "ts": 1, "from": "bob", "text": "bad seq"},
        {"type": "join"},  # no name
        {"type": "users", "users": "not a list"},
        {"type": "msg", "seq": 1, "ts": 1, "from": "bob", "text": "fine", "extra": [1]},
    )
    until(session, events, lambda: any(e.kind == "message" for e in events))
    messages = [e.msg["text"] for e in events if e.kind == "message"]
    assert messages == ["fine"]
    assert session.status == CONNECTED and "bob" not in session.users


def test_ping_gets_pong_with_the_same_t(listener):
    session, fake, _events = login(listener)
    fake.send({"type": "ping", "t": {"n": [1, 2]}})
    assert fake.recv(session) == {"type": "pong", "t": {"n": [1, 2]}}


def test_rate_limited_message_is_sent_again_after_the_wait(listener):
    session, fake, events = login(listener)
    ident = session.say("hello")
    until(session, events, lambda: not session.wants_write)
    first = fake.recv(session)
    assert first == {"type": "say", "text": "hello", "id": ident}
    fake.send({"type": "error", "code": "rate_limited", "message": "slow down",
               "fatal": False, "ref": ident, "retry_after_ms": 50})
    again = fake.recv(session)  # the session resends on its own once the wait is over
    assert again == first
    fake.send({"type": "msg", "seq": 1, "ts": 1, "from": "alice", "text": "hello", "id": ident})
    until(session, events, lambda: not session.outbox)
    assert [e.ident for e in events if e.kind == "acked"] == [ident]


def test_bad_frame_from_server_reconnects_and_resumes(listener):
    session, fake, events = login(listener)
    fake.send({"type": "msg", "seq": 5, "ts": 1, "from": "bob", "text": "five"})
    fake.conn.sendall(b"\x00\x00\x00\x02{]")  # not JSON: the stream cannot be trusted
    until(session, events, lambda: session.status == RECONNECTING and session.retry_in() > 0)
    ident = session.say("queued while away")
    second = accept(listener, session, events)
    hello = second.recv(session)
    assert hello["since"] == 5 and hello["token"] == "t" * 32
    second.send(welcome(seq=5))
    assert second.recv(session) == {"type": "say", "text": "queued while away", "id": ident}


def test_refusal_on_first_login_is_final(listener):
    port = listener.getsockname()[1]
    session = Session("alice", "127.0.0.1", port)
    events: list[Event] = []
    fake = accept(listener, session, events)
    fake.recv(session)
    fake.send({"type": "error", "code": "server_full", "message": "full", "fatal": True})
    until(session, events, lambda: session.finished)
    assert [(e.kind, e.code) for e in events if e.kind == "failed"] == [("failed", "server_full")]


def test_kicked_stops_reconnecting(listener):
    session, fake, events = login(listener)
    fake.send({"type": "bye", "reason": "kicked", "message": "behave"})
    until(session, events, lambda: session.finished)
    failed = [e for e in events if e.kind == "failed"]
    assert failed[0].code == "kicked" and "behave" in failed[0].detail


def test_silent_server_at_login_times_out(listener):
    port = listener.getsockname()[1]
    now = [0.0]
    session = Session("alice", "127.0.0.1", port, clock=lambda: now[0])
    events: list[Event] = []
    fake = accept(listener, session, events)
    fake.recv(session)  # hello, never answered
    now[0] += 11.0
    until(session, events, lambda: session.finished)
    assert "did not answer" in next(e for e in events if e.kind == "failed").detail


def test_backoff_grows_from_half_a_second_to_thirty_with_jitter():
    rng = random.Random(7)
    delays = [[backoff_delay(n, rng) for _ in range(50)] for n in range(12)]
    assert all(BACKOFF_MIN <= d <= BACKOFF_MAX for row in delays for d in row)
    assert max(delays[0]) <= 2 * BACKOFF_MIN  # the first retry comes soon, yet spread out
    assert len({round(d, 6) for d in delays[0]}) > 40
    assert min(delays[11]) >= BACKOFF_MAX / 2  # capped, and still spread out
    assert len({round(d, 6) for d in delays[11]}) > 40
    assert [max(row) for row in delays[:6]] == sorted(max(row) for row in delays[:6])


def test_name_taken_on_reconnect_stops_the_session(listener):
    session, fake, events = login(listener)
    fake.conn.close()  # the connection is lost
    second = accept(listener, session, events)
    hello = second.recv(session)
    assert hello["token"] == "t" * 32
    second.send({"type": "error", "code": "name_taken", "message": "taken", "fatal": True})
    until(session, events, lambda: session.finished)
    assert [e.code for e in events if e.kind == "failed"] == ["name_taken"]


def test_server_full_on_reconnect_is_retried_with_the_outbox(listener):
    session, fake, events = login(listener)
    fake.conn.close()  # the connection is lost
    second = accept(listener, session, events)
    second.recv(session)  # hello
    ident = session.say("still queued")
    second.send({"type": "error", "code": "server_full", "message": "full", "fatal": True})
    until(session, events, lambda: session.status == RECONNECTING and session.retry_in() > 0)
    assert not session.finished and not [e for e in events if e.kind == "failed"]
    third = accept(listener, session, events)
    assert third.recv(session)["type"] == "hello"
    third.send(welcome())
    assert third.recv(session) == {"type": "say", "text": "still queued", "id": ident}


def test_private_message_resent_after_a_reconnect_is_shown_once(listener):
    session, fake, events = login(listener)
    pm = {"type": "pm", "from": "Bob", "to": "alice", "ts": 1, "text": "psst", "id": "b1"}
    fake.send(pm, {**pm, "from": "BOB"}, {**pm, "id": "b2", "text": "again"},
              {**pm, "from": "carol"})  # the same id from someone else is another message
    until(session, events, lambda: sum(e.kind == "pm" for e in events) >= 3)
    fake.send({"type": "ping", "t": "barrier"})
    assert fake.recv(session) == {"type": "pong", "t": "barrier"}
    shown = [(e.msg["from"], e.msg["text"]) for e in events if e.kind == "pm"]
    assert shown == [("Bob", "psst"), ("Bob", "again"), ("carol", "psst")]


def test_a_flood_drained_over_many_polls_keeps_the_connection_alive(listener):
    now = [0.0]
    session, fake, events = login(listener, clock=lambda: now[0], max_events=1)
    fake.send(*({"type": "msg", "seq": i, "ts": 1, "from": "bob", "text": f"m{i}"}
                for i in range(1, 6)))
    until(session, events, lambda: any(e.kind == "message" for e in events))
    for _ in range(4):  # the rest is read already; each poll hands over one message
        now[0] += 61.0  # two heartbeats: a poll with nothing to hand over would give up
        events += session.poll()
        assert session.status == CONNECTED
    assert [e.msg["text"] for e in events if e.kind == "message"] == [f"m{i}" for i in range(1, 6)]


def test_message_typed_before_a_smaller_max_frame_is_refused_not_sent(listener):
    port = listener.getsockname()[1]
    session = Session("alice", "127.0.0.1", port)
    events: list[Event] = []
    fake = accept(listener, session, events)
    assert fake.recv(session)["type"] == "hello"
    big = session.say("x" * 2000)  # fits the default frame limit, not this server's
    small = session.say("fits")
    fake.send(welcome(max_frame=1024))
    until(session, events, lambda: session.status == CONNECTED)
    assert fake.recv(session) == {"type": "say", "text": "fits", "id": small}
    refused = [e for e in events if e.kind == "error"]
    assert [(e.ident, e.code) for e in refused] == [(big, "text_too_long")]
    assert [p.ident for p in session.outbox] == [small] and session.status == CONNECTED


def test_a_host_name_is_resolved_without_blocking_and_connects(listener):
    port = listener.getsockname()[1]
    session = Session("alice", "localhost", port)  # may try ::1 first: refused, then 127.0.0.1
    events: list[Event] = []
    fake = accept(listener, session, events)
    assert fake.recv(session)["type"] == "hello"
    assert any(e.detail == "looking up localhost" for e in events)


def test_a_resolver_that_hangs_is_given_up_and_reaped(monkeypatch):
    monkeypatch.setattr(session_module, "RESOLVER",
                        [sys.executable, "-c", "import time; time.sleep(60)"])
    now = [0.0]
    session = Session("alice", "slow.example", 65432, clock=lambda: now[0])
    assert [e.status for e in session.poll()] == ["connecting"]  # returned, not waiting
    child = session._resolver
    assert child is not None and child.poll() is None and not session.finished
    now[0] += session_module.CONNECT_TIMEOUT
    failed = [e for e in session.poll() if e.kind == "failed"]
    assert failed[0].code == "unreachable" and "no answer within" in failed[0].detail
    assert child.returncode is not None and session._resolver is None  # killed and reaped


def test_closing_while_resolving_stops_the_resolver(monkeypatch):
    monkeypatch.setattr(session_module, "RESOLVER",
                        [sys.executable, "-c", "import time; time.sleep(60)"])
    session = Session("alice", "slow.example", 65432)
    session.poll()
    child = session._resolver
    assert child is not None
    session.close()
    assert session.finished and child.returncode is not None
