"""What the chat core needs of a store: a snapshot to start from, per-room
message logs to read, one commit of changes per loop turn, and search.

:class:`chatd.store_sqlite.SqliteStore` keeps an SQLite file;
:class:`chatd.store_memory.MemoryStore` (``--db :memory:``) keeps messages in
memory only, lost at exit; in cluster mode (``--cluster``) the loop gives
the core :class:`chatd.cluster.node.Cluster` instead, which keeps everything
in Redis. :func:`open_store` picks between the first two.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

from chatd.records import Op, Snapshot, Stored
from chatd.settings import MEMORY_DB, Settings


class StoreError(Exception):
    """A commit could not be made durable (disk full, I/O error), or a stored
    message could not be read back. Nothing of a failed commit is applied,
    neither on disk nor in what the store serves from memory."""


class RoomLog(Protocol):
    """One room's retained messages (exactly the newest ``history`` of them)."""

    @property
    def last_seq(self) -> int:
        """The newest seq ever given in this room (0 if none)."""

    @property
    def oldest_seq(self) -> int:
        """The oldest retained seq, 0 if nothing is retained."""

    def get(self, seq: int) -> Stored | None:
        """The retained message with this seq (a tombstone too), or None."""

    def after(self, since: int) -> Iterator[Stored]:
        """Every retained message with since < seq <= last_seq (as of this call),
        oldest first; lazy, and may be consumed across loop turns (messages that
        stop being retained meanwhile are skipped, edits show as they are when read)."""

    def latest(self, count: int) -> list[Stored]:
        """The newest ``count`` retained messages, oldest first."""

    def before(self, before: int, limit: int) -> list[Stored]:
        """The newest ``limit`` retained messages with seq < before, oldest first."""

    def find(self, sender_key: str, ident: str) -> Stored | None:
        """The retained message this sender (by name key) sent with this id."""


class Store(Protocol):
    def load(self) -> Snapshot:
        """Everything but messages, read once at start."""

    def log(self, room: str) -> RoomLog:
        """The message log of the room with this key (an empty one for a room
        that has none yet; seqs of a room created again continue)."""

    def commit(self, ops: Sequence[Op]) -> None:
        """Apply ``ops`` in order in ONE transaction, durably; all or nothing.
        Raises :class:`StoreError`."""

    def search(self, rooms: Sequence[str], terms: Sequence[str], limit: int,
               before: int | None = None) -> list[tuple[str, Stored]]:
        """Retained, undeleted messages of the rooms with these keys whose
        NFC+casefolded text holds every term (already NFC+casefolded, non-empty)
        as a substring. Newest first, at most ``limit``: with one room by
        descending seq (only seq < ``before`` if given); across rooms by
        descending ts, ties by casefolded room name, then descending seq.
        Returns (room key, message) pairs."""

    def close(self) -> None:
        """Make everything durable and release the store."""


def open_store(settings: Settings) -> Store:
    """The store the settings ask for. Raises :class:`chatd.errors.StartupError`
    (naming the file) when it cannot be opened or is not a chatd database."""
    # Imported here: both stores build on this module's types.
    if settings.db_path == MEMORY_DB:
        from chatd.store_memory import MemoryStore

        return MemoryStore(retain=settings.history)
    from chatd.store_sqlite import SqliteStore

    return SqliteStore(settings.db_path, retain=settings.history, sync=settings.sync)
