"""The on-disk history: SQLite in WAL mode with group commit and a memory tail.

Durability (``--sync``), with the WAL journal:

* ``normal`` (default): a commit is written to the WAL file but not fsynced.
  It survives the server process crashing or being killed (``kill -9``): the
  data is in the operating system's page cache and the WAL is replayed at the
  next start. A power loss or OS crash may lose the last commits (never
  corrupts the database).
* ``full``: every commit fsyncs the WAL, so it survives power loss and OS
  crashes too, at the cost of one fsync per loop turn that stored messages.

Either way the chat core calls :meth:`SqliteHistory.append` once per loop
turn with that turn's messages (group commit: one transaction, one
``executemany``) before any of their frames go out, so the cost of a commit is
shared by every message of the turn and an acknowledged message is stored.

The database is opened in exclusive locking mode: the server is its only
user, no shared-memory index is needed, and a second server pointed at the
same file refuses to start instead of handing out the same seqs.

Retention is logical first: a query never returns a seq at or below
``last_seq - retain``. Rows are deleted in batches, inside the commit of a
later turn, once a batch's worth has expired.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from chatd.errors import StartupError
from chatd.history import TAIL_SIZE, MemoryHistory, Stored, StoreError, check_batch, sender_key

log = logging.getLogger(__name__)

#: ``PRAGMA application_id``: marks a file as a chatd history ("chat").
APPLICATION_ID = 0x63686174
#: ``PRAGMA user_version`` of the schema below; a newer one is refused.
SCHEMA_VERSION = 1

_SCHEMA = (
    """CREATE TABLE msgs (
        seq INTEGER PRIMARY KEY,
        ts INTEGER NOT NULL,
        sender TEXT NOT NULL,
        sender_key TEXT NOT NULL,
        text TEXT NOT NULL,
        ident TEXT
    )""",
    # The idempotency index of `say`: O(1) by (sender, id), kept across restarts.
    "CREATE UNIQUE INDEX msgs_ident ON msgs (sender_key, ident) WHERE ident IS NOT NULL",
    f"PRAGMA application_id = {APPLICATION_ID}",
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)

_COLUMNS = "seq, ts, sender, text, ident"
_INSERT = "INSERT INTO msgs (seq, ts, sender, sender_key, text, ident) VALUES (?, ?, ?, ?, ?, ?)"
_RANGE = f"SELECT {_COLUMNS} FROM msgs WHERE seq >= ? AND seq <= ? ORDER BY seq LIMIT ?"
_FIND = f"SELECT {_COLUMNS} FROM msgs WHERE sender_key = ? AND ident = ? AND seq >= ?"

#: Rows per query when ``after`` reads a long gap from disk.
CHUNK = 256


class SqliteHistory:
    """History in an SQLite file; see the module docstring for what it survives."""

    def __init__(self, path: str, *, retain: int, sync: str = "normal",
                 tail: int = TAIL_SIZE, prune_batch: int | None = None) -> None:
        if sync not in ("full", "normal"):
            raise ValueError(f"sync must be 'full' or 'normal', not {sync!r}")
        self._path = path
        self._retain = retain
        #: Expired rows that trigger a batch delete: a tenth of the retention,
        #: at least a few hundred (never one by one), at most a few thousand
        #: (a turn never stalls on a huge delete). Tests make it small.
        self._prune_batch = prune_batch or min(max(retain // 10, 256), 4096)
        self._db = _open(path, sync)
        try:
            last, rows_from = self._db.execute(
                "SELECT coalesce(max(seq), 0), coalesce(min(seq), 0) FROM msgs").fetchone()
        except sqlite3.Error as exc:
            self._db.close()
            raise StartupError(f"cannot read history database {path}: {exc}") from None
        self._last: int = last
        #: The smallest seq still physically present (last + 1 if none).
        self._rows_from: int = rows_from or last + 1
        self._tail_size = min(tail, retain)
        self._tail = MemoryHistory(self._tail_size)
        if last:
            lo = max(self.oldest_seq, last - self._tail_size + 1)
            try:
                self._tail.append(self._select(lo, last, last - lo + 1))
            except StoreError as exc:
                self._db.close()
                raise StartupError(f"cannot read history database {path}: {exc}") from None
        log.info("history %s: seq %d, %d retained, sync %s", path, last,
                 last - self.oldest_seq + 1 if last else 0, sync)

    @property
    def last_seq(self) -> int:
        return self._last

    @property
    def oldest_seq(self) -> int:
        if not self._last:
            return 0
        return max(self._rows_from, self._last - self._retain + 1)

    def append(self, batch: list[Stored]) -> None:
        if not batch:
            return
        check_batch(self._last, batch)
        rows = [(m.seq, m.ts, m.sender, sender_key(m.sender), m.text, m.ident) for m in batch]
        floor = batch[-1].seq - self._retain  # seqs <= floor are gone after this batch
        prune = floor - self._rows_from + 1 >= self._prune_batch
        try:
            try:
                self._write(rows, floor if prune else None)
            except sqlite3.IntegrityError:
                # An id reused after its message expired, whose row is still on
                # disk: delete every expired row first (then the unique index
                # holds retained ids only) and store again.
                prune = True
                self._write(rows, floor)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot store {len(batch)} message(s) (seq {batch[0].seq}.."
                             f"{batch[-1].seq}) in {self._path}: {exc}") from None
        if prune:
            self._rows_from = max(self._rows_from, floor + 1)
        self._last = batch[-1].seq
        self._tail.append(batch)

    def _write(self, rows: list[tuple[Any, ...]], prune_floor: int | None) -> None:
        """One transaction: delete the expired rows (if due), insert, commit."""
        db = self._db
        try:
            db.execute("BEGIN")
            if prune_floor is not None:
                db.execute("DELETE FROM msgs WHERE seq <= ?", (prune_floor,))
            db.executemany(_INSERT, rows)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                # If SQLite already rolled back by itself, nothing is stored either way.
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise

    def _select(self, lo: int, hi: int, limit: int) -> list[Stored]:
        try:
            rows = self._db.execute(_RANGE, (lo, hi, limit)).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read history from {self._path}: {exc}") from None
        return [Stored(*row) for row in rows]

    def after(self, since: int) -> Iterator[Stored]:
        return self._between(since, self._last)

    def _between(self, since: int, upto: int) -> Iterator[Stored]:
        # Lazy and re-checked at every step: the caller may stream a long
        # backlog over several loop turns while messages come and expire.
        nxt = since + 1
        while True:
            nxt = max(nxt, self.oldest_seq)
            if nxt > upto:
                return
            item = self._tail.get(nxt)
            if item is not None:
                yield item
                nxt += 1
                continue
            chunk = self._select(nxt, upto, CHUNK)
            if not chunk:
                return
            for item in chunk:
                if item.seq >= self.oldest_seq:
                    yield item
            nxt = chunk[-1].seq + 1

    def latest(self, count: int) -> list[Stored]:
        return self.before(self._last + 1, count)

    def before(self, before: int, limit: int) -> list[Stored]:
        hi = min(before - 1, self._last)
        lo = max(self.oldest_seq, hi - limit + 1)
        if not self._last or hi < lo:
            return []
        if len(self._tail) and lo >= self._tail.oldest_seq:
            return self._tail.before(before, limit)
        return self._select(lo, hi, hi - lo + 1)

    def find(self, sender_key: str, ident: str) -> Stored | None:
        item = self._tail.find(sender_key, ident)
        if item is not None or not self._last or self._tail.oldest_seq <= self.oldest_seq:
            return item
        try:
            row = self._db.execute(_FIND, (sender_key, ident, self.oldest_seq)).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read history from {self._path}: {exc}") from None
        return Stored(*row) if row is not None else None

    def close(self) -> None:
        """Checkpoint the WAL into the database file (fsynced) and close."""
        try:
            self._db.close()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot close {self._path}: {exc}") from None


def _open(path: str, sync: str) -> sqlite3.Connection:
    """Connect, take the exclusive lock, check or create the schema.

    Every failure is a one-line :class:`StartupError` naming the file.
    """
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StartupError(f"cannot create the directory of history database {path}: "
                           f"{exc.strerror}") from None
    if os.path.isdir(path):
        raise StartupError(f"history database {path} is a directory")
    try:
        # Created private: the history is the users' conversation.
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    except OSError as exc:
        raise StartupError(f"cannot open history database {path}: {exc.strerror}") from None
    try:
        # timeout=0: a lock held by another process is an error now, not a wait.
        db = sqlite3.connect(path, timeout=0, isolation_level=None)
    except sqlite3.Error as exc:
        raise StartupError(f"cannot open history database {path}: {exc}") from None
    try:
        _prepare(db, path, sync)
    except sqlite3.Error as exc:
        db.close()
        if "locked" in str(exc):
            raise StartupError(f"history database {path} is in use by another process") from None
        raise StartupError(f"cannot open history database {path}: {exc}") from None
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
        raise StartupError(f"history database {path}: WAL journal not supported here "
                           f"(journal mode {mode})")
    db.execute(f"PRAGMA synchronous = {sync.upper()}")
    db.execute("BEGIN EXCLUSIVE")
    app = db.execute("PRAGMA application_id").fetchone()[0]
    version = db.execute("PRAGMA user_version").fetchone()[0]
    tables = db.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]
    if app == 0 and version == 0 and tables == 0:
        for statement in _SCHEMA:
            db.execute(statement)
    elif app != APPLICATION_ID:
        raise StartupError(f"{path} is an SQLite database but not a chatd history")
    elif version > SCHEMA_VERSION:
        raise StartupError(f"history database {path} has schema version {version}, newer "
                           f"than this chatd understands ({SCHEMA_VERSION})")
    problems = [row[0] for row in db.execute("PRAGMA quick_check")]
    if problems != ["ok"]:
        raise StartupError(f"history database {path} is corrupt: {problems[0]}")
    db.execute("COMMIT")
