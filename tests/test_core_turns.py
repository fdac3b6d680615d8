"""The pure chat core, driven without sockets or sleeps: staging, order, group
commit and its failure, timers, takeover, rate limits."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from chatd.connection import CHAT, CLOSING, CONTROL, Connection
from chatd.core import Core
from chatd.hashworker import InlineHasher
from chatd.records import AddMessage, Op
from chatd.settings import Settings
from chatd.store import StoreError
from chatd.store_sqlite import SqliteStore
from protocol import Decoder, encode
from protocol.limits import CLIENT_MAX_FRAME

Message = dict[str, Any]


class FlakyStore(SqliteStore):
    """An in-memory store whose commit fails while ``failing`` is set."""

    def __init__(self, retain: int) -> None:
        self.failing = False
        self.batches: list[list[int]] = []  # seqs of each commit's messages
        super().__init__(":memory:", retain=retain)

    def commit(self, ops: Sequence[Op]) -> None:
        if self.failing:
            raise StoreError("disk full")
        super().commit(ops)
        seqs = [op.msg.seq for op in ops if isinstance(op, AddMessage)]
        if seqs:
            self.batches.append(seqs)

    def after(self, since: int) -> Iterator[Any]:
        """The lobby's messages after ``since``."""
        return self.log("lobby").after(since)


class Harness:
    """A core plus per-connection decoders standing in for the peers."""

    def __init__(self, tmp_path: Path, **overrides: Any) -> None:
        values: dict[str, Any] = {"data_dir": tmp_path, "rate": 0.0, "heartbeat": 10.0}
        values.update(overrides)
        self.settings = Settings(**values)
        self.history = FlakyStore(self.settings.history)
        self.hasher = InlineHasher()
        self.now = 0.0
        self.core = Core(self.settings, self.history, self.hasher, self.now, 1_000)
        self.decoders: dict[int, Decoder] = {}

    def turn(self, now: float | None = None) -> None:
        if now is not None:
            self.now = now
        self.core.begin_turn(self.now, 1_000 + int(self.now * 1000))

    def end(self) -> None:
        self.core.hashed(self.hasher.results())
        self.core.end_turn()
        self.core.flush_presence()  # as if the presence timer fired at once
        self.core.closing = []

    def connect(self, kind: int = CHAT) -> Connection:
        conn = self.core.connect(kind, "test")
        self.decoders[id(conn)] = Decoder(CLIENT_MAX_FRAME)
        return conn

    def send(self, conn: Connection, *messages: Message) -> None:
        self.core.receive(conn, b"".join(encode(message) for message in messages))

    def login(self, name: str, **hello: Any) -> Connection:
        self.turn()
        conn = self.connect()
        self.send(conn, {"type": "hello", "proto": 1, "name": name, **hello})
        self.end()
        assert self.frames(conn)[0]["type"] == "welcome"
        return conn

    def frames(self, conn: Connection) -> list[Message]:
        """Everything queued for ``conn``, as the peer would decode it; then
        the out-buffer counts as sent."""
        data = b"".join(conn.out or [])
        data = data[conn.out_off:]
        conn.sent(conn.out_len)
        return self.decoders[id(conn)].feed(data)


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


def test_reply_keeps_its_place_between_broadcasts(h: Harness) -> None:
    alice, bob = h.login("alice"), h.login("bob")
    h.frames(alice)
    h.turn()
    h.send(alice, {"type": "say", "text": "one"})
    h.send(bob, {"type": "who", "id": "w"})
    h.send(alice, {"type": "say", "text": "two"})
    h.end()
    got = [(m["type"], m.get("seq")) for m in h.frames(bob)]
    assert got == [("msg", 1), ("users", None), ("msg", 2)]
    assert [(m["type"], m.get("seq")) for m in h.frames(alice)] == [("msg", 1), ("msg", 2)]
    assert h.history.batches[-1] == [1, 2]  # one group commit for the turn


def test_audience_shares_one_blob(h: Harness) -> None:
    users = [h.login(f"u{i}") for i in range(4)]
    for conn in users:
        h.frames(conn)
    h.turn()
    h.send(users[0], {"type": "say", "text": "a"}, {"type": "say", "text": "b"})
    h.end()
    blobs = [conn.out[0] for conn in users[1:] if conn.out]
    assert len(blobs) == 3 and blobs[0] is blobs[1] is blobs[2]
    assert [m["text"] for m in h.frames(users[0])] == ["a", "b"]


def test_login_mid_turn_sees_earlier_messages_in_its_backlog_only(h: Harness) -> None:
    alice = h.login("alice")
    h.turn()
    h.send(alice, {"type": "say", "text": "before"})
    carol = h.connect()
    h.send(carol, {"type": "hello", "proto": 1, "name": "carol"})
    h.send(alice, {"type": "say", "text": "after"})
    h.end()
    frames = h.frames(carol)
    assert frames[0]["type"] == "welcome" and frames[0]["seq"] == 1
    assert [(m["type"], m.get("text")) for m in frames[1:]] == [
        ("msg", "before"), ("msg", "after")]
    assert [m["type"] for m in h.frames(alice)] == ["msg", "join", "msg"]


def test_refused_batch_becomes_unavailable_errors_in_place(h: Harness) -> None:
    alice, bob = h.login("alice"), h.login("bob")
    h.frames(alice)
    h.history.failing = True
    h.turn()
    h.send(alice, {"type": "say", "text": "lost", "id": "a1"},
           {"type": "ping", "t": 1},
           {"type": "say", "text": "lost too", "id": "a2"})
    h.end()
    frames = h.frames(alice)
    assert [m["type"] for m in frames] == ["error", "pong", "error"]
    for frame, ref in ((frames[0], "a1"), (frames[2], "a2")):
        assert frame["code"] == "unavailable" and frame["fatal"] is False
        assert frame["ref"] == ref and frame["retry_after_ms"] > 0
    assert h.frames(bob) == []
    assert h.core.lobby.seq == 0 and h.core.msgs_in == 0
    assert CLOSING not in (alice.state, bob.state)
    h.history.failing = False
    h.turn()
    h.send(alice, {"type": "say", "text": "stored", "id": "a1"})  # a retry is new
    h.end()
    assert h.frames(bob)[0]["seq"] == 1
    assert h.frames(alice)[0]["id"] == "a1"


def test_refused_announcement_answers_the_operator(h: Harness) -> None:
    alice = h.login("alice")
    h.turn()
    ctl = h.connect(CONTROL)
    h.end()
    h.history.failing = True
    h.turn()
    h.send(ctl, {"type": "announce", "text": "hello all", "id": "x"})
    h.end()
    assert h.frames(ctl)[0]["code"] == "unavailable"
    assert h.frames(alice) == []
    h.history.failing = False
    h.turn()
    h.send(ctl, {"type": "announce", "text": "hello all", "id": "y"})
    h.end()
    assert h.frames(ctl) == [{"type": "ok", "ref": "y"}]
    assert h.frames(alice)[0]["from"] == "server"


def test_same_turn_duplicate_id_is_not_a_new_message(h: Harness) -> None:
    alice = h.login("alice")
    h.turn()
    h.send(alice, {"type": "say", "text": "x", "id": "dup"}, {"type": "say", "text": "x",
                                                               "id": "dup"})
    h.end()
    frames = h.frames(alice)
    assert [m["seq"] for m in frames] == [1, 1]
    assert h.core.lobby.seq == 1


def test_heartbeat_timers(h: Harness) -> None:
    alice = h.login("alice")  # at t=0, heartbeat 10
    h.turn(5.0)
    h.send(alice, {"type": "pong", "t": 0})  # activity at t=5
    h.core.run_timers(10.0)  # early: re-armed for t=15
    h.end()
    assert h.frames(alice) == []
    h.turn(15.0)
    h.core.run_timers(15.0)
    h.end()
    assert h.frames(alice)[0]["type"] == "ping"
    h.turn(24.9)
    h.core.run_timers(24.9)
    h.end()
    assert h.frames(alice) == []
    h.turn(25.0)
    h.core.run_timers(25.0)
    h.end()
    error = h.frames(alice)[-1]
    assert error["code"] == "timeout" and alice.state == CLOSING


def test_handshake_timer(tmp_path: Path) -> None:
    h = Harness(tmp_path, handshake_timeout=2.0)
    h.turn()
    conn = h.connect()
    h.end()
    h.turn(1.9)
    h.core.run_timers(1.9)
    h.end()
    assert h.frames(conn) == []
    h.turn(2.0)
    h.core.run_timers(2.0)
    h.end()
    assert h.frames(conn)[0]["code"] == "timeout" and conn.state == CLOSING
    assert h.core.clients == 0 and h.core.handshakes == 0


def test_rate_limit_refills(tmp_path: Path) -> None:
    h = Harness(tmp_path, rate=2.0, burst=2)
    alice = h.login("alice")
    h.turn(0.0)
    h.send(alice, *({"type": "ping", "t": i} for i in range(3)))
    h.end()
    frames = h.frames(alice)
    assert [m["type"] for m in frames] == ["pong", "pong", "error"]
    assert frames[2]["retry_after_ms"] == 500
    h.turn(0.5)
    h.send(alice, {"type": "ping", "t": 9})
    h.end()
    assert h.frames(alice)[0]["type"] == "pong"


def test_takeover_moves_the_session(h: Harness) -> None:
    alice, bob = h.login("alice"), h.login("bob")
    h.frames(alice)
    h.turn()
    new = h.connect()
    h.send(new, {"type": "hello", "proto": 1, "name": "ALICE", "token": alice.token})
    h.end()
    assert h.frames(new)[0]["name"] == "alice"
    assert h.frames(alice) == [{"type": "bye", "reason": "replaced"}]
    assert h.frames(bob) == []
    assert list(h.core.online) == ["bob", "alice"] and h.core.online["alice"] is new


def test_timers_follow_the_new_connection_after_a_takeover(h: Harness) -> None:
    """The old connection's heartbeat and the new one's handshake timer fire
    after the takeover: neither may ping or time out the moved session."""
    alice = h.login("alice")  # t=0: heartbeat due at 10
    h.frames(alice)
    h.turn(5.0)
    new = h.connect()  # handshake timer due at 15
    h.send(new, {"type": "hello", "proto": 1, "name": "alice", "token": alice.token})
    h.end()
    h.frames(new)
    for now in (10.0, 14.9):
        h.turn(now)
        h.core.run_timers(now)
        h.end()
        assert h.frames(new) == [] and new.state != CLOSING
    h.turn(15.0)  # its own heartbeat: 10 s after its hello
    h.core.run_timers(15.0)
    h.end()
    assert [m["type"] for m in h.frames(new)] == ["ping"]
    h.turn(25.0)
    h.core.run_timers(25.0)
    h.end()
    assert h.frames(new)[-1]["code"] == "timeout" and new.state == CLOSING


def test_frames_left_over_wait_for_the_next_turn(h: Harness) -> None:
    alice = h.login("alice")
    h.turn()
    h.send(alice, *({"type": "ping", "t": i} for i in range(100)))
    h.end()
    assert len(h.frames(alice)) == 64 and alice in h.core.pending_input
    h.turn()
    h.core.receive(alice, b"")
    h.end()
    assert len(h.frames(alice)) == 36 and alice not in h.core.pending_input


def test_shutdown_byes_users_and_tells_watchers(h: Harness) -> None:
    alice = h.login("alice")
    h.turn()
    watcher = h.connect(CONTROL)
    h.send(watcher, {"type": "watch"})
    h.end()
    h.frames(watcher)
    h.frames(alice)
    h.turn()
    h.core.begin_shutdown()
    h.end()
    assert h.frames(alice) == [{"type": "bye", "reason": "shutdown"}]
    assert [(m["type"], m["reason"]) for m in h.frames(watcher)] == [("leave", "shutdown")]


def test_a_bug_on_one_connection_closes_only_that_one(
    h: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    alice, bob = h.login("alice"), h.login("bob")
    h.frames(alice)

    def broken(core: Core, conn: Connection, msg: Message, ref: str | None) -> None:
        raise RuntimeError("bug")

    monkeypatch.setitem(h.core._v1, "who", broken)
    h.turn()
    h.send(bob, {"type": "who"})
    h.send(alice, {"type": "say", "text": "unaffected"})
    h.end()
    assert bob.state == CLOSING and "bob" not in h.core.online
    frames = h.frames(alice)
    assert [(m["type"], m.get("reason")) for m in frames] == [("leave", "error"), ("msg", None)]
    assert "internal error" in caplog.text


def test_a_long_backlog_streams_and_live_output_waits_behind_it(tmp_path: Path) -> None:
    h = Harness(tmp_path, history=5000)
    writer = h.login("writer")
    h.turn()
    h.send(writer, *({"type": "say", "text": f"{i:04d}" + "x" * 1000} for i in range(1000)))
    h.end()
    while writer in h.core.pending_input:  # 64 requests a turn
        h.turn()
        h.core.receive(writer, b"")
        h.end()
    h.frames(writer)
    h.turn()
    reader = h.connect()
    h.send(reader, {"type": "hello", "proto": 1, "name": "reader", "since": 0})
    h.end()
    assert reader.backlog is not None  # ~1 MB of backlog: not queued at once
    assert reader.out_len < 300_000
    h.turn()
    h.send(writer, {"type": "say", "text": "live"})
    h.send(reader, {"type": "ping", "t": "p"})
    h.end()
    got = h.frames(reader)
    while reader.backlog is not None or reader.held:
        h.core.refill(reader)
        got.extend(h.frames(reader))
    assert got[0]["type"] == "welcome" and got[0]["seq"] == 1000
    seqs = [m["seq"] for m in got if m["type"] == "msg"]
    assert seqs == list(range(1, 1002))
    assert [m["type"] for m in got[-3:]] == ["msg", "msg", "pong"]
    assert got[-2]["text"] == "live"


def test_messages_with_ids_share_the_turns_one_commit(h: Harness) -> None:
    """Every client sends ids (its outbox): checking them must not commit per message."""
    alice = h.login("alice")
    h.frames(alice)
    h.turn()
    h.send(alice, *({"type": "say", "text": f"m{i}", "id": f"i{i}"} for i in range(5)),
           {"type": "say", "text": "again", "id": "i2"})
    h.end()
    assert h.history.batches[-1] == [1, 2, 3, 4, 5]
    got = [(m["seq"], m["text"]) for m in h.frames(alice)]
    assert got == [(1, "m0"), (2, "m1"), (3, "m2"), (4, "m3"), (5, "m4"), (3, "m2")]
