"""Contract §10 (version 1 sessions on a version 2 server), black-box: lobby is
the one room, users/who/join/leave follow lobby's membership, tombstones and
edits in Part I's shape, what version 1 never gets, accounts, kicks and bans."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import ServerProcess, TestClient, running_server
from tests.test_contract_kit import fatal_close
from tests.v2_support import (
    PASSWORD,
    Message,
    account,
    bye,
    call,
    error,
    events,
    hello2,
    join,
    kinds,
    login2,
    ok,
    refused,
    say,
    summary,
    unique,
)

V2_ONLY = {"edited", "deleted", "topic", "typing", "presence", "role", "invited", "part",
           "joined", "parted"}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("v1compat"), "--registration", "open",
                        "--rate", "0", "--default-rooms", "lobby,extra") as server:
        yield server


def _v1(srv: ServerProcess, name: str, **hello: object) -> TestClient:
    client = srv.client()
    client.login(name, **hello)
    assert client.welcome["proto"] == 1
    return client


def _lobby_seq(client: TestClient) -> int:
    seq: int = join(client, "lobby")["seq"]
    return seq


def test_lobby_is_the_one_room(srv: ServerProcess) -> None:
    name, room = account(srv, "a"), unique("r")
    a = login2(srv, name, password=PASSWORD)
    join(a, room)
    old_name = unique("old")
    old = _v1(srv, old_name)
    assert old.welcome["seq"] == _lobby_seq(a)  # lobby's seq is the version 1 seq
    assert {name, old_name} <= set(old.welcome["users"])
    old.barrier()
    events(a)
    said = say(a, "lobby", "to everyone")
    got = old.expect("msg")
    for key in ("seq", "ts", "from", "text", "id"):
        assert got[key] == said[key], (got, said)
    say(a, room, "not for version 1")
    say(a, "extra", "not for version 1 either")
    assert old.barrier() == []
    old.send({"type": "say", "text": "from v1", "id": "v1a"})
    ack = old.expect("msg", text="from v1", id="v1a")
    assert ack["seq"] == said["seq"] + 1
    seen = kinds(events(a), "msg")
    assert [(m["room"], m["seq"], m["from"], m["id"]) for m in seen] == [
        ("lobby", ack["seq"], old_name, "v1a")]
    old.send({"type": "history", "before": ack["seq"] + 1, "limit": 2})
    history = old.expect("history")
    assert [(m["seq"], m["text"]) for m in history["msgs"]] == [
        (said["seq"], "to everyone"), (ack["seq"], "from v1")]
    # Idempotency of a version 1 say is lobby's.
    old.send({"type": "say", "text": "again", "id": "v1a"})
    assert old.expect("msg")["seq"] == ack["seq"]
    assert events(a) == []
    old.close()
    a.close()


def test_users_who_join_leave_follow_lobby(srv: ServerProcess) -> None:
    inside, outside = account(srv, "in"), account(srv, "out")
    a = login2(srv, inside, password=PASSWORD)
    b = login2(srv, outside, password=PASSWORD)
    assert call(b, {"type": "part", "room": "lobby"})["type"] == "parted"
    old_name = unique("old")
    old = _v1(srv, old_name)
    old.barrier()  # the backlog
    assert inside in old.welcome["users"] and outside not in old.welcome["users"]
    assert old_name in old.welcome["users"]
    old.send({"type": "who"})
    users = old.expect("users")["users"]
    assert inside in users and outside not in users
    # who (version 2) lists every online user.
    everyone = call(b, {"type": "who"})
    assert everyone["type"] == "users" and {inside, outside, old_name} <= set(
        everyone["users"])
    old.barrier()
    join(b, "lobby")
    b.send({"type": "part", "room": "lobby"})
    b.barrier()
    join(b, "lobby")
    b.barrier()
    reply = srv.request({"type": "kick", "room": "lobby", "name": outside})
    assert reply["type"] == "ok", reply
    frames = old.barrier()
    assert [(f["type"], f["name"]) for f in frames] == [
        ("join", outside), ("leave", outside), ("join", outside), ("leave", outside)], frames
    assert [f["reason"] for f in frames if f["type"] == "leave"] == ["quit", "kicked"]
    # A version 2 guest lands in lobby at login and leaves it at logout.
    guest_name = unique("g")
    guest = login2(srv, guest_name)
    frames = old.barrier()
    assert [(f["type"], f["name"]) for f in frames] == [("join", guest_name)], frames
    bye(guest)
    frames = old.drain_until(lambda m: m["type"] == "leave")
    assert [(f["type"], f["name"], f["reason"]) for f in frames] == [
        ("leave", guest_name, "quit")], frames
    assert old.barrier() == []
    for client in (old, a, b):
        client.close()


def test_version_1_never_gets_version_2_frames(srv: ServerProcess) -> None:
    name = account(srv, "x")
    old = _v1(srv, unique("old"))
    old.barrier()  # the backlog
    a = login2(srv, name, password=PASSWORD)
    msg = say(a, "lobby", "edit me")
    ok(a, {"type": "edit", "room": "lobby", "seq": msg["seq"], "text": "edited"})
    ok(a, {"type": "topic", "room": "lobby", "topic": "a topic"})
    a.send({"type": "typing", "room": "lobby"})
    ok(a, {"type": "delete", "room": "lobby", "seq": msg["seq"]})
    assert srv.request({"type": "topic", "room": "lobby", "topic": "t"})["type"] == "ok"
    bye(a)
    frames = old.barrier()
    assert not {f["type"] for f in frames} & V2_ONLY, frames
    assert [f["type"] for f in frames] == ["join", "msg", "leave"], frames
    old.close()


def test_edits_and_tombstones_in_part_1_shape(srv: ServerProcess) -> None:
    name = account(srv, "vera")
    a = login2(srv, name, password=PASSWORD)
    kept = say(a, "lobby", "first", msg_id="k1")
    gone = say(a, "lobby", "second", msg_id="k2")
    ok(a, {"type": "edit", "room": "lobby", "seq": kept["seq"], "text": "first, edited"})
    ok(a, {"type": "delete", "room": "lobby", "seq": gone["seq"]})
    bye(a)

    def check(entries: list[Message]) -> None:
        assert [m["seq"] for m in entries] == [kept["seq"], gone["seq"]], entries
        assert entries[0]["text"] == "first, edited" and entries[0]["from"] == name
        tomb = entries[1]
        assert (tomb["seq"], tomb["ts"], tomb["from"]) == (gone["seq"], gone["ts"], name)
        assert tomb["text"] == "" and tomb["deleted"] is True, tomb
        assert "id" not in tomb, tomb

    with _v1(srv, unique("old"), since=kept["seq"] - 1) as old:
        backlog = kinds(old.barrier(), "msg")
        check(backlog)
        old.send({"type": "history", "before": gone["seq"] + 1, "limit": 2})
        check(old.expect("history")["msgs"])
    # The author's version 1 session resending the id gets the tombstone with id.
    with _v1(srv, name, password=PASSWORD) as again:
        again.barrier()
        again.send({"type": "say", "text": "second", "id": "k2"})
        resent = again.expect("msg")
        assert (resent["seq"], resent["text"], resent["deleted"], resent["id"]) == (
            gone["seq"], "", True, "k2"), resent
        again.send({"type": "say", "text": "whatever", "id": "k1"})
        assert again.expect("msg")["text"] == "first, edited"


def test_version_1_account_login_makes_it_a_lobby_member(srv: ServerProcess) -> None:
    name = account(srv, "Acc")
    with login2(srv, name, password=PASSWORD) as a:
        assert call(a, {"type": "part", "room": "lobby"})["type"] == "parted"
        bye(a)
    refused(srv, "auth_failed", {"type": "hello", "proto": 1, "name": name})
    refused(srv, "auth_failed", {"type": "hello", "proto": 1, "name": name,
                                 "password": "wrong-password"})
    old = _v1(srv, name.lower(), password=PASSWORD)
    assert old.welcome["name"] == name
    bye(old)
    with login2(srv, name, password=PASSWORD) as a:
        assert summary(a.welcome, "lobby")["role"] == "member"  # and it stays one


def test_version_1_guest_is_in_lobby_only(srv: ServerProcess) -> None:
    old_name = unique("old")
    with _v1(srv, old_name), login2(srv, unique("g")) as probe:
        members = [m["name"] for m in call(probe, {"type": "members", "room": "extra"})[
            "members"]]
        assert old_name not in members
        members = [m["name"] for m in call(probe, {"type": "members", "room": "lobby"})[
            "members"]]
        assert old_name in members


def test_kicked_and_banned_from_lobby(srv: ServerProcess) -> None:
    old_name = unique("old")
    watcher = login2(srv, unique("w"))
    old = _v1(srv, old_name)
    events(watcher)
    reply = srv.request({"type": "kick", "room": "lobby", "name": old_name})
    assert reply["type"] == "ok", reply
    frames = old.wait_closed()
    assert frames[-1]["type"] == "bye" and frames[-1]["reason"] == "kicked", frames
    old.close()
    parts = kinds(watcher.drain_until(lambda m: m["type"] == "part"), "part")
    assert (parts[0]["room"], parts[0]["name"], parts[0]["reason"]) == (
        "lobby", old_name, "kicked")
    old = _v1(srv, old_name)
    reply = srv.request({"type": "kick", "room": "lobby", "name": old_name, "ban": True})
    assert reply["type"] == "ok", reply
    frames = old.wait_closed()
    assert frames[-1]["type"] == "bye" and frames[-1]["reason"] == "kicked", frames
    old.close()
    with srv.client() as client:
        client.send({"type": "hello", "proto": 1, "name": old_name})
        fatal_close(client, "not_allowed")
    # The same name as a version 2 guest is not put in lobby.
    with srv.client() as client:
        client.send(hello2(old_name))
        welcome = client.expect("welcome")
        assert "lobby" not in [r["room"] for r in welcome["rooms"]]
        bye(client)
    assert srv.request({"type": "unban", "room": "lobby", "name": old_name})["type"] == "ok"
    with _v1(srv, old_name) as again:
        assert old_name in again.welcome["users"]
    watcher.close()


def test_pm_reaches_any_online_user_whatever_its_version(srv: ServerProcess) -> None:
    new_name = account(srv, "pm")
    old_name = unique("old")
    a = login2(srv, new_name, password=PASSWORD)
    assert call(a, {"type": "part", "room": "lobby"})["type"] == "parted"  # not in lobby
    old = _v1(srv, old_name)
    old.barrier()
    events(a)
    old.send({"type": "pm", "to": new_name.upper(), "text": "hi new", "id": "p1"})
    mine = old.expect("pm")
    assert (mine["from"], mine["to"], mine["text"], mine["id"]) == (
        old_name, new_name, "hi new", "p1")
    theirs = kinds(events(a), "pm")
    assert [(p["from"], p["to"], p["text"]) for p in theirs] == [
        (old_name, new_name, "hi new")]
    a.send({"type": "pm", "to": old_name, "text": "hi old", "id": "p2"})
    assert [(p["from"], p["text"], p["id"]) for p in kinds(events(a), "pm")] == [
        (new_name, "hi old", "p2")]
    got = old.expect("pm")
    assert (got["from"], got["to"], got["text"]) == (new_name, old_name, "hi old")
    error(a, {"type": "pm", "to": unique("offline"), "text": "x"}, "no_such_user")
    old.close()
    a.close()
