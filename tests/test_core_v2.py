"""The pure core with version 2 sessions: per-channel staging, presence
batched across turns, and a refused commit taking back every change of the
turn (no sockets: the harness of test_core_turns drives it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chatd.connection import Connection
from tests.test_core_turns import Harness

Message = dict[str, Any]


class Lazy(Harness):
    """A harness whose turns do NOT flush presence: the test says when."""

    def end(self) -> None:
        self.core.hashed(self.hasher.results())
        self.core.end_turn()
        self.core.closing = []

    def login2(self, name: str) -> Connection:
        self.turn()
        conn = self.connect()
        self.send(conn, {"type": "hello", "proto": 2, "name": name})
        self.end()
        return conn

    def do(self, conn: Connection, *messages: Message) -> None:
        self.turn()
        self.send(conn, *messages)
        self.end()


@pytest.fixture
def h(tmp_path: Path) -> Lazy:
    return Lazy(tmp_path)


def kinds(frames: list[Message]) -> list[tuple[str, Any]]:
    return [(f["type"], f.get("name") or f.get("seq") or f.get("room")) for f in frames]


def test_presence_waits_for_the_flush_then_reaches_everyone_once(h: Lazy) -> None:
    alice = h.login2("alice")
    assert h.frames(alice)[0]["type"] == "welcome"
    bob = h.login2("bob")
    assert [f["type"] for f in h.frames(bob)] == ["welcome"]
    assert h.frames(alice) == []  # bob's join and presence wait
    assert h.core.presence_waiting()
    given = h.core.flush_presence()
    assert given == [alice]
    assert kinds(h.frames(alice)) == [("join", "bob"), ("presence", "bob")]
    assert not h.core.presence_waiting()


def test_one_joined_blob_is_shared_by_every_waiting_member(h: Lazy) -> None:
    users = [h.login2(f"u{i}") for i in range(4)]
    for conn in users:
        h.frames(conn)
    h.login2("late")
    h.core.flush_presence()
    heads = [conn.out[0] for conn in users if conn.out]
    assert len(heads) == 4 and all(head is heads[0] for head in heads)


def test_a_reply_takes_the_waiting_presence_along_first(h: Lazy) -> None:
    alice = h.login2("alice")
    h.frames(alice)
    h.login2("bob")
    h.do(alice, {"type": "ping", "t": 1})
    assert kinds(h.frames(alice)) == [("join", "bob"), ("presence", "bob"), ("pong", None)]
    h.core.flush_presence()
    assert h.frames(alice) == []  # nothing twice


def test_a_message_takes_everyones_presence_along_in_order(h: Lazy) -> None:
    alice, bob = h.login2("alice"), h.login2("bob")
    h.core.flush_presence()
    h.frames(alice)
    h.frames(bob)
    h.login2("carol")
    h.do(alice, {"type": "say", "room": "lobby", "text": "hi"})
    assert kinds(h.frames(bob)) == [("join", "carol"), ("presence", "carol"), ("msg", 1)]
    assert not h.core.presence_waiting()


def test_a_member_who_came_later_gets_no_earlier_presence(h: Lazy) -> None:
    alice = h.login2("alice")
    h.frames(alice)
    h.login2("bob")
    carol = h.login2("carol")
    assert [f["type"] for f in h.frames(carol)] == ["welcome"]
    h.core.flush_presence()
    assert h.frames(carol) == []
    assert kinds(h.frames(alice)) == [("join", "bob"), ("presence", "bob"),
                                      ("join", "carol"), ("presence", "carol")]


def test_presence_merges_by_number_across_rooms(h: Lazy) -> None:
    alice, bob = h.login2("alice"), h.login2("bob")
    h.do(alice, {"type": "join", "room": "dev"})
    h.do(bob, {"type": "join", "room": "dev"})
    h.core.flush_presence()
    h.frames(alice)
    h.frames(bob)
    h.do(bob, {"type": "bye"})  # bob shares two rooms with alice: one presence
    h.core.flush_presence()
    got = h.frames(alice)
    assert [(f["type"], f.get("reason")) for f in got] == [("presence", "quit")]


def test_three_rooms_cost_three_joins_not_one_per_member(h: Lazy) -> None:
    conns = [h.login2(f"m{i}") for i in range(9)]
    for i, conn in enumerate(conns):
        h.do(conn, {"type": "join", "room": f"r{i % 3}"}, {"type": "part", "room": "lobby"})
    h.core.flush_presence()
    for conn in conns:
        h.frames(conn)
    h.turn()
    for i, conn in enumerate(conns[:3]):  # one talker in each room
        h.send(conn, {"type": "say", "room": f"r{i}", "text": f"t{i}"},
               {"type": "say", "room": f"r{i}", "text": f"u{i}"})
    h.end()
    for i in range(3):
        listeners = [conns[i + 3], conns[i + 6]]
        heads = [conn.out[0] for conn in listeners if conn.out]
        assert len(heads) == 2 and heads[0] is heads[1]  # one join per room, shared
        for conn in listeners:
            assert [f["text"] for f in h.frames(conn)] == [f"t{i}", f"u{i}"]


def test_a_refused_commit_takes_back_every_change_of_the_turn(h: Lazy) -> None:
    alice, bob = h.login2("alice"), h.login2("bob")
    h.do(alice, {"type": "join", "room": "dev"})
    h.do(bob, {"type": "join", "room": "dev"})
    h.do(alice, {"type": "say", "room": "dev", "text": "one"})
    h.core.flush_presence()
    h.frames(alice)
    h.frames(bob)
    h.history.failing = True
    h.turn()
    h.send(alice, {"type": "topic", "room": "dev", "topic": "new", "id": "t"},
           {"type": "join", "room": "fresh", "id": "j"},
           {"type": "mark", "room": "dev", "seq": 1, "id": "m"},
           {"type": "say", "room": "dev", "text": "two", "id": "s"})
    h.send(bob, {"type": "part", "room": "dev", "id": "p"})
    h.end()
    h.history.failing = False
    errors = [(f["type"], f.get("code"), f.get("ref")) for f in h.frames(alice)]
    assert errors == [("error", "unavailable", ref) for ref in ("t", "j", "m", "s")]
    assert [(f["type"], f.get("ref")) for f in h.frames(bob)] == [("error", "p")]
    room = h.core.rooms["dev"]
    assert room.topic == "" and room.seq == 1 and "fresh" not in h.core.rooms
    assert set(room.members) == {"alice", "bob"}
    assert h.core.people["alice"].markers.get("dev", 0) == 0
    # The state is as before: the same requests now succeed.
    h.do(alice, {"type": "say", "room": "dev", "text": "two", "id": "s"})
    assert [(f["type"], f.get("seq")) for f in h.frames(bob)] == [("msg", 2)]


def test_requests_after_a_password_change_wait_for_its_answer(h: Lazy) -> None:
    control = h.connect(kind=1)
    h.do(control, {"type": "account_add", "name": "ann", "password": "old password", "id": "a"})
    assert [(f["type"], f.get("ref")) for f in h.frames(control)] == [("ok", "a")]
    h.turn()
    ann = h.connect()
    h.send(ann, {"type": "hello", "proto": 2, "name": "ann", "password": "old password"})
    h.end()
    assert h.frames(ann)[0]["type"] == "welcome"
    h.do(ann, {"type": "password", "old": "old password", "new": "new password", "id": "p"},
         {"type": "say", "room": "lobby", "text": "after", "id": "s"},
         {"type": "ping", "id": "q"})
    h.do(ann)  # the new password's hash is back: ok
    h.do(ann)  # the loop's next turn: the requests that waited
    got = [(f["type"], f.get("ref") or f.get("id")) for f in h.frames(ann)]
    assert got == [("ok", "p"), ("msg", "s"), ("pong", "q")]


def test_a_control_error_raised_deep_carries_the_request_ref(h: Lazy) -> None:
    control = h.connect(kind=1)
    h.do(control, {"type": "announce", "room": "nowhere", "text": "x", "id": "n"})
    (reply,) = h.frames(control)
    assert (reply["code"], reply["ref"], reply["fatal"]) == ("no_such_room", "n", False)


def test_presence_of_someone_in_two_rooms_waits_and_comes_once(tmp_path: Path) -> None:
    h = Lazy(tmp_path, default_rooms=("lobby", "random"))
    watchers = [h.login2(f"w{i}") for i in range(3)]
    h.core.flush_presence()
    for conn in watchers:
        h.frames(conn)
    h.login2("late")  # shares lobby and random with every watcher
    assert all(h.frames(conn) == [] for conn in watchers)  # nothing pushed per member yet
    h.do(watchers[0], {"type": "ping", "id": "p"})  # its own output takes its part first
    assert kinds(h.frames(watchers[0])) == [
        ("join", "late"), ("join", "late"), ("presence", "late"), ("pong", None)]
    h.core.flush_presence()
    assert h.frames(watchers[0]) == []
    for conn in watchers[1:]:
        got = h.frames(conn)
        assert [(f["type"], f.get("room")) for f in got] == [
            ("join", "lobby"), ("join", "random"), ("presence", None)]


def test_a_long_join_backlog_streams_as_it_is_read(h: Lazy) -> None:
    alice, bob = h.login2("alice"), h.login2("bob")
    h.do(alice, {"type": "join", "room": "dev"})
    for start in range(0, 2000, 50):
        h.do(alice, *({"type": "say", "room": "dev", "text": f"{i:04} " + "x" * 300}
                      for i in range(start, start + 50)))
    h.frames(bob)
    h.do(bob, {"type": "join", "room": "dev", "since": 0, "id": "j"})
    assert bob.backlog is not None  # the rest waits for bob to read
    h.do(alice, {"type": "say", "room": "dev", "text": "live"})
    seen: list[Message] = []
    while True:
        seen += h.frames(bob)
        if bob.backlog is None and not bob.held:
            break
        h.core.refill(bob)
    h.core.flush_presence()
    seen += h.frames(bob)
    msgs = [f for f in seen if f["type"] == "msg"]
    assert seen[0]["type"] == "joined" and seen[0]["ref"] == "j"
    assert [f["seq"] for f in msgs] == list(range(1, 2002))  # backlog, then live, in order
    assert msgs[-1]["text"] == "live"
