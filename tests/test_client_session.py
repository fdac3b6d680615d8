"""The client session as a state machine: scripted server frames, no sockets, time passed in."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatclient.events import (
    Acked,
    Closed,
    Connected,
    Done,
    Failed,
    LoggedIn,
    MessageAdded,
    Reconnecting,
    Rejected,
    RoomLeft,
    RoomUpdated,
)
from chatclient.session import BACKOFF_MAX, ClientSession
from protocol import Decoder, ProtocolError, encode
from protocol.limits import CLIENT_MAX_FRAME, LOGIN_MAX_FRAME

Message = dict[str, Any]


def summary(room: str, seq: int = 0, read: int = 0, **extra: Any) -> Message:
    return {"room": room, "kind": "public", "topic": "", "seq": seq, "oldest": min(seq, 1),
            "read": read, "role": "member", **extra}


def welcome(name: str = "alice", rooms: list[Message] | None = None, account: bool = True,
            token: str = "tok", heartbeat: float = 30) -> Message:
    return {"type": "welcome", "proto": 2, "name": name, "server": "chatd/test",
            "token": token, "max_frame": 65536, "max_text": 4000, "heartbeat": heartbeat,
            "account": account, "rooms": rooms if rooms is not None else [summary("lobby")]}


def msg(room: str, seq: int, sender: str = "bob", text: str | None = None,
        ident: str | None = None) -> Message:
    out: Message = {"type": "msg", "room": room, "seq": seq, "ts": 1000 + seq, "from": sender,
                    "text": text if text is not None else f"{room} {seq}"}
    if ident is not None:
        out["id"] = ident
    return out


class Harness:
    """A session plus the frames it sent, decoded."""

    def __init__(self, **kwargs: Any) -> None:
        ids = (f"id{n}" for n in itertools.count(1))
        kwargs.setdefault("password", "secret password")
        self.session = ClientSession("alice", rng=random.Random(1), new_id=ids.__next__,
                                     **kwargs)
        self.now = 0.0
        self.decoder = Decoder(CLIENT_MAX_FRAME)

    def connect(self) -> Message:
        """Connect; the hello it sent."""
        assert self.session.wants_connection(self.now)
        self.session.connection_started(self.now, "test:1")
        self.session.connection_made(self.now)
        (hello,) = self.sent()
        return hello

    def login(self, frame: Message | None = None) -> list[Any]:
        self.connect()
        self.feed(frame or welcome())
        return self.session.events()

    def feed(self, *frames: Message) -> None:
        self.session.receive_data(b"".join(encode(f) for f in frames), self.now)

    def sent(self) -> list[Message]:
        return self.decoder.feed(self.session.data_to_send())

    def lose(self) -> list[Any]:
        self.session.connection_lost(self.now, "test: connection lost")
        return self.session.events()

    def wait_retry(self) -> None:
        at = self.session.next_attempt_at()
        assert at is not None
        self.now = at
        assert self.session.wants_connection(self.now)


def test_first_hello_registers_and_later_ones_resume_with_the_token() -> None:
    h = Harness(register=True, code="joincode")
    hello = h.connect()
    assert hello == {"type": "hello", "proto": 2, "name": "alice", "agent": "chatclient",
                     "password": "secret password", "register": True, "code": "joincode"}
    h.feed(welcome(rooms=[summary("lobby", seq=7)], token="t1"))
    assert isinstance(h.session.events()[-1], LoggedIn)
    h.lose()
    h.wait_retry()
    hello = h.connect()
    assert "register" not in hello and hello["token"] == "t1"
    assert hello["resume"] == {"lobby": 7}


def test_say_is_acknowledged_by_its_echo_and_shown_once() -> None:
    h = Harness()
    h.login()
    ident = h.session.say("lobby", "  hi  ")
    assert h.sent() == [{"type": "say", "room": "lobby", "text": "hi", "id": ident}]
    h.feed(msg("lobby", 1, "alice", "hi", ident), msg("lobby", 1, "alice", "hi", ident))
    events = h.session.events()
    assert events[0] == Acked(ident, "lobby", 1)
    assert [type(e) for e in events] == [Acked, MessageAdded]
    assert isinstance(events[1], MessageAdded) and events[1].msg.mine and events[1].live
    assert h.session.outbox == []


def test_outbox_survives_reconnect_and_resent_original_acknowledges() -> None:
    h = Harness()
    h.login(welcome(rooms=[summary("lobby"), summary("dev")]))
    first = h.session.say("lobby", "one")
    second = h.session.say("dev", "two")
    h.sent()
    events = h.lose()
    assert [type(e) for e in events] == [Reconnecting]
    assert 0.5 <= events[0].delay <= 1.0
    third = h.session.say("dev", "three")  # typed while offline: queued
    assert h.sent() == []
    h.wait_retry()
    h.connect()
    # The server had accepted "one": its resume backlog brings it back.
    h.feed(welcome(rooms=[summary("dev"), summary("lobby", seq=1)]),
           msg("lobby", 1, "alice", "one", first))
    frames = h.sent()
    assert [f.get("id") for f in frames] == [first, second, third]  # the order typed
    h.feed(msg("lobby", 1, "alice", "one", first),  # the idempotent resend: the original
           msg("dev", 1, "alice", "two", second), msg("dev", 2, "alice", "three", third))
    events = h.session.events()
    added = [e.msg.text for e in events if isinstance(e, MessageAdded)]
    assert added == ["one", "two", "three"]
    assert [e.ident for e in events if isinstance(e, Acked)] == [first, second, third]
    assert h.session.outbox == []


def test_rooms_beyond_the_login_frame_are_resumed_by_join_since() -> None:
    names = [f"room{n:03d}-{'x' * 20}" for n in range(200)]
    h = Harness()
    h.login(welcome(rooms=[summary(n, seq=5) for n in names]))
    h.lose()
    h.wait_retry()
    hello = h.connect()
    assert len(encode(hello)) - 4 <= LOGIN_MAX_FRAME
    resumed = set(hello["resume"])
    assert 50 < len(resumed) < 200
    h.feed(welcome(rooms=[summary(n, seq=6) for n in names]))
    joins = [f for f in h.sent() if f["type"] == "join"]
    assert {j["room"] for j in joins} == set(names) - resumed
    assert all(j["since"] == 5 for j in joins)
    late = joins[0]["room"]
    h.session.events()
    # A live message before the join's reply is dropped: the backlog brings it.
    h.feed(msg(late, 6))
    assert h.session.events() == []
    joined = {"type": "joined", **summary(late, seq=6), "members": [], "ref": joins[0]["id"]}
    h.feed(joined, msg(late, 6))
    events = h.session.events()
    assert isinstance(events[0], RoomUpdated)
    assert [(e.room, e.msg.seq, e.live) for e in events if isinstance(e, MessageAdded)] == [
        (late, 6, False)]


def test_guest_rejoins_its_rooms_and_account_loses_rooms_gone() -> None:
    guest = Harness(password=None)
    guest.login(welcome(account=False, rooms=[summary("lobby"), summary("dev", seq=3)]))
    guest.lose()
    guest.wait_retry()
    guest.connect()
    guest.feed(welcome(account=False, rooms=[summary("lobby")]))
    assert [(f["type"], f["room"], f["since"]) for f in guest.sent()] == [("join", "dev", 3)]
    member = Harness()
    member.login(welcome(rooms=[summary("lobby"), summary("dev", seq=3)]))
    member.lose()
    member.wait_retry()
    member.connect()
    member.feed(welcome(rooms=[summary("lobby")]))
    events = member.session.events()
    assert RoomLeft("dev", "gone", None, None) in events
    assert member.sent() == [] and member.session.room("dev") is None


def test_refused_rejoin_leaves_the_room() -> None:
    h = Harness(password=None)
    h.login(welcome(account=False, rooms=[summary("lobby"), summary("dev")]))
    h.lose()
    h.wait_retry()
    h.connect()
    h.feed(welcome(account=False, rooms=[summary("lobby")]))
    (join,) = h.sent()
    h.session.events()
    h.feed({"type": "error", "code": "not_allowed", "message": "banned", "fatal": False,
            "ref": join["id"]})
    assert h.session.events() == [RoomLeft("dev", "not_allowed", None, "banned")]


def test_backoff_doubles_to_thirty_seconds_with_jitter() -> None:
    h = Harness()
    h.login()
    delays = []
    for _ in range(12):
        (event,) = [e for e in h.lose() if isinstance(e, Reconnecting)]
        delays.append(event.delay)
        h.wait_retry()
        h.session.connection_started(h.now, "test:1")
    ceilings = [min(BACKOFF_MAX, 0.5 * 2 ** (n + 1)) for n in range(12)]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True)), delays
    h.session.connection_made(h.now)
    h.feed(welcome())
    assert h.lose()[-1].delay <= 1.0  # a welcome resets the backoff


@pytest.mark.parametrize("code", ["auth_failed", "name_taken", "bad_name", "account_exists"])
def test_refusals_end_the_session_even_on_reconnect(code: str) -> None:
    h = Harness()
    h.login()
    h.lose()
    h.wait_retry()
    h.connect()
    h.feed({"type": "error", "code": code, "message": "no", "fatal": True})
    assert h.session.events()[-1] == Failed(code, f"{code}: no")
    assert h.session.should_close() and not h.session.wants_connection(1e9)


def test_server_full_passes_on_reconnect_but_ends_a_first_login() -> None:
    first = Harness()
    first.connect()
    first.feed({"type": "error", "code": "server_full", "message": "full", "fatal": True})
    assert isinstance(first.session.events()[-1], Failed)
    h = Harness()
    h.login()
    h.lose()
    h.wait_retry()
    h.connect()
    h.feed({"type": "error", "code": "server_full", "message": "full", "fatal": True,
            "retry_after_ms": 5000})
    event = h.session.events()[-1]
    assert isinstance(event, Reconnecting) and event.delay >= 5.0


@pytest.mark.parametrize("reason,ends", [("kicked", True), ("replaced", True),
                                         ("shutdown", False)])
def test_bye_from_the_server(reason: str, ends: bool) -> None:
    h = Harness()
    h.login()
    h.feed({"type": "bye", "reason": reason})
    event = h.session.events()[-1]
    assert isinstance(event, Failed if ends else Reconnecting)
    assert h.session.should_close()


def test_heartbeat_answers_pings_and_pings_a_silent_server() -> None:
    h = Harness()
    h.login(welcome(heartbeat=10))
    h.feed({"type": "ping", "t": [1, "x"]})
    assert h.sent() == [{"type": "pong", "t": [1, "x"]}]
    assert h.session.next_timer() == 10.0
    h.session.tick(9.9)
    assert h.sent() == []
    h.session.tick(10.0)
    assert h.sent() == [{"type": "ping", "t": "keepalive"}]
    h.session.tick(19.9)
    assert h.session.status == "ready"
    h.session.tick(20.0)
    assert isinstance(h.session.events()[-1], Reconnecting)


def test_handshake_timeout_and_user_close() -> None:
    h = Harness()
    h.connect()
    h.session.tick(10.0)
    assert isinstance(h.session.events()[-1], Failed)
    h = Harness()
    h.login()
    h.session.bye()
    assert h.sent() == [{"type": "bye"}]
    h.feed({"type": "bye", "reason": "quit"})
    assert h.session.events() == [Closed()] and h.session.status == "done"


def test_requests_offline_and_in_flight_get_one_outcome() -> None:
    h = Harness()
    ident = h.session.join("dev")
    assert h.session.events() == [Rejected(ident, "join", "offline",
                                           "not connected to the server")]
    h.login()
    topic = h.session.topic("lobby", "news")
    members = h.session.members("lobby")
    h.feed({"type": "ok", "ref": topic})
    assert h.session.events() == [Done(topic, "topic")]
    events = h.lose()
    assert [e for e in events if isinstance(e, Rejected)] == [
        Rejected(members, "members", "offline", "the connection was lost before the reply")]


def test_rate_limited_say_is_sent_again_after_the_wait() -> None:
    h = Harness()
    h.login()
    ident = h.session.say("lobby", "hi")
    later = h.session.say("lobby", "there")
    h.sent()
    h.feed({"type": "error", "code": "rate_limited", "message": "slow down", "fatal": False,
            "ref": ident, "retry_after_ms": 1500})
    h.feed({"type": "error", "code": "rate_limited", "message": "slow down", "fatal": False,
            "ref": later, "retry_after_ms": 1500})
    assert h.session.events() == []  # still pending, not rejected
    h.session.tick(1.0)
    assert [f["type"] for f in h.sent()] == []
    h.session.tick(1.5)
    assert [f["id"] for f in h.sent()] == [ident, later]


def test_unread_counts_others_messages_after_the_marker() -> None:
    h = Harness()
    h.login(welcome(rooms=[summary("lobby", seq=10, read=4)]))
    assert h.session.room("LOBBY") is h.session.rooms["lobby"]
    assert h.session.rooms["lobby"].unread == 6
    h.feed(msg("lobby", 11), msg("lobby", 12, "alice"), msg("lobby", 13))
    assert h.session.rooms["lobby"].unread == 8  # 5..13 less my own 12
    h.session.events()
    ident = h.session.mark("lobby")
    assert h.sent() == [{"type": "mark", "room": "lobby", "seq": 13, "id": ident}]
    assert h.session.rooms["lobby"].unread == 0
    assert h.session.mark("lobby") is None  # nothing left to mark
    h.feed({"type": "marked", "room": "lobby", "seq": 13, "ref": ident})


def test_mentions_and_values_checked_before_sending() -> None:
    h = Harness()
    h.login()
    h.feed(msg("lobby", 1, "bob", "hey @Alice, look"), msg("lobby", 2, "bob", "alicette"))
    added = [e.msg.mentions_me for e in h.session.events() if isinstance(e, MessageAdded)]
    assert added == [True, False]
    with pytest.raises(ProtocolError) as bad:
        h.session.say("lobby", "   ")
    assert bad.value.code == "empty_message"
    with pytest.raises(ProtocolError) as bad:
        h.session.join("no spaces")
    assert bad.value.code == "bad_room"
    assert h.sent() == []


def test_duplicate_pm_after_sender_resend_is_dropped() -> None:
    h = Harness()
    h.login()
    pm = {"type": "pm", "from": "bob", "to": "alice", "ts": 1, "text": "psst", "id": "p1"}
    h.feed(pm, pm)
    assert len(h.session.events()) == 1


def test_garbage_frames_are_ignored_and_a_bad_frame_reconnects() -> None:
    h = Harness()
    h.login()
    h.feed({"type": "msg", "room": "lobby", "seq": "one"}, {"type": "future_thing"},
           msg("lobby", 1))
    assert [type(e) for e in h.session.events()] == [MessageAdded]
    h.session.receive_data(b"\x00\x00\x00\x02{]", 0.0)
    assert isinstance(h.session.events()[-1], Reconnecting)


# --- properties ---------------------------------------------------------------

def _stream() -> list[Message]:
    frames: list[Message] = [welcome(rooms=[summary("lobby", seq=2), summary("dev")])]
    frames += [msg("lobby", 1), msg("lobby", 2)]  # a resume backlog
    frames += [msg("dev", 1, "alice", "mine", "id9"), {"type": "ping", "t": 5},
               msg("lobby", 3), {"type": "join", "room": "dev", "name": "bob", "ts": 1},
               {"type": "topic", "room": "dev", "topic": "t", "by": "bob", "ts": 2}]
    return frames


@given(st.lists(st.integers(min_value=1, max_value=40), max_size=30))
@settings(max_examples=200, deadline=None)
def test_any_chunking_gives_the_same_events(cuts: list[int]) -> None:
    data = b"".join(encode(f) for f in _stream())
    whole = Harness()
    whole.connect()
    whole.session.receive_data(data, 0.0)
    chunked = Harness()
    chunked.connect()
    pos = 0
    for cut in cuts:
        chunked.session.receive_data(data[pos:pos + cut], 0.0)
        pos += cut
    if pos < len(data):
        chunked.session.receive_data(data[pos:], 0.0)
    assert chunked.session.events() == whole.session.events()
    assert chunked.sent() == whole.sent()


@given(st.lists(st.tuples(st.sampled_from(["lobby", "dev"]), st.integers(1, 30)),
                max_size=80),
       st.lists(st.integers(0, 2), min_size=1, max_size=10))
@settings(max_examples=200, deadline=None)
def test_each_room_and_seq_is_shown_once(script: list[tuple[str, int]],
                                         losses: list[int]) -> None:
    """Whatever the server repeats (resume overlaps, resent originals) and
    however often the connection drops, each (room, seq) is shown at most once,
    and every one the server sent in order is shown."""
    h = Harness()
    h.login(welcome(rooms=[summary("lobby"), summary("dev")]))
    shown: list[tuple[str, int]] = []
    high = {"lobby": 0, "dev": 0}
    expected: set[tuple[str, int]] = set()
    for step, (room, seq) in enumerate(script):
        if losses[step % len(losses)] == 0 and step % 7 == 0:
            h.lose()
            h.wait_retry()
            h.connect()
            h.feed(welcome(rooms=[summary("lobby", seq=high["lobby"]),
                                  summary("dev", seq=high["dev"])]))
        h.feed(msg(room, seq))
        if seq > high[room]:
            high[room] = seq
            expected.add((room, seq))
        shown += [(e.room, e.msg.seq) for e in h.session.events()
                  if isinstance(e, MessageAdded)]
    assert len(shown) == len(set(shown))
    assert set(shown) == expected


def test_connected_event_precedes_hello() -> None:
    h = Harness()
    h.session.connection_started(0.0, "x:1")
    h.session.connection_made(0.0)
    assert [type(e).__name__ for e in h.session.events()] == ["Connecting", type(
        Connected()).__name__]
