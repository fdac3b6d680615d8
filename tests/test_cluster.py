"""Cluster mode (issue 12), black-box: several ``chatd --cluster`` nodes on one Redis.

Every test drives real nodes over their chat ports (version 2 unless it says
otherwise) and control sockets, as a client of the contract would: a client
may be on any node, and it must not be able to tell. What one node does reaches
clients of the others through Redis, so there is no ping barrier across nodes:
every cross-node wait is for the frame itself, with a deadline (``CROSS``).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cluster_support import (
    Node,
    RedisServer,
    cluster,
    cluster_node,
    free_port,
    redis_server,
    wait_nodes,
)
from tests.support import TestClient
from tests.test_contract_kit import fatal_close
from tests.v2_support import (
    PASSWORD,
    Message,
    account,
    add_account,
    bye,
    call,
    dm_name,
    events,
    hello2,
    join,
    kinds,
    login2,
    ok,
    refused,
    say,
    unique,
)

CROSS = 10.0
"""Deadline for anything that crosses nodes (delivery, presence, lease expiry)."""
LOST = 10.0
"""Deadline for a killed node's users to be announced lost (leases: 3 s, +1 s)."""
RECOVER = 20.0
"""Deadline for the nodes to work again after Redis restarted."""


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path) as server:
        yield server


@pytest.fixture
def trio(tmp_path: Path, redis: RedisServer) -> Iterator[list[Node]]:
    with cluster(tmp_path, redis, 3) as nodes:
        yield nodes


def until(client: TestClient, predicate: Callable[[Message], bool],
          timeout: float = CROSS) -> list[Message]:
    """Every frame up to and including the first that satisfies ``predicate``."""
    return client.drain_until(predicate, timeout)


def msg_of(room: str, ident: str) -> Callable[[Message], bool]:
    return lambda m: (m["type"] == "msg" and m.get("room", "").casefold() == room.casefold()
                      and m.get("id") == ident)


def joined_by(room: str, name: str) -> Callable[[Message], bool]:
    return lambda m: m["type"] == "join" and m["room"] == room and m["name"] == name


def presence_of(name: str) -> Callable[[Message], bool]:
    return lambda m: m["type"] == "presence" and m["name"] == name


def answer_to(ident: str) -> Callable[[Message], bool]:
    """The ack (``msg`` with the id) or the error (``ref``) of a ``say``."""
    return lambda m: (m["type"] == "msg" and m.get("id") == ident) or (
        m["type"] == "error" and m.get("ref") == ident)


def login(node: Node, name: str, **members: object) -> TestClient:
    """An account's version 2 session on ``node``."""
    return login2(node.server, name, password=PASSWORD, **members)


def history(client: TestClient, room: str) -> list[Message]:
    """Every retained message of ``room``, oldest first (paged with ``history``)."""
    entries: list[Message] = []
    before = None
    while True:
        request: Message = {"type": "history", "room": room, "limit": 200,
                            "before": before if before is not None else 2**53 - 1}
        reply = call(client, request)
        assert reply["type"] == "history", reply
        if not reply["msgs"]:
            return entries
        entries[:0] = reply["msgs"]
        before = reply["msgs"][0]["seq"]


def said_until_acked(client: TestClient, room: str, text: str, ident: str,
                     timeout: float = RECOVER) -> tuple[Message, list[Message]]:
    """``say`` with ``ident`` again and again (as a client resends its outbox)
    while the server answers ``unavailable``; the ack and the refusals."""
    deadline = time.monotonic() + timeout
    refusals: list[Message] = []
    me = client.welcome["name"]
    while True:
        client.send({"type": "say", "room": room, "text": text, "id": ident})
        frames = until(client, lambda m: (m["type"] == "msg" and m.get("id") == ident
                                          and m["from"] == me)
                       or (m["type"] == "error" and m.get("ref") == ident), timeout)
        client.inbox[:0] = frames[:-1]  # others' frames stay for the test to read
        last = frames[-1]
        if last["type"] == "msg":
            return last, refusals
        assert last["code"] == "unavailable" and last["fatal"] is False, last
        refusals.append(last)
        assert time.monotonic() < deadline, ("still unavailable", refusals[-3:])
        time.sleep(min(last["retry_after_ms"], 500) / 1000)


# --- the cluster as a whole ------------------------------------------------------------


def test_status_reports_the_cluster(trio: list[Node], redis: RedisServer) -> None:
    ids = set()
    for node in trio:
        status = wait_nodes(node, 3)
        info = status["cluster"]
        assert isinstance(info["node"], str) and info["node"], status
        assert info["redis"].startswith(redis.url), (info, redis.url)
        ids.add(info["node"])
    assert len(ids) == 3, ids


def test_redis_runs_with_an_fsynced_append_only_file(redis: RedisServer) -> None:
    """The fixture itself: what cluster mode requires of Redis, and a kill -9
    keeps what was written (the AOF is replayed on the same port)."""
    assert (redis.config("appendonly"), redis.config("appendfsync")) == ("yes", "always")
    assert redis.command("INCR", "probe") == 1
    port = redis.port
    redis.kill()
    redis.start()
    assert redis.port == port and redis.command("GET", "probe") == b"1"
    redis.flushall()
    assert redis.command("DBSIZE") == 0


def test_accounts_and_rooms_are_shared(trio: list[Node]) -> None:
    """An account created on A's control socket logs in on B and C; a room
    created on B is in C's ``rooms``; control ``accounts`` agree everywhere."""
    a, b, c = trio
    ann = account(a.server, "ann")
    room = unique("r")
    with login(b, ann) as on_b:
        assert on_b.welcome["account"] is True
        join(on_b, room)
    with login(c, ann) as on_c:
        rooms = call(on_c, {"type": "rooms"})
        assert room in [r["room"] for r in rooms["rooms"] if r["member"]], rooms
    for node in trio:
        accounts = node.request({"type": "accounts"})
        assert ann in accounts["accounts"], (node.name, accounts)


def test_say_on_one_node_reaches_members_on_every_node(trio: list[Node]) -> None:
    a, b, c = trio
    ann, bob, cy = (account(a.server, p) for p in ("ann", "bob", "cy"))
    room = unique("r")
    on_a, on_b, on_c = login(a, ann), login(b, bob), login(c, cy)
    join(on_a, room)
    join(on_b, room)
    join(on_c, room)
    # ann (A) learns of the two joins made on other nodes.
    for name in (bob, cy):
        until(on_a, joined_by(room, name))
    ack = say(on_a, room, "hello from A", "x1")
    assert (ack["seq"], ack["from"], ack["text"]) == (1, ann, "hello from A"), ack
    for member in (on_b, on_c):
        got = until(member, msg_of(room, "x1"))[-1]
        assert {k: got[k] for k in ("room", "seq", "ts", "from", "text", "id")} == {
            k: ack[k] for k in ("room", "seq", "ts", "from", "text", "id")}, (got, ack)
    # The sender's echo came once: nothing more of the room for anyone.
    ack2 = say(on_b, room, "and from B", "x2")
    assert ack2["seq"] == 2, ack2
    for member in (on_a, on_c):
        frames = until(member, msg_of(room, "x2"))
        assert [m["seq"] for m in kinds(frames, "msg")] == [2], frames
    assert kinds(events(on_b), "msg") == [], "a second echo on B"
    for client in (on_a, on_b, on_c):
        bye(client)


def test_presence_crosses_nodes(trio: list[Node]) -> None:
    a, b, _ = trio
    ann, bob = account(a.server, "ann"), account(a.server, "bob")
    on_a = login(a, ann)
    on_b = login(b, bob)
    online = until(on_a, presence_of(bob))[-1]
    assert online["online"] is True and "reason" not in online, online
    assert bob in call(on_a, {"type": "who"})["users"]
    bye(on_b)
    offline = until(on_a, presence_of(bob))[-1]
    assert (offline["online"], offline["reason"]) == (False, "quit"), offline
    bye(on_a)


def test_v1_lobby_session_sees_other_nodes(trio: list[Node]) -> None:
    """A version 1 guest on C sees lobby messages said on A, and a join."""
    a, _, c = trio
    ann = account(a.server, "ann")
    v1 = c.server.login(unique("old"))
    on_a = login(a, ann)
    until(v1, lambda m: m["type"] == "join" and m["name"] == ann)
    ack = say(on_a, "lobby", "to everyone", "l1")
    got = until(v1, lambda m: m["type"] == "msg" and m.get("id") == "l1")[-1]
    assert (got["seq"], got["from"], got["text"]) == (ack["seq"], ann, "to everyone"), got
    bye(on_a)
    leave = until(v1, lambda m: m["type"] == "leave" and m["name"] == ann)[-1]
    assert leave["reason"] == "quit", leave
    v1.close()


# --- direct conversations ----------------------------------------------------------------


def test_dm_across_nodes(trio: list[Node]) -> None:
    a, b, _ = trio
    ann, bob = account(a.server, "ann"), account(a.server, "bob")
    on_a, on_b = login(a, ann), login(b, bob)
    room = dm_name(ann, bob)
    joined = call(on_a, {"type": "dm", "to": bob})
    assert (joined["type"], joined["room"], joined["kind"], joined["with"]) == (
        "joined", room, "dm", bob), joined
    unasked = until(on_b, lambda m: m["type"] == "joined")[-1]
    assert (unasked["room"], unasked["kind"], unasked["with"]) == (room, "dm", ann), unasked
    ack = say(on_a, room, "psst", "d1")
    got = until(on_b, msg_of(room, "d1"))[-1]
    assert (got["seq"], got["from"], got["text"]) == (ack["seq"], ann, "psst"), got
    back = say(on_b, room, "hi", "d2")
    assert back["seq"] == ack["seq"] + 1, back
    got = until(on_a, msg_of(room, "d2"))[-1]
    assert (got["seq"], got["from"]) == (back["seq"], bob), got
    bye(on_a)
    bye(on_b)


def test_pm_across_nodes(trio: list[Node]) -> None:
    """``pm`` (4, kept in version 2) reaches a user online on another node; a
    name online nowhere is ``no_such_user``."""
    a, _, c = trio
    ann, cy = account(a.server, "ann"), account(a.server, "cy")
    on_a, on_c = login(a, ann), login(c, cy)
    on_a.send({"type": "pm", "to": cy, "text": "private", "id": "p1"})
    mine = until(on_a, lambda m: m["type"] in ("pm", "error") and (
        m.get("id") == "p1" or m.get("ref") == "p1"))[-1]
    assert mine["type"] == "pm" and (mine["from"], mine["to"]) == (ann, cy), mine
    theirs = until(on_c, lambda m: m["type"] == "pm")[-1]
    assert (theirs["from"], theirs["to"], theirs["text"], theirs["id"]) == (
        ann, cy, "private", "p1"), theirs
    reply = call(on_a, {"type": "pm", "to": unique("nobody"), "text": "x"})
    assert reply["type"] == "error" and reply["code"] == "no_such_user", reply
    bye(on_a)
    bye(on_c)


# --- sessions across nodes -------------------------------------------------------------


def test_resume_on_another_node(trio: list[Node]) -> None:
    """ann leaves A having seen seq 3; bob says 3 more on B; ann logs in on B
    with ``resume`` and gets exactly the three it missed, then nothing else."""
    a, b, _ = trio
    ann, bob = account(a.server, "ann"), account(a.server, "bob")
    room = unique("r")
    on_a, on_b = login(a, ann), login(b, bob)
    join(on_a, room)
    join(on_b, room)
    say(on_a, room, "one", "a1")
    say(on_a, room, "two", "a2")
    three = say(on_b, room, "three", "b3")
    assert three["seq"] == 3
    until(on_a, msg_of(room, "b3"))
    lobby_seq = next(r["seq"] for r in on_a.welcome["rooms"] if r["room"] == "lobby")
    bye(on_a)
    missed = [say(on_b, room, f"missed {i}", f"m{i}") for i in range(3)]
    assert [m["seq"] for m in missed] == [4, 5, 6]
    again = login(b, ann, resume={room: 3, "lobby": lobby_seq})
    entry = next(r for r in again.welcome["rooms"] if r["room"] == room)
    assert entry["seq"] == 6, again.welcome
    backlog = kinds(events(again), "msg")
    assert [(m["room"], m["seq"], m["from"], m["text"], m["id"]) for m in backlog] == [
        (room, m["seq"], bob, m["text"], m["id"]) for m in missed], backlog
    bye(again)
    bye(on_b)


def test_takeover_across_nodes(trio: list[Node]) -> None:
    """A login on B with the token of ann's session on A takes it over: A's
    connection gets ``bye`` reason ``replaced``, B gets ``welcome``, and a
    member on C sees no presence for ann (she never went away)."""
    a, b, c = trio
    ann, cy = account(a.server, "ann"), account(a.server, "cy")
    on_c = login(c, cy)
    on_a = login(a, ann)
    until(on_c, presence_of(ann))
    token = on_a.welcome["token"]
    on_b = login(b, ann, token=token)
    assert on_b.welcome["name"] == ann and on_b.welcome["token"] != token, on_b.welcome
    last = on_a.wait_closed(CROSS)
    assert last and last[-1] == {"type": "bye", "reason": "replaced"}, last
    ack = say(on_b, "lobby", "still here", "t1")
    seen = until(on_c, msg_of("lobby", "t1"))
    assert seen[-1]["seq"] == ack["seq"]
    assert [m for m in seen if m["type"] == "presence"] == [], seen
    assert call(on_c, {"type": "who"})["users"].count(ann) == 1
    # The old token no longer takes anything over.
    refused(c.server, "name_taken", hello2(ann, password=PASSWORD, token=token))
    bye(on_b)
    bye(on_c)


def test_names_are_unique_across_nodes(trio: list[Node]) -> None:
    a, b, c = trio
    guest = unique("ann")
    on_a = login2(a.server, guest)
    refused(b.server, "name_taken", hello2(guest))
    refused(c.server, "name_taken", hello2(guest.upper()))  # casefold: the same user
    refused(b.server, "name_taken", hello2(guest, token="not the token"))
    bob = account(a.server, "bob")
    on_c = login(c, bob)
    refused(a.server, "name_taken", hello2(bob, password=PASSWORD))
    bye(on_a)  # closed: the name is free again, on every node
    again = login2(b.server, guest)
    assert again.welcome["name"] == guest
    bye(again)
    bye(on_c)


def test_killed_node_users_are_announced_lost(trio: list[Node]) -> None:
    """kill -9 node A holding bob: carol on B (sharing lobby) gets ``presence``
    offline reason ``lost``, a version 1 session on C ``leave`` reason ``lost``,
    within the lease's deadline; then bob may log in again elsewhere."""
    a, b, c = trio
    bob, carol = account(a.server, "bob"), account(a.server, "carol")
    on_b = login(b, carol)
    v1 = c.server.login(unique("old"))
    on_a = login(a, bob)
    until(on_b, presence_of(bob))
    until(v1, lambda m: m["type"] == "join" and m["name"] == bob)
    a.kill()
    on_a.close()
    started = time.monotonic()
    lost = until(on_b, presence_of(bob), LOST)[-1]
    assert (lost["online"], lost["reason"]) == (False, "lost"), lost
    leave = until(v1, lambda m: m["type"] == "leave" and m["name"] == bob, LOST)[-1]
    assert leave["reason"] == "lost", leave
    assert time.monotonic() - started < LOST
    assert bob not in call(on_b, {"type": "who"})["users"]
    back = login(c, bob)
    online = until(on_b, presence_of(bob))[-1]
    assert online["online"] is True, online
    for client in (back, on_b):
        bye(client)
    v1.close()


def test_killed_node_restarts_and_serves(trio: list[Node], redis: RedisServer) -> None:
    """A node killed with SIGKILL starts again on the same Redis, sees the
    cluster, and serves the history the others wrote meanwhile."""
    a, b, _ = trio
    ann = account(b.server, "ann")
    room = unique("r")
    on_b = login(b, ann)
    join(on_b, room)
    say(on_b, room, "before", "k1")
    a.kill()
    say(on_b, room, "while A is down", "k2")
    a.start()
    wait_nodes(a, 3)
    bye(on_b)
    on_a = login(a, ann)
    assert [(m["seq"], m["id"]) for m in history(on_a, room)] == [(1, "k1"), (2, "k2")]
    assert say(on_a, room, "after", "k3")["seq"] == 3
    bye(on_a)


# --- Redis trouble -----------------------------------------------------------------------


def test_emptied_redis_refuses_says_and_never_restarts_seqs(trio: list[Node],
                                                           redis: RedisServer) -> None:
    a, b, _ = trio
    ann, bob = account(a.server, "ann"), account(a.server, "bob")
    on_a, on_b = login(a, ann), login(b, bob)
    last = [say(on_a, "lobby", f"before {i}", f"f{i}")["seq"] for i in range(3)][-1]
    until(on_b, msg_of("lobby", "f2"))
    redis.flushall()
    for client, ident in ((on_a, "gone-a"), (on_b, "gone-b")):
        client.send({"type": "say", "room": "lobby", "text": "after the flush", "id": ident})
        reply = until(client, answer_to(ident))[-1]
        assert reply["type"] == "error" and reply["code"] == "unavailable", reply
        assert reply["ref"] == ident and reply["fatal"] is False, reply
        assert isinstance(reply["retry_after_ms"], int) and reply["retry_after_ms"] > 0, reply
    # Whatever the nodes do next, a seq is never given out again.
    for i in range(5):
        ident = f"later{i}"
        on_a.send({"type": "say", "room": "lobby", "text": "later", "id": ident})
        reply = until(on_a, answer_to(ident))[-1]
        if reply["type"] == "msg":
            assert reply["seq"] > last, ("a seq given out again after FLUSHALL", reply)
            last = reply["seq"]
        else:
            assert reply["code"] == "unavailable", reply
    # The sessions survive it.
    events(on_a)
    events(on_b)
    on_a.close()
    on_b.close()


def test_acknowledged_messages_survive_a_redis_kill(trio: list[Node],
                                                   redis: RedisServer) -> None:
    """kill -9 Redis (AOF, fsync always) and start it again: every acknowledged
    message is still there, seqs go on, and members on other nodes miss nothing."""
    a, b, _ = trio
    ann, bob = account(a.server, "ann"), account(a.server, "bob")
    room = unique("r")
    on_a, on_b = login(a, ann), login(b, bob)
    join(on_a, room)
    join(on_b, room)
    acks = [say(on_a, room, f"m{i}", f"k{i}") for i in range(3)]
    until(on_b, msg_of(room, "k2"))
    redis.kill()
    redis.start()
    ack, _ = said_until_acked(on_a, room, "after the crash", "k3")
    assert ack["seq"] == 4, ack
    after_b, _ = said_until_acked(on_b, room, "from B too", "k4")
    assert after_b["seq"] == 5, after_b
    frames = until(on_b, msg_of(room, "k3"), RECOVER)
    assert [m["seq"] for m in kinds(frames, "msg") if m["room"] == room] == [4], frames
    seen_a = until(on_a, msg_of(room, "k4"), RECOVER)
    assert [m["seq"] for m in kinds(seen_a, "msg") if m["room"] == room] == [5], seen_a
    stored = history(on_b, room)
    assert [(m["seq"], m["id"]) for m in stored] == [
        (m["seq"], m["id"]) for m in acks] + [(4, "k3"), (5, "k4")], stored
    bye(on_a)
    bye(on_b)


# --- one log for every node ----------------------------------------------------------------


def test_idempotent_resend_on_another_node(trio: list[Node]) -> None:
    """A say acknowledged on A, sent again with its id on B (after reconnecting),
    gets the original back (same seq, first text); history holds one copy and
    other members never see a second one."""
    a, b, c = trio
    ann, cy = account(a.server, "ann"), account(a.server, "cy")
    room = unique("r")
    on_a, on_c = login(a, ann), login(c, cy)
    join(on_a, room)
    join(on_c, room)
    say(on_a, room, "first", "x0")
    original = say(on_a, room, "the original", "X")
    on_a.close()  # the connection is lost; the client resends its id on another node
    on_b = login(b, ann, token=on_a.welcome["token"])
    resent = say(on_b, room, "a different text: the id decides", "X")
    assert {k: resent[k] for k in ("seq", "ts", "from", "text", "id")} == {
        k: original[k] for k in ("seq", "ts", "from", "text", "id")}, (resent, original)
    marker = say(on_b, room, "after", "Y")
    assert marker["seq"] == original["seq"] + 1, marker
    seen = kinds(until(on_c, msg_of(room, "Y")), "msg")
    assert [m["id"] for m in seen if m["room"] == room] == ["x0", "X", "Y"], seen
    stored = history(on_c, room)
    assert [m.get("id") for m in stored] == ["x0", "X", "Y"], stored
    bye(on_b)
    bye(on_c)


def test_interleaved_says_share_one_sequence(trio: list[Node]) -> None:
    """ann on A and bob on B pipeline says into one room: seqs 1..N without a gap,
    and every member (on A, B and C) sees the same messages in the same order."""
    a = trio[0]
    names = [account(a.server, p) for p in ("ann", "bob", "cy")]
    room = unique("r")
    clients = [login(node, name) for node, name in zip(trio, names, strict=True)]
    for client in clients:
        join(client, room)
    count = 20
    for i in range(count):
        for client, tag in zip(clients[:2], "ab", strict=True):
            client.send({"type": "say", "room": room, "text": f"{tag} {i}", "id": f"{tag}{i}"})
    wanted = {f"{tag}{i}" for tag in "ab" for i in range(count)}
    views = []
    for client in clients:
        seen: list[Message] = []
        deadline = time.monotonic() + CROSS
        while {m["id"] for m in seen} != wanted:
            frame = client.recv(max(0.01, deadline - time.monotonic()))
            assert frame["type"] != "error", frame
            if frame["type"] == "msg" and frame["room"] == room:
                seen.append(frame)
        views.append([(m["seq"], m["from"], m["id"]) for m in seen])
    first = views[0]
    assert [seq for seq, _, _ in first] == list(range(1, 2 * count + 1)), first
    for view in views[1:]:
        assert view == first, (view, first)
    for name, tag in zip(names[:2], "ab", strict=True):  # each sender's own order
        assert [ident for _, who, ident in first if who == name] == [
            f"{tag}{i}" for i in range(count)]
    stored = history(clients[2], room)
    assert [(m["seq"], m["from"], m["id"]) for m in stored] == first
    for client in clients:
        bye(client)


def test_edit_and_delete_on_a_seen_on_b(trio: list[Node]) -> None:
    a, b, _ = trio
    ann, bob = account(a.server, "ann"), account(a.server, "bob")
    room = unique("r")
    on_a, on_b = login(a, ann), login(b, bob)
    join(on_a, room)
    join(on_b, room)
    ack = say(on_a, room, "draft", "e1")
    until(on_b, msg_of(room, "e1"))
    ok(on_a, {"type": "edit", "room": room, "seq": ack["seq"], "text": "final"})
    edited = until(on_b, lambda m: m["type"] == "edited")[-1]
    assert (edited["room"], edited["seq"], edited["text"]) == (room, ack["seq"], "final")
    assert isinstance(edited["ts"], int), edited
    entry = history(on_b, room)[-1]
    assert (entry["text"], entry["edited"]) == ("final", edited["ts"]), entry
    ok(on_a, {"type": "delete", "room": room, "seq": ack["seq"]})
    deleted = until(on_b, lambda m: m["type"] == "deleted")[-1]
    assert (deleted["room"], deleted["seq"], deleted["by"]) == (room, ack["seq"], ann)
    entry = history(on_b, room)[-1]
    assert entry.get("deleted") is True and "text" not in entry, entry
    # The tombstone is the same on every node: editing it on B is no_such_message.
    reply = call(on_b, {"type": "edit", "room": room, "seq": ack["seq"], "text": "x"})
    assert reply["type"] == "error" and reply["code"] == "no_such_message", reply
    bye(on_a)
    bye(on_b)


def test_registration_across_nodes(tmp_path: Path, redis: RedisServer) -> None:
    """``hello.register`` on A (``--registration open``) makes an account every
    node knows: it logs in with its password on B, and registering the same
    name on C is ``account_exists``."""
    with cluster(tmp_path, redis, 3, "--registration", "open") as (a, b, c):
        name = unique("reg")
        first = login2(a.server, name, password=PASSWORD, register=True)
        assert first.welcome["account"] is True
        bye(first)
        again = login(b, name)
        assert again.welcome["account"] is True
        refused(c.server, "account_exists", hello2(name.upper(), password=PASSWORD,
                                                    register=True))
        refused(c.server, "auth_failed", hello2(name, password="wrong password"))
        bye(again)


def test_a_guest_name_held_on_a_blocks_registering_it_on_b(tmp_path: Path,
                                                          redis: RedisServer) -> None:
    with cluster(tmp_path, redis, 2, "--registration", "open") as (a, b):
        name = unique("g")
        guest = login2(a.server, name)
        with b.client() as client:
            client.send(hello2(name, password=PASSWORD, register=True))
            fatal_close(client, "name_taken")
        bye(guest)


# --- more of the contract across nodes ---------------------------------------------------


def test_v1_since_on_another_node(trio: list[Node]) -> None:
    """A version 1 client that saw lobby up to seq S on A logs in on C with
    ``since`` S and gets exactly what was said meanwhile (on B)."""
    a, b, c = trio
    bob = account(a.server, "bob")
    name = unique("old")
    old = a.server.login(name)
    on_b = login(b, bob)
    first = say(on_b, "lobby", "seen", "v0")
    until(old, lambda m: m["type"] == "msg" and m.get("id") == "v0")
    old.send({"type": "bye"})
    old.wait_closed()
    old.close()
    missed = [say(on_b, "lobby", f"missed {i}", f"v{i + 1}") for i in range(2)]
    again = c.server.client()
    again.login(name, since=first["seq"])
    assert again.welcome["seq"] == missed[-1]["seq"], again.welcome
    backlog = kinds(events(again), "msg")
    assert [(m["seq"], m["text"]) for m in backlog] == [
        (m["seq"], m["text"]) for m in missed], backlog
    again.close()
    bye(on_b)


def test_takeover_of_a_session_on_a_killed_node(trio: list[Node]) -> None:
    """bob's node A dies; bob logs in on B with his token before A's lease
    lapses (a takeover: no presence). When the lease lapses, A's other user
    (dave) is announced lost, but bob is not: he is online on B, and his name
    stays taken."""
    a, b, c = trio
    bob, dave, carol = (account(a.server, p) for p in ("bob", "dave", "carol"))
    on_c = login(c, carol)
    bob_a, dave_a = login(a, bob), login(a, dave)
    for name in (bob, dave):
        until(on_c, presence_of(name))
    a.kill()
    bob_a.close()
    dave_a.close()
    bob_b = login(b, bob, token=bob_a.welcome["token"])
    seen = until(on_c, presence_of(dave), LOST)
    assert (seen[-1]["online"], seen[-1]["reason"]) == (False, "lost"), seen
    seen += events(on_c)
    assert [m for m in seen if m["type"] == "presence" and m["name"] == bob] == [], seen
    users = call(on_c, {"type": "who"})["users"]
    assert bob in users and dave not in users, users
    refused(c.server, "name_taken", hello2(bob, password=PASSWORD))
    assert say(bob_b, "lobby", "alive", "tk")["from"] == bob
    until(on_c, msg_of("lobby", "tk"))
    bye(bob_b)
    bye(on_c)


def test_operator_requests_reach_other_nodes(trio: list[Node]) -> None:
    """``announce`` on A's control socket reaches lobby members on B; a control
    ``kick`` on A of a user connected to C ends that session (``bye`` reason
    ``kicked``; others get presence reason ``kicked``)."""
    a, b, c = trio
    bob, cy = account(a.server, "bob"), account(a.server, "cy")
    on_b, on_c = login(b, bob), login(c, cy)
    until(on_b, presence_of(cy))
    assert a.request({"type": "announce", "text": "maintenance", "id": "an"})["type"] == "ok"
    got = until(on_b, lambda m: m["type"] == "msg" and m["from"] == "server")[-1]
    assert (got["room"], got["text"]) == ("lobby", "maintenance"), got
    until(on_c, lambda m: m["type"] == "msg" and m["from"] == "server")
    reply = a.request({"type": "kick", "name": cy, "reason": "bye now"})
    assert reply["type"] == "ok", reply
    last = on_c.wait_closed(CROSS)
    assert last and last[-1]["type"] == "bye" and last[-1]["reason"] == "kicked", last
    gone = until(on_b, presence_of(cy))[-1]
    assert (gone["online"], gone["reason"]) == (False, "kicked"), gone
    assert a.request({"type": "kick", "name": cy})["code"] == "no_such_user"
    bye(on_b)


def test_topic_and_read_markers_cross_nodes(trio: list[Node]) -> None:
    """A topic set on A reaches a member on B; a read marker set on A is in
    the ``welcome`` of the same account's next login on C."""
    a, b, c = trio
    ann, bob = account(a.server, "ann"), account(a.server, "bob")
    room = unique("r")
    on_a, on_b = login(a, ann), login(b, bob)
    join(on_a, room)
    join(on_b, room)
    until(on_a, joined_by(room, bob))
    ok(on_a, {"type": "topic", "room": room, "topic": "plans"})
    topic = until(on_b, lambda m: m["type"] == "topic")[-1]
    assert (topic["room"], topic["topic"], topic["by"]) == (room, "plans", ann), topic
    for i in range(3):
        say(on_b, room, f"m{i}", f"rm{i}")
    until(on_a, msg_of(room, "rm2"))
    marked = call(on_a, {"type": "mark", "room": room, "seq": 2})
    assert (marked["type"], marked["seq"]) == ("marked", 2), marked
    bye(on_a)
    again = login(c, ann)
    entry = next(r for r in again.welcome["rooms"] if r["room"] == room)
    assert (entry["seq"], entry["read"], entry["topic"]) == (3, 2, "plans"), entry
    bye(again)
    bye(on_b)


def test_account_removed_on_a_ends_its_session_on_b(trio: list[Node]) -> None:
    a, b, c = trio
    bob, cy = account(a.server, "bob"), account(a.server, "cy")
    on_c = login(c, cy)
    on_b = login(b, bob)
    until(on_c, presence_of(bob))
    assert a.request({"type": "account_remove", "name": bob})["type"] == "ok"
    last = on_b.wait_closed(CROSS)
    assert last and (last[-1]["type"], last[-1]["reason"]) == ("bye", "kicked"), last
    # 18: the session ends first (others get presence), then the memberships
    # (part reason removed): in that order, whatever node each happens on.
    frames = until(on_c, lambda m: m["type"] == "part" and m["name"] == bob)
    assert (frames[-1]["room"], frames[-1]["reason"]) == ("lobby", "removed"), frames
    assert "by" not in frames[-1], frames
    gone = [m for m in frames if m["type"] == "presence" and m["name"] == bob]
    assert [(m["online"], m["reason"]) for m in gone] == [(False, "kicked")], (
        "presence offline must come once, before the part", frames)
    assert bob not in c.request({"type": "accounts"})["accounts"]
    guest = login2(c.server, bob)  # the name is no account any more, on any node
    assert guest.welcome["account"] is False, guest.welcome
    bye(guest)
    bye(on_c)


def test_a_room_created_on_two_nodes_at_once_has_one_owner(trio: list[Node]) -> None:
    """ann (A) and bob (B) join the same new room at the same moment: one of
    them creates it and owns it (13), the other becomes a plain member, and the
    first gets ``join`` for the second, exactly as on one server in some order.
    Every node then agrees on the members and their roles."""
    a, b, _ = trio
    ann, bob = account(a.server, "ann"), account(a.server, "bob")
    on_a, on_b = login(a, ann), login(b, bob)
    room = unique("r")
    on_a.send({"type": "join", "room": room, "id": "ja"})
    on_b.send({"type": "join", "room": room, "id": "jb"})
    joined_a = until(on_a, lambda m: m.get("ref") == "ja")[-1]
    joined_b = until(on_b, lambda m: m.get("ref") == "jb")[-1]
    assert joined_a["type"] == joined_b["type"] == "joined", (joined_a, joined_b)
    roles = sorted((joined_a["role"], joined_b["role"]))
    assert roles == ["member", "owner"], ("two owners, or none", joined_a, joined_b)
    first, second, second_name = ((on_a, on_b, bob) if joined_a["role"] == "owner"
                                  else (on_b, on_a, ann))
    until(first, joined_by(room, second_name))
    expected = sorted([{"name": ann, "role": joined_a["role"], "online": True},
                       {"name": bob, "role": joined_b["role"], "online": True}],
                      key=lambda e: str(e["name"]).casefold())
    for client in (first, second):
        assert call(client, {"type": "members", "room": room})["members"] == expected
    bye(on_a)
    bye(on_b)


def test_one_account_created_on_two_nodes_at_once(tmp_path: Path, redis: RedisServer) -> None:
    """The same name created at the same moment on two nodes, on the control
    sockets and by ``hello.register``: one wins (``ok``, ``welcome``), the
    other gets ``account_exists`` (18, 12), as on one server in some order;
    the account has the winner's password."""
    with cluster(tmp_path, redis, 2, "--registration", "open") as (a, b):
        for round_ in range(5):
            name = unique("acc")
            with a.server.control() as ctl_a, b.server.control() as ctl_b:
                ctl_a.send({"type": "account_add", "name": name, "password": PASSWORD})
                ctl_b.send({"type": "account_add", "name": name, "password": "the other one"})
                replies = [ctl_a.recv(CROSS), ctl_b.recv(CROSS)]
            outcome = sorted(str(r.get("code", r["type"])) for r in replies)
            assert outcome == ["account_exists", "ok"], (round_, replies)
            password = PASSWORD if replies[0]["type"] == "ok" else "the other one"
            bye(login2(b.server, name, password=password))
        for round_ in range(5):
            name = unique("reg")
            with a.server.client() as at_a, b.server.client() as at_b:
                at_a.send(hello2(name, password=PASSWORD, register=True))
                at_b.send(hello2(name, password="the other one", register=True))
                first_a, first_b = at_a.recv(CROSS), at_b.recv(CROSS)
                outcome = sorted(str(f.get("code", f["type"])) for f in (first_a, first_b))
                assert outcome == ["account_exists", "welcome"], (round_, first_a, first_b)


def test_a_watcher_sees_every_node(trio: list[Node]) -> None:
    """A control ``watch`` on C gets the ``msg`` said on A and the login and
    logout (``join``/``leave``) of a user on B (8, 10)."""
    a, b, c = trio
    ann, bob = account(a.server, "ann"), account(a.server, "bob")
    with c.server.control() as watcher:
        watcher.send({"type": "watch", "id": "w"})
        watcher.expect("ok", ref="w")
        on_a = login(a, ann)
        until(watcher, lambda m: m["type"] == "join" and m["name"] == ann)
        ack = say(on_a, "lobby", "watched", "w1")
        got = until(watcher, lambda m: m["type"] == "msg" and m.get("id") == "w1")[-1]
        assert (got["room"], got["seq"], got["from"]) == ("lobby", ack["seq"], ann), got
        on_b = login(b, bob)
        until(watcher, lambda m: m["type"] == "join" and m["name"] == bob)
        bye(on_b)
        leave = until(watcher, lambda m: m["type"] == "leave" and m["name"] == bob)[-1]
        assert leave["reason"] == "quit", leave
        bye(on_a)


def test_a_stalled_node_comes_back(trio: list[Node]) -> None:
    """A node stopped (SIGSTOP) past its lease has its users announced lost;
    when it runs again (SIGCONT) it claims their names again: they are
    announced online and their sessions go on (docs/cluster.md)."""
    a, b, _ = trio
    bob, carol = account(a.server, "bob"), account(a.server, "carol")
    on_b = login(b, carol)
    on_a = login(a, bob)
    until(on_b, presence_of(bob))
    a.server.proc.send_signal(signal.SIGSTOP)
    try:
        lost = until(on_b, presence_of(bob), LOST)[-1]
        assert (lost["online"], lost["reason"]) == (False, "lost"), lost
    finally:
        a.server.proc.send_signal(signal.SIGCONT)
    back = until(on_b, presence_of(bob), LOST)[-1]
    assert back["online"] is True, back
    ack = say(on_a, "lobby", "I was only asleep", "z1")
    got = until(on_b, msg_of("lobby", "z1"))[-1]
    assert got["seq"] == ack["seq"], got
    refused(b.server, "name_taken", hello2(bob, password=PASSWORD))
    bye(on_a)
    bye(on_b)


def test_a_node_refuses_to_start_on_an_emptied_redis(trio: list[Node],
                                                    redis: RedisServer) -> None:
    """A node that served the cluster does not start on a Redis that lost its
    data (it would number rooms from 1 again) (docs/cluster.md)."""
    a = trio[0]
    add_account(a.server, unique("ann"))
    a.stop()
    redis.flushall()
    with pytest.raises(AssertionError, match="holds no cluster data"):
        a.start()


def test_a_node_without_redis_does_not_start(tmp_path: Path) -> None:
    """No Redis at the URL: one line naming it, exit status 1, no traceback."""
    url = f"redis://127.0.0.1:{free_port()}"
    with pytest.raises(AssertionError) as failed, cluster_node(tmp_path, url, "alone"):
        pass
    said = str(failed.value)
    assert "exited (1) before listening" in said and "Traceback" not in said, said
    assert f"cluster: cannot connect to {url}" in said, said


# --- regressions from the white-box review ---------------------------------------------


def test_a_login_refused_after_its_claim_gives_the_name_back(tmp_path: Path,
                                                             redis: RedisServer) -> None:
    """Two logins race for the last place: one is ``server_full`` after it
    claimed its name in Redis; the name is free again on every node."""
    with cluster(tmp_path, redis, 2, "--max-clients", "2") as (a, b):
        first = login2(a.server, unique("u"))
        late1, late2 = unique("x"), unique("y")
        c1, c2 = a.server.client(), a.server.client()
        c1.send(hello2(late1))
        c2.send(hello2(late2))
        answers = {}
        for name, client in ((late1, c1), (late2, c2)):
            answers[name] = client.drain_until(
                lambda m: m["type"] in ("welcome", "error"), CROSS)[-1]
        assert sorted(str(m.get("code", m["type"])) for m in answers.values()) == [
            "server_full", "welcome"], answers
        refused_name = next(n for n, m in answers.items() if m["type"] == "error")
        again = login2(b.server, refused_name)  # not held by the refused login
        assert again.welcome["name"] == refused_name
        for client in (again, first):
            bye(client)
        c1.close()
        c2.close()


def test_a_message_to_a_room_removed_elsewhere_is_refused_not_kept(trio: list[Node]) -> None:
    """``room_remove`` on B while ann's message to the room is on its way on A:
    she gets ``no_such_room`` (no ack that never comes: a ping still answers),
    and the room made again holds nothing of it."""
    a, b, _ = trio
    ann = account(a.server, "ann")
    on_a = login(a, ann)
    room = unique("side")
    join(on_a, room)
    assert b.request({"type": "room_remove", "room": room})["type"] == "ok"
    # The removal is in Redis; A may not have heard of it yet.
    on_a.send({"type": "say", "room": room, "text": "late", "id": "late"})
    reply = until(on_a, answer_to("late"))[-1]
    assert reply["type"] == "error" and reply["code"] in ("no_such_room", "not_member"), reply
    assert call(on_a, {"type": "ping", "id": "p"})["type"] == "pong"
    again = join(on_a, room)
    assert again["seq"] == 0 or again["oldest"] == 0, again
    assert [m for m in history(on_a, room) if m.get("text") == "late"] == []
    bye(on_a)


def test_a_guest_keeps_its_rooms_when_it_moves_to_another_node(trio: list[Node]) -> None:
    """A guest in a room it joined on A takes its session over on B: its
    welcome there lists the room, and its messages there are acknowledged."""
    a, b, c = trio
    guest = unique("gu")
    on_a = login2(a.server, guest)
    room = unique("side")
    join(on_a, room)
    cy = account(a.server, "cy")
    on_c = login(c, cy)
    join(on_c, room)
    on_b = login2(b.server, guest, token=on_a.welcome["token"])
    assert room in [r["room"] for r in on_b.welcome["rooms"]], on_b.welcome
    ack = say(on_b, room, "moved", "mv")
    assert until(on_c, msg_of(room, "mv"))[-1]["seq"] == ack["seq"]
    members = call(on_c, {"type": "members", "room": room})["members"]
    assert [m["name"] for m in members].count(guest) == 1, members
    bye(on_b)
    bye(on_c)
    on_a.close()


def test_a_name_given_back_while_redis_is_down_is_free_when_it_returns(
        trio: list[Node], redis: RedisServer) -> None:
    a, b, _ = trio
    cy = account(a.server, "cy")
    on_b = login(b, cy)
    guest = unique("g")
    on_a = login2(a.server, guest)
    until(on_b, presence_of(guest))
    redis.kill()
    bye(on_a)  # its release and presence wait for Redis
    redis.start()
    gone = until(on_b, lambda m: m["type"] == "presence" and m["name"] == guest
                 and m["online"] is False, RECOVER)[-1]
    assert gone["online"] is False
    deadline = time.monotonic() + RECOVER
    while True:  # the node reconnects within a second or two
        client = b.server.client()
        client.send(hello2(guest))
        first = client.drain_until(lambda m: m["type"] in ("welcome", "error"), CROSS)[-1]
        if first["type"] == "welcome":
            break
        client.close()
        assert first["code"] == "unavailable" and time.monotonic() < deadline, first
        time.sleep(0.2)
    client.close()
    on_b.close()
