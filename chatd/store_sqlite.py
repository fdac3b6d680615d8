"""The store in SQLite: WAL mode, one transaction per loop turn, memory tails.

Durability (``--sync``), with the WAL journal:

* ``normal`` (default): a commit is written to the WAL file but not fsynced.
  It survives the server process crashing or being killed (``kill -9``): the
  data is in the operating system's page cache and the WAL is replayed at the
  next start. A power loss or OS crash may lose the last commits (never
  corrupts the database).
* ``full``: every commit fsyncs the WAL, so it survives power loss and OS
  crashes too, at the cost of one fsync per loop turn that changed something.

Either way the chat core calls :meth:`SqliteStore.commit` once per loop turn
with that turn's changes (group commit: one transaction, one ``executemany``
per run of changes of one kind) before any of their frames go out, so the cost
of a commit is shared by every change of the turn and what is acknowledged is
stored. ``:memory:`` is an SQLite database in memory: the same code, lost at exit.

The database is opened in exclusive locking mode: the server is its only
user, no shared-memory index is needed, and a second server pointed at the
same file refuses to start instead of handing out the same seqs.

Retention is logical first and per room: a query never returns a seq at or
below ``last_seq - retain``. Rows are deleted in batches, inside the commit of
a later turn, once a batch's worth of a room has expired.

Each room's numbering is a row of ``logs`` (id, room key, last seq) that
outlives the room: a room created again continues it. Messages are keyed by
(log id, seq). Search uses an FTS5 table with the trigram tokenizer over the
NFC+casefolded text, whose rowid is the message's (log id, seq) packed into
one integer (:func:`_rowid`); it narrows a search to the messages holding
every trigram of the terms, and ``instr()`` on the folded text decides (terms
of one or two characters have no trigram: they are checked by ``instr()`` only).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chatd.errors import StartupError
from chatd.history import TAIL_SIZE, MemoryHistory, sender_key
from chatd.records import (
    AccountRecord,
    AddMessage,
    DeleteMessage,
    EditMessage,
    Op,
    PutAccount,
    PutBan,
    PutInvite,
    PutMarker,
    PutMember,
    PutRoom,
    RemoveAccount,
    RemoveBan,
    RemoveInvite,
    RemoveMarker,
    RemoveMember,
    RemoveRoom,
    RoomRecord,
    Snapshot,
    Stored,
)
from chatd.store import StoreError
from protocol import name_key

log = logging.getLogger(__name__)

#: ``PRAGMA application_id``: marks a file as a chatd database ("chat").
APPLICATION_ID = 0x63686174
#: ``PRAGMA user_version`` of the schema below; a newer one is refused, an
#: older one is brought up to date by :data:`_MIGRATIONS` at start.
SCHEMA_VERSION = 2
#: The room a version 1 database's messages belong to (contract §10).
LOBBY = "lobby"

#: A message's search rowid is ``log id << SEQ_BITS | seq``: a room may count
#: to 2**40 messages and 2**23 room names may ever be used.
SEQ_BITS = 40

_SCHEMA = (
    # One row per room key ever used: its numbering survives RemoveRoom.
    "CREATE TABLE logs (id INTEGER PRIMARY KEY, room TEXT NOT NULL UNIQUE, "
    "last_seq INTEGER NOT NULL)",
    "CREATE TABLE rooms (key TEXT PRIMARY KEY, name TEXT NOT NULL, kind TEXT NOT NULL, "
    "topic TEXT NOT NULL, owner TEXT) WITHOUT ROWID",
    """CREATE TABLE msgs (
        log INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        ts INTEGER NOT NULL,
        sender TEXT NOT NULL,
        sender_key TEXT NOT NULL,
        text TEXT NOT NULL,
        ident TEXT,
        edited INTEGER,
        deleted INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (log, seq)
    ) WITHOUT ROWID""",
    # The idempotency index of `say`: by (room, sender, id), kept across restarts.
    "CREATE UNIQUE INDEX msgs_ident ON msgs (log, sender_key, ident) WHERE ident IS NOT NULL",
    # The NFC+casefolded text of every undeleted message; case_sensitive 1:
    # the text is folded already, SQLite's own folding would only differ.
    # detail=none: no positions, half the insert time and a quarter of the
    # size; the index only narrows, instr() decides (see SqliteStore.search).
    "CREATE VIRTUAL TABLE msgs_fts USING fts5(folded, "
    "tokenize = 'trigram case_sensitive 1', detail = none)",
    "CREATE TABLE accounts (key TEXT PRIMARY KEY, name TEXT NOT NULL, hash TEXT NOT NULL) "
    "WITHOUT ROWID",
    "CREATE TABLE members (room TEXT NOT NULL, account TEXT NOT NULL, role TEXT NOT NULL, "
    "PRIMARY KEY (room, account)) WITHOUT ROWID",
    "CREATE TABLE bans (room TEXT NOT NULL, name TEXT NOT NULL, PRIMARY KEY (room, name)) "
    "WITHOUT ROWID",
    "CREATE TABLE invites (room TEXT NOT NULL, account TEXT NOT NULL, "
    "PRIMARY KEY (room, account)) WITHOUT ROWID",
    "CREATE TABLE markers (room TEXT NOT NULL, account TEXT NOT NULL, seq INTEGER NOT NULL, "
    "PRIMARY KEY (room, account)) WITHOUT ROWID",
)


def _from_v1(db: sqlite3.Connection) -> None:
    """Version 1 held one room's messages in ``msgs(seq, ts, sender, sender_key,
    text, ident)``: they become the log of ``lobby`` (public, no owner), seqs
    unchanged, expired rows included (retention hides them as before)."""
    db.execute("DROP INDEX msgs_ident")
    db.execute("ALTER TABLE msgs RENAME TO msgs_v1")
    for statement in _SCHEMA:
        db.execute(statement)
    db.execute("INSERT INTO logs (id, room, last_seq) "
               "SELECT 1, ?, coalesce(max(seq), 0) FROM msgs_v1", (LOBBY,))
    db.execute("INSERT INTO rooms (key, name, kind, topic, owner) "
               "VALUES (?, ?, 'public', '', NULL)", (LOBBY, LOBBY))
    db.execute("INSERT INTO msgs (log, seq, ts, sender, sender_key, text, ident) "
               "SELECT 1, seq, ts, sender, sender_key, text, ident FROM msgs_v1")
    rows = db.execute("SELECT seq, text FROM msgs_v1")
    while chunk := rows.fetchmany(4096):
        db.executemany(_FTS_INSERT, [(_rowid(1, seq), name_key(text)) for seq, text in chunk])
    db.execute("DROP TABLE msgs_v1")


#: ``_MIGRATIONS[v - 1]`` turns a database of schema version ``v`` into ``v + 1``,
#: in the transaction that opens it; a new database gets :data:`_SCHEMA` at once.
_MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_from_v1,)
assert len(_MIGRATIONS) == SCHEMA_VERSION - 1

_COLUMNS = "seq, ts, sender, text, ident, edited, deleted"
_M_COLUMNS = ", ".join(f"m.{column}" for column in _COLUMNS.split(", "))
_RANGE = f"SELECT {_COLUMNS} FROM msgs WHERE log = ? AND seq >= ? AND seq <= ? ORDER BY seq LIMIT ?"
_FIND = f"SELECT {_COLUMNS} FROM msgs WHERE log = ? AND sender_key = ? AND ident = ? AND seq >= ?"
_INSERT = ("INSERT INTO msgs (log, seq, ts, sender, sender_key, text, ident, edited, deleted) "
           "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
_FTS_INSERT = "INSERT INTO msgs_fts (rowid, folded) VALUES (?, ?)"
_PRUNE = ("DELETE FROM msgs WHERE log = ? AND seq <= ?",
          "DELETE FROM msgs_fts WHERE rowid BETWEEN ? AND ?")

#: Rows per query when ``after`` reads a long gap from disk.
CHUNK = 256


def _rowid(log_id: int, seq: int) -> int:
    return log_id << SEQ_BITS | seq


def _stored(row: Sequence[Any]) -> Stored:
    seq, ts, sender, text, ident, edited, deleted = row
    return Stored(seq, ts, sender, text, ident, edited, bool(deleted))


#: Rows a search whose terms are all shorter than a trigram may read: such a
#: term has no index, so it is matched by instr() over the newest rows only,
#: this many in all, split between the rooms searched (at least
#: SHORT_SCAN_ROOM each). About 20 ms here for 4,000-character messages.
SHORT_SCAN = 20_000
SHORT_SCAN_ROOM = 200

#: The ops that touch one table row each: (statement, its parameters).
_ROW_OPS: dict[type, tuple[str, Callable[[Any], tuple[Any, ...]]]] = {
    PutMember: ("INSERT INTO members (room, account, role) VALUES (?, ?, ?) "
                "ON CONFLICT DO UPDATE SET role = excluded.role",
                lambda op: (op.room, op.account, op.role)),
    RemoveMember: ("DELETE FROM members WHERE room = ? AND account = ?",
                   lambda op: (op.room, op.account)),
    PutBan: ("INSERT OR IGNORE INTO bans (room, name) VALUES (?, ?)",
             lambda op: (op.room, op.name)),
    RemoveBan: ("DELETE FROM bans WHERE room = ? AND name = ?", lambda op: (op.room, op.name)),
    PutInvite: ("INSERT OR IGNORE INTO invites (room, account) VALUES (?, ?)",
                lambda op: (op.room, op.account)),
    RemoveInvite: ("DELETE FROM invites WHERE room = ? AND account = ?",
                   lambda op: (op.room, op.account)),
    PutMarker: ("INSERT INTO markers (room, account, seq) VALUES (?, ?, ?) "
                "ON CONFLICT DO UPDATE SET seq = excluded.seq",
                lambda op: (op.room, op.account, op.seq)),
    PutAccount: ("INSERT INTO accounts (key, name, hash) VALUES (?, ?, ?) "
                 "ON CONFLICT DO UPDATE SET name = excluded.name, hash = excluded.hash",
                 lambda op: (op.account.key, op.account.name, op.account.hash)),
    RemoveMarker: ("DELETE FROM markers WHERE room = ? AND account = ?",
                   lambda op: (op.room, op.account)),
    RemoveAccount: ("DELETE FROM accounts WHERE key = ?", lambda op: (op.account,)),
    PutRoom: ("INSERT INTO rooms (key, name, kind, topic, owner) VALUES (?, ?, ?, ?, ?) "
              "ON CONFLICT DO UPDATE SET name = excluded.name, kind = excluded.kind, "
              "topic = excluded.topic, owner = excluded.owner",
              lambda op: (op.room.key, op.room.name, op.room.kind, op.room.topic,
                          op.room.owner)),
}

#: What RemoveRoom deletes besides the room's messages.
_REMOVE_ROOM = tuple(f"DELETE FROM {table} WHERE {column} = ?" for table, column in (
    ("rooms", "key"), ("members", "room"), ("bans", "room"), ("invites", "room"),
    ("markers", "room")))


@dataclass(slots=True)
class _Counters:
    """What a commit changes of a room's log, copied so a failed commit can
    leave the live ones as they were."""

    log_id: int | None
    last: int
    #: The smallest seq still physically present (last + 1 if none).
    rows_from: int


_Batch = dict[str, list[tuple[Any, ...]]]


@dataclass(slots=True)
class _Plan:
    """A commit turned into statements, and the counters it leaves."""

    steps: list[tuple[str, list[tuple[Any, ...]]]] = field(default_factory=list)
    counters: dict[str, _Counters] = field(default_factory=dict)
    new_logs: list[tuple[int, str]] = field(default_factory=list)
    #: Rooms given messages (their prune floors are checked after the steps).
    grown: set[str] = field(default_factory=set)


class SqliteRoomLog:
    """One room's retained messages: counters in memory, the newest messages in
    a :class:`MemoryHistory` (read from disk when first needed), the rest on disk."""

    def __init__(self, store: SqliteStore, key: str, counters: _Counters) -> None:
        self._store = store
        self.key = key
        self.counters = counters
        self.tail: MemoryHistory | None = None

    @property
    def last_seq(self) -> int:
        return self.counters.last

    @property
    def oldest_seq(self) -> int:
        c = self.counters
        oldest = max(c.rows_from, c.last - self._store.retain + 1)
        return oldest if oldest <= c.last else 0

    def _tail(self) -> MemoryHistory:
        if self.tail is None:
            size = self._store.tail_size
            last = self.counters.last
            lo = max(self.oldest_seq, last - size + 1)
            rows = self._select(lo, last, last - lo + 1) if self.oldest_seq else []
            self.tail = MemoryHistory(size, rows)
        return self.tail

    def _select(self, lo: int, hi: int, limit: int) -> list[Stored]:
        if self.counters.log_id is None:
            return []
        return [_stored(row) for row in
                self._store.read(_RANGE, (self.counters.log_id, lo, hi, limit))]

    def get(self, seq: int) -> Stored | None:
        oldest = self.oldest_seq
        if not oldest or not oldest <= seq <= self.counters.last:
            return None
        tail = self._tail()
        if seq >= tail.oldest_seq:
            return tail.get(seq)
        found = self._select(seq, seq, 1)
        return found[0] if found else None

    def after(self, since: int) -> Iterator[Stored]:
        # Lazy and re-checked at every step: the caller may stream a long
        # backlog over several loop turns while messages come, change and expire.
        upto = self.counters.last
        nxt = since + 1
        while True:
            oldest = self.oldest_seq
            if not oldest:
                return
            nxt = max(nxt, oldest)
            if nxt > upto:
                return
            item = self._tail().get(nxt)
            if item is not None:
                yield item
                nxt += 1
                continue
            chunk = self._select(nxt, upto, CHUNK)
            if not chunk:
                return
            for item in chunk:
                oldest = self.oldest_seq
                if not oldest:
                    return
                if item.seq >= oldest:
                    yield item
            nxt = chunk[-1].seq + 1

    def latest(self, count: int) -> list[Stored]:
        return self.before(self.counters.last + 1, count)

    def before(self, before: int, limit: int) -> list[Stored]:
        hi = min(before - 1, self.counters.last)
        lo = max(self.oldest_seq, hi - limit + 1)
        if not self.oldest_seq or hi < lo:
            return []
        tail = self._tail()
        if lo >= tail.oldest_seq:
            return tail.before(before, limit)
        return self._select(lo, hi, hi - lo + 1)

    def find(self, sender_key: str, ident: str) -> Stored | None:
        oldest = self.oldest_seq
        if not oldest:
            return None
        tail = self._tail()
        item = tail.find(sender_key, ident)
        if item is not None or tail.oldest_seq <= oldest:
            return item
        row = self._store.read(_FIND, (self.counters.log_id, sender_key, ident, oldest))
        return _stored(row[0]) if row else None


class SqliteStore:
    """The :class:`chatd.store.Store` in an SQLite file (or ``:memory:``); see
    the module docstring for what it survives.

    ``tail`` messages per room are kept in memory (never more than ``retain``);
    ``prune_batch`` is how many expired rows of a room trigger their deletion.
    """

    def __init__(self, path: str, *, retain: int, sync: str = "normal",
                 tail: int = TAIL_SIZE, prune_batch: int | None = None) -> None:
        if sync not in ("full", "normal"):
            raise ValueError(f"sync must be 'full' or 'normal', not {sync!r}")
        self.path = path
        self.retain = retain
        self.tail_size = min(tail, retain)
        #: Expired rows of a room that trigger a batch delete: a tenth of the
        #: retention, at least a few hundred (never one by one), at most a few
        #: thousand (a turn never stalls on a huge delete). Tests make it small.
        self._prune_batch = prune_batch or min(max(retain // 10, 256), 4096)
        self._db = _open(path, sync)
        self._logs: dict[str, SqliteRoomLog] = {}
        #: Casefolded names of the rooms, for the order of search results.
        self._names: dict[str, str] = {}
        try:
            for log_id, room, last, rows_from in self._db.execute(
                    "SELECT id, room, last_seq, (SELECT min(seq) FROM msgs WHERE log = id) "
                    "FROM logs"):
                self._logs[room] = SqliteRoomLog(self, room,
                                                 _Counters(log_id, last, rows_from or last + 1))
            for key, name in self._db.execute("SELECT key, name FROM rooms"):
                self._names[key] = name.casefold()
            self._next_log_id: int = 1 + self._db.execute(
                "SELECT coalesce(max(id), 0) FROM logs").fetchone()[0]
        except sqlite3.Error as exc:
            self._db.close()
            raise StartupError(f"cannot read database {path}: {exc}") from None
        log.info("database %s: %d rooms, retain %d per room, sync %s", path,
                 len(self._names), retain, sync)

    def read(self, sql: str, params: Sequence[Any]) -> list[Any]:
        """Rows of one query; an SQLite failure is a :class:`StoreError`."""
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read from {self.path}: {exc}") from None

    def load(self) -> Snapshot:
        def rows(sql: str) -> list[Any]:
            return [tuple(row) for row in self.read(sql, ())]

        rooms = []
        for key, name, kind, topic, owner in rows(
                "SELECT key, name, kind, topic, owner FROM rooms"):
            room_log = self.log(key)
            rooms.append(RoomRecord(key, name, kind, topic, owner, room_log.last_seq,
                                    room_log.oldest_seq))
        return Snapshot(
            rooms=rooms,
            accounts=[AccountRecord(*row) for row in rows("SELECT key, name, hash FROM accounts")],
            members=rows("SELECT room, account, role FROM members"),
            bans=rows("SELECT room, name FROM bans"),
            invites=rows("SELECT room, account FROM invites"),
            markers=rows("SELECT room, account, seq FROM markers"),
            removed_seqs={key: room_log.last_seq for key, room_log in self._logs.items()
                          if key not in self._names and room_log.last_seq})

    def log(self, room: str) -> SqliteRoomLog:
        room_log = self._logs.get(room)
        if room_log is None:
            room_log = self._logs[room] = SqliteRoomLog(self, room, _Counters(None, 0, 1))
        return room_log

    # --- writing ----------------------------------------------------------

    def commit(self, ops: Sequence[Op]) -> None:
        if not ops:
            return
        plan = self._plan(ops)
        try:
            try:
                self._write(plan, prune_first=False)
            except sqlite3.IntegrityError:
                # An id reused after its message expired, whose row is still on
                # disk: delete the expired rows of the rooms written first (then
                # the unique index holds retained ids only) and store again.
                plan = self._plan(ops)
                self._write(plan, prune_first=True)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot commit {len(ops)} change(s) to {self.path}: {exc}") from None
        self._apply(ops, plan)

    def _counters(self, plan: _Plan, room: str) -> _Counters:
        counters = plan.counters.get(room)
        if counters is None:
            live = self.log(room).counters
            counters = plan.counters[room] = _Counters(live.log_id, live.last, live.rows_from)
        return counters

    def _log_id(self, plan: _Plan, room: str) -> int:
        counters = self._counters(plan, room)
        if counters.log_id is None:
            counters.log_id = self._next_log_id + len(plan.new_logs)
            plan.new_logs.append((counters.log_id, room))
        return counters.log_id

    def _plan(self, ops: Sequence[Op]) -> _Plan:
        """The statements of a commit, and the counters after it. Raises
        ValueError (before anything is written) for a seq that does not
        continue its room's or names a message never given."""
        plan = _Plan()
        for _, run in itertools.groupby(ops, type):
            # One executemany per statement of a run of ops of one kind.
            batch: _Batch = {}
            for op in run:
                if isinstance(op, AddMessage):
                    self._plan_add(plan, batch, op)
                elif isinstance(op, EditMessage | DeleteMessage):
                    self._plan_change(plan, batch, op)
                elif isinstance(op, RemoveRoom):
                    self._plan_remove(plan, batch, op)
                else:
                    sql, params = _ROW_OPS[type(op)]
                    batch.setdefault(sql, []).append(params(op))
                    if isinstance(op, PutRoom):
                        self._log_id(plan, op.room.key)
            plan.steps.extend(batch.items())
        plan.steps.insert(0, ("INSERT INTO logs (id, room, last_seq) VALUES (?, ?, 0)",
                              plan.new_logs))
        plan.steps.append(("UPDATE logs SET last_seq = ? WHERE id = ?",
                           [(plan.counters[room].last, plan.counters[room].log_id)
                            for room in plan.grown]))
        return plan

    def _plan_add(self, plan: _Plan, batch: _Batch, op: AddMessage) -> None:
        msg = op.msg
        log_id = self._log_id(plan, op.room)
        counters = plan.counters[op.room]
        if msg.seq != counters.last + 1:
            raise ValueError(f"seq {msg.seq} does not continue {counters.last} "
                             f"in room {op.room!r}")
        counters.last = msg.seq
        plan.grown.add(op.room)
        batch.setdefault(_INSERT, []).append(
            (log_id, msg.seq, msg.ts, msg.sender, sender_key(msg.sender), msg.text, msg.ident,
             msg.edited, int(msg.deleted)))
        if not msg.deleted:
            batch.setdefault(_FTS_INSERT, []).append(
                (_rowid(log_id, msg.seq), name_key(msg.text)))

    def _plan_change(self, plan: _Plan, batch: _Batch, op: EditMessage | DeleteMessage) -> None:
        counters = self._counters(plan, op.room)
        if counters.log_id is None or not 1 <= op.seq <= counters.last:
            raise ValueError(f"no message {op.seq} in room {op.room!r}")
        key = (counters.log_id, op.seq)
        rowid = _rowid(counters.log_id, op.seq)
        if isinstance(op, EditMessage):
            batch.setdefault("UPDATE msgs SET text = ?, edited = ? "
                             "WHERE log = ? AND seq = ? AND NOT deleted", []).append(
                (op.text, op.edited, *key))
            # A tombstone has no row here: the update finds nothing.
            batch.setdefault("UPDATE msgs_fts SET folded = ? WHERE rowid = ?", []).append(
                (name_key(op.text), rowid))
        else:
            batch.setdefault("UPDATE msgs SET text = '', edited = NULL, deleted = 1 "
                             "WHERE log = ? AND seq = ?", []).append(key)
            batch.setdefault("DELETE FROM msgs_fts WHERE rowid = ?", []).append((rowid,))

    def _plan_remove(self, plan: _Plan, batch: _Batch, op: RemoveRoom) -> None:
        for sql in _REMOVE_ROOM:
            batch.setdefault(sql, []).append((op.room,))
        counters = self._counters(plan, op.room)
        if counters.log_id is not None:
            batch.setdefault(_PRUNE[0], []).append((counters.log_id, counters.last))
            batch.setdefault(_PRUNE[1], []).append(
                (_rowid(counters.log_id, 0), _rowid(counters.log_id, counters.last)))
        counters.rows_from = counters.last + 1

    def _prunes(self, plan: _Plan, force: bool) -> list[tuple[str, list[tuple[Any, ...]]]]:
        """The deletes of expired rows due after this commit (of every room
        written if ``force``); updates the plan's counters."""
        msgs: list[tuple[Any, ...]] = []
        fts: list[tuple[Any, ...]] = []
        for room in plan.grown:
            counters = plan.counters[room]
            assert counters.log_id is not None
            floor = counters.last - self.retain  # seqs <= floor are gone after this commit
            # Forced, even below rows_from: rows_from may count a RemoveRoom
            # later in this commit, whose rows are still there when it starts.
            if floor >= 1 and (force or floor - counters.rows_from + 1 >= self._prune_batch):
                msgs.append((counters.log_id, floor))
                fts.append((_rowid(counters.log_id, 0), _rowid(counters.log_id, floor)))
                counters.rows_from = max(counters.rows_from, floor + 1)
        return [(_PRUNE[0], msgs), (_PRUNE[1], fts)] if msgs else []

    def _write(self, plan: _Plan, prune_first: bool) -> None:
        """One transaction: the plan's steps, then the deletes of expired rows."""
        db = self._db
        prunes = self._prunes(plan, prune_first)
        steps = prunes + plan.steps + prunes if prune_first else plan.steps + prunes
        try:
            db.execute("BEGIN")
            for sql, rows in steps:
                if rows:
                    db.executemany(sql, rows)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                # If SQLite already rolled back by itself, nothing is stored either way.
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise

    def _apply(self, ops: Sequence[Op], plan: _Plan) -> None:
        """After a successful commit: the new counters, names and tails."""
        self._next_log_id += len(plan.new_logs)
        for room, counters in plan.counters.items():
            self.log(room).counters = counters
        for op in ops:
            if isinstance(op, AddMessage):
                tail = self._logs[op.room].tail
                if tail is not None:
                    tail.append((op.msg,))
            elif isinstance(op, EditMessage | DeleteMessage):
                self._change_tail(op)
            elif isinstance(op, PutRoom):
                self._names[op.room.key] = op.room.name.casefold()
            elif isinstance(op, RemoveRoom):
                self._names.pop(op.room, None)
                self.log(op.room).tail = None

    def _change_tail(self, op: EditMessage | DeleteMessage) -> None:
        tail = self._logs[op.room].tail
        old = tail.get(op.seq) if tail is not None else None
        if tail is None or old is None or old.deleted:
            return
        if isinstance(op, EditMessage):
            tail.replace(Stored(old.seq, old.ts, old.sender, op.text, old.ident, op.edited))
        else:
            tail.replace(Stored(old.seq, old.ts, old.sender, "", old.ident, None, True))

    # --- search -----------------------------------------------------------

    def search(self, rooms: Sequence[str], terms: Sequence[str], limit: int,
               before: int | None = None) -> list[tuple[str, Stored]]:
        # The index finds the messages holding every trigram of every term
        # (terms of one or two characters have none); instr() then keeps
        # exactly those where each term occurs as a substring.
        trigrams = {term[i:i + 3] for term in terms for i in range(len(term) - 2)}
        where = ["f.rowid BETWEEN ? AND ?", "NOT m.deleted"]
        args: list[Any] = []
        if trigrams:
            where.append("msgs_fts MATCH ?")
            args.append(" ".join('"' + gram.replace('"', '""') + '"' for gram in sorted(trigrams)))
        for term in terms:
            where.append("instr(f.folded, ?) > 0")
            args.append(term)
        one_room = len(rooms) == 1
        # Newest first within a room (the index walks backwards and stops at
        # ``limit``); rooms are merged by time below. A scan without trigrams
        # reads the newest rows only: SHORT_SCAN in all, shared by the rooms,
        # so no request holds the loop for long whatever the history.
        sql = (f"SELECT {_M_COLUMNS} FROM msgs_fts f "
               "JOIN msgs m ON m.log = ? AND m.seq = f.rowid - ? "
               f"WHERE {' AND '.join(where)} ORDER BY f.rowid DESC LIMIT ?")
        span = None if trigrams else max(SHORT_SCAN // max(len(rooms), 1), SHORT_SCAN_ROOM)
        found: list[tuple[str, Stored]] = []
        for room in rooms:
            room_log = self._logs.get(room)
            if room_log is None or room_log.counters.log_id is None or not room_log.oldest_seq:
                continue
            log_id = room_log.counters.log_id
            hi = room_log.last_seq if before is None else min(room_log.last_seq, before - 1)
            lo = room_log.oldest_seq if span is None else max(room_log.oldest_seq, hi - span + 1)
            base = _rowid(log_id, 0)
            found.extend((room, _stored(row)) for row in self.read(
                sql, (log_id, base, base + lo, base + hi, *args, limit)))
        if not one_room:
            found.sort(key=lambda hit: (-hit[1].ts, self._names.get(hit[0], hit[0]),
                                        -hit[1].seq))
        return found[:limit]

    def close(self) -> None:
        """Checkpoint the WAL into the database file (fsynced) and close."""
        try:
            self._db.close()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot close {self.path}: {exc}") from None


def _open(path: str, sync: str) -> sqlite3.Connection:
    """Connect, take the exclusive lock, check, create or migrate the schema.

    Every failure is a one-line :class:`StartupError` naming the file.
    """
    if path == ":memory:":
        db = sqlite3.connect(path, isolation_level=None)
        _check_schema(db, path)
        return db
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StartupError(f"cannot create the directory of database {path}: "
                           f"{exc.strerror}") from None
    if os.path.isdir(path):
        raise StartupError(f"database {path} is a directory")
    try:
        # Created private: the database holds the users' conversations.
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    except OSError as exc:
        raise StartupError(f"cannot open database {path}: {exc.strerror}") from None
    try:
        # timeout=0: a lock held by another process is an error now, not a wait.
        db = sqlite3.connect(path, timeout=0, isolation_level=None)
    except sqlite3.Error as exc:
        raise StartupError(f"cannot open database {path}: {exc}") from None
    try:
        _prepare(db, path, sync)
    except sqlite3.Error as exc:
        db.close()
        if "locked" in str(exc):
            raise StartupError(f"database {path} is in use by another process") from None
        raise StartupError(f"cannot open database {path}: {exc}") from None
    except StartupError:
        db.close()
        raise
    return db


def _prepare(db: sqlite3.Connection, path: str, sync: str) -> None:
    # Exclusive locking before the first WAL access: no -shm file, and the
    # lock taken below is held until close.
    db.execute("PRAGMA locking_mode = EXCLUSIVE")
    mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode != "wal":
        raise StartupError(f"database {path}: WAL journal not supported here "
                           f"(journal mode {mode})")
    db.execute(f"PRAGMA synchronous = {sync.upper()}")
    _check_schema(db, path)
    problems = [row[0] for row in db.execute("PRAGMA quick_check")]
    if problems != ["ok"]:
        raise StartupError(f"database {path} is corrupt: {problems[0]}")


def _check_schema(db: sqlite3.Connection, path: str) -> None:
    """Create the schema in an empty database or migrate an older one, in one
    exclusive transaction; refuse a foreign or newer one."""
    db.execute("BEGIN EXCLUSIVE")
    try:
        app = db.execute("PRAGMA application_id").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = db.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]
        if app == 0 and version == 0 and tables == 0:
            _create(db, path)
        elif app != APPLICATION_ID or version < 1:
            raise StartupError(f"{path} is an SQLite database but not a chatd database")
        elif version > SCHEMA_VERSION:
            raise StartupError(f"database {path} has schema version {version}, newer "
                               f"than this chatd understands ({SCHEMA_VERSION})")
        elif version < SCHEMA_VERSION:
            for step in _MIGRATIONS[version - 1:]:
                step(db)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            log.info("database %s: migrated from schema version %d to %d", path, version,
                     SCHEMA_VERSION)
        db.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise


def _create(db: sqlite3.Connection, path: str) -> None:
    try:
        for statement in _SCHEMA:
            db.execute(statement)
    except sqlite3.OperationalError as exc:
        if "trigram" not in str(exc):
            raise
        raise StartupError(f"cannot create database {path}: SQLite {sqlite3.sqlite_version} "
                           "has no FTS5 trigram tokenizer (3.34 or newer is needed)") from None
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
