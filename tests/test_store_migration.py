"""A version 1 database (one room's messages, before rooms existed) opens as
the history of ``lobby``: same seqs, same ids, same retention, searchable."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from chatd.errors import StartupError
from chatd.history import sender_key
from chatd.records import AddMessage, PutMember, RoomRecord, Stored
from chatd.store_sqlite import SCHEMA_VERSION, SqliteStore

#: The schema statements of version 1, exactly as chatd/store_sqlite.py had
#: them before version 2 (a fixture: never change it).
V1_SCHEMA = (
    """CREATE TABLE msgs (
        seq INTEGER PRIMARY KEY,
        ts INTEGER NOT NULL,
        sender TEXT NOT NULL,
        sender_key TEXT NOT NULL,
        text TEXT NOT NULL,
        ident TEXT
    )""",
    "CREATE UNIQUE INDEX msgs_ident ON msgs (sender_key, ident) WHERE ident IS NOT NULL",
    f"PRAGMA application_id = {0x63686174}",
    "PRAGMA user_version = 1",
)
V1_INSERT = "INSERT INTO msgs (seq, ts, sender, sender_key, text, ident) VALUES (?, ?, ?, ?, ?, ?)"
TEXTS = ("Grüße aus der STRASSE", "日本語のテキスト", "سلام دنیا", "ok 😀 fine", "plain")


def v1_message(seq: int) -> Stored:
    sender = ("Alice", "Bob", "Ünï")[seq % 3]
    return Stored(seq, 1_700_000_000_000 + seq, sender, f"{TEXTS[seq % len(TEXTS)]} {seq}",
                  f"id{seq}" if seq % 4 else None)


def make_v1(path: Path, first: int, last: int) -> None:
    """A version 1 file holding seqs first..last (rows below ``first`` were
    pruned already, as version 1 did in batches)."""
    with closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA journal_mode = WAL")
        for statement in V1_SCHEMA:
            db.execute(statement)
        db.executemany(V1_INSERT, [(m.seq, m.ts, m.sender, sender_key(m.sender), m.text,
                                    m.ident) for m in map(v1_message, range(first, last + 1))])
        db.commit()


def test_v1_database_becomes_the_lobby(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    make_v1(path, 41, 300)
    store = SqliteStore(str(path), retain=200, tail=20)
    snap = store.load()
    assert snap.rooms == [RoomRecord("lobby", "lobby", "public", "", None, 300, 101)]
    assert (snap.accounts, snap.members, snap.bans, snap.invites, snap.markers,
            snap.removed_seqs) == ([], [], [], [], [], {})
    log = store.log("lobby")
    assert (log.last_seq, log.oldest_seq) == (300, 101)  # retention as before
    assert list(log.after(0)) == [v1_message(seq) for seq in range(101, 301)]
    assert log.before(120, 5) == [v1_message(seq) for seq in range(115, 120)]
    # Ids are still found: in the tail and through the index on disk.
    assert log.find(sender_key("ALICE"), "id297") == v1_message(297)
    assert log.find(sender_key("bob"), "id103") == v1_message(103)
    assert log.find(sender_key("ünï"), "id50") is None  # on disk but expired
    # Searchable, retained only.
    hits = store.search(["lobby"], ["strasse"], 100)
    assert [m.seq for _, m in hits] == [s for s in range(300, 100, -1) if s % 5 == 0]
    assert [m.seq for _, m in store.search(["lobby"], ["日本", "1"], 3)] == [291, 281, 271]
    # The numbering goes on; a reused id that expired does not collide.
    store.commit([AddMessage("lobby", Stored(301, 1, "Ünï", "next", "id50")),
                  PutMember("lobby", "alice", "member")])
    assert log.find(sender_key("ünï"), "id50") == Stored(301, 1, "Ünï", "next", "id50")
    store.close()
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("PRAGMA application_id").fetchone()[0] == 0x63686174
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_schema")}
        assert "msgs_v1" not in tables and {"rooms", "logs", "msgs_fts"} <= tables
    store = SqliteStore(str(path), retain=200, tail=20)  # a second start migrates nothing
    assert store.log("lobby").last_seq == 301
    assert store.load().members == [("lobby", "alice", "member")]
    store.close()


def test_empty_v1_database(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    make_v1(path, 1, 0)
    store = SqliteStore(str(path), retain=10)
    assert store.load().rooms == [RoomRecord("lobby", "lobby", "public")]
    store.commit([AddMessage("lobby", v1_message(1))])
    assert store.log("lobby").latest(5) == [v1_message(1)]
    store.close()


def test_a_failed_migration_leaves_the_v1_file_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    make_v1(path, 1, 50)
    with closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE rooms (x)")  # in the way of the new schema
        db.commit()
    with pytest.raises(StartupError, match=str(path)):
        SqliteStore(str(path), retain=10)
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 1
        assert db.execute("SELECT count(*) FROM msgs").fetchone()[0] == 50
