"""Contract §14 (messages in rooms), §16 (read markers) and §17 (the check
order), black-box: per-room seq, idempotent say, history, edit and its window,
delete and tombstones, typing, mark and search."""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support import ServerProcess, TestClient, running_server
from tests.test_contract_kit import jframe
from tests.v2_support import (
    PASSWORD,
    Message,
    account,
    bye,
    call,
    error,
    events,
    join,
    kinds,
    login2,
    ok,
    quiet,
    say,
    summary,
    unique,
)

TOMBSTONE_KEYS = {"room", "seq", "ts", "from", "deleted"}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("messages"), "--registration", "open",
                        "--rate", "0", "--history", "6") as server:
        yield server


def _user(srv: ServerProcess, prefix: str) -> tuple[str, TestClient]:
    name = account(srv, prefix)
    return name, login2(srv, name, password=PASSWORD)


def _history(client: TestClient, room: str, before: int, **members: object) -> list[Message]:
    reply = call(client, {"type": "history", "room": room, "before": before, **members})
    assert reply["type"] == "history" and reply["room"] == room, reply
    assert reply["before"] == before
    assert all("type" not in m for m in reply["msgs"])
    msgs: list[Message] = reply["msgs"]
    return msgs


def test_per_room_seq_and_msg_shape(srv: ServerProcess) -> None:
    name, a = _user(srv, "seq")
    other, b = _user(srv, "seq")
    one, two = unique("one"), unique("two")
    for room in (one, two):
        join(a, room)
        join(b, room)
    events(a)
    first = say(a, one, "  hello one  ")
    assert first.keys() == {"type", "room", "seq", "ts", "from", "text", "id"}, first
    assert (first["room"], first["seq"], first["from"], first["text"]) == (
        one, 1, name, "hello one")
    assert isinstance(first["ts"], int) and first["ts"] > 1_600_000_000_000
    assert say(a, two, "hello two")["seq"] == 1
    assert say(b, one, "again")["seq"] == 2
    a.send({"type": "say", "room": one, "text": "no id"})
    noid = kinds(events(a), "msg")
    assert [(m["room"], m["seq"], m["from"]) for m in noid] == [(one, 2, other), (one, 3, name)]
    assert "id" not in noid[1]
    # Only members of the room get its messages.
    with login2(srv, unique("g")) as guest:
        say(a, one, "members only")
        assert kinds(events(guest), "msg") == []
        error(guest, {"type": "say", "room": one, "text": "x"}, "not_member")
        error(guest, {"type": "say", "room": unique("nope"), "text": "x"}, "no_such_room")
    a.close()
    b.close()


def test_idempotent_say_per_room(srv: ServerProcess) -> None:
    name, a = _user(srv, "idem")
    _, b = _user(srv, "idem")
    one, two = unique("one"), unique("two")
    for room in (one, two):
        join(a, room)
        join(b, room)
    original = say(a, one, "first", msg_id="same")
    events(b)
    assert say(a, one, "different text", msg_id="same") == original
    assert say(a, one, "", msg_id="same") == original  # before the text rules
    quiet(b)  # the resend goes to that connection only
    other_room = say(a, two, "first", msg_id="same")  # per room: a new message
    assert other_room["room"] == two and other_room["seq"] == 1
    # Another user's id is its own.
    theirs = say(b, one, "theirs", msg_id="same")
    assert theirs["seq"] == original["seq"] + 1 and theirs["from"] != name
    # As it is now retained: edited ...
    ok(a, {"type": "edit", "room": one, "seq": original["seq"], "text": "edited"})
    resent = say(a, one, "ignored", msg_id="same")
    assert resent["text"] == "edited" and isinstance(resent["edited"], int)
    assert resent["seq"] == original["seq"] and resent["id"] == "same"
    # ... or its tombstone, which then carries id.
    ok(a, {"type": "delete", "room": one, "seq": original["seq"]})
    events(a)
    events(b)
    tomb = say(a, one, "ignored", msg_id="same")
    assert tomb.keys() == TOMBSTONE_KEYS | {"type", "id"}, tomb
    assert tomb["deleted"] is True and tomb["seq"] == original["seq"]
    quiet(b)
    # From another session of the same account too.
    bye(a)
    with login2(srv, name, password=PASSWORD) as again:
        assert say(again, two, "x", msg_id="same") == other_room
    b.close()


def test_history_retention_per_room_and_tombstones(srv: ServerProcess) -> None:
    name, a = _user(srv, "hist")
    room, quiet_room = unique("h"), unique("q")
    join(a, room)
    join(a, quiet_room)
    say(a, quiet_room, "only one")
    sent = [say(a, room, f"m{i}") for i in range(1, 10)]  # history is 6 per room
    ok(a, {"type": "delete", "room": room, "seq": 8})
    msgs = _history(a, room, 100)
    assert [m["seq"] for m in msgs] == [4, 5, 6, 7, 8, 9]
    assert msgs[0] == {k: v for k, v in sent[3].items() if k != "type"}
    assert msgs[4] == {"room": room, "seq": 8, "ts": sent[7]["ts"], "from": name,
                       "deleted": True}
    assert [m["seq"] for m in _history(a, room, 8, limit=2)] == [6, 7]
    assert _history(a, room, 4) == []
    assert [m["seq"] for m in _history(a, quiet_room, 2**53 - 1)] == [1]
    assert join(a, room)["oldest"] == 4
    for bad in ({"before": 0}, {"before": 1, "limit": 0}, {"before": 1, "limit": 201},
                {"before": "1"}, {}):
        error(a, {"type": "history", "room": room, **bad}, "bad_request")
    error(a, {"type": "history", "before": 1, "room": unique("nope")}, "no_such_room")
    # A seq that is no longer retained cannot be edited; its id creates anew.
    error(a, {"type": "edit", "room": room, "seq": 2, "text": "x"}, "no_such_message")
    fresh = say(a, room, "again", msg_id=sent[0]["id"])
    assert fresh["seq"] == 10
    # A public room's history is open to everyone logged in.
    with login2(srv, unique("g")) as guest:
        assert [m["seq"] for m in _history(guest, room, 100, limit=1)] == [10]
    a.close()


def test_edit(srv: ServerProcess) -> None:
    _, a = _user(srv, "ed")
    _, b = _user(srv, "ed")
    room = unique("ed")
    join(a, room)
    join(b, room)
    msg = say(a, room, "typo")
    events(a)
    events(b)
    a.send({"type": "edit", "room": room, "seq": msg["seq"], "text": "  fixed  ",
            "id": "e1"})
    frames = events(a)
    assert [f["type"] for f in frames] == ["ok", "edited"], frames
    edited = frames[1]
    assert edited.keys() == {"type", "room", "seq", "text", "ts"}, edited
    assert (edited["room"], edited["seq"], edited["text"]) == (room, msg["seq"], "fixed")
    assert edited["ts"] >= msg["ts"]
    assert events(b) == [edited]
    served = _history(b, room, 100)[-1]
    assert served["text"] == "fixed" and served["edited"] == edited["ts"]
    assert served["id"] == msg["id"] and served["ts"] == msg["ts"]
    error(b, {"type": "edit", "room": room, "seq": msg["seq"], "text": "mine"},
          "not_allowed")
    # Value rules, then no_such_message, then not_allowed.
    error(b, {"type": "edit", "room": room, "seq": 99, "text": "mine"}, "no_such_message")
    error(b, {"type": "edit", "room": room, "seq": 99, "text": " "}, "empty_message")
    error(a, {"type": "edit", "room": room, "seq": msg["seq"], "text": "\x07"}, "bad_text")
    error(a, {"type": "edit", "room": room, "seq": msg["seq"], "text": "x" * 4001},
          "text_too_long")
    error(a, {"type": "edit", "room": room, "seq": "1", "text": "x"}, "bad_request")
    error(a, {"type": "edit", "room": room, "text": "x"}, "bad_request")
    ok(a, {"type": "delete", "room": room, "seq": msg["seq"]})
    error(a, {"type": "edit", "room": room, "seq": msg["seq"], "text": "x"},
          "no_such_message")
    with login2(srv, unique("g")) as guest:
        error(guest, {"type": "edit", "room": room, "seq": msg["seq"], "text": "x"},
              "not_member")
    a.close()
    b.close()


def test_delete(srv: ServerProcess) -> None:
    owner, a = _user(srv, "do")
    op_name, o = _user(srv, "dop")
    member, m = _user(srv, "dm")
    room = unique("del")
    for client in (a, o, m):
        join(client, room)
    ok(a, {"type": "op", "room": room, "name": op_name, "op": True})
    mine = say(m, room, "mine")
    ops = say(o, room, "the op's")
    owners = say(a, room, "the owner's")
    for client in (a, o, m):
        events(client)
    error(m, {"type": "delete", "room": room, "seq": ops["seq"]}, "not_allowed")
    error(m, {"type": "delete", "room": room, "seq": 99}, "no_such_message")
    m.send({"type": "delete", "room": room, "seq": mine["seq"], "id": "d1"})
    frames = events(m)
    assert [f["type"] for f in frames] == ["ok", "deleted"], frames
    deleted = frames[1]
    assert deleted.keys() == {"type", "room", "seq", "by", "ts"}, deleted
    assert (deleted["room"], deleted["seq"], deleted["by"]) == (room, mine["seq"], member)
    assert events(a) == [deleted] and events(o) == [deleted]
    error(m, {"type": "delete", "room": room, "seq": mine["seq"]}, "no_such_message")
    ok(o, {"type": "delete", "room": room, "seq": owners["seq"]})  # an op: anyone's
    ok(a, {"type": "delete", "room": room, "seq": ops["seq"]})  # the owner too
    assert kinds(events(m), "deleted")[-1]["by"] == owner
    history = _history(m, room, 100)
    assert all(e.keys() == TOMBSTONE_KEYS and e["deleted"] is True for e in history)
    # Seqs are never reused.
    assert say(m, room, "next")["seq"] == owners["seq"] + 1
    # In a room with no owner (lobby) a member may delete only its own.
    theirs = say(a, "lobby", "lobby message")
    error(m, {"type": "delete", "room": "lobby", "seq": theirs["seq"]}, "not_allowed")
    for client in (a, o, m):
        client.close()


def test_typing(srv: ServerProcess) -> None:
    name, a = _user(srv, "ty")
    _, b = _user(srv, "ty")
    room = unique("ty")
    join(a, room)
    join(b, room)
    events(a)
    with login2(srv, unique("g")) as outsider:
        events(a)
        events(b)
        a.send({"type": "typing", "room": room})
        quiet(a)  # no reply, not even to the typist
        assert events(b) == [{"type": "typing", "room": room, "name": name}]
        quiet(outsider)
        error(outsider, {"type": "typing", "room": room}, "not_member")
        error(outsider, {"type": "typing"}, "bad_request")
        error(outsider, {"type": "typing", "room": "a b"}, "bad_room")
    a.close()
    b.close()


def test_mark(srv: ServerProcess) -> None:
    name, a = _user(srv, "mk")
    room = unique("mk")
    join(a, room)
    for i in range(4):
        say(a, room, f"m{i}")
    reply = call(a, {"type": "mark", "room": room, "seq": 3})
    assert reply == {"type": "marked", "room": room, "seq": 3, "ref": reply["ref"]}
    assert call(a, {"type": "mark", "room": room, "seq": 1})["seq"] == 3  # never back
    assert call(a, {"type": "mark", "room": room, "seq": 0})["seq"] == 3
    error(a, {"type": "mark", "room": room, "seq": 5}, "bad_request")
    error(a, {"type": "mark", "room": room, "seq": -1}, "bad_request")
    error(a, {"type": "mark", "room": room}, "bad_request")
    assert join(a, room)["read"] == 3
    with login2(srv, unique("g")) as guest:
        # Membership is checked before the seq's range.
        error(guest, {"type": "mark", "room": room, "seq": 5}, "not_member")
    assert call(a, {"type": "mark", "room": room, "seq": 4})["seq"] == 4
    bye(a)
    # Kept across sessions: every client of the account shows the same count.
    with login2(srv, name, password=PASSWORD) as again:
        entry = summary(again.welcome, room)
        assert (entry["seq"], entry["read"]) == (4, 4)


def test_edit_window_and_no_limit(tmp_path: Path) -> None:
    """A message past a 1 s window cannot be edited; restarted with window 0
    (no limit), the same old message can."""
    db = str(tmp_path / "chat.sqlite3")
    with running_server(tmp_path, "--rate", "0", "--edit-window", "1", db=db) as srv:
        name = account(srv, "win")
        a = login2(srv, name, password=PASSWORD)
        room = unique("w")
        join(a, room)
        old = say(a, room, "old")
        ok(a, {"type": "edit", "room": room, "seq": old["seq"], "text": "in time"})
        # Wait for the server's clock (a new message's ts) to pass the window.
        deadline = time.monotonic() + 10
        while say(a, room, "tick")["ts"] < old["ts"] + 1500:
            assert time.monotonic() < deadline, "the server's clock did not advance"
            time.sleep(0.1)
        error(a, {"type": "edit", "room": room, "seq": old["seq"], "text": "late"},
              "not_allowed")
        a.close()
    with running_server(tmp_path, "--rate", "0", "--edit-window", "0", db=db) as srv, \
            login2(srv, name, password=PASSWORD) as a:
        ok(a, {"type": "edit", "room": room, "seq": old["seq"], "text": "no limit"})
        assert _history(a, room, 2)[0]["text"] == "no limit"
        # The room's seq continues across the restart.
        assert say(a, room, "after restart")["seq"] > old["seq"] + 1


CHECK_ORDER: list[tuple[Message, str]] = [
    ({"type": "say", "room": 5, "text": ""}, "bad_request"),
    ({"type": "say", "text": "x"}, "bad_request"),
    ({"type": "say", "room": "a b", "text": 5}, "bad_request"),
    ({"type": "say", "room": "a b", "text": ""}, "bad_room"),
    ({"type": "say", "room": "@zz@aa", "text": ""}, "bad_room"),
    ({"type": "say", "room": "NOROOM", "text": ""}, "no_such_room"),
    ({"type": "say", "room": "NOTMEMBER", "text": ""}, "not_member"),
    ({"type": "say", "room": "MEMBER", "text": "\x00"}, "bad_text"),
    ({"type": "say", "room": "MEMBER", "text": " \t\n"}, "empty_message"),
    ({"type": "say", "room": "MEMBER", "text": "x" * 4001}, "text_too_long"),
    ({"type": "edit", "room": "NOROOM", "seq": 1, "text": ""}, "no_such_room"),
    ({"type": "edit", "room": "NOTMEMBER", "seq": 99, "text": ""}, "not_member"),
    ({"type": "delete", "room": "NOTMEMBER", "seq": 99}, "not_member"),
    ({"type": "delete", "room": "MEMBER", "seq": 2**53}, "bad_request"),
    ({"type": "mark", "room": "NOTMEMBER", "seq": 2**53 - 1}, "not_member"),
    ({"type": "search", "query": "x", "room": "NOTMEMBER"}, "not_member"),
    ({"type": "search", "query": "", "room": "a b"}, "bad_room"),
    ({"type": "search", "query": "x", "before": 5}, "bad_request"),
    ({"type": "search", "query": "x", "limit": 0}, "bad_request"),
    ({"type": "search", "query": "x", "limit": 101}, "bad_request"),
    ({"type": "search", "query": "x", "room": "MEMBER", "before": 0}, "bad_request"),
    ({"type": "search", "query": "  "}, "empty_message"),
    ({"type": "search", "query": "x" * 201}, "text_too_long"),
    ({"type": "search", "query": "\x1b"}, "bad_text"),
    ({"type": "search"}, "bad_request"),
    ({"type": "kick", "room": "MEMBER", "name": "NOBODY"}, "no_such_user"),
    ({"type": "nosuchtype", "room": "a b"}, "unknown_type"),
    ({"type": "history", "before": 1}, "bad_request"),
    ({"type": "typing", "room": "NOTMEMBER"}, "not_member"),
    ({"type": "members", "room": "NOTMEMBER"}, "not_member"),
    ({"type": "part", "room": "NOTMEMBER"}, "not_member"),
]


def test_check_order(srv: ServerProcess) -> None:
    _, a = _user(srv, "co")
    _, b = _user(srv, "co")
    member, private = unique("mem"), unique("priv")
    join(b, member)  # b owns it; a is a plain member
    join(a, member)
    join(b, private, private=True)
    nobody = unique("nobody")
    names = {"MEMBER": member, "NOTMEMBER": private, "NOROOM": unique("none"),
             "NOBODY": nobody}
    for request, code in CHECK_ORDER:
        concrete = {k: names.get(v, v) if isinstance(v, str) else v
                    for k, v in request.items()}
        error(a, concrete, code)
    a.close()
    b.close()


SEARCH_TEXTS = [
    "Die Straße ist lang",
    "straßenbahn fährt",
    "東京都に住んでいます",
    "cafe\u0301 au lait",
    "Hello World",
    "hello there world",
    "WORLDWIDE hello",
    "nothing here",
]


@pytest.fixture(scope="module")
def corpus(srv: ServerProcess) -> Iterator[tuple[TestClient, str, str, list[Message]]]:
    """A user in two rooms with the texts above, plus a room it is not in."""
    _, a = _user(srv, "se")
    assert call(a, {"type": "part", "room": "lobby"})["type"] == "parted"  # only its rooms
    first, second = unique("sb"), unique("SA")
    join(a, first)
    join(a, second)
    # One burst, so that messages in both rooms share a ts: the tie rule shows.
    a.send_raw(b"".join(jframe({"type": "say", "room": first if i % 2 else second,
                                "text": text, "id": f"c{i}"})
                        for i, text in enumerate(SEARCH_TEXTS)))
    sent = kinds(events(a), "msg")
    assert [m["text"] for m in sent] == [t.strip() for t in SEARCH_TEXTS]
    doomed = say(a, first, "hello deleted world")
    ok(a, {"type": "delete", "room": first, "seq": doomed["seq"]})
    with login2(srv, unique("g")) as guest:
        elsewhere = unique("else")
        join(guest, elsewhere)
        say(guest, elsewhere, "hello world from elsewhere")
        yield a, first, elsewhere, sent
    a.close()


def _norm(text: str) -> str:
    return unicodedata.normalize("NFC", text).casefold()


def _matches(query: str, text: str) -> bool:
    return all(_norm(term) in _norm(text) for term in query.split())


def _search(client: TestClient, query: str, **members: object) -> list[Message]:
    reply = call(client, {"type": "search", "query": query, **members})
    assert reply["type"] == "results", reply
    assert reply["query"] == query.strip()
    if "room" in members:
        assert reply["room"] == members["room"]
    msgs: list[Message] = reply["msgs"]
    return msgs


def test_search_rules(corpus: tuple[TestClient, str, str, list[Message]]) -> None:
    a, first, elsewhere, _ = corpus
    texts = lambda msgs: [m["text"] for m in msgs]  # noqa: E731
    assert set(texts(_search(a, "STRASSE"))) == {"Die Straße ist lang", "straßenbahn fährt"}
    assert texts(_search(a, "京都")) == ["東京都に住んでいます"]
    assert texts(_search(a, "café")) == ["cafe\u0301 au lait"]
    both = _search(a, "  world   HELLO ")
    assert sorted(texts(both)) == ["Hello World", "WORLDWIDE hello", "hello there world"]
    assert _search(a, "deleted") == []  # a tombstone is never found
    # Not a member of elsewhere: not searched unless named, and public.
    assert all(m["room"] != elsewhere for m in _search(a, "elsewhere"))
    found = _search(a, "elsewhere", room=elsewhere)
    assert texts(found) == ["hello world from elsewhere"]
    entry = found[0]
    assert entry.keys() == {"room", "seq", "ts", "from", "text", "id"}, entry
    by_room = _search(a, "h", room=first)
    assert len(by_room) == 3
    assert [m["seq"] for m in by_room] == sorted((m["seq"] for m in by_room), reverse=True)
    assert all(m["room"] == first for m in by_room)
    top = by_room[0]["seq"]
    below = _search(a, "h", room=first, before=top)
    assert [m["seq"] for m in below] == [m["seq"] for m in by_room[1:]]
    assert len(_search(a, "e", limit=2)) == 2
    assert len(_search(a, "e", limit=100)) == len(
        [t for t in SEARCH_TEXTS if _matches("e", t)])


@settings(max_examples=40)
@given(st.lists(st.sampled_from(["hello", "HELLO", "wor", "ß", "ss", "東京", "京都",
                                 "café", "e\u0301", "lang", "x", "ÄHRT", "o w"]),
                min_size=1, max_size=3))
def test_search_matches_the_reference(
        corpus: tuple[TestClient, str, str, list[Message]], terms: list[str]) -> None:
    a, _, elsewhere, sent = corpus
    query = " ".join(terms)
    found = _search(a, query, limit=100)
    expected = [m for m in sent if _matches(query, m["text"])]
    assert {(m["room"], m["seq"]) for m in found} == {(m["room"], m["seq"]) for m in expected}
    key = [(-m["ts"], m["room"].casefold(), -m["seq"]) for m in found]
    assert key == sorted(key)  # newest first, ties by room then seq descending
    assert elsewhere not in {m["room"] for m in found}


def test_acknowledged_changes_survive_a_crash(tmp_path: Path) -> None:
    """Edits, deletions, markers, memberships, roles, bans and invitations
    that were acknowledged are there after the server is killed (14, 12)."""
    db = str(tmp_path / "chat.sqlite3")
    with running_server(tmp_path, "--rate", "0", db=db) as srv:
        owner, member, banned = (account(srv, p) for p in ("cr", "cm", "cb"))
        a = login2(srv, owner, password=PASSWORD)
        m = login2(srv, member, password=PASSWORD)
        b = login2(srv, banned, password=PASSWORD)
        room, private = unique("crash"), unique("cpriv")
        for client in (a, m, b):
            join(client, room)
        join(a, private, private=True)
        ok(a, {"type": "invite", "room": private, "name": member})
        ok(a, {"type": "op", "room": room, "name": member, "op": True})
        ok(a, {"type": "kick", "room": room, "name": banned, "ban": True})
        ok(a, {"type": "topic", "room": room, "topic": "kept"})
        first, second = say(a, room, "one"), say(a, room, "two")
        ok(a, {"type": "edit", "room": room, "seq": first["seq"], "text": "one, edited"})
        ok(a, {"type": "delete", "room": room, "seq": second["seq"]})
        assert call(m, {"type": "mark", "room": room, "seq": 2})["seq"] == 2
        srv.proc.kill()
        srv.wait_exit()
        for client in (a, m, b):
            client.close()
    with running_server(tmp_path, "--rate", "0", db=db) as srv:
        with login2(srv, member, password=PASSWORD) as again:
            entry = summary(again.welcome, room)
            assert (entry["seq"], entry["read"], entry["role"], entry["topic"]) == (
                2, 2, "op", "kept")
            msgs = _history(again, room, 3)
            assert msgs[0]["text"] == "one, edited" and "edited" in msgs[0]
            assert msgs[1].keys() == TOMBSTONE_KEYS
            assert join(again, private)["kind"] == "private"  # the invitation held
        with login2(srv, banned, password=PASSWORD) as again:
            assert room not in [r["room"] for r in again.welcome["rooms"]]
            error(again, {"type": "join", "room": room}, "not_allowed")
