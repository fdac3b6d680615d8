"""Presence batching in the pure core: ``join``/``leave`` of presence-only turns
wait in the turn-spanning presence log (the loop flushes it on a timer), yet
every connection still gets every frame once, in the global order of contract
§3.6, and ``frames_out`` counts exactly what was queued."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatd.connection import CLOSED, CONTROL, Connection
from tests.test_core_turns import Harness

Message = dict[str, Any]


class Deferred(Harness):
    """The core driven as the loop drives it: presence waits for flush()."""

    def __init__(self, tmp_path: Path, **overrides: Any) -> None:
        super().__init__(tmp_path, **overrides)
        self.given: list[Connection] = []

    def end(self) -> None:
        self.core.end_turn(defer_presence=True)
        self.core.closing = []

    def flush(self) -> None:
        self.given = self.core.flush_presence()


@pytest.fixture
def h(tmp_path: Path) -> Deferred:
    return Deferred(tmp_path)


def _kinds(frames: list[Message]) -> list[tuple[str, str | None]]:
    return [(f["type"], f.get("name", f.get("reason"))) for f in frames]


def test_presence_waits_for_the_flush_then_reaches_everyone(h: Deferred) -> None:
    alice = h.login("alice")
    bob = h.login("bob")
    carol = h.login("carol")
    assert h.frames(alice) == [] and h.frames(bob) == []  # waiting in the log
    assert h.core.presence_waiting()
    before = h.core.frames_out
    h.flush()
    assert _kinds(h.frames(alice)) == [("join", "bob"), ("join", "carol")]
    assert _kinds(h.frames(bob)) == [("join", "carol")]
    assert h.frames(carol) == []  # its welcome listed everyone
    assert set(h.given) == {alice, bob}
    assert h.core.frames_out - before == 3
    assert not h.core.presence_waiting()
    h.flush()
    assert h.frames(alice) == [] and h.given == []


def test_members_with_nothing_pending_share_one_blob(h: Deferred) -> None:
    users = [h.login(f"u{i}") for i in range(3)]
    h.flush()
    for conn in users:
        h.frames(conn)
    h.login("late1")
    h.login("late2")
    h.flush()
    blobs = [conn.out[0] for conn in users if conn.out]
    assert len(blobs) == 3 and blobs[0] is blobs[1] is blobs[2]


def test_a_later_member_gets_only_its_part_of_the_blob(h: Deferred) -> None:
    alice = h.login("alice")
    h.flush()
    h.frames(alice)
    h.turn()
    bob = h.connect()  # its welcome stays unsent: its part is a copy
    h.send(bob, {"type": "hello", "proto": 1, "name": "bob"})
    h.end()
    carol = h.login("carol")  # sent: its part shares the blob
    h.login("dave")
    h.flush()
    assert alice.out is not None and carol.out is not None
    assert carol.out[0] is alice.out[0] and carol.out_off > 0
    assert _kinds(h.frames(alice)) == [("join", "bob"), ("join", "carol"), ("join", "dave")]
    assert _kinds(h.frames(bob)) == [("welcome", "bob"), ("join", "carol"), ("join", "dave")]
    assert _kinds(h.frames(carol)) == [("join", "dave")]


def test_a_reply_takes_the_waiting_presence_along_first(h: Deferred) -> None:
    alice = h.login("alice")
    bob = h.login("bob")
    h.turn()
    h.send(alice, {"type": "ping", "t": 1})
    h.end()
    assert _kinds(h.frames(alice)) == [("join", "bob"), ("pong", None)]
    h.login("carol")
    h.flush()
    assert _kinds(h.frames(alice)) == [("join", "carol")]  # bob's join not again
    assert _kinds(h.frames(bob)) == [("join", "carol")]


def test_a_pm_takes_the_recipients_presence_along_first(h: Deferred) -> None:
    alice = h.login("alice")
    bob = h.login("bob")
    h.login("carol")
    h.turn()
    h.send(bob, {"type": "pm", "to": "alice", "text": "hi"})
    h.end()
    assert _kinds(h.frames(alice)) == [("join", "bob"), ("join", "carol"), ("pm", None)]
    assert _kinds(h.frames(bob)) == [("join", "carol"), ("pm", None)]


def test_a_public_message_flushes_the_log_before_itself(h: Deferred) -> None:
    alice = h.login("alice")
    bob = h.login("bob")
    h.login("carol")
    h.turn()
    h.send(bob, {"type": "say", "text": "hello"})
    h.end()
    assert _kinds(h.frames(alice)) == [("join", "bob"), ("join", "carol"), ("msg", None)]
    assert _kinds(h.frames(bob)) == [("join", "carol"), ("msg", None)]
    assert not h.core.presence_waiting()


def test_a_late_joiner_gets_no_earlier_presence(h: Deferred) -> None:
    alice = h.login("alice")
    h.login("bob")
    h.turn()
    dave = h.connect()
    h.send(dave, {"type": "hello", "proto": 1, "name": "dave"})
    h.send(alice, {"type": "bye"})  # after dave's login: dave sees this leave
    h.end()
    welcome = h.frames(dave)
    assert welcome[0]["users"] == ["alice", "bob", "dave"]
    assert [(f["type"], f["reason"]) for f in welcome[1:]] == [("leave", "quit")]
    assert _kinds(h.frames(alice)) == [("join", "bob"), ("join", "dave"), ("bye", "quit")]
    h.flush()
    assert h.frames(dave) == []


def test_a_closing_member_gets_its_presence_before_its_last_frame(h: Deferred) -> None:
    alice = h.login("alice")
    h.login("bob")
    h.turn()
    ctl = h.connect(CONTROL)
    h.send(ctl, {"type": "kick", "name": "alice"})
    h.end()
    assert _kinds(h.frames(alice)) == [("join", "bob"), ("bye", "kicked")]
    h.flush()
    assert h.frames(alice) == []
    assert alice not in h.given


def test_takeover_gets_no_presence_from_before_its_welcome(h: Deferred) -> None:
    alice = h.login("alice")
    bob = h.login("bob")
    h.turn()
    new = h.connect()
    h.send(new, {"type": "hello", "proto": 1, "name": "alice", "token": alice.token})
    h.end()
    assert _kinds(h.frames(alice)) == [("join", "bob"), ("bye", "replaced")]
    assert h.frames(new)[0]["type"] == "welcome"
    h.login("carol")
    h.flush()
    assert _kinds(h.frames(new)) == [("join", "carol")]
    assert h.frames(alice) == []
    assert _kinds(h.frames(bob)) == [("join", "carol")]


def test_a_lost_connection_is_left_out(h: Deferred) -> None:
    alice = h.login("alice")
    bob = h.login("bob")
    h.login("carol")
    h.turn()
    h.core.lost(alice)
    alice.state = CLOSED  # what the loop's drop does
    h.core.forget(alice)
    h.end()
    h.flush()
    assert alice.out is None and alice not in h.given
    assert _kinds(h.frames(bob)) == [("join", "carol"), ("leave", "alice")]


def test_watchers_get_presence_batched_too(h: Deferred) -> None:
    h.turn()
    watcher = h.connect(CONTROL)
    h.send(watcher, {"type": "watch"})
    h.end()
    assert h.frames(watcher) == [{"type": "ok"}]
    h.login("alice")
    h.login("bob")
    assert h.frames(watcher) == []
    h.flush()
    assert _kinds(h.frames(watcher)) == [("join", "alice"), ("join", "bob")]


def test_shutdown_sends_waiting_presence_before_bye_and_nothing_after(h: Deferred) -> None:
    alice = h.login("alice")
    h.turn()
    watcher = h.connect(CONTROL)
    h.send(watcher, {"type": "watch"})
    h.end()
    h.frames(watcher)
    h.login("bob")
    h.turn()
    h.core.begin_shutdown()
    h.end()
    assert _kinds(h.frames(alice)) == [("join", "bob"), ("bye", "shutdown")]
    assert _kinds(h.frames(watcher)) == [
        ("join", "bob"), ("leave", "alice"), ("leave", "bob")]
    h.flush()
    assert h.frames(alice) == [] and h.frames(watcher) == []


def test_a_member_over_the_limit_is_seen_when_its_presence_is_queued(tmp_path: Path) -> None:
    h = Deferred(tmp_path, max_outbuf=4096)
    alice = h.login("alice")
    for i in range(100):
        h.login(f"user{i:03d}")
    assert alice.out is None
    h.flush()
    assert alice in h.given and alice.counted() > h.settings.max_outbuf


# --- property: random turns of logins, quits, messages and flushes ------------

Action = tuple[str, int, int]
_action = st.tuples(st.sampled_from(("login", "quit", "say", "ping", "pm")),
                    st.integers(0, 5), st.integers(0, 5))
_turns = st.lists(st.tuples(st.lists(_action, max_size=6), st.booleans()),
                  min_size=1, max_size=10)


@settings(max_examples=150, deadline=None)
@given(turns=_turns)
def test_batched_presence_keeps_the_global_order(
    tmp_path_factory: pytest.TempPathFactory, turns: list[Any]
) -> None:
    """Each frame maps to the action that produced it; every recipient gets
    exactly its frames, once, in action order, and frames_out counts them."""
    h = Deferred(Path(tmp_path_factory.mktemp("presence")), backlog=0)
    h.turn()
    watcher = h.connect(CONTROL)
    h.send(watcher, {"type": "watch"})
    h.end()
    received = len(h.frames(watcher))
    online: list[Connection] = []
    names: dict[int, str] = {}  # id(conn) -> name
    got: dict[int, list[int]] = {id(watcher): []}
    expected: dict[int, list[int]] = {id(watcher): []}
    origin: dict[tuple[str, str], int] = {}  # (type, name or ref) -> action
    conns: dict[int, Connection] = {id(watcher): watcher}
    index = 0
    for batch, flush in turns:
        h.turn()
        for kind, a, b in batch:
            index += 1
            if kind == "login" or not online:
                name = f"n{index}"
                conn = h.connect()
                h.send(conn, {"type": "hello", "proto": 1, "name": name})
                for other in [watcher, *online]:
                    expected[id(other)].append(index)
                origin[("join", name)] = index
                names[id(conn)] = name
                conns[id(conn)] = conn
                got[id(conn)] = []
                expected[id(conn)] = []
                online.append(conn)
                continue
            sender = online[a % len(online)]
            ref = f"a{index}"
            if kind == "quit":
                h.send(sender, {"type": "bye"})
                online.remove(sender)
                origin[("bye", names[id(sender)])] = index
                origin[("leave", names[id(sender)])] = index
                for other in [watcher, sender, *online]:
                    expected[id(other)].append(index)
            elif kind == "say":
                h.send(sender, {"type": "say", "text": "hi", "id": ref})
                origin[("msg", ref)] = index
                for other in [watcher, *online]:
                    expected[id(other)].append(index)
            elif kind == "ping":
                h.send(sender, {"type": "ping", "id": ref})
                origin[("pong", ref)] = index
                expected[id(sender)].append(index)
            else:
                target = online[b % len(online)]
                h.send(sender, {"type": "pm", "to": names[id(target)], "text": "x", "id": ref})
                origin[("pm", ref)] = index
                for other in {id(sender): sender, id(target): target}.values():
                    expected[id(other)].append(index)
        h.end()
        if flush:
            h.flush()
        received += _drain(h, conns, names, origin, got)
    h.flush()
    received += _drain(h, conns, names, origin, got)
    for key in conns:
        assert got[key] == expected[key], names.get(key, "watcher")
    assert h.core.frames_out == received
    assert not h.core.presence_waiting()


def _drain(
    h: Deferred, conns: dict[int, Connection], names: dict[int, str],
    origin: dict[tuple[str, str], int], got: dict[int, list[int]],
) -> int:
    """Decode what each connection was given; note each frame's action.
    Returns the number of frames."""
    count = 0
    for key, conn in conns.items():
        for frame in h.frames(conn):
            count += 1
            kind = frame["type"]
            if kind == "welcome":
                assert got[key] == [], "welcome is the first frame"
                continue
            if kind in ("join", "leave"):
                label = frame["name"]
            elif kind == "bye":
                label = names[key]
            else:
                label = frame.get("id", frame.get("ref"))
            got[key].append(origin[(kind, label)])
    return count
