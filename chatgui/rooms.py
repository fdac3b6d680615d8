"""What the window knows about the user's rooms, kept from session events.

No Tk here: :class:`Rooms` folds :mod:`chatclient.events` into per-room state
(info, a bounded buffer of messages, unread and mention counts, typing) and
records what the window must redraw (``changes``), so a turn touches the
widgets once for all its events, and tests check the rules without a display.

Unread counts start from the server's read markers (``RoomInfo.unread``) and
grow with each message after the marker that is not mine; reading a room (it
is in front and its log shows the newest line) moves the marker with ``mark``,
at most once per ``MARK_EVERY`` seconds per room, so every client of the
account agrees. A mention of me, or any message in a dm, counts as an alert
when its room is not in front or the window is not focused.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from dataclasses import dataclass, field

from chatclient import events as ev
from chatclient.events import ChatMessage, Member, RoomInfo
from protocol.values import room_key

TYPING_SHOWN = 6.0  # seconds a typing notice lasts (contract: 6 s)
MARK_EVERY = 1.0  # seconds between two marks of one room


@dataclass
class Room:
    info: RoomInfo
    messages: OrderedDict[int, ChatMessage] = field(default_factory=OrderedDict)
    members: dict[str, Member] = field(default_factory=dict)  # by casefolded name
    unread: int = 0
    alerts: int = 0  # unread mentions and dm messages
    typing: dict[str, float] = field(default_factory=dict)  # name -> shown until
    asked_before: int = 0  # a history page before this seq is on its way
    at_start: bool = False  # the buffer reaches the oldest retained message
    detached: bool = False  # the buffer is a page around a search hit, not the live end
    live: OrderedDict[int, ChatMessage] = field(default_factory=OrderedDict)  # kept meanwhile
    marked_at: float = -MARK_EVERY

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def is_dm(self) -> bool:
        return self.info.kind == "dm"

    @property
    def label(self) -> str:
        """How the room list names it: a dm by its partner."""
        if self.is_dm:
            return self.info.with_ or self.info.name
        return self.info.name

    def oldest_buffered(self) -> int:
        return next(iter(self.messages), 0)

    def newest_buffered(self) -> int:
        return next(reversed(self.messages), 0)

    def last_mine(self) -> ChatMessage | None:
        """My newest undeleted message in the buffer (what Up-arrow edits)."""
        for msg in reversed(self.messages.values()):
            if msg.mine and not msg.deleted:
                return msg
        return None


@dataclass(frozen=True, slots=True)
class Alert:
    """A notification to raise: a mention, a dm, an invitation."""

    room: str
    title: str
    body: str


@dataclass
class Changes:
    """What the window must redraw after a batch of events."""

    room_list: bool = False
    members: bool = False
    header: bool = False
    front_reset: bool = False  # redraw the front room's log from its buffer
    front_added: list[ChatMessage] = field(default_factory=list)
    front_older: list[ChatMessage] = field(default_factory=list)  # a page to put on top
    front_changed: list[ChatMessage] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)  # (style, text) for the log
    acked: list[str] = field(default_factory=list)  # outbox idents
    jump_to: int = 0  # seq to scroll to after a redraw


class Rooms:
    def __init__(self, me: str, keep: int = 2000) -> None:
        self.me = me
        self.keep = keep
        self.rooms: dict[str, Room] = {}
        self.front: str | None = None
        self.focused = True
        self.following = True  # the front log shows its newest line
        self.want_front: str | None = None  # a room I asked to join: shown once joined
        self.jumps: dict[str, int] = {}  # room key -> seq to scroll to when its page comes
        self.changes = Changes()

    # ---------------------------------------------------------------- access

    def get(self, name: str) -> Room | None:
        return self.rooms.get(room_key(name))

    def front_room(self) -> Room | None:
        return self.rooms.get(self.front) if self.front else None

    def ordered(self) -> tuple[list[Room], list[Room]]:
        """(rooms, dms), each sorted by label the way people read it."""
        rooms = sorted((r for r in self.rooms.values() if not r.is_dm),
                       key=lambda r: r.label.casefold())
        dms = sorted((r for r in self.rooms.values() if r.is_dm),
                     key=lambda r: r.label.casefold())
        return rooms, dms

    def take(self) -> Changes:
        changes, self.changes = self.changes, Changes()
        return changes

    def show(self, name: str) -> Room | None:
        """Put a room in front (its log is redrawn)."""
        room = self.get(name)
        if room is None:
            return None
        if self.front != room_key(room.name):
            self.front = room_key(room.name)
            self.following = True
            room.alerts = 0
            self.changes.front_reset = self.changes.header = self.changes.members = True
            self.changes.room_list = True
        return room

    def jump(self, name: str, seq: int, drawn: bool) -> bool:
        """Show message ``seq`` of a room (``drawn``: its log shows it already);
        True if its page of history must be asked for."""
        room = self.show(name)
        if room is None:
            return False
        if drawn and seq in room.messages:
            self.changes.jump_to = seq
            return False
        if not room.detached:
            room.live = room.messages
        room.detached = True
        room.messages = OrderedDict()
        self.jumps[room_key(name)] = seq
        self.changes.front_reset = True
        return True

    def back_to_live(self, name: str) -> None:
        """Leave a jumped-to page: the live end kept meanwhile comes back."""
        room = self.get(name)
        if room is not None and room.detached:
            room.detached = False
            room.messages, room.live = room.live, OrderedDict()
            room.at_start = False
            self.changes.front_reset = True

    # ---------------------------------------------------------------- marking

    def due_marks(self, now: float) -> list[tuple[str, int]]:
        """(room, seq) to ``mark``: the front room is read up to its newest message."""
        room = self.front_room()
        if room is None or not self.following or room.detached:
            return []
        newest = room.info.seq
        if newest <= room.info.read or now - room.marked_at < MARK_EVERY:
            if room.unread and newest <= room.info.read:
                room.unread = 0
                self.changes.room_list = True
            return []
        room.marked_at = now
        room.info = dataclasses.replace(room.info, read=newest)
        if room.unread or room.alerts:
            room.unread = room.alerts = 0
            self.changes.room_list = True
        return [(room.name, newest)]

    # ---------------------------------------------------------------- typing

    def typing_names(self, now: float) -> list[str]:
        room = self.front_room()
        if room is None:
            return []
        expired = [name for name, until in room.typing.items() if until <= now]
        for name in expired:
            del room.typing[name]
        return sorted(room.typing, key=str.casefold)

    # ---------------------------------------------------------------- events

    def apply(self, event: ev.Event, now: float) -> None:
        changes = self.changes
        match event:
            case ev.LoggedIn(name=name, rooms=infos):
                self.me = name
                seen = set()
                for info in infos:
                    self._upsert(info)
                    seen.add(room_key(info.name))
                for key in [k for k in self.rooms if k not in seen]:
                    self._remove(key)
                changes.room_list = changes.header = changes.members = True
            case ev.RoomJoined(room=info):
                self._upsert(info)
                changes.room_list = True
                if self.want_front and room_key(info.name) == self.want_front:
                    self.want_front = None
                    self.show(info.name)
                elif self.front == room_key(info.name):
                    changes.header = changes.members = True
            case ev.RoomUpdated(room=info):
                self._upsert(info)
                changes.room_list = True
                changes.header = changes.members = self.front == room_key(info.name)
            case ev.RoomLeft(room=name, reason=reason, by=by):
                key = room_key(name)
                if key in self.rooms:
                    self._remove(key)
                    words = {"part": "you left", "kicked": f"you were kicked by {by}",
                             "banned": f"you were banned by {by}",
                             "removed": "the room was removed"}.get(reason, reason)
                    changes.notes.append(("system", f"{name}: {words}"))
            case ev.TopicChanged(room=name, topic=topic, by=by):
                room = self.get(name)
                if room is not None:
                    room.info = dataclasses.replace(room.info, topic=topic)
                    if self._is_front(room):
                        changes.header = True
                        changes.notes.append(("system", f"{by} set the topic: {topic}"))
            case ev.RoleChanged(room=name, name=who, role=role):
                room = self.get(name)
                if room is not None:
                    old = room.members.get(who.casefold())
                    room.members[who.casefold()] = Member(who, role, old.online if old else True)
                    if room_key(who) == room_key(self.me):
                        room.info = dataclasses.replace(room.info, role=role)
                    changes.members = changes.members or self._is_front(room)
            case ev.MemberJoined(room=name, name=who):
                room = self.get(name)
                if room is not None:
                    room.members[who.casefold()] = Member(who, "member", True)
                    changes.members = changes.members or self._is_front(room)
            case ev.MemberLeft(room=name, name=who):
                room = self.get(name)
                if room is not None and room.members.pop(who.casefold(), None) is not None:
                    changes.members = changes.members or self._is_front(room)
            case ev.Presence(name=who, online=online):
                key = who.casefold()
                for room in self.rooms.values():
                    member = room.members.get(key)
                    if member is not None and member.online != online:
                        room.members[key] = dataclasses.replace(member, online=online)
                        changes.members = changes.members or self._is_front(room)
            case ev.Typing(room=name, name=who):
                room = self.get(name)
                if room is not None:
                    room.typing[who] = now + TYPING_SHOWN
            case ev.Invited(room=name, by=by):
                changes.alerts.append(Alert(name, f"{by} invited you",
                                            f"to the private room {name} (/join {name})"))
                changes.notes.append(("system", f"{by} invited you to {name}: /join {name}"))
            case ev.MessageAdded(room=name, msg=msg, live=live):
                self._added(msg, live)
            case ev.MessageEdited(room=name, seq=seq, text=text, edited=ts):
                self._changed(name, seq, text, ts, deleted=False)
            case ev.MessageDeleted(room=name, seq=seq):
                self._changed(name, seq, "", None, deleted=True)
            case ev.HistoryPage(room=name, msgs=msgs, before=before):
                self._page(name, msgs, before)
            case ev.PrivateMessage(frm=frm, to=to, text=text, mine=mine):
                changes.notes.append(("pm", f"[{frm} -> {to}] {text}"))
                if not mine:
                    changes.alerts.append(Alert("", f"{frm} (private)", text))
            case ev.Acked(ident=ident):
                changes.acked.append(ident)
            case ev.Rejected(ident=ident, request=request, code=code, detail=detail):
                if ident is not None:
                    changes.acked.append(ident)
                what = f"{request}: " if request else ""
                changes.notes.append(("error", f"{what}{detail} ({code})"))
            case ev.Members(room=name, members=members):
                room = self.get(name)
                if room is not None:
                    room.members = {m.name.casefold(): m for m in members}
                    changes.members = changes.members or self._is_front(room)
            case _:
                pass

    def _is_front(self, room: Room) -> bool:
        return self.front == room_key(room.name)

    def _upsert(self, info: RoomInfo) -> None:
        key = room_key(info.name)
        room = self.rooms.get(key)
        if room is None:
            room = self.rooms[key] = Room(info)
            room.at_start = info.seq == 0
        else:
            room.info = info
        room.unread = info.unread
        if info.members:
            room.members = {m.name.casefold(): m for m in info.members}
        if self.front is None and info.kind != "dm":  # a dm comes in front when asked
            self.show(info.name)

    def _remove(self, key: str) -> None:
        del self.rooms[key]
        self.changes.room_list = True
        if self.front == key:
            self.front = None
            rooms, dms = self.ordered()
            nxt = (rooms or dms)
            if nxt:
                self.show(nxt[0].name)
            else:
                self.changes.front_reset = self.changes.header = self.changes.members = True

    def _added(self, msg: ChatMessage, live: bool) -> None:
        room = self.get(msg.room)
        if room is None:
            return
        changes = self.changes
        room.typing.pop(msg.sender, None)
        info = room.info
        if msg.seq > info.seq:
            room.info = info = dataclasses.replace(info, seq=msg.seq)
            if not msg.mine and msg.seq > info.read:
                room.unread += 1
                changes.room_list = True
                front = self._is_front(room)
                if live and (msg.mentions_me or room.is_dm) and not (front and self.focused):
                    room.alerts += 1
                    where = f"in {room.label}" if not room.is_dm else "(direct message)"
                    changes.alerts.append(Alert(room.name, f"{msg.sender} {where}", msg.text))
        if room.detached:  # shown when the user goes back to the live end
            if not room.live or msg.seq > next(reversed(room.live)):
                room.live[msg.seq] = msg
                while len(room.live) > self.keep:
                    room.live.popitem(last=False)
            return
        if room.messages and msg.seq <= room.newest_buffered():
            if msg.seq in room.messages or msg.seq < room.oldest_buffered():
                return
            room.messages[msg.seq] = msg  # a gap filled: keep seq order
            room.messages = OrderedDict(sorted(room.messages.items()))
            if self._is_front(room):
                changes.front_reset = True
            return
        room.messages[msg.seq] = msg
        front = self._is_front(room)
        if len(room.messages) > self.keep and (self.following or not front
                                               or len(room.messages) > 3 * self.keep):
            while len(room.messages) > self.keep:
                room.messages.popitem(last=False)
            room.at_start = False
        if front:
            changes.front_added.append(msg)

    def _changed(self, name: str, seq: int, text: str, edited: int | None,
                 deleted: bool) -> None:
        room = self.get(name)
        if room is None or seq not in room.messages:
            return
        old = room.messages[seq]
        msg = room.messages[seq] = dataclasses.replace(
            old, text=text, edited=edited if edited is not None else old.edited, deleted=deleted)
        if self._is_front(room):
            self.changes.front_changed.append(msg)

    def _page(self, name: str, msgs: tuple[ChatMessage, ...], before: int) -> None:
        room = self.get(name)
        if room is None:
            return
        room.asked_before = 0
        if room.detached or not room.messages:
            # A jump (or a first look): the page replaces the buffer.
            room.messages = OrderedDict((m.seq, m) for m in msgs)
            room.at_start = not msgs or msgs[0].seq <= max(room.info.oldest, 1)
            if msgs and msgs[-1].seq >= room.info.seq:  # the page reaches the end
                room.detached, room.live = False, OrderedDict()
            if self._is_front(room):
                self.changes.front_reset = True
                self.changes.jump_to = self.jumps.pop(room_key(name), 0)
            return
        oldest = room.oldest_buffered()
        older = [m for m in msgs if m.seq < oldest]
        if not older or older[0].seq <= max(room.info.oldest, 1):
            room.at_start = True
        if older:
            merged = OrderedDict((m.seq, m) for m in older)
            merged.update(room.messages)
            room.messages = merged
            if self._is_front(room):
                self.changes.front_older.extend(older)
