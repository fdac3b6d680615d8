"""A tiny pure model of :class:`chatd.store.Store` for the property tests: every
room's messages in a dict, retention and search by the contract's words."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from chatd.records import (
    AddMessage,
    DeleteMessage,
    EditMessage,
    Op,
    PutRoom,
    RemoveRoom,
    Stored,
)
from protocol import name_key


@dataclass
class ModelRoom:
    name: str | None = None  # None: removed, or never created
    last: int = 0
    msgs: dict[int, Stored] = field(default_factory=dict)


class ModelStore:
    def __init__(self, retain: int) -> None:
        self.retain = retain
        self.rooms: dict[str, ModelRoom] = {}

    def room(self, key: str) -> ModelRoom:
        return self.rooms.setdefault(key, ModelRoom())

    def retained(self, key: str) -> list[Stored]:
        room = self.room(key)
        return [room.msgs[seq] for seq in sorted(room.msgs) if seq > room.last - self.retain]

    def oldest_seq(self, key: str) -> int:
        kept = self.retained(key)
        return kept[0].seq if kept else 0

    def get(self, key: str, seq: int) -> Stored | None:
        return next((m for m in self.retained(key) if m.seq == seq), None)

    def after(self, key: str, since: int) -> Iterator[Stored]:
        """Lazy like the store's: re-reads the model at every step."""
        upto = self.room(key).last
        nxt = since + 1
        while True:
            ahead = [m for m in self.retained(key) if nxt <= m.seq <= upto]
            if not ahead:
                return
            yield ahead[0]
            nxt = ahead[0].seq + 1

    def latest(self, key: str, count: int) -> list[Stored]:
        kept = self.retained(key)
        return kept[max(0, len(kept) - count):]

    def before(self, key: str, before: int, limit: int) -> list[Stored]:
        kept = [m for m in self.retained(key) if m.seq < before]
        return kept[max(0, len(kept) - limit):]

    def find(self, key: str, sender_key: str, ident: str) -> Stored | None:
        return next((m for m in self.retained(key)
                     if m.ident == ident and name_key(m.sender) == sender_key), None)

    def search(self, rooms: Sequence[str], terms: Sequence[str], limit: int,
               before: int | None = None) -> list[tuple[str, Stored]]:
        hits = [(key, m) for key in rooms for m in self.retained(key)
                if not m.deleted and (before is None or m.seq < before)
                and all(term in name_key(m.text) for term in terms)]
        if len(rooms) == 1:
            hits.sort(key=lambda hit: -hit[1].seq)
        else:
            hits.sort(key=lambda hit: (-hit[1].ts, (self.room(hit[0]).name or "").casefold(),
                                       -hit[1].seq))
        return hits[:limit]

    def apply(self, ops: Sequence[Op]) -> None:
        for op in ops:
            if isinstance(op, AddMessage):
                room = self.room(op.room)
                assert op.msg.seq == room.last + 1
                room.last = op.msg.seq
                room.msgs[op.msg.seq] = op.msg
            elif isinstance(op, EditMessage):
                old = self.room(op.room).msgs[op.seq]
                self.room(op.room).msgs[op.seq] = Stored(old.seq, old.ts, old.sender, op.text,
                                                         old.ident, op.edited)
            elif isinstance(op, DeleteMessage):
                old = self.room(op.room).msgs[op.seq]
                self.room(op.room).msgs[op.seq] = Stored(old.seq, old.ts, old.sender, "",
                                                         old.ident, None, True)
            elif isinstance(op, PutRoom):
                self.room(op.room.key).name = op.room.name
            elif isinstance(op, RemoveRoom):
                room = self.room(op.room)
                room.name = None
                room.msgs.clear()

    def copy(self) -> ModelStore:
        return copy.deepcopy(self)
