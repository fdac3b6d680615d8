"""What the session knows of one room: its summary, members, and what was delivered.

**Dedupe by (room, seq).** Two integers per room, however long the session.
The server's streams (live messages, a resume backlog, a ``join`` with
``since``) are complete and go forward only, so a stream message is new exactly
when its seq is above ``high``, the last one delivered (or the room's seq when
the user first saw it): one at or below is a resume overlap or the re-sent
original of an idempotent ``say``. Older messages come only in ``history``
pages, and an entry is new exactly when its seq is below ``floor``, the oldest
one a page delivered (first-sight seq + 1 before any page).

``high`` is also the room's resume point: a reconnect asks for every message
after it (``hello.resume``, or ``join`` with ``since``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from chatclient.events import Member, RoomInfo
from protocol.framing import Message
from protocol.values import name_key


@dataclass(eq=False)
class RoomState:
    """One room the user is a member of (mutable; :meth:`info` is a snapshot)."""

    name: str
    kind: str
    topic: str
    seq: int
    oldest: int
    read: int
    role: str
    with_: str | None
    high: int  # every seq up to here is delivered or was before the join
    floor: int  # the lowest seq delivered by history (the join's seq + 1 before)
    live_from: int = 0  # msgs above this seq are live on this connection
    members: dict[str, Member] = field(default_factory=dict)  # by name key
    mine: set[int] = field(default_factory=set)  # the user's own seqs above read

    @classmethod
    def from_summary(cls, summary: Message) -> RoomState:
        """A room first seen in ``welcome.rooms`` or a ``joined`` reply."""
        seq = summary["seq"]
        state = cls(name=summary["room"], kind=summary["kind"], topic=summary["topic"],
                    seq=seq, oldest=summary["oldest"], read=summary["read"],
                    role=summary["role"], with_=summary.get("with"), high=seq, floor=seq + 1)
        state.live_from = seq
        return state

    def update(self, summary: Message) -> None:
        """A later summary of the same room (a reconnect's welcome, a ``joined``)."""
        self.name = summary["room"]
        self.kind = summary["kind"]
        self.topic = summary["topic"]
        self.seq = max(self.seq, summary["seq"])
        self.oldest = summary["oldest"]
        self.role = summary["role"]
        self.with_ = summary.get("with")
        self.live_from = summary["seq"]
        self.set_read(summary["read"])

    @property
    def unread(self) -> int:
        return max(0, self.seq - self.read - len(self.mine))

    @property
    def has_older(self) -> bool:
        """Whether a ``history`` page below ``floor`` can hold anything."""
        return self.floor > max(1, self.oldest)

    def set_read(self, read: int) -> None:
        self.read = read
        self.mine = {seq for seq in self.mine if seq > read}

    def set_members(self, members: tuple[Member, ...]) -> None:
        self.members = {name_key(m.name): m for m in members}

    def take(self, seq: int, mine: bool) -> bool:
        """Record a message of the server's stream; False if it was delivered already.

        A stream only goes forward, so anything at or below ``high`` is a
        repeat (also below ``floor``: the re-sent original of an old ``say``).
        """
        if seq <= self.high:
            return False
        self.high = seq
        self.seq = max(self.seq, seq)
        if mine and seq > self.read:
            self.mine.add(seq)
        return True

    def take_page(self, page: list[tuple[int, bool]], before: int) -> list[bool]:
        """Record a ``history`` page of (seq, mine), oldest first; which entries are new.

        Only a page asked for at or above ``floor`` extends the interval (its
        entries below ``floor`` are the newest ones there, so no gap opens); one
        asked further down leaves a gap, which is never claimed as delivered.
        """
        fresh = [seq < self.floor for seq, _ in page]
        for (seq, mine), new in zip(page, fresh, strict=True):
            if new and mine and seq > self.read:
                self.mine.add(seq)
        if before >= self.floor:
            if not page:
                self.oldest = max(self.oldest, self.floor)  # nothing older is retained
            elif any(fresh):
                self.floor = min(seq for seq, _ in page)
        return fresh

    def info(self) -> RoomInfo:
        members = tuple(sorted(self.members.values(), key=lambda m: name_key(m.name)))
        return RoomInfo(name=self.name, kind=self.kind, topic=self.topic, seq=self.seq,
                        oldest=self.oldest, read=self.read, role=self.role, with_=self.with_,
                        members=members, unread=self.unread)
