"""Public message history: the store the chat core writes to and reads from.

The core talks to a :class:`History`; :class:`MemoryHistory` keeps everything in
memory (``--db :memory:``), :class:`chatd.store_sqlite.SqliteHistory` keeps it in
an SQLite file; :func:`open_history` picks one from the settings. Retention is
exact (contract §7): only the newest ``retain`` messages are ever served,
whenever older rows are actually deleted.

Seqs in a store are contiguous (the core gives each accepted message the next
seq and takes it back if the store refuses the batch), which lets both stores
find a message by seq arithmetic instead of a search.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from protocol import name_key

if TYPE_CHECKING:
    from chatd.settings import Settings

#: Memoised :func:`protocol.name_key`: every stored message needs its sender's
#: key (idempotency index), and the same few senders say most messages.
sender_key = functools.lru_cache(maxsize=65536)(name_key)


class StoreError(Exception):
    """A batch could not be made durable (disk full, I/O error), or a stored
    message could not be read back.

    Nothing of a failed batch is stored: the core refuses those messages with
    ``unavailable`` and the next batch may succeed.
    """


@dataclass(frozen=True, slots=True)
class Stored:
    """One public message as kept in history (a ``msg`` without its type)."""

    seq: int
    ts: int
    sender: str
    text: str
    ident: str | None = None

    def as_member(self) -> dict[str, Any]:
        """The object for a ``history`` reply's ``msgs`` (``msg`` without ``type``)."""
        out: dict[str, Any] = {"seq": self.seq, "ts": self.ts, "from": self.sender,
                               "text": self.text}
        if self.ident is not None:
            out["id"] = self.ident
        return out


class History(Protocol):
    """What the chat core needs of a message store.

    Reads of an on-disk store may raise :class:`StoreError` too (an I/O error
    or corruption found while running); the common reads are served from memory.
    """

    @property
    def last_seq(self) -> int:
        """The newest seq ever given (0 if none): seq continues from here."""

    @property
    def oldest_seq(self) -> int:
        """The oldest retained seq, 0 if nothing is retained."""

    def append(self, batch: list[Stored]) -> None:
        """Store one loop turn's messages durably, all or nothing; StoreError.

        The batch's seqs must continue ``last_seq`` without a gap.
        """

    def after(self, since: int) -> Iterator[Stored]:
        """Every retained message with since < seq <= last_seq (as of this call),
        oldest first.

        The iterator may be consumed lazily across loop turns: messages appended
        meanwhile are not included (they go out live) and messages that stop
        being retained meanwhile are skipped.
        """

    def latest(self, count: int) -> list[Stored]:
        """The newest ``count`` retained messages, oldest first."""

    def before(self, before: int, limit: int) -> list[Stored]:
        """The newest ``limit`` retained messages with seq < before, oldest first."""

    def find(self, sender_key: str, ident: str) -> Stored | None:
        """The retained message this sender (by name key) sent with this id."""

    def close(self) -> None:
        """Make everything durable and release the store."""


def check_batch(last: int, batch: list[Stored]) -> None:
    """Refuse a batch whose seqs do not continue ``last`` one by one: a gap or a
    repeat is a bug in the caller, and storing it would break seq arithmetic."""
    for offset, item in enumerate(batch, 1):
        if item.seq != last + offset:
            raise ValueError(f"seq {item.seq} does not continue {last + offset - 1}")


class MemoryHistory:
    """History kept in memory only: lost at exit, never fails to store.

    Also the in-memory tail of :class:`chatd.store_sqlite.SqliteHistory`, which
    is why the first message may have any seq (a tail starts mid-history).
    """

    def __init__(self, retain: int, start: Iterable[Stored] = ()) -> None:
        self._retain = retain
        self._msgs: deque[Stored] = deque(maxlen=retain)
        self._ids: dict[tuple[str, str], Stored] = {}
        self._last = 0
        self.append(list(start))

    @property
    def last_seq(self) -> int:
        return self._last

    @property
    def oldest_seq(self) -> int:
        return self._msgs[0].seq if self._msgs else 0

    def __len__(self) -> int:
        return len(self._msgs)

    def append(self, batch: list[Stored]) -> None:
        if not batch:
            return
        check_batch(self._last if self._msgs else batch[0].seq - 1, batch)
        msgs, ids = self._msgs, self._ids
        for item in batch:
            if len(msgs) == self._retain:
                dropped = msgs[0]
                if dropped.ident is not None:
                    key = (sender_key(dropped.sender), dropped.ident)
                    if ids.get(key) is dropped:
                        del ids[key]
            msgs.append(item)
            if item.ident is not None:
                ids[(sender_key(item.sender), item.ident)] = item
        self._last = batch[-1].seq

    def get(self, seq: int) -> Stored | None:
        """The retained message with this seq, if any."""
        msgs = self._msgs
        if not msgs or not msgs[0].seq <= seq <= self._last:
            return None
        return msgs[seq - msgs[0].seq]

    def after(self, since: int) -> Iterator[Stored]:
        return self._between(since, self._last)

    def _between(self, since: int, upto: int) -> Iterator[Stored]:
        nxt = since + 1
        while nxt <= upto:
            nxt = max(nxt, self.oldest_seq)
            item = self.get(nxt)
            if item is None:
                return
            yield item
            nxt += 1

    def latest(self, count: int) -> list[Stored]:
        msgs = self._msgs
        return [msgs[i] for i in range(max(0, len(msgs) - count), len(msgs))]

    def before(self, before: int, limit: int) -> list[Stored]:
        msgs = self._msgs
        if not msgs:
            return []
        end = min(len(msgs), max(0, before - msgs[0].seq))
        return [msgs[i] for i in range(max(0, end - limit), end)]

    def find(self, sender_key: str, ident: str) -> Stored | None:
        return self._ids.get((sender_key, ident))

    def close(self) -> None:
        pass


#: Messages an on-disk store keeps in memory (at least ``backlog``, at most
#: ``history``): backlogs, ``since`` resumes, ``history`` pages and the id
#: checks of ``say`` within them are served without touching the disk. As many
#: as the default retention, so that by default a ``say`` with a new id (what
#: every client with an outbox sends) never waits on an index lookup on disk;
#: at a few hundred bytes a message, that is a few MiB.
TAIL_SIZE = 10_000


def open_history(settings: Settings) -> History:
    """The store the settings ask for: ``:memory:`` or an SQLite file.

    Raises :class:`chatd.errors.StartupError` (naming the file) when the
    database cannot be opened or is not a usable chatd history.
    """
    if settings.db_path == ":memory:":
        return MemoryHistory(settings.history)
    # Imported here: the SQLite store builds on this module's types.
    from chatd.store_sqlite import SqliteHistory

    return SqliteHistory(settings.db_path, retain=settings.history, sync=settings.sync,
                         tail=max(settings.backlog, TAIL_SIZE))
