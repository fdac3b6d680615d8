"""How the core's store ops look in Redis: fields of :data:`scripts.STATE`, and
the ops themselves in the change feed (so other nodes apply them).

A field is a kind letter and keys joined by tabs (no name, room name or key
can hold a tab or a control character):

- ``a<TAB>account`` -> ``[name, hash]``
- ``r<TAB>room`` -> ``[name, kind, topic, owner]``
- ``m<TAB>room<TAB>account`` -> role; ``b<TAB>room<TAB>name`` and
  ``i<TAB>room<TAB>account`` -> ``""``; ``k<TAB>room<TAB>account`` -> read marker
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from chatd import records
from chatd.cluster import scripts
from chatd.records import AccountRecord, Op, RoomRecord, Snapshot

_OPS: dict[str, type] = {cls.__name__: cls for cls in (
    records.EditMessage, records.DeleteMessage, records.PutRoom, records.RemoveRoom,
    records.PutMember, records.RemoveMember, records.PutBan, records.RemoveBan,
    records.PutInvite, records.RemoveInvite, records.PutMarker, records.RemoveMarker,
    records.PutAccount, records.RemoveAccount)}


def _field(*parts: str) -> str:
    return "\t".join(parts)


def room_field(r: RoomRecord) -> tuple[str, str]:
    return _field("r", r.key), json.dumps([r.name, r.kind, r.topic, r.owner])


def room_record(key: str, value: str) -> RoomRecord:
    name, kind, topic, owner = json.loads(value)
    return RoomRecord(key, name, kind, topic, owner)


def account_field(a: AccountRecord) -> tuple[str, str]:
    return _field("a", a.key), json.dumps([a.name, a.hash])


def op_to_json(op: Op) -> list[Any]:
    """``[type name, field values...]``; a nested record as a list of its fields."""
    values: list[Any] = [type(op).__name__]
    for field in dataclasses.fields(op):
        value = getattr(op, field.name)
        if isinstance(value, RoomRecord | AccountRecord):
            value = list(dataclasses.astuple(value))
        values.append(value)
    return values


def op_from_json(data: list[Any]) -> Op:
    cls = _OPS[data[0]]
    args = list(data[1:])
    if cls is records.PutRoom:
        args[0] = RoomRecord(*args[0])
    elif cls is records.PutAccount:
        args[0] = AccountRecord(*args[0])
    op: Op = cls(*args)
    return op


class Commands:
    """The ARGV commands and KEYS of one :data:`scripts.META_COMMIT` call."""

    def __init__(self) -> None:
        self.keys = [scripts.CLUSTER, scripts.STATE, scripts.META]
        self.args: list[Any] = []
        self._index: dict[str, int] = {}

    def key(self, name: str) -> int:
        """KEYS index (1-based, as Lua counts) of a room key."""
        index = self._index.get(name)
        if index is None:
            self.keys.append(name)
            index = self._index[name] = len(self.keys)
        return index

    def add(self, op: Op) -> None:
        args = self.args
        if isinstance(op, records.PutRoom):
            r = op.room
            args += ("S", *room_field(r))
            args += ("N", self.key(scripts.room_keys(r.key)[0]), self.key(scripts.gone_key(r.key)))
        elif isinstance(op, records.RemoveRoom):
            args += ("D", _field("r", op.room))
            for kind in "mbik":
                args += ("P", _field(kind, op.room, ""))
            _, log, ids = scripts.room_keys(op.room)
            args += ("R", self.key(log), self.key(ids), self.key(scripts.gone_key(op.room)))
        elif isinstance(op, records.PutMember):
            args += ("S", _field("m", op.room, op.account), op.role)
        elif isinstance(op, records.RemoveMember):
            args += ("D", _field("m", op.room, op.account))
        elif isinstance(op, records.PutBan):
            args += ("S", _field("b", op.room, op.name), "")
        elif isinstance(op, records.RemoveBan):
            args += ("D", _field("b", op.room, op.name))
        elif isinstance(op, records.PutInvite):
            args += ("S", _field("i", op.room, op.account), "")
        elif isinstance(op, records.RemoveInvite):
            args += ("D", _field("i", op.room, op.account))
        elif isinstance(op, records.PutMarker):
            args += ("S", _field("k", op.room, op.account), op.seq)
        elif isinstance(op, records.RemoveMarker):
            args += ("D", _field("k", op.room, op.account))
        elif isinstance(op, records.PutAccount):
            args += ("S", *account_field(op.account))
        elif isinstance(op, records.RemoveAccount):
            args += ("D", _field("a", op.account))
        elif isinstance(op, records.EditMessage):
            seq, log, _ = scripts.room_keys(op.room)
            args += ("E", self.key(seq), self.key(log), op.seq, op.text, op.edited)
        elif isinstance(op, records.DeleteMessage):
            seq, log, _ = scripts.room_keys(op.room)
            args += ("X", self.key(seq), self.key(log), op.seq)
        else:  # AddMessage goes through the say script, never here
            raise TypeError(f"not a cluster state op: {op!r}")


def snapshot(fields: dict[str, str]) -> Snapshot:
    """The core's starting state from the whole :data:`scripts.STATE` hash."""
    snap = Snapshot([], [], [], [], [], [], {})
    for field, value in fields.items():
        kind, *keys = field.split("\t")
        if kind == "a":
            name, hash_ = json.loads(value)
            snap.accounts.append(AccountRecord(keys[0], name, hash_))
        elif kind == "r":
            snap.rooms.append(room_record(keys[0], value))
        elif kind == "m":
            snap.members.append((keys[0], keys[1], value))
        elif kind == "b":
            snap.bans.append((keys[0], keys[1]))
        elif kind == "i":
            snap.invites.append((keys[0], keys[1]))
        elif kind == "k":
            snap.markers.append((keys[0], keys[1], int(value)))
    return snap


def commands(ops: Sequence[Op]) -> Commands:
    out = Commands()
    for op in ops:
        out.add(op)
    return out
