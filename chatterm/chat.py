"""The terminal client's state: which rooms I am in, which one I am looking at.

Both faces of ``chat`` (the pipe and the full screen) drive one :class:`Chat`:
it turns typed lines into requests of the version 2 session
(:class:`chatclient.ClientSession`) and the session's events into
:class:`~chatterm.lines.Line` objects, and keeps the *current room* (where a
plain line goes) and the unread counts. It does no I/O and reads no clock of
its own (``now`` is passed in), so its rules are the same in both faces.

The current room moves as soon as ``/join`` or ``/dm`` is typed, not when the
server answers: in ``printf '/join ops\\nhi\\n' | chat`` the ``hi`` must go to
``ops``, and requests are handled in order, so it does. A refused join moves
the current room back.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from chatclient.events import (
    ChatMessage,
    Closed,
    Connected,
    Connecting,
    Done,
    Event,
    Failed,
    HistoryPage,
    Invited,
    LoggedIn,
    MemberJoined,
    MemberLeft,
    Members,
    MessageAdded,
    MessageDeleted,
    MessageEdited,
    Presence,
    PrivateMessage,
    Reconnecting,
    Rejected,
    RoleChanged,
    RoomInfo,
    RoomJoined,
    RoomLeft,
    RoomList,
    RoomUpdated,
    SearchResults,
    TopicChanged,
    Typing,
    Users,
)
from chatclient.session import ClientSession
from chatterm import commands
from chatterm.lines import PART_WORDS, Line, indent, label, message_line, news
from protocol.errors import ProtocolError
from protocol.values import dm_name, name_key, room_key

MARK_EVERY = 2.0  # seconds between read-marker updates of the room in view (each is a request)


@dataclass
class RoomView:
    """What the terminal keeps of one room beside the session's summary."""

    info: RoomInfo
    unread: int = 0  # live messages of others since I last looked
    last_seq: int = 0  # newest message seen
    my_last: int = 0  # my newest undeleted message, for /edit and /delete without #N
    history_asked: bool = False


@dataclass
class Going:
    """A ``/join`` or ``/dm`` on its way: where it goes, and where we were before it."""

    to: str
    back: str | None


class Chat:
    """Typed lines in, requests out; events in, lines out (see the module docstring)."""

    def __init__(self, session: ClientSession, room: str | None = None, *,
                 auto_mark: bool = False) -> None:
        self.session = session
        self.rooms: dict[str, RoomView] = {}  # by room key
        self.home = room_key(room) if room else None  # --room: joined after login
        self.current = self.home
        self.auto_mark = auto_mark  # the screen marks what it shows; a pipe only on /mark
        self.me = ""
        self.failure: str | None = None
        self.closed = False
        self.quit_requested = False
        self._going: dict[str, Going] = {}  # by request id
        self._marked_at = float("-inf")

    # --- what the faces read ------------------------------------------------------

    def where(self, key: str | None) -> str:
        """The on-screen name of a room key (the key itself if not a member)."""
        view = self.rooms.get(key) if key else None
        return label(view.info) if view else key or ""

    def ordered(self) -> list[str]:
        """Room keys in window order (Alt+1 is the first): by on-screen name."""
        return sorted(self.rooms, key=lambda key: self.where(key).casefold())

    def unread(self, key: str) -> int:
        """Unread messages of a room; the room in view has none."""
        view = self.rooms.get(key)
        return 0 if view is None or key == self.current else view.unread

    # --- typed lines ----------------------------------------------------------------

    def handle(self, line: str) -> list[Line]:
        """Act on one typed line; the lines to show at once (help, mistakes)."""
        command = commands.parse(line.rstrip("\r\n"))  # a CRLF file works too
        try:
            return self._do(command)
        except ProtocolError as exc:  # what the server would refuse is refused here
            return [news(None, None, f"not sent: {exc.message} ({exc.code})", "error")]

    def _do(self, command: commands.Command) -> list[Line]:
        kind = command.kind
        if kind == "none":
            return []
        if kind == "error":
            return [news(None, None, command.text, "error")]
        if kind == "help":
            return [Line(None, "system", row) for row in commands.HELP.splitlines()]
        if kind == "quit":
            self.quit_requested = True
        elif kind == "rooms":
            self.session.list_rooms()
        elif kind == "who":
            self.session.who()
        elif kind == "msg":
            self.session.pm(command.arg, command.text)
        elif kind == "search":
            self.session.search(command.text)
        elif kind == "join":
            self._go(self.session.join(command.arg, private=command.private), command.arg)
        elif kind == "dm":
            if not self.me:
                return [news(None, None, "not logged in yet", "error")]
            self._go(self.session.dm(command.arg),
                     dm_name(name_key(self.me), name_key(command.arg)))
        else:
            room = command.arg or self.current
            if room is None:
                return [news(None, None, "you are in no room (try /join ROOM)", "error")]
            return self._room_request(command, room)
        return []

    def _room_request(self, command: commands.Command, room: str) -> list[Line]:
        """A command about one room (``room`` as typed, or the current room's key)."""
        key = room_key(room)
        view = self.rooms.get(key)
        name = view.info.name if view else room
        kind = command.kind
        if kind == "say":
            self.session.say(name, command.text)
        elif kind == "part":
            self.session.part(name)
        elif kind == "members":
            self.session.members(name)
        elif kind == "mark":
            self.session.mark(name)
        elif kind == "topic" and not command.text:
            topic = view.info.topic if view else ""
            return [news(key, self.where(key), f"topic: {topic}" if topic else "no topic")]
        elif kind == "topic":
            self.session.topic(name, command.text)
        else:  # edit, delete
            seq = command.seq or (view.my_last if view else 0)
            if not seq:
                return [news(key, self.where(key), f"you have no message here to {kind}", "error")]
            if kind == "edit":
                self.session.edit(name, seq, command.text)
            else:
                self.session.delete(name, seq)
        return []

    def _go(self, request_id: str, room: str) -> None:
        self._going[request_id] = Going(room_key(room), self.current)
        self.current = room_key(room)

    def typed(self) -> None:
        """The user is typing in the current room (the session sends it at most every 3 s)."""
        view = self.rooms.get(self.current) if self.current else None
        if view is not None:
            self.session.typing(view.info.name)

    def typers(self, now: float) -> list[str]:
        view = self.rooms.get(self.current) if self.current else None
        return self.session.typers(view.info.name, now) if view else []

    # --- looking at rooms -------------------------------------------------------------

    def view(self, key: str, now: float) -> None:
        """Make ``key`` the current room (its messages are then read)."""
        if key in self.rooms:
            self.current = key
            self.rooms[key].unread = 0
            self._marked_at = float("-inf")
            self.tick(now)

    def step(self, delta: int, now: float) -> None:
        """Switch to the next (``+1``) or previous (``-1``) room in window order."""
        keys = self.ordered()
        if keys:
            index = keys.index(self.current) if self.current in keys else -delta
            self.view(keys[(index + delta) % len(keys)], now)

    def wants_history(self) -> bool:
        """Ask for the last messages of the room in view, once (version 2 sends a
        room's earlier messages only when asked). True if it asked."""
        view = self.rooms.get(self.current) if self.current else None
        if view is None or view.history_asked or not view.info.seq:
            return False
        view.history_asked = True
        self.session.history(view.info.name, view.info.seq + 1)
        return True

    def tick(self, now: float) -> None:
        """Keep the read marker of the room in view up to date (at most every 2 s)."""
        view = self.rooms.get(self.current) if self.current else None
        if (not self.auto_mark or view is None or view.last_seq <= view.info.read
                or now - self._marked_at < MARK_EVERY):
            return
        self._marked_at = now
        self.session.mark(view.info.name, view.last_seq)
        view.info = replace(view.info, read=view.last_seq)

    # --- events -------------------------------------------------------------------------

    def apply(self, event: Event, now: float) -> list[Line]:
        """The lines an event shows (and the state it changes)."""
        if isinstance(event, MessageAdded):
            return [self._message(event.msg, event.live, now)]
        if isinstance(event, HistoryPage):
            return [self._message(msg, False, now) for msg in event.msgs]
        if isinstance(event, MessageEdited | MessageDeleted):
            return [self._change(event)]
        if isinstance(event, LoggedIn | RoomJoined | RoomUpdated | RoomLeft):
            return self._membership(event, now)
        return self._news(event)

    def _message(self, msg: ChatMessage, live: bool, now: float) -> Line:
        key = room_key(msg.room)
        view = self.rooms.get(key)
        if view is not None:
            view.last_seq = max(view.last_seq, msg.seq)
            if msg.mine and not msg.deleted:
                view.my_last = max(view.my_last, msg.seq)
            if key == self.current:
                self.tick(now)
            elif live and not msg.mine:
                view.unread += 1
        return message_line(key, self.where(key), msg, live)

    def _change(self, event: MessageEdited | MessageDeleted) -> Line:
        key = room_key(event.room)
        view = self.rooms.get(key)
        if isinstance(event, MessageEdited):
            return Line(key, "edited", f"[{self.where(key)}] -- #{event.seq} edited: "
                        f"{indent(event.text)}", event.edited, seq=event.seq, body=event.text)
        if view is not None and view.my_last == event.seq:
            view.my_last = 0
        return Line(key, "deleted", f"[{self.where(key)}] -- #{event.seq} deleted by {event.by}",
                    seq=event.seq)

    def _membership(self, event: LoggedIn | RoomJoined | RoomUpdated | RoomLeft,
                    now: float) -> list[Line]:
        if isinstance(event, LoggedIn):
            self.me = event.name
            for info in event.rooms:
                self._room(info)
            awaited = self.current == self.home or self._going  # --room, /join: on their way
            if self.current not in self.rooms and (self.current is None or not awaited):
                self.current = next(iter(self.ordered()), None)
            if event.resumed:
                return [news(None, None, "connected again")]
            kind = "account" if event.account else "guest"
            return [news(None, None, f"logged in as {event.name} ({kind}); "
                         f"rooms: {', '.join(self.where(k) for k in self.ordered())}")]
        if isinstance(event, RoomUpdated):
            self._room(event.room)
            return []
        if isinstance(event, RoomJoined):
            key = self._room(event.room)
            for ident in [i for i, going in self._going.items() if going.to == key]:
                del self._going[ident]
            if key == self.current:
                self.view(key, now)
            info = event.room
            topic = f"; topic: {info.topic}" if info.topic else ""
            return [news(key, self.where(key), f"you are in {self.where(key)} ({info.kind}, "
                         f"{len(info.members)} members){topic}")]
        key = room_key(event.room)
        where = self.where(key)
        self.rooms.pop(key, None)
        if self.current == key:
            self.current = next(iter(self.ordered()), None)
        how = "you left" if event.reason == "part" else f"you {part_words(event.reason)}"
        by = f" by {event.by}" if event.by else ""
        why = f": {event.message}" if event.message else ""
        return [news(None, where, f"{how}{by}{why}")]

    def _room(self, info: RoomInfo) -> str:
        key = room_key(info.name)
        view = self.rooms.get(key)
        if view is None:
            self.rooms[key] = RoomView(info, unread=info.unread, last_seq=info.seq)
        else:
            view.info = info
            view.last_seq = max(view.last_seq, info.seq)
        return key

    def _news(self, event: Event) -> list[Line]:
        """Connection news, and refusals of what was asked."""
        if isinstance(event, Connecting | Connected | Done | Typing):
            return []  # the status line tells the first two; Typing: see typers(); Done: no news
        if isinstance(event, Reconnecting):
            return [news(None, None, f"{event.reason}; reconnecting in {event.delay:.1f} s")]
        if isinstance(event, Failed):
            self.failure = event.detail  # it names the code
            return [Line(None, "fatal", self.failure)]
        if isinstance(event, Closed):
            self.closed = True
            return []
        if isinstance(event, Rejected):
            going = self._going.pop(event.ident or "", None)
            if going is not None and self.current == going.to:
                self.current = going.back  # a refused /join or /dm: back where we were
            what = f"{event.request}: " if event.request else ""
            return [news(None, None, f"{what}{event.detail} ({event.code})", "error")]
        return self._answer(event)

    def _answer(self, event: Event) -> list[Line]:
        """Answers to requests, and news about other people."""
        if isinstance(event, MemberJoined | MemberLeft | TopicChanged | RoleChanged):
            key = room_key(event.room)
            return [news(key, self.where(key), _room_news(event))]
        if isinstance(event, Presence):
            state = "online" if event.online else "offline"
            why = f" ({event.reason})" if event.reason else ""
            return [news(None, None, f"{event.name} is {state}{why}")]
        if isinstance(event, Invited):
            invite = f"{event.by} invited you to {event.room} (/join {event.room})"
            return [news(None, None, invite)]
        if isinstance(event, PrivateMessage):
            return [Line(None, "pm", f"[{event.frm} -> {event.to}] {indent(event.text)}", event.ts)]
        if isinstance(event, SearchResults):
            found = [Line(None, "answer", f"[{self.where(room_key(msg.room))}] #{msg.seq} "
                          f"<{msg.sender}> {indent(msg.text)}", msg.ts) for msg in event.msgs]
            return [news(None, None, f"{len(found)} found for {event.query!r}", "answer"), *found]
        if isinstance(event, RoomList):
            return [news(None, None, f"rooms ({len(event.rooms)}):", "answer"), *[
                Line(None, "answer", f"  {entry.name} ({entry.kind}, {entry.members} members"
                     + (", yours" if entry.member else ", invited" if entry.invited else "")
                     + ")" + (f": {entry.topic}" if entry.topic else ""))
                for entry in event.rooms]]
        if isinstance(event, Members):
            key = room_key(event.room)
            names = [m.name + ("" if m.role == "member" else f" ({m.role})")
                     + ("" if m.online else " (away)") for m in event.members]
            return [news(key, self.where(key), f"members ({len(names)}): {', '.join(names)}",
                         "answer")]
        if isinstance(event, Users):
            ordered = sorted(event.names, key=str.casefold)
            return [news(None, None, f"online ({len(ordered)}): {', '.join(ordered)}", "answer")]
        return []


def part_words(reason: str) -> str:
    """``alice was kicked``: a part reason in words."""
    return PART_WORDS.get(reason, f"left ({reason})")


def _room_news(event: MemberJoined | MemberLeft | TopicChanged | RoleChanged) -> str:
    if isinstance(event, MemberJoined):
        return f"{event.name} joined"
    if isinstance(event, MemberLeft):
        return f"{event.name} {part_words(event.reason)}"
    if isinstance(event, TopicChanged):
        return f"{event.by} set the topic: {event.topic}" if event.topic else (
            f"{event.by} cleared the topic")
    return f"{event.by} made {event.name} {event.role}"
