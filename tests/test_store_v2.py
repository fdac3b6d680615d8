"""The version 2 store: rooms, accounts, memberships and markers through a
restart, a room created again, edits and tombstones, and search (contract §14)."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatd.records import (
    AccountRecord,
    AddMessage,
    DeleteMessage,
    EditMessage,
    PutAccount,
    PutBan,
    PutInvite,
    PutMarker,
    PutMember,
    PutRoom,
    RemoveAccount,
    RemoveBan,
    RemoveInvite,
    RemoveMember,
    RemoveRoom,
    RoomRecord,
    Snapshot,
    Stored,
)
from chatd.store_sqlite import SqliteStore
from protocol import name_key


def room(key: str, name: str | None = None, kind: str = "public", topic: str = "",
         owner: str | None = None) -> PutRoom:
    return PutRoom(RoomRecord(key, name or key, kind, topic, owner))


def says(room_key: str, first: int, *texts: str, ts: int | None = None,
         sender: str = "Alice") -> list[AddMessage]:
    return [AddMessage(room_key, Stored(first + i, ts if ts is not None else 1000 + first + i,
                                        sender, text, f"{room_key}-{first + i}"))
            for i, text in enumerate(texts)]


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "chat.sqlite3")


def test_snapshot_survives_a_restart(path: str) -> None:
    store = SqliteStore(path, retain=100)
    store.commit([
        room("lobby"), room("dev", "Dev", "private", "the topic", "alice"),
        room("@alice@bob", kind="dm"),
        PutAccount(AccountRecord("alice", "Alice", "scrypt$1")),
        PutAccount(AccountRecord("bob", "Bob", "scrypt$2")),
        PutAccount(AccountRecord("carol", "Carol", "scrypt$3")),
        PutMember("dev", "alice", "owner"), PutMember("dev", "bob", "member"),
        PutMember("dev", "bob", "op"),  # a role changed
        PutMember("lobby", "carol", "member"), RemoveMember("lobby", "carol"),
        PutBan("dev", "mallory"), PutBan("dev", "mallory"), PutBan("dev", "eve"),
        RemoveBan("dev", "eve"),
        PutInvite("dev", "carol"), PutInvite("dev", "dave"), RemoveInvite("dev", "dave"),
        PutMarker("dev", "alice", 3), PutMarker("dev", "alice", 7),
        PutAccount(AccountRecord("alice", "Alice", "argon2$new")),  # a new password
        room("lobby", topic="welcome"),
        RemoveAccount("carol"),  # the account row only
        *says("dev", 1, "one", "two"),
    ])
    store.close()
    store = SqliteStore(path, retain=100)
    snap = store.load()
    assert sorted(snap.rooms, key=lambda r: r.key) == [
        RoomRecord("@alice@bob", "@alice@bob", "dm"),
        RoomRecord("dev", "Dev", "private", "the topic", "alice", 2, 1),
        RoomRecord("lobby", "lobby", "public", "welcome"),
    ]
    assert sorted(snap.accounts, key=lambda a: a.key) == [
        AccountRecord("alice", "Alice", "argon2$new"), AccountRecord("bob", "Bob", "scrypt$2")]
    assert sorted(snap.members) == [("dev", "alice", "owner"), ("dev", "bob", "op")]
    assert snap.bans == [("dev", "mallory")]
    assert snap.invites == [("dev", "carol")]  # carol's account is gone, not this
    assert snap.markers == [("dev", "alice", 7)]
    assert snap.removed_seqs == {}
    store.close()


def test_a_room_created_again_continues_its_seq(path: str) -> None:
    store = SqliteStore(path, retain=100, tail=2)
    store.commit([room("dev"), *says("dev", 1, "a", "b", "c"), PutMember("dev", "bob", "op"),
                  PutBan("dev", "eve"), PutInvite("dev", "carol"), PutMarker("dev", "bob", 2),
                  room("lobby"), PutMember("lobby", "bob", "member")])
    old = store.log("dev")
    assert old.find("alice", "dev-1") is not None
    backlog = old.after(0)
    assert next(backlog).seq == 1
    store.commit([RemoveRoom("dev")])
    assert next(backlog, None) is None  # a removed room's messages are gone at once
    assert (old.last_seq, old.oldest_seq, old.latest(5), old.get(2)) == (3, 0, [], None)
    assert old.find("alice", "dev-1") is None
    assert store.search(["dev"], ["a"], 10) == []
    store.close()
    store = SqliteStore(path, retain=100, tail=2)
    snap = store.load()
    assert [r.key for r in snap.rooms] == ["lobby"]
    assert snap.removed_seqs == {"dev": 3}
    assert (snap.members, snap.bans, snap.invites, snap.markers) == (
        [("lobby", "bob", "member")], [], [], [])
    assert store.log("dev").last_seq == 3
    # Created again (and written) in one commit, with an id it had used before.
    store.commit([room("dev", "DEV"), *says("dev", 4, "d"),
                  AddMessage("dev", Stored(5, 1, "Alice", "e", "dev-1"))])
    log = store.log("dev")
    assert [(m.seq, m.text) for m in log.after(0)] == [(4, "d"), (5, "e")]
    assert log.find("alice", "dev-1") == Stored(5, 1, "Alice", "e", "dev-1")
    # Removed and created again within one commit: messages of before are gone.
    store.commit([*says("dev", 6, "f"), RemoveRoom("dev"), room("dev"), *says("dev", 7, "g")])
    assert [m.seq for m in log.after(0)] == [7]
    store.close()
    store = SqliteStore(path, retain=100, tail=2)
    snap = store.load()
    assert sorted((r.key, r.last_seq, r.oldest_seq) for r in snap.rooms) == [
        ("dev", 7, 7), ("lobby", 0, 0)]
    assert snap.removed_seqs == {}
    store.close()


def test_edits_and_tombstones(path: str) -> None:
    store = SqliteStore(path, retain=100, tail=3)
    store.commit([room("lobby"), *says("lobby", 1, *(f"message {i}" for i in range(1, 11)))])
    log = store.log("lobby")
    assert log.latest(1)[0].seq == 10  # the tail is read: it must follow the changes
    # One in the tail, one on disk only; an edit then a delete of one message
    # in a single commit; editing a tombstone changes nothing.
    store.commit([EditMessage("lobby", 10, "new ten", 5000),
                  EditMessage("lobby", 2, "new two", 5001),
                  EditMessage("lobby", 3, "gone soon", 5002), DeleteMessage("lobby", 3),
                  DeleteMessage("lobby", 9), EditMessage("lobby", 9, "zombie", 5003)])
    expect = {
        10: Stored(10, 1010, "Alice", "new ten", "lobby-10", 5000),
        2: Stored(2, 1002, "Alice", "new two", "lobby-2", 5001),
        3: Stored(3, 1003, "Alice", "", "lobby-3", None, True),
        9: Stored(9, 1009, "Alice", "", "lobby-9", None, True),
    }

    def check(store: SqliteStore) -> None:
        log = store.log("lobby")
        for seq, want in expect.items():
            assert log.get(seq) == want
            assert log.find("alice", f"lobby-{seq}") == want  # an idempotent resend finds it
        assert {m.seq: m for m in log.after(0)}.items() >= expect.items()
        assert log.latest(2) == [expect[9], expect[10]]
        assert log.before(4, 2) == [expect[2], expect[3]]
        assert [m.seq for _, m in store.search(["lobby"], ["new"], 10)] == [10, 2]
        assert store.search(["lobby"], ["zombie"], 10) == []
        assert store.search(["lobby"], ["gone"], 10) == []
        assert [m.seq for _, m in store.search(["lobby"], ["message"], 10)] == [8, 7, 6, 5, 4, 1]

    assert log.tail is not None
    check(store)
    store.close()
    check(SqliteStore(path, retain=100, tail=3))  # the same, read from disk


SEARCH_TEXTS = [
    "Grüße aus der Straße",  # 1
    "STRASSE in capitals",  # 2
    "東京で日本語を話す",  # 3
    "سلام دنیا، حالت چطوره؟",  # 4
    "party time 🎉🎉 tonight",  # 5
    "a b c",  # 6
    "Ǆemal and ǅ titlecase",  # 7: casefold differs from lower for some letters
    "ﬁne ligature",  # 8: casefold of U+FB01 is "fi"
    "e\u0301cole decomposed",  # 9: NFC makes it "école"
    "the unrelated message",  # 10
]


@pytest.fixture
def searchable(path: str) -> SqliteStore:
    store = SqliteStore(path, retain=100)
    store.commit([room("lobby"), *says("lobby", 1, *SEARCH_TEXTS)])
    return store


def hits(store: SqliteStore, query: str, room_key: str = "lobby") -> list[int]:
    """Seqs found for a query as the core would pass it: NFC+casefolded terms."""
    terms = [name_key(term) for term in query.split()]
    return [m.seq for _, m in store.search([room_key], terms, 100)]


@pytest.mark.parametrize(("query", "seqs"), [
    ("straße", [2, 1]),  # ß casefolds to ss: both spellings, any case
    ("STRASSE", [2, 1]),
    ("strass", [2, 1]),  # part of a word
    ("grüsse", [1]),
    ("日本語", [3]), ("東京", [3]), ("語", [3]),  # CJK: no spaces, 1-2 characters too
    ("سلام", [4]), ("چطوره", [4]), ("حا", [4]),
    ("🎉", [5]), ("🎉🎉", [5]), ("time 🎉", [5]),
    ("a", [10, 8, 7, 6, 5, 2, 1]), ("b c", [6]), ("c b", [6]),  # every term, any order
    ("ǆemal", [7]), ("Ǆ", [7]), ("fine", [8]), ("FI", [8]),
    ("école", [9]), ("e\u0301cole", [9]),
    ("the message", [10]), ("message the", [10]),
    ("missing", []), ("straße missing", []), ("zz", []),
])
def test_search_matches_every_term_as_a_substring(searchable: SqliteStore, query: str,
                                                  seqs: list[int]) -> None:
    assert hits(searchable, query) == seqs
    # Exactly the contract's rule, checked by brute force.
    terms = [name_key(term) for term in query.split()]
    assert seqs == [seq for seq in range(10, 0, -1)
                    if all(term in name_key(SEARCH_TEXTS[seq - 1]) for term in terms)]


def test_search_skips_deleted_expired_and_other_rooms(path: str) -> None:
    store = SqliteStore(path, retain=5, prune_batch=100)
    store.commit([room("lobby"), room("dev"),
                  *says("lobby", 1, *(f"word {i}" for i in range(1, 9))),
                  *says("dev", 1, "word in dev")])
    store.commit([DeleteMessage("lobby", 6)])
    assert hits(store, "word") == [8, 7, 5, 4]  # 1..3 expired (still on disk), 6 deleted
    assert hits(store, "wo") == [8, 7, 5, 4]  # the same through instr()
    assert hits(store, "1") == []
    assert hits(store, "word", "dev") == [1]
    assert hits(store, "word", "nowhere") == []
    assert store.search(["lobby"], ["word"], 2) == [
        ("lobby", Stored(8, 1008, "Alice", "word 8", "lobby-8")),
        ("lobby", Stored(7, 1007, "Alice", "word 7", "lobby-7"))]
    assert [m.seq for _, m in store.search(["lobby"], ["word"], 10, before=7)] == [5, 4]
    assert store.search(["lobby"], ["word"], 10, before=4) == []


def test_search_across_rooms_orders_by_ts_then_room_name_then_seq(path: str) -> None:
    store = SqliteStore(path, retain=100)
    store.commit([
        room("b", "B"), room("a", "a"), room("c", "C"),
        *says("b", 1, "hit one", "hit two", ts=50),
        *says("a", 1, "hit three", ts=50),
        *says("c", 1, "hit new", ts=60), *says("c", 2, "hit old", ts=10),
    ])
    found = [(key, m.seq) for key, m in store.search(["c", "b", "a"], ["hit"], 10)]
    assert found == [("c", 1), ("a", 1), ("b", 2), ("b", 1), ("c", 2)]
    assert [(k, m.seq) for k, m in store.search(["c", "b", "a"], ["hit"], 3)] == found[:3]
    # One room: by descending seq, whatever the ts.
    assert [m.seq for _, m in store.search(["c"], ["hit"], 10)] == [2, 1]


def test_search_uses_the_trigram_index(searchable: SqliteStore) -> None:
    statements: list[str] = []
    searchable._db.set_trace_callback(statements.append)
    assert hits(searchable, "straße a") == [2, 1]
    searchable._db.set_trace_callback(None)
    query = next(s for s in statements if "msgs_fts" in s)
    assert "MATCH" in query
    plan = " ".join(str(row) for row in searchable._db.execute(
        "EXPLAIN QUERY PLAN SELECT rowid FROM msgs_fts WHERE msgs_fts MATCH '\"strasse\"'"))
    assert "VIRTUAL TABLE INDEX" in plan, plan


def test_snapshot_type(path: str) -> None:
    store = SqliteStore(":memory:", retain=10)
    assert store.load() == Snapshot([], [], [], [], [], [], {})
    store.close()
