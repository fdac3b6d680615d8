"""The newest messages of one room, kept in memory: the tail of a room's log.

:class:`chatd.store_sqlite.SqliteStore` keeps one :class:`MemoryHistory` per room
whose log has been read, so that backlogs, ``since`` resumes, ``history`` pages
and the idempotency check of ``say`` about recent messages never touch the
disk. Seqs in a room are contiguous (the store refuses a gap), which lets the
tail find a message by seq arithmetic instead of a search.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Iterable

from chatd.records import Stored
from protocol import name_key

#: Memoised :func:`protocol.name_key`: every stored message needs its sender's
#: key (idempotency index), and the same few senders say most messages.
sender_key = functools.lru_cache(maxsize=65536)(name_key)

#: Messages kept in memory per room (never more than retained). Enough for a
#: backlog (50 by default) and a few ``history`` pages (200 at most each); with
#: a thousand busy rooms at a few hundred bytes a message, a few hundred MiB at
#: worst. Older ids are checked through the index on disk.
TAIL_SIZE = 1000


class MemoryHistory:
    """The newest ``size`` messages of a room, oldest first.

    The first message may have any seq (a tail starts mid-history); the store
    appends only seqs that continue the last one.
    """

    def __init__(self, size: int, start: Iterable[Stored] = ()) -> None:
        self._msgs: deque[Stored] = deque(maxlen=size)
        self._ids: dict[tuple[str, str], Stored] = {}
        self.append(start)

    @property
    def oldest_seq(self) -> int:
        return self._msgs[0].seq if self._msgs else 0

    def __len__(self) -> int:
        return len(self._msgs)

    def append(self, batch: Iterable[Stored]) -> None:
        msgs, ids = self._msgs, self._ids
        for item in batch:
            if len(msgs) == msgs.maxlen:
                self._forget(msgs[0])
            msgs.append(item)
            if item.ident is not None:
                ids[(sender_key(item.sender), item.ident)] = item

    def replace(self, item: Stored) -> None:
        """Put ``item`` (an edit or a tombstone) in place of the message with
        its seq, if the tail holds it."""
        msgs = self._msgs
        if not msgs or not msgs[0].seq <= item.seq <= msgs[-1].seq:
            return
        index = item.seq - msgs[0].seq
        self._forget(msgs[index])
        msgs[index] = item
        if item.ident is not None:
            self._ids[(sender_key(item.sender), item.ident)] = item

    def _forget(self, item: Stored) -> None:
        if item.ident is not None:
            key = (sender_key(item.sender), item.ident)
            if self._ids.get(key) is item:
                del self._ids[key]

    def get(self, seq: int) -> Stored | None:
        """The message with this seq, if the tail holds it."""
        msgs = self._msgs
        if not msgs or not msgs[0].seq <= seq <= msgs[-1].seq:
            return None
        return msgs[seq - msgs[0].seq]

    def before(self, before: int, limit: int) -> list[Stored]:
        msgs = self._msgs
        if not msgs:
            return []
        end = min(len(msgs), max(0, before - msgs[0].seq))
        return [msgs[i] for i in range(max(0, end - limit), end)]

    def find(self, sender_key: str, ident: str) -> Stored | None:
        return self._ids.get((sender_key, ident))
