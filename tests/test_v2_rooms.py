"""Contract §11 and §13 (rooms), black-box: join and create, private rooms and
invitations, part, rooms, members, topic, kick/ban/unban, op, dm rooms, the
who-may-do-what table, room_creation, max_rooms and guests' memberships."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ServerProcess, TestClient, running_server
from tests.v2_support import (
    PASSWORD,
    account,
    add_account,
    bye,
    call,
    dm_name,
    error,
    events,
    join,
    kinds,
    login2,
    ok,
    quiet,
    say,
    unique,
)

JOINED_KEYS = {"type", "room", "kind", "topic", "seq", "oldest", "read", "role", "members"}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("rooms"),
                        "--registration", "open", "--rate", "0") as server:
        yield server


def _user(srv: ServerProcess, prefix: str) -> tuple[str, TestClient]:
    name = account(srv, prefix)
    client = login2(srv, name, password=PASSWORD)
    return name, client



def test_join_creates_a_public_room_and_others_see_join(srv: ServerProcess) -> None:
    owner, a = _user(srv, "own")
    room = unique("Dev")
    joined = join(a, room)
    assert joined.keys() - {"ref"} == JOINED_KEYS, joined
    assert (joined["room"], joined["kind"], joined["topic"]) == (room, "public", "")
    assert (joined["seq"], joined["oldest"], joined["read"]) == (0, 0, 0)
    assert joined["role"] == "owner"
    assert joined["members"] == [{"name": owner, "role": "owner", "online": True}]
    quiet(a)
    guest_name = unique("g")
    guest = login2(srv, guest_name)
    events(a)
    again = join(guest, room.lower())  # the same room by casefold, shown as created
    assert again["room"] == room and again["role"] == "member" and again["kind"] == "public"
    assert again["members"] == sorted(
        [{"name": owner, "role": "owner", "online": True},
         {"name": guest_name, "role": "member", "online": True}],
        key=lambda m: str(m["name"]).casefold())
    seen = events(a)
    assert len(seen) == 1 and seen[0]["type"] == "join", seen
    assert seen[0]["room"] == room and seen[0]["name"] == guest_name
    assert isinstance(seen[0]["ts"], int)
    # A member joining again gets joined again and nothing else happens.
    assert join(guest, room)["role"] == "member"
    quiet(a)
    quiet(guest)
    a.close()
    guest.close()


def test_room_names(srv: ServerProcess) -> None:
    _, a = _user(srv, "names")
    assert join(a, "server")["room"] == "server"  # room names follow no reservation
    composed = unique("Café")
    decomposed = unicodedata.normalize("NFD", composed)
    assert join(a, decomposed)["room"] == composed
    assert join(a, composed.upper())["room"] == composed
    longest = unique("L").ljust(32, "x")
    assert join(a, longest)["room"] == longest
    for bad in ("", "a b", "x" * 33, "#x", "a@b", "tab\t", "@", "@a", "@b@a", "@a@b@c",
                "@@a", "@a@"):
        error(a, {"type": "join", "room": bad}, "bad_room")
    for bad_type in (5, None, ["lobby"], True):
        error(a, {"type": "join", "room": bad_type}, "bad_request")
    error(a, {"type": "join"}, "bad_request")
    error(a, {"type": "join", "room": unique("r"), "private": "yes"}, "bad_request")
    error(a, {"type": "join", "room": "lobby", "since": -1}, "bad_request")
    error(a, {"type": "join", "room": "lobby", "since": 2**53}, "bad_request")
    # A well-formed dm room name that names no accounts is no_such_room.
    error(a, {"type": "join", "room": "@nobody1@nobody2"}, "no_such_room")
    a.close()


def test_join_with_since_sends_the_backlog(srv: ServerProcess) -> None:
    _, a = _user(srv, "since")
    room = unique("s")
    join(a, room)
    sent = [say(a, room, f"m{i}") for i in range(1, 5)]
    assert [m["seq"] for m in sent] == [1, 2, 3, 4]
    a.send({"type": "join", "room": room, "since": 2, "id": "j1"})
    frames = events(a)
    assert frames[0]["type"] == "joined" and frames[0]["ref"] == "j1", frames
    assert frames[0]["seq"] == 4 and frames[0]["oldest"] == 1
    assert [(m["type"], m["seq"], m["text"]) for m in frames[1:]] == [
        ("msg", 3, "m3"), ("msg", 4, "m4")]
    assert frames[1]["room"] == room and frames[1]["id"] == sent[2]["id"]
    join(a, room, since=99)  # above the room's seq: no error, no backlog
    quiet(a)
    # A new member joining with since=0 gets every retained message.
    with login2(srv, unique("g")) as guest:
        guest.send({"type": "join", "room": room, "since": 0})
        frames = events(guest)
        assert [m["seq"] for m in kinds(frames, "msg")] == [1, 2, 3, 4]
        assert frames[0]["type"] == "joined"
    a.close()


def test_private_rooms_and_invitations(srv: ServerProcess) -> None:
    owner, a = _user(srv, "po")
    friend, b = _user(srv, "pf")
    guest_name = unique("g")
    guest = login2(srv, guest_name)
    room = unique("Priv")
    joined = join(a, room, private=True)
    assert joined["kind"] == "private" and joined["role"] == "owner"
    error(b, {"type": "join", "room": room}, "not_allowed")
    assert room not in [r["room"] for r in call(b, {"type": "rooms"})["rooms"]]
    error(b, {"type": "members", "room": room}, "not_member")
    error(b, {"type": "history", "room": room, "before": 1}, "not_member")
    events(b)
    ok(a, {"type": "invite", "room": room, "name": friend.upper()})
    invited = b.drain_until(lambda m: m["type"] == "invited")
    assert invited[-1].keys() == {"type", "room", "by", "ts"}, invited
    assert invited[-1]["room"] == room and invited[-1]["by"] == owner
    entry = [r for r in call(b, {"type": "rooms"})["rooms"] if r["room"] == room]
    assert entry == [{"room": room, "kind": "private", "topic": "", "members": 1,
                      "member": False, "invited": True}], entry
    events(a)
    assert join(b, room)["role"] == "member"
    seen = events(a)
    assert [(m["type"], m["name"]) for m in seen] == [("join", friend)], seen
    # The invitation lasts until the invited account is kicked.
    entry = [r for r in call(b, {"type": "rooms"})["rooms"] if r["room"] == room]
    assert entry[0]["member"] is True and entry[0]["invited"] is True, entry
    error(b, {"type": "invite", "room": room, "name": unique("x")}, "no_such_user")
    error(b, {"type": "invite", "room": room, "name": owner}, "not_allowed")
    error(a, {"type": "invite", "room": room, "name": guest_name}, "no_such_user")
    error(guest, {"type": "join", "room": unique("gp"), "private": True}, "not_allowed")
    public = unique("pub")
    join(a, public)
    error(a, {"type": "invite", "room": public, "name": friend}, "not_allowed")
    # An owner who parts its private room stays the owner and may come back.
    assert call(a, {"type": "part", "room": room})["type"] == "parted"
    assert join(a, room)["role"] == "owner"
    # Kicking the invited account ends its invitation.
    ok(a, {"type": "kick", "room": room, "name": friend})
    error(b, {"type": "join", "room": room}, "not_allowed")
    assert room not in [r["room"] for r in call(b, {"type": "rooms"})["rooms"]]
    a.close()
    b.close()
    guest.close()


def test_part_and_owner_returns(srv: ServerProcess) -> None:
    owner, a = _user(srv, "pt")
    other, b = _user(srv, "pt")
    room = unique("Part")
    join(a, room, private=True)
    ok(a, {"type": "invite", "room": room, "name": other})
    join(b, room)
    events(a)
    events(b)
    a.send({"type": "part", "room": room, "id": "p1"})
    frames = events(a)
    assert frames == [{"type": "parted", "room": room, "ref": "p1"}], frames
    seen = events(b)
    assert len(seen) == 1 and seen[0]["type"] == "part", seen
    assert seen[0].keys() == {"type", "room", "name", "ts", "reason"}, seen
    assert (seen[0]["room"], seen[0]["name"], seen[0]["reason"]) == (room, owner, "part")
    error(a, {"type": "part", "room": room}, "not_member")
    error(a, {"type": "part", "room": unique("nope")}, "no_such_room")
    error(a, {"type": "say", "room": room, "text": "gone"}, "not_member")
    assert join(a, room)["role"] == "owner"  # its own private room; still the owner
    opened = call(a, {"type": "dm", "to": other})
    error(a, {"type": "part", "room": opened["room"]}, "not_allowed")
    a.close()
    b.close()


def test_rooms_listing(srv: ServerProcess) -> None:
    _, a = _user(srv, "rl")
    other, b = _user(srv, "rl")
    mine = unique("zPriv")
    theirs = unique("aPriv")
    pub = unique("MPub")
    join(a, mine, private=True)
    join(b, theirs, private=True)
    join(a, pub)
    join(b, pub)
    ok(a, {"type": "topic", "room": pub, "topic": "the topic"})
    dm = call(a, {"type": "dm", "to": other})["room"]
    bye(b)  # members are counted online or not
    listing = call(a, {"type": "rooms"})
    assert listing.keys() == {"type", "rooms", "ref"}
    rooms = listing["rooms"]
    names = [r["room"] for r in rooms]
    assert names == sorted(names, key=str.casefold)
    assert theirs not in names and {mine, pub, dm, "lobby"} <= set(names)
    by_name = {r["room"]: r for r in rooms}
    assert by_name[pub] == {"room": pub, "kind": "public", "topic": "the topic",
                            "members": 2, "member": True, "invited": False}
    assert by_name[mine] == {"room": mine, "kind": "private", "topic": "", "members": 1,
                             "member": True, "invited": False}
    assert by_name[dm]["kind"] == "dm" and by_name[dm]["members"] == 2
    assert all(r["kind"] in ("public", "private", "dm") for r in rooms)
    # Every public room is listed, member or not.
    with login2(srv, unique("g")) as guest:
        entry = {r["room"]: r for r in call(guest, {"type": "rooms"})["rooms"]}
        assert entry[pub]["member"] is False and dm not in entry and mine not in entry
    a.close()


def test_members_sorting_and_online(srv: ServerProcess) -> None:
    room = unique("Mem")
    names = [unique(p) for p in ("bZ", "Ba", "C", "a")]
    for name in names:
        add_account(srv, name)
    clients = [login2(srv, n, password=PASSWORD) for n in names]
    for client in clients:
        join(client, room)
    bye(clients.pop())  # the last one goes offline but stays a member
    with login2(srv, unique("g")) as guest:  # a public room is open to everyone
        reply = call(guest, {"type": "members", "room": room})
        assert reply.keys() == {"type", "room", "members", "ref"} and reply["room"] == room
        listed = reply["members"]
        assert [m["name"] for m in listed] == sorted(names, key=str.casefold)
        online = {m["name"]: m["online"] for m in listed}
        assert online == {n: n != names[-1] for n in names}
        assert {m["role"] for m in listed} == {"owner", "member"}
        assert [m["name"] for m in listed if m["role"] == "owner"] == [names[0]]
        error(guest, {"type": "members", "room": unique("nope")}, "no_such_room")
        error(guest, {"type": "members"}, "bad_request")
    for client in clients:
        client.close()


def test_topic_rules(srv: ServerProcess) -> None:
    owner, a = _user(srv, "to")
    member, b = _user(srv, "tm")
    third, c = _user(srv, "tx")
    room = unique("Top")
    join(a, room)
    join(b, room)
    for client in (a, b, c):
        events(client)
    error(b, {"type": "topic", "room": room, "topic": "mine"}, "not_allowed")
    # The value rules come before not_allowed.
    error(b, {"type": "topic", "room": room, "topic": "x" * 301}, "text_too_long")
    error(a, {"type": "topic", "room": room, "topic": "bad\x00"}, "bad_text")
    error(a, {"type": "topic", "room": room}, "bad_request")
    error(a, {"type": "topic", "room": room, "topic": 5}, "bad_request")
    a.send({"type": "topic", "room": room, "topic": "  Hello  ", "id": "t1"})
    frames = events(a)
    assert [f["type"] for f in frames] == ["ok", "topic"], frames  # reply first
    assert frames[0] == {"type": "ok", "ref": "t1"}
    topic = frames[1]
    assert topic.keys() == {"type", "room", "topic", "by", "ts"}, topic
    assert (topic["room"], topic["topic"], topic["by"]) == (room, "Hello", owner)
    seen = events(b)
    assert [f["type"] for f in seen] == ["topic"] and seen[0]["topic"] == "Hello", seen
    ok(a, {"type": "topic", "room": room, "topic": "é" * 300})
    assert join(b, room)["topic"] == "é" * 300
    ok(a, {"type": "op", "room": room, "name": member, "op": True})
    ok(b, {"type": "topic", "room": room, "topic": "by the op"})
    ok(a, {"type": "topic", "room": room, "topic": " \n "})  # empty: clears it
    events(b)
    assert join(b, room)["topic"] == ""
    # In a room with no owner (lobby), any member may set the topic.
    ok(c, {"type": "topic", "room": "lobby", "topic": "lobby topic"})
    guest_room = unique("gr")
    with login2(srv, unique("g")) as guest:
        assert join(guest, guest_room)["role"] == "member"  # guests own nothing
        join(c, guest_room)
        ok(c, {"type": "topic", "room": guest_room, "topic": "anyone"})
        error(c, {"type": "op", "room": guest_room, "name": third, "op": True},
              "not_allowed")  # owner only, and there is none
    for client in (a, b, c):
        client.close()


def test_kick_ban_unban(srv: ServerProcess) -> None:
    owner, a = _user(srv, "ko")
    op_name, o = _user(srv, "kop")
    op2_name, o2 = _user(srv, "kop")
    member, m = _user(srv, "km")
    member2, m2 = _user(srv, "km")
    room = unique("Kick")
    clients = [a, o, o2, m, m2]
    for client in clients:
        join(client, room)
    ok(a, {"type": "op", "room": room, "name": op_name, "op": True})
    ok(a, {"type": "op", "room": room, "name": op2_name, "op": True})
    for client in clients:
        events(client)
    error(m, {"type": "kick", "room": room, "name": member2}, "not_allowed")
    error(m, {"type": "kick", "room": room, "name": unique("nobody")}, "no_such_user")
    error(o, {"type": "kick", "room": room, "name": unique("nobody")}, "no_such_user")
    error(o, {"type": "kick", "room": room, "name": owner}, "not_allowed")
    error(o, {"type": "kick", "room": room, "name": op2_name}, "not_allowed")
    error(o, {"type": "kick", "room": room, "name": member, "reason": "\x01"}, "bad_text")
    error(o, {"type": "kick", "room": room, "name": member, "ban": "yes"}, "bad_request")
    error(o, {"type": "kick", "room": room}, "bad_request")
    o.send({"type": "kick", "room": room, "name": member.upper(), "reason": "spam",
            "id": "k1"})
    frames = events(o)
    assert [f["type"] for f in frames] == ["ok", "part"], frames
    part = frames[1]
    assert part.keys() == {"type", "room", "name", "ts", "reason", "by", "message"}, part
    assert (part["room"], part["name"], part["reason"]) == (room, member, "kicked")
    assert (part["by"], part["message"]) == (op_name, "spam")
    for client in (a, o2, m2, m):
        seen = events(client)
        assert [(f["type"], f["name"], f["reason"]) for f in seen] == [
            ("part", member, "kicked")], seen
    error(m, {"type": "say", "room": room, "text": "back?"}, "not_member")
    join(m, room)  # a kick without ban does not keep a public room closed
    events(o)
    ok(o, {"type": "kick", "room": room, "name": member, "ban": True})
    seen = events(m)
    assert seen[0]["reason"] == "banned" and "message" not in seen[0], seen
    error(m, {"type": "join", "room": room}, "not_allowed")
    error(m2, {"type": "unban", "room": room, "name": member}, "not_allowed")
    ok(o, {"type": "unban", "room": room, "name": member})
    ok(o, {"type": "unban", "room": room, "name": member})  # not banned: still ok
    ok(o, {"type": "unban", "room": room, "name": unique("never")})
    join(m, room)
    # Operators on the control socket may kick the owner, who stays the owner.
    for client in clients:
        events(client)
    reply = srv.request({"type": "kick", "room": room, "name": owner, "id": "c1"})
    assert reply == {"type": "ok", "ref": "c1"}, reply
    seen = events(m)
    assert seen[0]["by"] == "server" and seen[0]["name"] == owner, seen
    assert join(a, room)["role"] == "owner"
    for client in clients:
        client.close()


def test_op_rules(srv: ServerProcess) -> None:
    owner, a = _user(srv, "oo")
    member, m = _user(srv, "om")
    outsider = account(srv, "ox")
    room = unique("Op")
    join(a, room)
    join(m, room)
    guest_name = unique("g")
    guest = login2(srv, guest_name)
    join(guest, room)
    for client in (a, m, guest):
        events(client)
    error(m, {"type": "op", "room": room, "name": member, "op": True}, "not_allowed")
    error(a, {"type": "op", "room": room, "name": outsider, "op": True}, "not_allowed")
    error(a, {"type": "op", "room": room, "name": owner, "op": True}, "not_allowed")
    # A guest is no account (17), so it cannot be given op.
    error(a, {"type": "op", "room": room, "name": guest_name, "op": True}, "no_such_user")
    error(a, {"type": "op", "room": room, "name": unique("none"), "op": True},
          "no_such_user")
    error(a, {"type": "op", "room": room, "name": member}, "bad_request")
    error(a, {"type": "op", "room": room, "name": member, "op": 1}, "bad_request")
    a.send({"type": "op", "room": room, "name": member, "op": True, "id": "o1"})
    frames = events(a)
    assert [f["type"] for f in frames] == ["ok", "role"], frames
    role = frames[1]
    assert role.keys() == {"type", "room", "name", "role", "by", "ts"}, role
    assert (role["room"], role["name"], role["role"], role["by"]) == (
        room, member, "op", owner)
    for client in (m, guest):
        assert [(f["type"], f["role"]) for f in events(client)] == [("role", "op")]
    ok(a, {"type": "op", "room": room, "name": member, "op": True})  # no change: ok + role
    assert [(f["type"], f["role"]) for f in events(m)] == [("role", "op")]
    ok(a, {"type": "op", "room": room, "name": member, "op": False})
    assert [(f["type"], f["role"]) for f in events(m)] == [("role", "member")]
    # Operators on the control socket may op anyone; by is "server".
    reply = srv.request({"type": "op", "room": room, "name": member, "op": True})
    assert reply["type"] == "ok", reply
    seen = events(m)
    assert [(f["type"], f["role"], f["by"]) for f in seen] == [("role", "op", "server")]
    members = {e["name"]: e["role"] for e in call(m, {"type": "members", "room": room})[
        "members"]}
    assert members == {owner: "owner", member: "op", guest_name: "member"}
    for client in (a, m, guest):
        client.close()


def test_dm_rooms(srv: ServerProcess) -> None:
    alice, a = _user(srv, "Alice")
    bob, b = _user(srv, "BOB")
    carol, c = _user(srv, "carol")
    room = dm_name(alice, bob)
    events(a)
    events(b)
    a.send({"type": "dm", "to": bob.lower(), "id": "d1"})
    frames = events(a)
    assert len(frames) == 1, frames
    opened = frames[0]
    assert opened.keys() == JOINED_KEYS | {"with", "ref"}, opened
    assert (opened["room"], opened["kind"], opened["with"]) == (room, "dm", bob)
    assert (opened["seq"], opened["read"], opened["role"]) == (0, 0, "member")
    assert sorted(m["name"] for m in opened["members"]) == sorted([alice, bob])
    assert all(m["role"] == "member" and m["online"] for m in opened["members"])
    seen = events(b)  # unasked, and no join event
    assert [f["type"] for f in seen] == ["joined"], seen
    assert seen[0]["room"] == room and seen[0]["with"] == alice and "ref" not in seen[0]
    quiet(c)
    assert call(a, {"type": "dm", "to": bob})["room"] == room  # again: the same room
    assert call(b, {"type": "dm", "to": alice.upper()})["room"] == room
    quiet(a)
    quiet(b)
    said = say(a, room, "psst")
    assert said["room"] == room and said["seq"] == 1
    assert kinds(events(b), "msg")[0]["text"] == "psst"
    # A dm room is written and read by its two accounts only.
    error(c, {"type": "join", "room": room}, "not_allowed")
    error(c, {"type": "say", "room": room, "text": "hi"}, "not_member")
    error(c, {"type": "members", "room": room}, "not_member")
    error(c, {"type": "history", "room": room, "before": 5}, "not_member")
    error(c, {"type": "join", "room": dm_name(alice, carol)}, "no_such_room")
    error(c, {"type": "dm", "to": unique("nobody")}, "no_such_user")
    error(c, {"type": "dm"}, "bad_request")
    guest_name = unique("g")
    with login2(srv, guest_name) as guest:
        error(guest, {"type": "dm", "to": alice}, "not_allowed")
        error(a, {"type": "dm", "to": guest_name}, "no_such_user")
    self_dm = call(a, {"type": "dm", "to": alice})
    assert self_dm["type"] == "joined" and self_dm["kind"] == "dm"
    assert self_dm["room"] == f"@{alice.casefold()}@{alice.casefold()}"
    error(a, {"type": "part", "room": self_dm["room"]}, "not_allowed")
    # Listed for its members only.
    assert room in [r["room"] for r in call(a, {"type": "rooms"})["rooms"]]
    assert room not in [r["room"] for r in call(c, {"type": "rooms"})["rooms"]]
    for client in (a, b, c):
        client.close()


def test_dm_room_name_uses_casefold_forms(srv: ServerProcess) -> None:
    inci = unique("İnci")
    add_account(srv, inci)
    name, a = _user(srv, "Zed")
    opened = call(a, {"type": "dm", "to": inci})
    expected = "@" + "@".join(sorted([inci.casefold(), name.casefold()]))
    assert opened["room"] == expected and opened["with"] == inci, opened
    assert len(inci.casefold()) > len(inci)  # "İ" casefolds to two code points
    assert join(a, expected)["room"] == expected
    a.close()


def test_guest_memberships_end_silently(srv: ServerProcess) -> None:
    _, a = _user(srv, "gm")
    room = unique("gm")
    join(a, room)
    guest_name = unique("g")
    guest = login2(srv, guest_name)
    join(guest, room)
    events(a)
    bye(guest)
    seen = a.drain_until(lambda m: m["type"] == "presence")
    assert [f["type"] for f in seen] == ["presence"], seen
    quiet(a)
    listed = [m["name"] for m in call(a, {"type": "members", "room": room})["members"]]
    assert guest_name not in listed
    with login2(srv, guest_name) as again:
        assert [r["room"] for r in again.welcome["rooms"]] == ["lobby"]
    a.close()


def test_room_creation_accounts(tmp_path: Path) -> None:
    with running_server(tmp_path, "--room-creation", "accounts", "--rate", "0") as srv:
        name = account(srv, "acc")
        with login2(srv, name, password=PASSWORD) as a, login2(srv, unique("g")) as guest:
            room = unique("r")
            error(guest, {"type": "join", "room": room}, "not_allowed")
            assert join(a, room)["role"] == "owner"
            assert join(guest, room)["role"] == "member"  # joining is not creating


def test_room_creation_operators(tmp_path: Path) -> None:
    with running_server(tmp_path, "--room-creation", "operators", "--rate", "0") as srv:
        name = account(srv, "acc")
        with login2(srv, name, password=PASSWORD) as a:
            room = unique("r")
            error(a, {"type": "join", "room": room}, "not_allowed")
            error(a, {"type": "join", "room": room, "private": True}, "not_allowed")
            reply = srv.request({"type": "room_add", "room": room, "private": True})
            assert reply["type"] == "ok", reply
            error(a, {"type": "join", "room": room}, "not_allowed")  # private, no invite
            public = unique("p")
            assert srv.request({"type": "room_add", "room": public})["type"] == "ok"
            joined = join(a, public)
            assert joined["role"] == "member" and joined["kind"] == "public"


def test_max_rooms(tmp_path: Path) -> None:
    with running_server(tmp_path, "--max-rooms", "2", "--rate", "0") as srv:
        name = account(srv, "mx")
        other = account(srv, "mx")
        with login2(srv, name, password=PASSWORD) as a:
            assert len(a.welcome["rooms"]) == 1  # lobby
            first = unique("r")
            join(a, first)
            error(a, {"type": "join", "room": unique("r")}, "not_allowed")
            error(a, {"type": "dm", "to": other}, "not_allowed")
            with login2(srv, other, password=PASSWORD) as b:
                existing = unique("e")
                join(b, existing)
                error(a, {"type": "join", "room": existing}, "not_allowed")
            call(a, {"type": "part", "room": first})
            assert join(a, existing)["room"] == existing


def test_kick_an_offline_member(srv: ServerProcess) -> None:
    owner, a = _user(srv, "ko")
    absent, b = _user(srv, "ka")
    room = unique("off")
    join(a, room)
    join(b, room)
    bye(b)
    events(a)
    a.send({"type": "kick", "room": room, "name": absent, "id": "k"})
    frames = events(a)
    assert [f["type"] for f in frames] == ["ok", "part"], frames
    assert (frames[1]["name"], frames[1]["reason"], frames[1]["by"]) == (
        absent, "kicked", owner)
    with login2(srv, absent, password=PASSWORD) as again:
        assert room not in [r["room"] for r in again.welcome["rooms"]]
    a.close()
