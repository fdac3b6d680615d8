"""Contract §18 (the control socket, version 2), black-box: status counts,
accounts, rooms, room_add/room_remove, account_remove, announce to a room,
operators' room requests, and the watch stream's shapes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import ServerProcess, running_server
from tests.v2_support import (
    PASSWORD,
    Message,
    account,
    bye,
    call,
    dm_name,
    error,
    events,
    join,
    kinds,
    login2,
    ok,
    say,
    unique,
)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("control"), "--registration", "open",
                        "--rate", "0") as server:
        yield server


def _request(srv: ServerProcess, message: Message) -> Message:
    reply = srv.request({**message, "id": "c"})
    assert reply.get("ref") == "c", reply
    return reply


def _ok(srv: ServerProcess, message: Message) -> None:
    reply = _request(srv, message)
    assert reply == {"type": "ok", "ref": "c"}, (message, reply)


def _fails(srv: ServerProcess, message: Message, code: str) -> None:
    reply = _request(srv, message)
    assert reply["type"] == "error" and reply["code"] == code, (message, reply)
    assert reply["fatal"] is False, reply


def test_status_counts_rooms_and_accounts(srv: ServerProcess) -> None:
    before = _request(srv, {"type": "status"})
    assert before["type"] == "status"
    assert isinstance(before["rooms"], int) and isinstance(before["accounts"], int)
    assert "tls_fingerprint" not in before  # TLS is off
    account(srv, "st")
    _ok(srv, {"type": "room_add", "room": unique("st")})
    after = _request(srv, {"type": "status"})
    assert (after["rooms"], after["accounts"]) == (before["rooms"] + 1,
                                                   before["accounts"] + 1)


def test_account_requests_and_their_errors_are_not_fatal(srv: ServerProcess) -> None:
    names = [unique(p) for p in ("b", "A", "c")]
    with srv.control() as ctl:
        for name in names:
            ctl.send({"type": "account_add", "name": name, "password": PASSWORD})
            assert ctl.recv()["type"] == "ok"
        cases: list[tuple[Message, str]] = [
            ({"name": names[0].upper(), "password": PASSWORD}, "account_exists"),
            ({"name": unique("w"), "password": "short"}, "weak_password"),
            ({"name": unique("w")}, "weak_password"),
            ({"name": "bad name", "password": PASSWORD}, "bad_name"),
            ({"name": "Server", "password": PASSWORD}, "bad_name"),
            ({"name": 5, "password": PASSWORD}, "bad_request"),
        ]
        for request, code in cases:
            ctl.send({"type": "account_add", **request})
            reply = ctl.recv()
            assert reply["type"] == "error" and reply["code"] == code, (request, reply)
            assert reply["fatal"] is False
        ctl.send({"type": "accounts", "id": "list"})
        listing = ctl.recv()
        assert listing["type"] == "accounts" and listing["ref"] == "list"
        accounts = listing["accounts"]
        assert accounts == sorted(accounts, key=str.casefold)
        assert set(names) <= set(accounts)
        ctl.send({"type": "account_password", "name": names[1], "password": "short"})
        assert ctl.recv()["code"] == "weak_password"
        ctl.send({"type": "account_password", "name": names[1], "password": "new password"})
        assert ctl.recv()["type"] == "ok"
    with login2(srv, names[1], password="new password") as client:
        assert client.welcome["account"] is True
        bye(client)
    with srv.client() as client:
        client.send({"type": "hello", "proto": 2, "name": names[1], "password": PASSWORD})
        assert client.expect("error")["code"] == "auth_failed"


def test_rooms_room_add_and_room_remove(srv: ServerProcess) -> None:
    name = account(srv, "rm")
    a = login2(srv, name, password=PASSWORD)
    public, private = unique("Pub"), unique("Priv")
    _ok(srv, {"type": "room_add", "room": public})
    _ok(srv, {"type": "room_add", "room": private, "private": True})
    _fails(srv, {"type": "room_add", "room": public.upper()}, "not_allowed")
    _fails(srv, {"type": "room_add", "room": dm_name("aa", "bb")}, "not_allowed")
    _fails(srv, {"type": "room_add", "room": "a b"}, "bad_room")
    _fails(srv, {"type": "room_add", "room": public + "x", "private": "no"}, "bad_request")
    _fails(srv, {"type": "room_add"}, "bad_request")
    _fails(srv, {"type": "room_remove", "room": 5}, "bad_request")
    _fails(srv, {"type": "no_such_request"}, "unknown_type")
    joined = join(a, public)
    assert joined["role"] == "member" and joined["kind"] == "public"  # no owner
    error(a, {"type": "join", "room": private}, "not_allowed")
    dm = call(a, {"type": "dm", "to": account(srv, "peer")})["room"]
    listing = _request(srv, {"type": "rooms"})
    assert listing["type"] == "rooms"
    rooms = {r["room"]: r for r in listing["rooms"]}
    names = [r["room"] for r in listing["rooms"]]
    assert names == sorted(names, key=str.casefold)
    assert rooms[private]["kind"] == "private" and rooms[dm]["kind"] == "dm"
    assert rooms[public]["members"] == 1 and rooms["lobby"]["kind"] == "public"
    assert all(r["member"] is False and r["invited"] is False for r in listing["rooms"])
    said = [say(a, public, f"m{i}") for i in range(3)]
    events(a)
    _fails(srv, {"type": "room_remove", "room": "lobby"}, "not_allowed")
    _fails(srv, {"type": "room_remove", "room": unique("none")}, "no_such_room")
    _ok(srv, {"type": "room_remove", "room": public})
    frames = events(a)
    assert len(frames) == 1, frames
    assert frames[0].keys() == {"type", "room", "name", "ts", "reason"}, frames
    assert (frames[0]["room"], frames[0]["name"], frames[0]["reason"]) == (
        public, name, "removed")
    error(a, {"type": "say", "room": public, "text": "gone"}, "no_such_room")
    assert public not in {r["room"] for r in _request(srv, {"type": "rooms"})["rooms"]}
    # Created again, the room continues the removed room's numbering.
    recreated = join(a, public)
    assert recreated["role"] == "owner"
    assert say(a, public, "again")["seq"] == said[-1]["seq"] + 1
    a.close()


def test_account_remove(srv: ServerProcess) -> None:
    doomed, peer = account(srv, "doom"), account(srv, "peer")
    owned, private = unique("own"), unique("priv")
    d = login2(srv, doomed, password=PASSWORD)
    p = login2(srv, peer, password=PASSWORD)
    join(d, owned)
    join(p, owned)
    join(p, private, private=True)
    ok(p, {"type": "invite", "room": private, "name": doomed})
    dm = call(d, {"type": "dm", "to": peer})["room"]
    kept = say(d, owned, "this stays")
    say(d, dm, "this goes")
    events(p)
    events(d)
    _ok(srv, {"type": "account_remove", "name": doomed.upper()})
    frames = d.wait_closed()
    assert frames[-1]["type"] == "bye" and frames[-1]["reason"] == "kicked", frames
    d.close()
    seen = events(p)
    assert seen[0]["type"] == "presence" and seen[0]["online"] is False, seen
    assert seen[0]["name"] == doomed
    parts = kinds(seen, "part")
    assert len(parts) + 1 == len(seen), seen
    removed = {(f["room"], f["name"]) for f in parts}
    # Its memberships end (no by); its dm room goes as by room_remove.
    assert removed == {("lobby", doomed), (owned, doomed), (dm, peer)}, seen
    assert all(f["reason"] == "removed" and "by" not in f for f in parts), parts
    assert doomed not in _request(srv, {"type": "accounts"})["accounts"]
    # Rooms it owned have no owner: any member may set the topic; its
    # messages in other rooms stay.
    ok(p, {"type": "topic", "room": owned, "topic": "ownerless"})
    history = call(p, {"type": "history", "room": owned, "before": 100})["msgs"]
    assert [m["text"] for m in history] == [kept["text"]]
    assert dm not in {r["room"] for r in call(p, {"type": "rooms"})["rooms"]}
    # The name may be registered again; nothing of the old account carries over.
    with login2(srv, doomed, register=True, password=PASSWORD) as again:
        assert [r["room"] for r in again.welcome["rooms"]] == ["lobby"]
        error(again, {"type": "join", "room": private}, "not_allowed")
        members = {m["name"]: m["role"] for m in call(again, {
            "type": "members", "room": owned})["members"]}
        assert members == {peer: "member"}
    p.close()


def test_announce_and_operator_room_requests(srv: ServerProcess) -> None:
    name = account(srv, "an")
    a = login2(srv, name, password=PASSWORD)
    room = unique("an")
    join(a, room)
    events(a)
    _ok(srv, {"type": "announce", "room": room, "text": "  to the room  "})
    _ok(srv, {"type": "announce", "text": "to lobby"})
    msgs = kinds(events(a), "msg")
    assert [(m["room"], m["from"], m["text"]) for m in msgs] == [
        (room, "server", "to the room"), ("lobby", "server", "to lobby")]
    assert msgs[0]["seq"] == 1
    _fails(srv, {"type": "announce", "room": unique("none"), "text": "x"}, "no_such_room")
    _fails(srv, {"type": "announce", "room": "a b", "text": "x"}, "bad_room")
    _fails(srv, {"type": "announce", "room": room, "text": " "}, "empty_message")
    _ok(srv, {"type": "topic", "room": room, "topic": "set by ops"})
    topic = events(a)
    assert [(t["type"], t["topic"], t["by"]) for t in topic] == [
        ("topic", "set by ops", "server")]
    _ok(srv, {"type": "kick", "room": room, "name": name, "ban": True, "reason": "bye"})
    part = events(a)
    assert [(f["type"], f["reason"], f["by"], f["message"]) for f in part] == [
        ("part", "banned", "server", "bye")]
    error(a, {"type": "join", "room": room}, "not_allowed")
    _ok(srv, {"type": "unban", "room": room, "name": name})
    assert join(a, room)["role"] == "owner"  # a ban kept the owner out, not unowned
    _fails(srv, {"type": "kick", "room": room, "name": unique("nobody")}, "no_such_user")
    a.close()


def test_watch_stream_shapes(srv: ServerProcess) -> None:
    with srv.control() as watcher:
        watcher.send({"type": "watch", "id": "w"})
        assert watcher.recv() == {"type": "ok", "ref": "w"}
        alice, bob = account(srv, "wa"), account(srv, "wb")
        a = login2(srv, alice, password=PASSWORD)
        b = login2(srv, bob, password=PASSWORD)
        call(b, {"type": "part", "room": "lobby"})
        room = unique("w")
        join(a, room)
        in_room = say(a, room, "in a room")
        dm = call(a, {"type": "dm", "to": bob})["room"]
        in_dm = say(a, dm, "in a dm")
        old_name = unique("old")
        old = srv.client()
        old.login(old_name)
        bye(old)
        bye(b)
        frames = watcher.drain_until(lambda m: m["type"] == "leave" and m["name"] == bob)
        seen = [(f["type"], f.get("name")) for f in frames
                if f["type"] in ("join", "leave") and "room" not in f]
        assert seen == [("join", alice), ("join", bob), ("join", old_name),
                        ("leave", old_name), ("leave", bob)], frames
        msgs = kinds(frames, "msg")
        for sent in (in_room, in_dm):
            entry = [m for m in msgs if m.get("room") == sent["room"]]
            assert entry == [sent], (sent, msgs)
        leave = kinds(frames, "leave")[-1]
        assert leave["reason"] == "quit" and isinstance(leave["ts"], int)
        a.close()
