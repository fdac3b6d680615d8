"""Contract §12 (logging in, version 2), black-box: welcome, register, codes,
guests, the server password, the check order, resume, takeover across
versions, password changes and the password-guessing throttle."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ServerProcess, TestClient, running_server
from tests.v2_support import (
    PASSWORD,
    Message,
    account,
    add_account,
    bye,
    call,
    error,
    events,
    hello2,
    join,
    kinds,
    login2,
    ok,
    quiet,
    refused,
    say,
    summary,
    unique,
)

SUMMARY_KEYS = {"room", "kind", "topic", "seq", "oldest", "read", "role"}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("login"),
                        "--registration", "open", "--rate", "0") as server:
        yield server


def _login1(srv: ServerProcess, name: str, **members: object) -> TestClient:
    client = srv.client()
    client.login(name, **members)
    return client



def test_guest_welcome_members_and_no_backlog(srv: ServerProcess) -> None:
    with login2(srv, unique("w")) as watcher:
        events(watcher)
        said = say(watcher, "lobby", "before the guest")
        name = unique("g")
        guest = login2(srv, name)
        welcome = guest.welcome
        assert welcome["name"] == name and welcome["account"] is False
        assert isinstance(welcome["server"], str) and isinstance(welcome["token"], str)
        assert len(welcome["token"]) >= 16
        assert all(isinstance(welcome[k], int) for k in ("max_frame", "max_text"))
        assert isinstance(welcome["heartbeat"], int | float)
        assert [r["room"] for r in welcome["rooms"]] == ["lobby"]  # default_rooms
        lobby = summary(welcome, "lobby")
        assert lobby.keys() >= SUMMARY_KEYS and "with" not in lobby, lobby
        assert lobby["kind"] == "public" and lobby["role"] == "member"
        assert lobby["read"] == 0 and lobby["seq"] >= said["seq"] >= lobby["oldest"] >= 1
        # Without resume, version 2 sends no backlog at all.
        assert kinds(events(guest), "msg") == []
        seen = events(watcher)
        assert [(m["type"], m["name"]) for m in seen] in (
            [("join", name), ("presence", name)], [("presence", name), ("join", name)]), seen
        joined = kinds(seen, "join")[0]
        assert joined["room"] == "lobby" and isinstance(joined["ts"], int)
        online = kinds(seen, "presence")[0]
        assert online["online"] is True and "reason" not in online
        bye(guest)
        # A guest's memberships end silently: presence only, no part.
        seen = watcher.drain_until(lambda m: m["type"] == "presence")
        assert [m["type"] for m in seen] == ["presence"], seen
        assert seen[0]["name"] == name and seen[0]["online"] is False
        assert seen[0]["reason"] == "quit"
        quiet(watcher)


def test_register_then_login_by_casefold(srv: ServerProcess) -> None:
    name = unique("Zoë")
    with login2(srv, name, register=True, password=PASSWORD) as first:
        assert first.welcome["account"] is True and first.welcome["name"] == name
        assert [r["room"] for r in first.welcome["rooms"]] == ["lobby"]
        assert summary(first.welcome, "lobby")["role"] == "member"
        bye(first)
    refused(srv, "account_exists", hello2(name, register=True, password=PASSWORD))
    # account_exists comes before weak_password, and names compare by casefold.
    refused(srv, "account_exists", hello2(name.upper(), register=True, password="short"))
    with login2(srv, name.lower(), password=PASSWORD) as again:
        assert again.welcome["name"] == name and again.welcome["account"] is True
        bye(again)
    with _login1(srv, name.upper(), password=PASSWORD) as v1:
        assert v1.welcome["name"] == name  # as registered, in both versions
        bye(v1)
    refused(srv, "auth_failed", hello2(name, password=PASSWORD + "x"))
    refused(srv, "auth_failed", hello2(name))


@pytest.mark.parametrize("password", [None, "7 chars", "x" * 257, "\ud800" + "x" * 9, "é" * 7])
def test_register_weak_password_is_fatal_and_creates_nothing(
        srv: ServerProcess, password: str | None) -> None:
    name = unique("weak")
    hello = hello2(name, register=True)
    if password is not None:
        hello["password"] = password
    refused(srv, "weak_password", hello)
    accounts = srv.request({"type": "accounts"})["accounts"]
    assert name not in accounts


@pytest.mark.parametrize("password", ["8 chars!", "é" * 8, "x" * 256])
def test_register_password_bounds_in_code_points(srv: ServerProcess, password: str) -> None:
    name = unique("pw")
    client = login2(srv, name, register=True, password=password)
    assert client.welcome["account"] is True
    bye(client)
    with login2(srv, name, password=password) as again:
        assert again.welcome["name"] == name and again.welcome["account"] is True


def test_register_name_of_online_guest_is_name_taken_even_with_token(
        srv: ServerProcess) -> None:
    name = unique("guest")
    with login2(srv, name) as guest:
        token = guest.welcome["token"]
        refused(srv, "name_taken", hello2(name, register=True, password=PASSWORD))
        refused(srv, "name_taken",
                hello2(name, register=True, password=PASSWORD, token=token))
        events(guest)  # the guest's session is untouched
    assert name not in srv.request({"type": "accounts"})["accounts"]


BAD_HELLOS: list[tuple[Message, str]] = [
    ({"type": "hello", "proto": 3, "name": 5}, "bad_request"),
    ({"type": "hello", "proto": 2}, "bad_request"),
    (hello2("ok", resume="lobby"), "bad_request"),
    (hello2("ok", resume=["lobby"]), "bad_request"),
    (hello2("ok", register="yes"), "bad_request"),
    (hello2("ok", register=1), "bad_request"),
    (hello2("ok", code=7), "bad_request"),
    (hello2("ok", password=7), "bad_request"),
    (hello2("ok", token=None), "bad_request"),
    (hello2("bad name", resume=5), "bad_request"),
    ({"type": "hello", "proto": 3, "name": "bad name"}, "unsupported_proto"),
    (hello2("bad name", resume={"#": 1}), "bad_name"),
    (hello2("server"), "bad_name"),
    (hello2("ok", resume={"a b": 1}), "bad_request"),
    (hello2("ok", resume={"@b@a": 1}), "bad_request"),
    (hello2("ok", resume={"@a": 1}), "bad_request"),
    (hello2("ok", resume={"": 1}), "bad_request"),
    (hello2("ok", resume={"x" * 33: 1}), "bad_request"),
    (hello2("ok", resume={"lobby": -1}), "bad_request"),
    (hello2("ok", resume={"lobby": 2**53}), "bad_request"),
    (hello2("ok", resume={"lobby": True}), "bad_request"),
    (hello2("ok", resume={"lobby": 1.5}), "bad_request"),
    (hello2("ok", resume={"lobby": "1"}), "bad_request"),
    (hello2("ok", resume={"lobby": None}), "bad_request"),
    # Step 1 comes before step 2: a bad resume wins over registration.
    (hello2("ok", register=True, resume={"lobby": -1}), "bad_request"),
]


@pytest.mark.parametrize(("hello", "code"), BAD_HELLOS)
def test_hello_check_order_step_1(srv: ServerProcess, hello: Message, code: str) -> None:
    refused(srv, code, hello)


@pytest.mark.parametrize("hello", [
    hello2(unique("s"), since="not checked in version 2"),
    hello2(unique("r"), resume={"@a@b": 0, "nosuchroom": 5, "lobby": 2**53 - 1}),
    hello2(unique("r"), resume={}),
    {"type": "hello", "proto": 1, "name": unique("v"), "register": "ignored",
     "resume": "not checked in version 1", "code": 5},
])
def test_members_of_the_other_version_are_not_checked(
        srv: ServerProcess, hello: Message) -> None:
    with srv.client() as client:
        client.send(hello)
        welcome = client.expect("welcome")
        assert welcome["proto"] == hello["proto"]
        # A resume entry for a room that does not exist (or an unreachable
        # seq) just brings no backlog.
        if hello["proto"] == 2:
            assert kinds(events(client), "msg") == []


def test_registration_code_guests_off_and_server_password(tmp_path: Path) -> None:
    with running_server(tmp_path, "--registration", "code", "--join-code", "sesame",
                        "--guests", "false", "--password", "srvpw-1234",
                        "--rate", "0") as srv:
        existing = account(srv, "ex")
        new = unique("new")
        refused(srv, "auth_failed", hello2(new, register=True, password=PASSWORD))
        refused(srv, "auth_failed", hello2(new, register=True, password=PASSWORD, code="x"))
        # auth_failed (wrong code) comes before account_exists and weak_password.
        refused(srv, "auth_failed", hello2(existing, register=True, password="short"))
        refused(srv, "account_exists",
                hello2(existing, register=True, password="short", code="sesame"))
        refused(srv, "weak_password", hello2(new, register=True, password="short",
                                             code="sesame"))
        # Registering needs neither the server password nor guests.
        with login2(srv, new, register=True, password=PASSWORD, code="sesame") as client:
            assert client.welcome["account"] is True
            bye(client)
        # Guests are off: a name that is no account cannot log in, even with
        # the server password; an account logs in with its own password only.
        refused(srv, "auth_failed", hello2(unique("g"), password="srvpw-1234"))
        refused(srv, "auth_failed", hello2(unique("g")))
        refused(srv, "auth_failed", {"type": "hello", "proto": 1, "name": unique("g"),
                                     "password": "srvpw-1234"})
        refused(srv, "auth_failed", hello2(existing, password="srvpw-1234"))
        with login2(srv, existing, password=PASSWORD) as client:
            assert client.welcome["account"] is True


def test_registration_closed_and_guest_server_password(tmp_path: Path) -> None:
    with running_server(tmp_path, "--password", "srvpw-1234", "--rate", "0") as srv:
        existing = account(srv, "ex")
        # registration_closed comes before account_exists and weak_password.
        refused(srv, "registration_closed", hello2(existing, register=True, password="x"))
        refused(srv, "registration_closed",
                hello2(unique("n"), register=True, password=PASSWORD, code="x"))
        guest = unique("g")
        refused(srv, "auth_failed", hello2(guest))
        refused(srv, "auth_failed", hello2(guest, password="wrong-password"))
        refused(srv, "auth_failed", hello2(existing, password="srvpw-1234"))
        refused(srv, "auth_failed", hello2(existing))
        with login2(srv, guest, password="srvpw-1234") as client:
            assert client.welcome["account"] is False
            # auth_failed is checked before name_taken.
            refused(srv, "auth_failed", hello2(guest))
            refused(srv, "name_taken", hello2(guest, password="srvpw-1234"))
        with login2(srv, existing, password=PASSWORD) as client:
            assert client.welcome["account"] is True  # server password: guests only
            refused(srv, "auth_failed", hello2(existing, password="wrong-password"))
            refused(srv, "name_taken", hello2(existing, password=PASSWORD))


def test_register_on_a_full_server_creates_nothing(tmp_path: Path) -> None:
    with running_server(tmp_path, "--registration", "open", "--max-clients", "1",
                        "--rate", "0") as srv:
        with login2(srv, unique("first")):
            name = unique("late")
            refused(srv, "server_full", hello2(name, register=True, password=PASSWORD))
        assert name not in srv.request({"type": "accounts"})["accounts"]


def test_takeover_with_token_across_versions(srv: ServerProcess) -> None:
    owner = account(srv, "to")
    room = unique("tk")
    with login2(srv, unique("w")) as watcher:
        first = login2(srv, owner, password=PASSWORD)
        join(first, room)
        join(watcher, room)
        events(first)
        events(watcher)
        token = first.welcome["token"]
        refused(srv, "name_taken", hello2(owner, password=PASSWORD))
        refused(srv, "auth_failed", hello2(owner, password="wrong-password", token=token))
        refused(srv, "auth_failed", hello2(owner, token=token))
        events(first)  # still alive

        second = login2(srv, owner, password=PASSWORD, token=token)
        assert second.welcome["token"] != token and second.welcome["name"] == owner
        assert room in [r["room"] for r in second.welcome["rooms"]]
        frames = first.wait_closed()
        assert frames[-1]["type"] == "bye" and frames[-1]["reason"] == "replaced", frames
        first.close()
        quiet(watcher)  # no presence, part, join or leave: the user never went away

        third = srv.client()  # version 1 takes the version 2 session over
        third.login(owner, password=PASSWORD, token=second.welcome["token"])
        assert third.welcome["proto"] == 1 and third.welcome["name"] == owner
        frames = second.wait_closed()
        assert frames[-1]["type"] == "bye" and frames[-1]["reason"] == "replaced", frames
        second.close()
        quiet(watcher)

        fourth = login2(srv, owner, password=PASSWORD, token=third.welcome["token"])
        assert room in [r["room"] for r in fourth.welcome["rooms"]]
        third.wait_closed()
        third.close()
        quiet(watcher)
        bye(fourth)
        offline = watcher.drain_until(lambda m: m["type"] == "presence")[-1]
        assert offline["name"] == owner and offline["online"] is False


def test_guest_takeover_keeps_memberships_across_versions(srv: ServerProcess) -> None:
    name = unique("gt")
    room = unique("gtroom")
    with login2(srv, unique("w")) as watcher:
        guest = login2(srv, name)
        join(guest, room)
        join(watcher, room)
        say(watcher, room, "hello guest")
        marked = call(guest, {"type": "mark", "room": room, "seq": 1})
        assert marked["type"] == "marked" and marked["seq"] == 1
        events(watcher)
        v1 = srv.client()
        v1.login(name, token=guest.welcome["token"])
        guest.wait_closed()
        guest.close()
        v2 = login2(srv, name, token=v1.welcome["token"])
        v1.wait_closed()
        v1.close()
        entry = summary(v2.welcome, room)
        assert entry["read"] == 1 and entry["role"] == "member"
        quiet(watcher)
        bye(v2)


def test_resume_backlog_in_welcome_rooms_order(srv: ServerProcess) -> None:
    name = account(srv, "res")
    alpha, zeta = unique("Alpha"), unique("zeta")
    other = unique("other")
    with login2(srv, unique("o")) as stranger:
        join(stranger, other)
        say(stranger, other, "not for the resumer")
        with login2(srv, name, password=PASSWORD) as client:
            join(client, zeta)
            join(client, alpha)
            a = [say(client, alpha, f"a{i}") for i in range(1, 4)]
            z = [say(client, zeta, f"z{i}") for i in range(1, 3)]
            lob = say(client, "lobby", "l1")
            assert [m["seq"] for m in a] == [1, 2, 3] and [m["seq"] for m in z] == [1, 2]
            ok(client, {"type": "edit", "room": alpha, "seq": 2, "text": "a2 edited"})
            ok(client, {"type": "delete", "room": alpha, "seq": 3})
            bye(client)
    resume = {zeta: 0, alpha.lower(): 1, "lobby": lob["seq"] - 1, other: 0}
    with login2(srv, name, password=PASSWORD, resume=resume) as client:
        rooms = [r["room"] for r in client.welcome["rooms"]]
        assert rooms == sorted(rooms, key=str.casefold)
        assert rooms == sorted([alpha, zeta, "lobby"], key=str.casefold)
        assert summary(client.welcome, alpha)["seq"] == 3
        msgs = kinds(events(client), "msg")
        got = [(m["room"], m["seq"]) for m in msgs]
        expect = {alpha: [(alpha, 2), (alpha, 3)], zeta: [(zeta, 1), (zeta, 2)],
                  "lobby": [("lobby", lob["seq"])]}
        assert got == [pair for room in rooms for pair in expect[room]], msgs
        by_key = {(m["room"], m["seq"]): m for m in msgs}
        edited = by_key[(alpha, 2)]
        assert edited["text"] == "a2 edited" and isinstance(edited["edited"], int)
        assert edited["from"] == name and edited["id"] == a[1]["id"]
        tomb = by_key[(alpha, 3)]
        assert set(tomb) == {"type", "room", "seq", "ts", "from", "deleted"}, tomb
        assert tomb["deleted"] is True and tomb["from"] == name
        plain = by_key[(zeta, 1)]
        assert plain["text"] == "z1" and "edited" not in plain and "deleted" not in plain


def test_password_change(srv: ServerProcess) -> None:
    name = account(srv, "pc")
    client = login2(srv, name, password=PASSWORD)
    error(client, {"type": "password", "old": "wrong-password", "new": "new password 1"},
          "not_allowed")
    error(client, {"type": "password", "old": PASSWORD, "new": "short"}, "weak_password")
    error(client, {"type": "password", "old": PASSWORD}, "weak_password")
    ok(client, {"type": "password", "old": PASSWORD, "new": "new password 1"})
    bye(client)
    refused(srv, "auth_failed", hello2(name, password=PASSWORD))
    with login2(srv, name, password="new password 1") as again:
        assert again.welcome["account"] is True
    with login2(srv, unique("g")) as guest:
        error(guest, {"type": "password", "old": PASSWORD, "new": "new password 2"},
              "not_allowed")


def test_password_guessing_throttle(srv: ServerProcess) -> None:
    name = account(srv, "th")
    for _ in range(3):
        refused(srv, "auth_failed", hello2(name, password="wrong-password"))
    refused(srv, "auth_failed", {"type": "hello", "proto": 1, "name": name.upper(),
                                 "password": "wrong-password"})  # 4 failures, by casefold
    for _ in range(3):  # a missing password does not count
        refused(srv, "auth_failed", hello2(name))
    with login2(srv, name, password=PASSWORD) as client:  # still allowed; no reset
        bye(client)
    refused(srv, "auth_failed", hello2(name, password="wrong-password"))  # the fifth
    for hello in (hello2(name, password=PASSWORD),
                  {"type": "hello", "proto": 1, "name": name, "password": PASSWORD}):
        err = refused(srv, "auth_failed", hello)
        assert isinstance(err.get("retry_after_ms"), int), err
        assert 0 < err["retry_after_ms"] <= 60_000, err
    # The count is per account name: another account from this address is fine.
    other = account(srv, "th")
    with login2(srv, other, password=PASSWORD) as client:
        assert client.welcome["account"] is True


def test_password_change_guessing_is_throttled_too(srv: ServerProcess) -> None:
    name = account(srv, "tp")
    with login2(srv, name, password=PASSWORD) as client:
        for _ in range(5):
            err = error(client, {"type": "password", "old": "wrong-password",
                                 "new": "new password 1"}, "not_allowed")
        err = error(client, {"type": "password", "old": PASSWORD, "new": "new password 1"},
                    "not_allowed")
        assert isinstance(err.get("retry_after_ms"), int) and err["retry_after_ms"] > 0, err
        # The same count throttles logins of that name (checked before name_taken).
        err = refused(srv, "auth_failed", hello2(name, password=PASSWORD))
        assert isinstance(err.get("retry_after_ms"), int) and err["retry_after_ms"] > 0, err


def test_default_rooms_for_guests_and_new_accounts(tmp_path: Path) -> None:
    with running_server(tmp_path, "--default-rooms", "Alpha,beta",
                        "--registration", "open", "--rate", "0") as srv:
        listing = srv.request({"type": "rooms"})
        assert listing["type"] == "rooms"
        kinds_by_room = {r["room"]: r["kind"] for r in listing["rooms"]}
        # lobby exists from the first start; default rooms are created at start.
        assert kinds_by_room == {"Alpha": "public", "beta": "public", "lobby": "public"}
        assert all(r["member"] is False for r in listing["rooms"])
        reg = login2(srv, unique("reg"), register=True, password=PASSWORD)
        assert [r["room"] for r in reg.welcome["rooms"]] == ["Alpha", "beta"]
        assert all(r["role"] == "member" for r in reg.welcome["rooms"])  # no owner
        added = account(srv, "add")
        with login2(srv, added, password=PASSWORD) as client:
            assert [r["room"] for r in client.welcome["rooms"]] == ["Alpha", "beta"]
        guest = unique("g")
        with login2(srv, guest) as client:
            assert [r["room"] for r in client.welcome["rooms"]] == ["Alpha", "beta"]
            events(reg)
            banned = srv.request({"type": "kick", "room": "Alpha", "name": guest,
                                  "ban": True})
            assert banned["type"] == "ok", banned
            bye(client)
        # A guest banned from a default room is not put in it.
        with login2(srv, guest) as client:
            assert [r["room"] for r in client.welcome["rooms"]] == ["beta"]
        # A version 1 guest is put in lobby only.
        v1name = unique("v")
        with _login1(srv, v1name):
            members = call(reg, {"type": "members", "room": "Alpha"})
            assert v1name not in [m["name"] for m in members["members"]]
            members = call(reg, {"type": "members", "room": "lobby"})
            assert v1name in [m["name"] for m in members["members"]]
        reg.close()


def test_guest_default_rooms_stop_at_max_rooms(tmp_path: Path) -> None:
    with running_server(tmp_path, "--default-rooms", "lobby,Alpha,beta",
                        "--max-rooms", "2", "--rate", "0") as srv, \
            login2(srv, unique("g")) as client:
        rooms = [r["room"] for r in client.welcome["rooms"]]
        assert len(rooms) == 2 and set(rooms) <= {"lobby", "Alpha", "beta"}, rooms
        error(client, {"type": "join", "room": unique("more")}, "not_allowed")


def test_dm_to_offline_account_in_welcome_rooms(srv: ServerProcess) -> None:
    sender, receiver = account(srv, "dmsend"), unique("DmRecv")
    add_account(srv, receiver)
    with login2(srv, sender, password=PASSWORD) as client:
        opened = call(client, {"type": "dm", "to": receiver.lower()})
        assert opened["type"] == "joined", opened
        room = opened["room"]
        for text in ("one", "two", "three"):
            say(client, room, text)
    with login2(srv, receiver, password=PASSWORD) as client:
        entry = summary(client.welcome, room)
        assert entry["kind"] == "dm" and entry["with"] == sender
        assert entry["seq"] == 3 and entry["read"] == 0 and entry["oldest"] == 1
        assert entry["seq"] - entry["read"] == 3  # the unread count
        marked = call(client, {"type": "mark", "room": room, "seq": 2})
        assert marked == {"type": "marked", "room": room, "seq": 2, "ref": marked["ref"]}
        bye(client)
    with login2(srv, receiver, password=PASSWORD) as client:
        assert summary(client.welcome, room)["read"] == 2
    with login2(srv, sender, password=PASSWORD) as client:
        entry = summary(client.welcome, room)
        assert entry["with"] == receiver and entry["read"] == 0


def test_pre_login_frame_limit_bounds_resume(srv: ServerProcess) -> None:
    resume = {f"room{i:04d}": 2**53 - 1 for i in range(200)}  # well over 4096 bytes
    refused(srv, "frame_too_large", hello2(unique("big"), resume=resume))
