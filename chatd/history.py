"""Public message history: the store the chat core writes to and reads from.

The core talks to a :class:`History`; :class:`MemoryHistory` keeps everything in
memory (``--db :memory:``). Retention is exact (contract §7): only the newest
``retain`` messages are ever served, whenever older rows are actually deleted.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from protocol import name_key


class StoreError(Exception):
    """A batch could not be made durable (disk full, I/O error).

    Nothing of the failed batch is stored: the core refuses those messages with
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
    """What the chat core needs of a message store."""

    @property
    def last_seq(self) -> int:
        """The newest seq ever given (0 if none): seq continues from here."""

    @property
    def oldest_seq(self) -> int:
        """The oldest retained seq, 0 if nothing is retained."""

    def append(self, batch: list[Stored]) -> None:
        """Store one loop turn's messages durably, all or nothing; StoreError."""

    def after(self, since: int) -> Iterator[Stored]:
        """Every retained message with seq > since, oldest first."""

    def latest(self, count: int) -> list[Stored]:
        """The newest ``count`` retained messages, oldest first."""

    def before(self, before: int, limit: int) -> list[Stored]:
        """The newest ``limit`` retained messages with seq < before, oldest first."""

    def find(self, sender_key: str, ident: str) -> Stored | None:
        """The retained message this sender (by name key) sent with this id."""

    def close(self) -> None:
        """Make everything durable and release the store."""


class MemoryHistory:
    """History kept in memory only: lost at exit, never fails to store."""

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

    def append(self, batch: list[Stored]) -> None:
        for item in batch:
            if len(self._msgs) == self._retain:
                dropped = self._msgs[0]
                if dropped.ident is not None:
                    self._ids.pop((name_key(dropped.sender), dropped.ident), None)
            self._msgs.append(item)
            if item.ident is not None:
                self._ids[(name_key(item.sender), item.ident)] = item
            self._last = item.seq

    def after(self, since: int) -> Iterator[Stored]:
        msgs = self._msgs
        if not msgs or since >= self._last:
            return iter(())
        start = max(0, since - msgs[0].seq + 1)
        return (msgs[i] for i in range(start, len(msgs)))

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
