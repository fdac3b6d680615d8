"""The SQLite store's message logs alone: against a pure model (rooms, edits,
deletes, removal, retention, reopening), pruning, and the startup errors of a
bad database file."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    precondition,
    rule,
)

from chatd.errors import StartupError
from chatd.history import sender_key
from chatd.records import (
    AddMessage,
    DeleteMessage,
    EditMessage,
    Op,
    PutMember,
    PutRoom,
    RemoveRoom,
    RoomRecord,
    Stored,
)
from chatd.settings import Settings
from chatd.store import StoreError, open_store
from chatd.store_sqlite import _FIND, SqliteStore
from tests.store_model import ModelStore

ROOMS = ("lobby", "dev", "@alice@bob")
SENDERS = ("Alice", "alice", "Bob", "server", "Ünï")
IDS = ("a", "b", "c", "d")
WORDS = ("Straße", "ab", "Hello", "日本語", "x", "😀ok", "سلام")
TERMS = ("strasse", "ab", "hello", "日本", "x", "😀", "ok", "ll", "سل", "本語")
LOBBY = "lobby"


def msg(seq: int, sender: str = "Alice", ident: str | None = None) -> Stored:
    return Stored(seq, 1_700_000_000_000 + seq, sender, f"text {seq}", ident)


def room_op(key: str = LOBBY) -> PutRoom:
    return PutRoom(RoomRecord(key, key, "public"))


def fill(store: SqliteStore, count: int, per_batch: int = 7, ident: bool = True,
         room: str = LOBBY) -> None:
    seq = store.log(room).last_seq
    while count > 0:
        size = min(per_batch, count)
        store.commit([AddMessage(room, msg(seq + i, ident=f"id{seq + i}" if ident else None))
                      for i in range(1, size + 1)])
        seq += size
        count -= size


def new_store(path: Path | str, **kwargs: int) -> SqliteStore:
    store = SqliteStore(str(path), **kwargs)  # type: ignore[arg-type]
    store.commit([room_op()])
    return store


def rows_on_disk(where: Path | SqliteStore) -> int:
    """Rows physically in the table, expired or not (an open store holds the
    exclusive lock, so its own connection is asked)."""
    if isinstance(where, SqliteStore):
        return int(where._db.execute("SELECT count(*) FROM msgs").fetchone()[0])
    with closing(sqlite3.connect(where)) as db:
        return int(db.execute("SELECT count(*) FROM msgs").fetchone()[0])


Iters = tuple[Iterator[Stored], Iterator[Stored]]


class StoreMachine(RuleBasedStateMachine):
    """Drives SqliteStore and the model with the same commits: every answer must
    be equal. Small retention, tail and prune batch so that every path (tail,
    SQL, expired-but-undeleted rows, id reuse, a room created again) is reached."""

    iters = Bundle("iters")

    def __init__(self) -> None:
        super().__init__()
        import tempfile

        self.dir = Path(tempfile.mkdtemp(prefix="chatd-store-"))
        self.path = self.dir / "h.sqlite3"

    @initialize(retain=st.integers(1, 8), tail=st.integers(1, 5), prune=st.integers(1, 5))
    def setup(self, retain: int, tail: int, prune: int) -> None:
        self.params = dict(retain=retain, tail=tail, prune_batch=prune)
        self.model = ModelStore(retain)
        self.store = SqliteStore(str(self.path), **self.params)  # type: ignore[arg-type]
        self.open_iters: list[Iters] = []
        self.clock = 0

    def teardown(self) -> None:
        import shutil

        if hasattr(self, "store"):
            self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def draw_op(self, data: st.DataObject, model: ModelStore, taken: set[tuple[str, str, str]]
                ) -> Op | None:
        key = data.draw(st.sampled_from(ROOMS))
        room = model.room(key)
        kind = data.draw(st.sampled_from(("add",) * 6 + ("edit", "delete", "put", "remove")))
        if kind == "put" or (room.name is None and kind != "remove"):
            return PutRoom(RoomRecord(key, data.draw(st.sampled_from((key, key.upper()))),
                                      "public"))
        if kind == "remove":
            return RemoveRoom(key) if room.name is not None else None
        live = [m for m in model.retained(key) if not m.deleted]
        if kind in ("edit", "delete"):
            if not live:
                return None
            seq = data.draw(st.sampled_from([m.seq for m in live]))
            if kind == "delete":
                return DeleteMessage(key, seq)
            self.clock += 1
            return EditMessage(key, seq, self.text(data), self.clock)
        sender = data.draw(st.sampled_from(SENDERS))
        ident = data.draw(st.none() | st.sampled_from(IDS))
        # As the core does: an id the sender already has retained in the room
        # (or in this turn) creates no message.
        taken_key = (key, sender_key(sender), ident or "")
        if ident is not None and (model.find(key, sender_key(sender), ident) is not None
                                  or taken_key in taken):
            ident = None
        if ident is not None:
            taken.add(taken_key)
        ts = data.draw(st.integers(1, 4))  # ties across rooms, not monotonic in a room
        return AddMessage(key, Stored(room.last + 1, ts, sender, self.text(data), ident))

    @staticmethod
    def text(data: st.DataObject) -> str:
        return " ".join(data.draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=3)))

    @rule(data=st.data(), size=st.integers(1, 10))
    def commit(self, data: st.DataObject, size: int) -> None:
        ops: list[Op] = []
        pending = self.model.copy()
        taken: set[tuple[str, str, str]] = set()
        for _ in range(size):
            op = self.draw_op(data, pending, taken)
            if op is not None:
                ops.append(op)
                pending.apply([op])
        self.store.commit(ops)
        self.model.apply(ops)  # in place: the model's open iterators follow it

    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = SqliteStore(str(self.path), **self.params)  # type: ignore[arg-type]
        self.open_iters.clear()  # a closed store's iterators are not used again

    @rule(target=iters, room=st.sampled_from(ROOMS), since=st.integers(0, 40))
    def start_iter(self, room: str, since: int) -> Iters:
        pair = (self.store.log(room).after(since), self.model.after(room, since))
        self.open_iters.append(pair)
        return pair

    @rule(pair=iters, steps=st.integers(1, 5))
    def advance_iter(self, pair: Iters, steps: int) -> None:
        if pair not in self.open_iters:
            return
        for _ in range(steps):
            # Seqs only: a chunk read from disk shows edits as they were when read.
            got, want = next(pair[0], None), next(pair[1], None)
            assert (got and got.seq) == (want and want.seq)

    @rule(pair=consumes(iters))
    def drain_iter(self, pair: Iters) -> None:
        if pair in self.open_iters:
            assert [m.seq for m in pair[0]] == [m.seq for m in pair[1]]
            self.open_iters.remove(pair)

    @rule(room=st.sampled_from(ROOMS), data=st.data())
    def read(self, room: str, data: st.DataObject) -> None:
        """One of the log's reads (one rule, so that commits are a larger share
        of the steps)."""
        log, model = self.store.log(room), self.model
        kind = data.draw(st.sampled_from(("after", "latest", "before", "get", "find")))
        if kind == "after":
            since = data.draw(st.integers(0, 40))
            assert list(log.after(since)) == list(model.after(room, since))
        elif kind == "latest":
            count = data.draw(st.integers(0, 12))
            assert log.latest(count) == model.latest(room, count)
        elif kind == "before":
            before, limit = data.draw(st.integers(1, 45)), data.draw(st.integers(1, 12))
            assert log.before(before, limit) == model.before(room, before, limit)
        elif kind == "get":
            seq = data.draw(st.integers(0, 40))
            assert log.get(seq) == model.get(room, seq)
        else:
            key = sender_key(data.draw(st.sampled_from(SENDERS)))
            ident = data.draw(st.sampled_from(IDS))
            assert log.find(key, ident) == model.find(room, key, ident)

    @precondition(lambda self: hasattr(self, "store"))
    @rule(rooms=st.lists(st.sampled_from(ROOMS), min_size=1, max_size=3, unique=True),
          terms=st.lists(st.sampled_from(TERMS), min_size=1, max_size=2),
          limit=st.integers(1, 8), before=st.none() | st.integers(1, 40))
    def search(self, rooms: list[str], terms: list[str], limit: int,
               before: int | None) -> None:
        assert (self.store.search(rooms, terms, limit, before)
                == self.model.search(rooms, terms, limit, before))

    @invariant()
    def same_counters_and_snapshot(self) -> None:
        if not hasattr(self, "store"):
            return
        for key in ROOMS:
            assert self.store.log(key).last_seq == self.model.room(key).last
            assert self.store.log(key).oldest_seq == self.model.oldest_seq(key)
        snap = self.store.load()
        assert {(r.key, r.name, r.last_seq, r.oldest_seq) for r in snap.rooms} == {
            (key, room.name, room.last, self.model.oldest_seq(key))
            for key, room in self.model.rooms.items() if room.name is not None}
        assert snap.removed_seqs == {key: room.last for key, room in self.model.rooms.items()
                                     if room.name is None and room.last}


# Each example opens and closes a real database several times: half the
# profile's examples and shorter runs keep it quick. Shrinking a failure may
# take Hypothesis' full five minutes, so the timeout leaves room for that.
TestStoreMachine = pytest.mark.timeout(420)(StoreMachine.TestCase)
TestStoreMachine.settings = settings(settings.default,
                                     max_examples=max(1, settings().max_examples // 2),
                                     stateful_step_count=50)


def test_retention_is_exact_across_pruning(tmp_path: Path) -> None:
    store = new_store(tmp_path / "h.sqlite3", retain=100, tail=30)
    physical_max = 0
    for _ in range(150):
        fill(store, 7)
        log = store.log(LOBBY)
        last = log.last_seq
        first = max(1, last - 99)
        assert log.oldest_seq == first
        assert [m.seq for m in log.after(0)] == list(range(first, last + 1))
        assert [m.seq for m in log.latest(500)] == list(range(first, last + 1))
        assert [m.seq for m in log.before(first + 5, 200)] == list(range(first, first + 5))
        assert log.before(first, 50) == []
        assert log.get(first - 1) is None
        if first > 1:
            assert log.find(sender_key("Alice"), f"id{first - 1}") is None
        assert log.find(sender_key("Alice"), f"id{first}") == msg(first, ident=f"id{first}")
        physical_max = max(physical_max, rows_on_disk(store))
    # Rows are deleted in batches (256 by default), not one by one: expired
    # rows stay on disk for a while, but never more than a batch of them.
    assert 100 + 7 < physical_max <= 100 + 256 + 7
    fts_rows = store._db.execute("SELECT count(*) FROM msgs_fts").fetchone()[0]
    assert fts_rows == rows_on_disk(store)  # the search index is pruned with them
    store.close()


def test_retention_and_tails_are_per_room(tmp_path: Path) -> None:
    store = new_store(tmp_path / "h.sqlite3", retain=10, tail=3, prune_batch=2)
    store.commit([room_op("dev")])
    fill(store, 25)
    fill(store, 4, room="dev")
    assert (store.log(LOBBY).oldest_seq, store.log(LOBBY).last_seq) == (16, 25)
    assert [m.seq for m in store.log("dev").after(0)] == [1, 2, 3, 4]
    assert store.log("dev").find("alice", "id2") == msg(2, ident="id2")  # on disk, per room
    assert store.log(LOBBY).find("alice", "id2") is None  # expired in lobby
    tail = store.log("dev").tail
    assert tail is not None and len(tail) == 3
    assert store.log("never").tail is None and store.log("never").last_seq == 0


def test_id_reused_after_expiry_before_its_row_is_deleted(tmp_path: Path) -> None:
    store = new_store(tmp_path / "h.sqlite3", retain=5, tail=2)
    key = sender_key("Alice")
    store.commit([AddMessage(LOBBY, msg(1, ident="x"))])
    fill(store, 5, ident=False)
    log = store.log(LOBBY)
    assert log.find(key, "x") is None  # expired, although its row is still there
    store.commit([PutMember(LOBBY, "bob", "member"), AddMessage(LOBBY, msg(7, ident="x"))])
    assert log.find(key, "x") == msg(7, ident="x")
    assert [m.seq for m in log.after(0)] == [3, 4, 5, 6, 7]
    assert store.load().members == [(LOBBY, "bob", "member")]  # the retry kept every op
    # Reused in a commit that then removes the room: the expired row is still
    # in the way when the message is stored.
    fill(store, 5, ident=False)
    store.commit([AddMessage(LOBBY, msg(13, ident="x")), RemoveRoom(LOBBY)])
    assert store.log(LOBBY).last_seq == 13 and rows_on_disk(store) == 0
    store.close()


def test_reopen_keeps_seq_ids_and_retention(tmp_path: Path) -> None:
    path = str(tmp_path / "h.sqlite3")
    store = new_store(path, retain=1000, tail=10)
    fill(store, 1234)
    log = store.log(LOBBY)
    before = (log.last_seq, log.oldest_seq, list(log.after(0)), log.before(500, 40))
    store.close()
    store = SqliteStore(path, retain=1000, tail=10)
    log = store.log(LOBBY)
    assert (log.last_seq, log.oldest_seq, list(log.after(0)), log.before(500, 40)) == before
    # Found through the on-disk index: far outside the 10-message tail.
    assert log.find(sender_key("ALICE"), "id300") == msg(300, ident="id300")
    assert log.find(sender_key("Alice"), "id234") is None  # expired
    with pytest.raises(ValueError, match="does not continue"):
        store.commit([AddMessage(LOBBY, msg(1234))])  # a repeated seq is refused
    with pytest.raises(ValueError, match="does not continue"):
        store.commit([AddMessage(LOBBY, msg(1236))])  # and so is a gap
    with pytest.raises(ValueError, match="no message"):
        store.commit([EditMessage(LOBBY, 1235, "x", 1)])  # never given
    store.commit([AddMessage(LOBBY, msg(1235))])
    store.close()
    # A smaller retention at the next start hides the older rows at once.
    store = SqliteStore(path, retain=10, tail=4)
    assert store.log(LOBBY).oldest_seq == 1226
    assert [m.seq for m in store.log(LOBBY).after(0)] == list(range(1226, 1236))
    store.close()


def test_wal_mode_sync_and_exclusive_lock(tmp_path: Path) -> None:
    path = str(tmp_path / "h.sqlite3")
    for sync, level in (("full", 2), ("normal", 1)):
        store = new_store(path, retain=10, sync=sync)  # type: ignore[arg-type]
        assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == level
        fill(store, 3)
        with pytest.raises(StartupError, match=f"{path} is in use by another process"):
            SqliteStore(path, retain=10)
        store.close()
    assert (tmp_path / "h.sqlite3").stat().st_mode & 0o777 == 0o600
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_memory_database(tmp_path: Path) -> None:
    store = new_store(":memory:", retain=3)
    fill(store, 5)
    assert [m.seq for m in store.log(LOBBY).after(0)] == [3, 4, 5]
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "memory"
    assert list(tmp_path.iterdir()) == []
    store.close()


def test_failed_commit_changes_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "h.sqlite3")
    store = new_store(path, retain=10, tail=5)
    fill(store, 3)
    log = store.log(LOBBY)
    assert log.latest(3) == [msg(1, ident="id1"), msg(2, ident="id2"), msg(3, ident="id3")]
    # Two messages of one turn with one sender and id: the core never builds
    # this commit, and if it did nothing of it may be stored.
    with pytest.raises(StoreError, match="cannot commit 4 change"):
        store.commit([room_op("dev"), EditMessage(LOBBY, 2, "changed", 5),
                      AddMessage(LOBBY, msg(4, ident="dup")),
                      AddMessage(LOBBY, msg(5, ident="dup"))])
    assert (log.last_seq, log.oldest_seq) == (3, 1)
    assert log.find(sender_key("Alice"), "dup") is None
    assert log.get(2) == msg(2, ident="id2")  # the edit is not in the tail either
    assert store.load().rooms[0].key == LOBBY and len(store.load().rooms) == 1
    store.commit([AddMessage(LOBBY, msg(4, ident="dup"))])
    store.close()
    assert rows_on_disk(tmp_path / "h.sqlite3") == 4


def test_open_store_picks_the_store(tmp_path: Path) -> None:
    open_store(Settings(data_dir=tmp_path, db=":memory:", history=7)).close()
    assert list(tmp_path.iterdir()) == []  # ":memory:" writes no file
    settings = Settings(data_dir=tmp_path / "new" / "dir", history=7, backlog=9000)
    store = open_store(settings)
    assert isinstance(store, SqliteStore)
    assert Path(settings.db_path).is_file()  # the missing directories were made
    assert store.tail_size == 7  # never more than retained
    store.close()


@pytest.mark.parametrize(("kind", "why"), [
    ("garbage", "file is not a database"),
    ("directory", "is a directory"),
    ("foreign", "not a chatd database"),
    ("newer", "schema version 99"),
    ("corrupt", "malformed|corrupt"),
    ("parent_is_file", "cannot create the directory"),
])
def test_bad_database_is_a_startup_error_naming_the_file(tmp_path: Path, kind: str,
                                                         why: str) -> None:
    path = tmp_path / "h.sqlite3"
    if kind == "garbage":
        path.write_bytes(b"this is not a database, just some text\n" * 200)
    elif kind == "directory":
        path.mkdir()
    elif kind == "foreign":
        with closing(sqlite3.connect(path)) as db:
            db.execute("CREATE TABLE notes (body TEXT)")
    elif kind == "newer":
        SqliteStore(str(path), retain=10).close()
        with closing(sqlite3.connect(path)) as db:
            db.execute("PRAGMA user_version = 99")
    elif kind == "corrupt":
        store = new_store(path, retain=100_000)
        for seq in range(1, 21):
            store.commit([AddMessage(LOBBY, Stored(seq, 1, "Alice", "x" * 3000))])
        store.close()
        data = bytearray(path.read_bytes())
        assert len(data) > 40_000
        data[8192:20480] = b"\xff" * 12288  # wreck b-tree pages, keep the header
        path.write_bytes(bytes(data))
    elif kind == "parent_is_file":
        (tmp_path / "file").write_text("x")
        path = tmp_path / "file" / "h.sqlite3"
    with pytest.raises(StartupError) as caught:
        SqliteStore(str(path), retain=10)
    message = str(caught.value)
    assert str(path) in message and "\n" not in message
    assert re.search(why, message), message


def test_id_lookup_on_disk_uses_the_unique_index(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "h.sqlite3"), retain=100)
    plan = " ".join(str(row) for row in
                    store._db.execute("EXPLAIN QUERY PLAN " + _FIND, (1, "alice", "x", 1)))
    assert "USING INDEX msgs_ident" in plan, plan
    store.close()


def test_a_commit_is_one_transaction(tmp_path: Path) -> None:
    """Group commit: one loop turn's changes cost one COMMIT, however many."""
    store = new_store(tmp_path / "h.sqlite3", retain=1000)
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    store.commit([AddMessage(LOBBY, msg(seq, ident=f"id{seq}")) for seq in range(1, 101)])
    upper = [s.strip().upper() for s in statements]
    assert upper.count("COMMIT") == 1 and upper.index("BEGIN") == 0
    assert rows_on_disk(store) == 100
    store._db.set_trace_callback(None)
    store.close()
