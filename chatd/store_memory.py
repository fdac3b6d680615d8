"""A store that keeps everything in memory: ``--db :memory:``.

Nothing survives the process, so nothing is written anywhere: a commit only
applies the message ops to the rooms' logs (the core holds rooms, accounts,
memberships and markers itself), and :meth:`MemoryStore.load` has nothing to
give. What it is for: benchmarks and tests that do not care about restarts,
where the cost of a message must be what the chat costs, not what SQLite does
(an SQLite ``:memory:`` database spends most of a fan-out turn in
``executemany``). Search scans the newest messages (the contract's substring
rule, exactly), at most SCAN of them per request.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator, Sequence

from chatd.history import MemoryHistory
from chatd.records import (
    AddMessage,
    DeleteMessage,
    EditMessage,
    Op,
    PutRoom,
    RemoveRoom,
    Snapshot,
    Stored,
)

#: Messages one search reads at most, split between the rooms searched (at
#: least SCAN_ROOM each): the newest ones.
SCAN = 20_000
SCAN_ROOM = 200


class MemoryLog:
    """A room's retained messages: exactly the newest ``retain``."""

    def __init__(self, retain: int, last: int = 0) -> None:
        self._retain = retain
        self._tail = MemoryHistory(retain)
        self.last_seq = last

    def restart(self, last: int) -> None:
        """Forget every message: the next one is ``last`` + 1 (a cluster
        node's cache that missed messages trimmed meanwhile)."""
        self._tail = MemoryHistory(self._retain)
        self.last_seq = last

    @property
    def oldest_seq(self) -> int:
        return self._tail.oldest_seq

    def get(self, seq: int) -> Stored | None:
        return self._tail.get(seq)

    def after(self, since: int) -> Iterator[Stored]:
        upto = self.last_seq
        nxt = since + 1
        while nxt <= upto:  # re-checked at each step: it may be read across turns
            nxt = max(nxt, self.oldest_seq)
            item = self._tail.get(nxt)
            if item is None:
                return
            yield item
            nxt += 1

    def latest(self, count: int) -> list[Stored]:
        return self._tail.before(self.last_seq + 1, count)

    def before(self, before: int, limit: int) -> list[Stored]:
        return self._tail.before(before, limit)

    def find(self, sender_key: str, ident: str) -> Stored | None:
        return self._tail.find(sender_key, ident)

    def add(self, msg: Stored) -> None:
        self._tail.append((msg,))
        self.last_seq = msg.seq

    def change(self, op: EditMessage | DeleteMessage) -> None:
        old = self._tail.get(op.seq)
        if old is None or old.deleted:
            return
        if isinstance(op, EditMessage):
            self._tail.replace(Stored(old.seq, old.ts, old.sender, op.text, old.ident, op.edited))
        else:
            self._tail.replace(Stored(old.seq, old.ts, old.sender, "", old.ident, None, True))


class MemoryStore:
    """:class:`chatd.store.Store` in memory; see the module docstring."""

    def __init__(self, *, retain: int) -> None:
        self._retain = retain
        self._logs: dict[str, MemoryLog] = {}
        self._names: dict[str, str] = {}  # room key -> casefolded name, for search ties

    def load(self) -> Snapshot:
        return Snapshot([], [], [], [], [], [], {})

    def log(self, room: str) -> MemoryLog:
        log = self._logs.get(room)
        if log is None:
            log = self._logs[room] = MemoryLog(self._retain)
        return log

    def commit(self, ops: Sequence[Op]) -> None:
        """Apply the message ops; a seq that does not continue its room is a
        caller's bug (ValueError). Nothing else can fail in memory."""
        logs = self._logs
        for op in ops:
            if type(op) is AddMessage:  # the hot path: one per message
                log = logs.get(op.room) or self.log(op.room)
                if op.msg.seq != log.last_seq + 1:
                    raise ValueError(f"seq {op.msg.seq} does not continue {log.last_seq} "
                                     f"in room {op.room!r}")
                log.add(op.msg)
            elif isinstance(op, EditMessage | DeleteMessage):
                self.log(op.room).change(op)
            elif isinstance(op, PutRoom):
                self._names[op.room.key] = op.room.name.casefold()
            elif isinstance(op, RemoveRoom):
                old = logs.get(op.room)
                logs[op.room] = MemoryLog(self._retain, old.last_seq if old else 0)
                self._names.pop(op.room, None)

    def search(self, rooms: Sequence[str], terms: Sequence[str], limit: int,
               before: int | None = None) -> list[tuple[str, Stored]]:
        """Newest first in each room, at most ``limit`` a room, reading at most
        SCAN messages in all (split between the rooms): there is no index in
        memory, and a request must not hold the loop for long."""
        span = max(SCAN // max(len(rooms), 1), SCAN_ROOM)
        found: list[tuple[str, Stored]] = []
        for room in rooms:
            log = self._logs.get(room)
            if log is None:
                continue
            hits = 0
            upto = log.last_seq + 1 if before is None else min(before, log.last_seq + 1)
            for msg in reversed(log.before(upto, span)):
                if msg.deleted:
                    continue
                folded = unicodedata.normalize("NFC", msg.text).casefold()
                if all(term in folded for term in terms):
                    found.append((room, msg))
                    hits += 1
                    if hits == limit:
                        break
        if len(rooms) == 1:
            found.sort(key=lambda hit: -hit[1].seq)
        else:
            found.sort(key=lambda hit: (-hit[1].ts, self._names.get(hit[0], hit[0]),
                                        -hit[1].seq))
        return found[:limit]

    def close(self) -> None:
        self._logs.clear()
