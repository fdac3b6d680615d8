"""The history stores alone: SQLite against the in-memory model, retention,
reopening, and the startup errors of a bad database file."""

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
    rule,
)

from chatd.errors import StartupError
from chatd.history import MemoryHistory, Stored, StoreError, open_history, sender_key
from chatd.settings import Settings
from chatd.store_sqlite import SqliteHistory

SENDERS = ("Alice", "alice", "Bob", "server", "Ünï")
IDS = ("a", "b", "c", "d")


def msg(seq: int, sender: str = "Alice", ident: str | None = None) -> Stored:
    return Stored(seq, 1_700_000_000_000 + seq, sender, f"text {seq}", ident)


def fill(store: SqliteHistory | MemoryHistory, count: int, per_batch: int = 7,
         ident: bool = True) -> None:
    seq = store.last_seq
    while count > 0:
        size = min(per_batch, count)
        store.append([msg(seq + i, ident=f"id{seq + i}" if ident else None)
                      for i in range(1, size + 1)])
        seq += size
        count -= size


def rows_on_disk(where: Path | SqliteHistory) -> int:
    """Rows physically in the table, expired or not (an open store holds the
    exclusive lock, so its own connection is asked)."""
    if isinstance(where, SqliteHistory):
        return int(where._db.execute("SELECT count(*) FROM msgs").fetchone()[0])
    with closing(sqlite3.connect(where)) as db:
        return int(db.execute("SELECT count(*) FROM msgs").fetchone()[0])


class StoreMachine(RuleBasedStateMachine):
    """Drives SqliteHistory and MemoryHistory with the same operations: every
    answer must be equal. Small retention, tail and prune batch so that every
    path (tail, SQL, expired-but-undeleted rows, id reuse) is reached."""

    iters = Bundle("iters")

    def __init__(self) -> None:
        super().__init__()
        import tempfile

        self.dir = Path(tempfile.mkdtemp(prefix="chatd-history-"))
        self.path = self.dir / "h.sqlite3"

    @initialize(retain=st.integers(1, 12), tail=st.integers(1, 8), prune=st.integers(1, 6))
    def setup(self, retain: int, tail: int, prune: int) -> None:
        self.params = dict(retain=retain, tail=tail, prune_batch=prune)
        self.model = MemoryHistory(retain)
        self.store = SqliteHistory(str(self.path), **self.params)  # type: ignore[arg-type]
        self.open_iters: list[tuple[Iterator[Stored], Iterator[Stored]]] = []

    def teardown(self) -> None:
        import shutil

        if hasattr(self, "store"):
            self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(data=st.data(), size=st.integers(0, 4))
    def append(self, data: st.DataObject, size: int) -> None:
        batch: list[Stored] = []
        taken: set[tuple[str, str]] = set()
        for i in range(1, size + 1):
            sender = data.draw(st.sampled_from(SENDERS))
            ident = data.draw(st.none() | st.sampled_from(IDS))
            key = (sender_key(sender), ident or "")
            # As the core does: an id the sender already has retained (or in
            # this turn) creates no message.
            if ident is not None and (self.model.find(*key) is not None or key in taken):
                ident = None
            if ident is not None:
                taken.add(key)
            batch.append(msg(self.model.last_seq + i, sender, ident))
        self.model.append(batch)
        self.store.append(batch)

    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = SqliteHistory(str(self.path), **self.params)  # type: ignore[arg-type]
        self.open_iters.clear()  # a closed store's iterators are not used again

    @rule(since=st.integers(0, 80))
    def after(self, since: int) -> None:
        assert list(self.store.after(since)) == list(self.model.after(since))

    @rule(target=iters, since=st.integers(0, 80))
    def start_iter(self, since: int) -> tuple[Iterator[Stored], Iterator[Stored]]:
        pair = (self.store.after(since), self.model.after(since))
        self.open_iters.append(pair)
        return pair

    @rule(pair=iters, steps=st.integers(1, 5))
    def advance_iter(self, pair: tuple[Iterator[Stored], Iterator[Stored]], steps: int) -> None:
        if pair not in self.open_iters:
            return
        for _ in range(steps):
            assert next(pair[0], None) == next(pair[1], None)

    @rule(pair=consumes(iters))
    def drain_iter(self, pair: tuple[Iterator[Stored], Iterator[Stored]]) -> None:
        if pair in self.open_iters:
            assert list(pair[0]) == list(pair[1])
            self.open_iters.remove(pair)

    @rule(count=st.integers(0, 20))
    def latest(self, count: int) -> None:
        assert self.store.latest(count) == self.model.latest(count)

    @rule(before=st.integers(1, 90), limit=st.integers(1, 20))
    def before(self, before: int, limit: int) -> None:
        assert self.store.before(before, limit) == self.model.before(before, limit)

    @rule(sender=st.sampled_from(SENDERS), ident=st.sampled_from(IDS))
    def find(self, sender: str, ident: str) -> None:
        key = sender_key(sender)
        assert self.store.find(key, ident) == self.model.find(key, ident)

    @invariant()
    def same_counters(self) -> None:
        if hasattr(self, "store"):
            assert self.store.last_seq == self.model.last_seq
            assert self.store.oldest_seq == self.model.oldest_seq


# Each example opens and closes a real database several times: half the
# profile's examples and shorter runs keep it quick. Shrinking a failure may
# take Hypothesis' full five minutes, so the timeout leaves room for that.
TestStoreMachine = pytest.mark.timeout(420)(StoreMachine.TestCase)
TestStoreMachine.settings = settings(settings.default,
                                     max_examples=max(1, settings().max_examples // 2),
                                     stateful_step_count=30)


def test_retention_is_exact_across_pruning(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    store = SqliteHistory(str(path), retain=100, tail=30)
    physical_max = 0
    for _ in range(150):
        fill(store, 7)
        last = store.last_seq
        first = max(1, last - 99)
        assert store.oldest_seq == first
        assert [m.seq for m in store.after(0)] == list(range(first, last + 1))
        assert [m.seq for m in store.latest(500)] == list(range(first, last + 1))
        assert [m.seq for m in store.before(first + 5, 200)] == list(range(first, first + 5))
        assert store.before(first, 50) == []
        if first > 1:
            assert store.find(sender_key("Alice"), f"id{first - 1}") is None
        assert store.find(sender_key("Alice"), f"id{first}") == msg(first, ident=f"id{first}")
        physical_max = max(physical_max, rows_on_disk(store))
    # Rows are deleted in batches (256 by default), not one by one: expired
    # rows stay on disk for a while, but never more than a batch of them.
    assert 100 + 7 < physical_max <= 100 + 256 + 7
    store.close()


def test_id_reused_after_expiry_before_its_row_is_deleted(tmp_path: Path) -> None:
    store = SqliteHistory(str(tmp_path / "h.sqlite3"), retain=5, tail=2)
    key = sender_key("Alice")
    store.append([msg(1, ident="x")])
    fill(store, 5, ident=False)
    assert store.find(key, "x") is None  # expired, although its row is still there
    store.append([msg(7, ident="x")])  # the unique index must not refuse it
    assert store.find(key, "x") == msg(7, ident="x")
    assert [m.seq for m in store.after(0)] == [3, 4, 5, 6, 7]
    store.close()


def test_reopen_keeps_seq_ids_and_retention(tmp_path: Path) -> None:
    path = str(tmp_path / "h.sqlite3")
    store = SqliteHistory(path, retain=1000, tail=10)
    fill(store, 1234)
    before = (store.last_seq, store.oldest_seq, list(store.after(0)), store.before(500, 40))
    store.close()
    store = SqliteHistory(path, retain=1000, tail=10)
    assert (store.last_seq, store.oldest_seq, list(store.after(0)),
            store.before(500, 40)) == before
    # Found through the on-disk index: far outside the 10-message tail.
    assert store.find(sender_key("ALICE"), "id300") == msg(300, ident="id300")
    assert store.find(sender_key("Alice"), "id234") is None  # expired
    with pytest.raises(ValueError, match="does not continue"):
        store.append([msg(1234)])  # a repeated seq is refused, not stored
    store.append([msg(1235)])
    store.close()
    # A smaller retention at the next start hides the older rows at once.
    store = SqliteHistory(path, retain=10, tail=4)
    assert store.oldest_seq == 1226
    assert [m.seq for m in store.after(0)] == list(range(1226, 1236))
    store.close()


def test_wal_mode_sync_and_exclusive_lock(tmp_path: Path) -> None:
    path = str(tmp_path / "h.sqlite3")
    for sync, level in (("full", 2), ("normal", 1)):
        store = SqliteHistory(path, retain=10, sync=sync)
        assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == level
        fill(store, 3)
        with pytest.raises(StartupError, match=f"{path} is in use by another process"):
            SqliteHistory(path, retain=10)
        store.close()
    assert (tmp_path / "h.sqlite3").stat().st_mode & 0o777 == 0o600
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_failed_append_changes_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "h.sqlite3")
    store = SqliteHistory(path, retain=10)
    fill(store, 3)
    # Two messages of one turn with one sender and id: the core never builds
    # this batch, and if it did nothing of it may be stored.
    with pytest.raises(StoreError, match=r"seq 4\.\.5"):
        store.append([msg(4, ident="dup"), msg(5, ident="dup")])
    assert store.last_seq == 3
    assert store.find(sender_key("Alice"), "dup") is None
    store.append([msg(4, ident="dup")])
    store.close()
    assert rows_on_disk(tmp_path / "h.sqlite3") == 4


def test_open_history_picks_the_store(tmp_path: Path) -> None:
    memory = open_history(Settings(data_dir=tmp_path, db=":memory:", history=7))
    assert isinstance(memory, MemoryHistory)
    settings = Settings(data_dir=tmp_path / "new" / "dir", history=7, backlog=9000)
    store = open_history(settings)
    assert isinstance(store, SqliteHistory)
    assert Path(settings.db_path).is_file()  # the missing directories were made
    assert store._tail_size == 7  # never more than retained
    store.close()


@pytest.mark.parametrize(("kind", "why"), [
    ("garbage", "file is not a database"),
    ("directory", "is a directory"),
    ("foreign", "not a chatd history"),
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
        SqliteHistory(str(path), retain=10).close()
        with closing(sqlite3.connect(path)) as db:
            db.execute("PRAGMA user_version = 99")
    elif kind == "corrupt":
        store = SqliteHistory(str(path), retain=100_000)
        for _ in range(20):
            store.append([Stored(store.last_seq + 1, 1, "Alice", "x" * 3000)])
        store.close()
        data = bytearray(path.read_bytes())
        assert len(data) > 40_000
        data[8192:20480] = b"\xff" * 12288  # wreck b-tree pages, keep the header
        path.write_bytes(bytes(data))
    elif kind == "parent_is_file":
        (tmp_path / "file").write_text("x")
        path = tmp_path / "file" / "h.sqlite3"
    with pytest.raises(StartupError) as caught:
        SqliteHistory(str(path), retain=10)
    message = str(caught.value)
    assert str(path) in message and "\n" not in message
    assert re.search(why, message), message


def test_id_lookup_on_disk_uses_the_unique_index(tmp_path: Path) -> None:
    from chatd.store_sqlite import _FIND

    store = SqliteHistory(str(tmp_path / "h.sqlite3"), retain=100)
    plan = " ".join(str(row) for row in
                    store._db.execute("EXPLAIN QUERY PLAN " + _FIND, ("alice", "x", 1)))
    assert "USING INDEX msgs_ident" in plan, plan
    store.close()


def test_a_batch_is_one_transaction(tmp_path: Path) -> None:
    """Group commit: one loop turn's messages cost one COMMIT, however many."""
    store = SqliteHistory(str(tmp_path / "h.sqlite3"), retain=1000)
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    store.append([msg(seq, ident=f"id{seq}") for seq in range(1, 101)])
    commits = [s for s in statements if s.strip().upper() == "COMMIT"]
    assert len(commits) == 1
    assert [s.strip().upper() for s in statements].index("BEGIN") == 0
    store._db.set_trace_callback(None)
    store.close()
