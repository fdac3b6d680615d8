"""What the store keeps, as small frozen records, and the changes it is asked to make.

The chat core holds rooms, accounts, memberships, bans, invitations and read
markers in memory (it serves every read from there) and tells the store what
changed as a list of :data:`Op` records, committed once per loop turn
(:meth:`chatd.store.Store.commit`). A store rebuilds the core's state at start
from a :class:`Snapshot`. Messages are the one thing read back from a store
(backlogs, ``history`` pages, ``since`` replays, search), through
:class:`chatd.store.RoomLog`.

Keys are ``protocol.name_key`` forms (NFC + casefold); names are kept as shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Room kinds (contract §10).
PUBLIC = "public"
PRIVATE = "private"
DM = "dm"

#: Roles (contract §11).
OWNER = "owner"
OP = "op"
MEMBER = "member"


@dataclass(frozen=True, slots=True)
class Stored:
    """One message of a room as kept in history (a ``msg`` without its type).

    ``edited`` is the ts of the last edit (None if never edited); a deleted
    message is a tombstone: ``deleted`` True and ``text`` "" (its ``ident`` is
    kept, so an idempotent resend still finds it).
    """

    seq: int
    ts: int
    sender: str
    text: str
    ident: str | None = None
    edited: int | None = None
    deleted: bool = False

    def as_member(self) -> dict[str, Any]:
        """Version 1 shape for a ``history`` reply's ``msgs`` (contract §5, §10):
        a tombstone has ``text`` "" and ``deleted`` true."""
        out: dict[str, Any] = {"seq": self.seq, "ts": self.ts, "from": self.sender,
                               "text": self.text}
        if self.deleted:
            out["deleted"] = True
        elif self.ident is not None:
            out["id"] = self.ident
        if self.edited is not None and not self.deleted:
            out["edited"] = self.edited
        return out


@dataclass(frozen=True, slots=True)
class RoomRecord:
    """A room as the store keeps it. ``owner`` is the owner account's key (None:
    no owner). ``last_seq`` and ``oldest_seq`` are filled in by the store on
    load (0 if none); they are not written through :class:`PutRoom`."""

    key: str
    name: str
    kind: str
    topic: str = ""
    owner: str | None = None
    last_seq: int = 0
    oldest_seq: int = 0


@dataclass(frozen=True, slots=True)
class AccountRecord:
    """An account: its name as registered and its password hash record (a
    self-describing string naming the algorithm and its parameters, see
    :mod:`chatd.passwords`); the clear password is never stored."""

    key: str
    name: str
    hash: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything a store holds but messages, for the core to start from.

    ``members`` are (room key, account key, role); ``bans`` and ``invites`` are
    (room key, account or name key); ``markers`` are (room key, account key, seq).
    Removed rooms are not in ``rooms``; their last seqs are in ``removed_seqs``
    (room key -> seq), since a room created again continues its numbering.
    """

    rooms: list[RoomRecord]
    accounts: list[AccountRecord]
    members: list[tuple[str, str, str]]
    bans: list[tuple[str, str]]
    invites: list[tuple[str, str]]
    markers: list[tuple[str, str, int]]
    removed_seqs: dict[str, int]


# --- changes: each op is applied in list order, in one transaction ---------


@dataclass(frozen=True, slots=True)
class AddMessage:
    """A new message; its seq continues the room's last seq by exactly one."""

    room: str
    msg: Stored


@dataclass(frozen=True, slots=True)
class EditMessage:
    room: str
    seq: int
    text: str
    edited: int


@dataclass(frozen=True, slots=True)
class DeleteMessage:
    """Make the message a tombstone (text gone, out of the search index)."""

    room: str
    seq: int


@dataclass(frozen=True, slots=True)
class PutRoom:
    """Create a room or update its name, kind, topic or owner."""

    room: RoomRecord


@dataclass(frozen=True, slots=True)
class RemoveRoom:
    """Delete a room with its history, members, bans, invitations and markers;
    its last seq is kept so a room created again with this name continues it."""

    room: str


@dataclass(frozen=True, slots=True)
class PutMember:
    """An account's membership (insert or change its role)."""

    room: str
    account: str
    role: str


@dataclass(frozen=True, slots=True)
class RemoveMember:
    room: str
    account: str


@dataclass(frozen=True, slots=True)
class PutBan:
    room: str
    name: str


@dataclass(frozen=True, slots=True)
class RemoveBan:
    room: str
    name: str


@dataclass(frozen=True, slots=True)
class PutInvite:
    room: str
    account: str


@dataclass(frozen=True, slots=True)
class RemoveInvite:
    room: str
    account: str


@dataclass(frozen=True, slots=True)
class PutMarker:
    room: str
    account: str
    seq: int


@dataclass(frozen=True, slots=True)
class RemoveMarker:
    room: str
    account: str


@dataclass(frozen=True, slots=True)
class PutAccount:
    """Create an account or replace its password hash."""

    account: AccountRecord


@dataclass(frozen=True, slots=True)
class RemoveAccount:
    """Delete the account row only: the core sends the other ops that go with
    it (memberships, dm rooms, invitations, markers, ownerships) itself."""

    account: str


Op = (AddMessage | EditMessage | DeleteMessage | PutRoom | RemoveRoom | PutMember
      | RemoveMember | PutBan | RemoveBan | PutInvite | RemoveInvite | PutMarker
      | RemoveMarker | PutAccount | RemoveAccount)
