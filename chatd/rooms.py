"""The chat core's state: rooms and the people in them, held in memory.

A :class:`Person` is an account (kept for ever, online or not) or a guest
(exists while its session lasts). A :class:`Room` knows its members by key
with their roles, its bans and invitations, and its channels: the online
version 2 members, and for ``lobby`` also the version 1 sessions. The store
only learns of changes (chatd.records ops); everything is read from here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chatd.records import DM, MEMBER, OP, OWNER, PUBLIC, RoomRecord
from chatd.turn import Channel

if TYPE_CHECKING:
    from chatd.connection import Connection
    from chatd.store import RoomLog

ROLE_RANK = {OWNER: 0, OP: 1, MEMBER: 2}


class Person:
    """An account, or a guest for the length of its session."""

    __slots__ = ("account", "conn", "hash", "key", "markers", "name", "rooms")

    def __init__(self, key: str, name: str, *, account: bool, hash: str = "") -> None:
        self.key = key
        self.name = name
        self.account = account
        self.hash = hash
        self.conn: Connection | None = None  # its online session
        self.rooms: dict[str, Room] = {}  # room key -> room it is a member of
        self.markers: dict[str, int] = {}  # room key -> read marker

    def __repr__(self) -> str:
        return f"<Person {self.name}{'' if self.account else ' (guest)'}>"


class Room:
    """A room: its record, members, bans, invitations, seq and channels."""

    __slots__ = ("bans", "chan", "chan1", "invites", "key", "kind", "log", "members",
                 "name", "owner", "seq", "topic")

    def __init__(self, record: RoomRecord, log: RoomLog, *, lobby: bool = False) -> None:
        self.key = record.key
        self.name = record.name
        self.kind = record.kind
        self.topic = record.topic
        self.owner = record.owner  # the owner account's key, None: no owner
        self.log = log
        self.seq = log.last_seq
        self.members: dict[str, str] = {}  # person key -> role
        self.bans: set[str] = set()
        self.invites: set[str] = set()
        self.chan = Channel(("r", self.key))  # online version 2 members
        self.chan1: Channel | None = Channel(("1", self.key)) if lobby else None  # version 1

    def __repr__(self) -> str:
        return f"<Room {self.name} {self.kind} seq={self.seq}>"

    def record(self) -> RoomRecord:
        return RoomRecord(self.key, self.name, self.kind, self.topic, self.owner)

    @property
    def oldest(self) -> int:
        return self.log.oldest_seq

    def role_of(self, key: str) -> str:
        """A member's role: the owner is ``owner`` whatever its stored role."""
        if key == self.owner:
            return OWNER
        return self.members.get(key, MEMBER)

    def dm_keys(self) -> tuple[str, str]:
        """The two account keys of a dm room (the same twice for a self dm)."""
        low, high = self.key[1:].split("@")
        return low, high

    @property
    def is_dm(self) -> bool:
        return self.kind == DM

    @property
    def is_public(self) -> bool:
        return self.kind == PUBLIC
