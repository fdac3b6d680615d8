"""What a :class:`~chatclient.session.ClientSession` reports: small frozen records.

One class per kind, so a user interface dispatches with ``match`` and mypy checks
every field. Values only (tuples, no lists), so an event can be kept, compared
and written to a transcript (:mod:`chatclient.transcript`) as it is.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Member:
    """One member of a room, as ``joined`` and ``members`` list them."""

    name: str
    role: str  # owner, op or member
    online: bool


@dataclass(frozen=True, slots=True)
class RoomInfo:
    """A snapshot of one room the user is a member of.

    ``members`` is empty until a ``joined`` or ``members`` reply listed them
    (``welcome`` does not). ``unread`` counts the messages after ``read`` that
    are not the user's own, as far as this session knows which are.
    """

    name: str
    kind: str  # public, private or dm
    topic: str
    seq: int
    oldest: int
    read: int
    role: str
    with_: str | None  # the other account of a dm room
    members: tuple[Member, ...]
    unread: int


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message of a room. A tombstone has ``deleted`` and ``text`` ""."""

    room: str
    seq: int
    ts: int
    sender: str
    text: str
    ident: str | None
    edited: int | None
    deleted: bool
    mine: bool
    mentions_me: bool


@dataclass(frozen=True, slots=True)
class RoomListEntry:
    """One line of the ``rooms`` reply."""

    name: str
    kind: str
    topic: str
    members: int
    member: bool
    invited: bool


# --- the connection ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connecting:
    address: str


@dataclass(frozen=True, slots=True)
class Connected:
    pass


@dataclass(frozen=True, slots=True)
class LoggedIn:
    """A ``welcome``: every room the session now has (``resumed`` on a reconnect)."""

    name: str
    account: bool
    rooms: tuple[RoomInfo, ...]
    resumed: bool


@dataclass(frozen=True, slots=True)
class Reconnecting:
    delay: float
    reason: str


@dataclass(frozen=True, slots=True)
class Failed:
    """The session is over for a reason the user must see (no more attempts)."""

    code: str
    detail: str


@dataclass(frozen=True, slots=True)
class Closed:
    """The session is over because the user said ``bye``."""


# --- rooms -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RoomJoined:
    room: RoomInfo


@dataclass(frozen=True, slots=True)
class RoomLeft:
    """The user is no longer in ``room``: ``reason`` is the ``part`` reason
    (part, kicked, banned, removed), ``gone`` (not a member any more at a
    reconnect) or the error code that refused an automatic re-join."""

    room: str
    reason: str
    by: str | None
    message: str | None


@dataclass(frozen=True, slots=True)
class RoomUpdated:
    room: RoomInfo


@dataclass(frozen=True, slots=True)
class TopicChanged:
    room: str
    topic: str
    by: str


@dataclass(frozen=True, slots=True)
class RoleChanged:
    room: str
    name: str
    role: str
    by: str


@dataclass(frozen=True, slots=True)
class MemberJoined:
    room: str
    name: str


@dataclass(frozen=True, slots=True)
class MemberLeft:
    room: str
    name: str
    reason: str


@dataclass(frozen=True, slots=True)
class Typing:
    room: str
    name: str


@dataclass(frozen=True, slots=True)
class Invited:
    room: str
    by: str


# --- messages ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MessageAdded:
    """A message shown for the first time; ``live`` is False for backlog and history."""

    room: str
    msg: ChatMessage
    live: bool


@dataclass(frozen=True, slots=True)
class MessageEdited:
    room: str
    seq: int
    text: str
    edited: int


@dataclass(frozen=True, slots=True)
class MessageDeleted:
    room: str
    seq: int
    by: str


@dataclass(frozen=True, slots=True)
class PrivateMessage:
    frm: str
    to: str
    text: str
    ts: int
    ident: str | None
    mine: bool


@dataclass(frozen=True, slots=True)
class Acked:
    """The outbox entry ``ident`` was accepted: a ``say`` as (room, seq), a
    ``pm`` with both None."""

    ident: str
    room: str | None
    seq: int | None


# --- replies -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Done:
    """An ``ok`` reply to the request ``ident`` of type ``request``."""

    ident: str
    request: str


@dataclass(frozen=True, slots=True)
class Rejected:
    """An error for a request (``ident`` its id, ``request`` its type if known).

    ``offline``: it was asked while not logged in, or the connection was lost
    before its reply (so it may or may not have taken effect).
    """

    ident: str | None
    request: str | None
    code: str
    detail: str


@dataclass(frozen=True, slots=True)
class Presence:
    name: str
    online: bool
    reason: str | None


@dataclass(frozen=True, slots=True)
class HistoryPage:
    room: str
    msgs: tuple[ChatMessage, ...]
    before: int


@dataclass(frozen=True, slots=True)
class SearchResults:
    query: str
    room: str | None
    msgs: tuple[ChatMessage, ...]


@dataclass(frozen=True, slots=True)
class RoomList:
    rooms: tuple[RoomListEntry, ...]


@dataclass(frozen=True, slots=True)
class Members:
    room: str
    members: tuple[Member, ...]


@dataclass(frozen=True, slots=True)
class Users:
    names: tuple[str, ...]


Event = (
    Connecting | Connected | LoggedIn | Reconnecting | Failed | Closed
    | RoomJoined | RoomLeft | RoomUpdated | TopicChanged | RoleChanged
    | MemberJoined | MemberLeft | Typing | Invited
    | MessageAdded | MessageEdited | MessageDeleted | PrivateMessage | Acked
    | Done | Rejected | Presence | HistoryPage | SearchResults | RoomList | Members | Users
)
"""Every kind of event, for ``match`` and type hints."""
