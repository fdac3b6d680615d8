"""Version 2 rooms against a model: a hypothesis state machine on a real server.

Four accounts in four named rooms (``lobby``; ``free``, public with no owner;
``Pub`` and ``priv``, public and private, owned by ann) and the dm rooms they
open join, part, say, edit, delete, mark, kick, ban, unban and invite, drop
their connection and resume it, while the server is restarted (SIGTERM or
SIGKILL) on the same SQLite file.

Each client reads like a strict real one (:class:`Peer`): it follows, per room
it is in, the next seq it must see, so a gap, a repeat or a message of a room
it is not in fails the step that caused it. The model says what must be true
after every step: each client follows exactly the rooms it is a member of, has
seen every message of them (edits and deletions applied live) and every room
event meant for it; history serves every acknowledged message exactly once,
seqs 1..last, with its current text or as a tombstone; every ``welcome`` and
``joined`` carries the read markers the model holds (so they survive restarts).

Drops and restarts happen inside one rule (send a few ``say``s, lose the
connection before their acks, resume with ``hello.resume``, resend the
unacknowledged ids): between rules every client is online, so "every online
member" is every member.
"""

from __future__ import annotations

import atexit
import functools
import itertools
import shutil
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tests.support import ServerProcess, TestClient, running_server
from tests.v2_support import PASSWORD, Event, Message, Said, add_account, dm_name, hello2, key

ACCOUNTS = ("ann", "Bob", "c\u00e9line", "d_1")
OWNER = "ann"
FLAGS = ("--rate", "0", "--hash-workers", "2")
MAX_RESTARTS = 2  # per example: a restart costs most of a second
HISTORY_PAGE = 20  # rooms grow past it: history is read in pages

_ids = itertools.count(1)


@dataclass
class ModelRoom:
    """A room as the model holds it; members, bans and invites by account key."""

    name: str
    kind: str
    owner: str | None = None  # the owner's key
    members: set[str] = field(default_factory=set)
    bans: set[str] = field(default_factory=set)
    invites: set[str] = field(default_factory=set)
    msgs: dict[int, Said] = field(default_factory=dict)

    @property
    def last(self) -> int:
        return max(self.msgs, default=0)

    def role(self, person: str) -> str:
        return "owner" if person == self.owner else "member"


def assert_entry(entry: Message, said: Said, *, resent: bool = False) -> None:
    """A ``msg`` or history entry shows ``said`` as it is now (14): its current
    text, ``edited`` if edited, or a tombstone (with ``id`` only when resent
    to its author as the answer to an idempotent ``say``)."""
    assert entry["from"] == said.sender, (entry, said)
    if said.deleted:
        assert entry.get("deleted") is True, ("a deleted message served as not deleted",
                                              entry, said)
        assert "text" not in entry and "edited" not in entry, entry
        assert entry.get("id") == (said.ident if resent else None), entry
    else:
        assert not entry.get("deleted"), entry
        assert entry["text"] == said.text, (entry, said)
        assert entry.get("id") == said.ident, (entry, said)
        assert ("edited" in entry) == said.edited, (entry, said)


@dataclass
class Track:
    """A room a client follows: the next seq it must see, and what it saw."""

    next: int
    view: dict[int, Message] = field(default_factory=dict)


class Peer:
    """One account's client: reads every frame in order and follows its rooms."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.key = key(name)
        self.client: TestClient | None = None
        self.token = ""
        self.rooms: dict[str, Track] = {}
        self.got: list[Event] = []  # room events received
        self.expected: list[Event] = []  # room events the model sent it
        self.resending: set[str] = set()  # ids whose original may come back
        self.replies: dict[str, Message] = {}  # by ref, until asked for

    @property
    def conn(self) -> TestClient:
        assert self.client is not None
        return self.client

    # --- reading ------------------------------------------------------------------

    def process(self, frame: Message) -> None:
        kind = frame["type"]
        if "ref" in frame:
            self.replies[frame["ref"]] = frame
        if kind == "error":
            assert frame["fatal"] is False, (self.name, frame)
            return
        room = key(frame["room"]) if "room" in frame else ""
        if kind == "msg":
            self._msg(room, frame)
        elif kind == "edited":
            self.got.append(("edited", room, frame["seq"], frame["text"]))
            seen = self._tracked(room, frame).view.get(frame["seq"])
            if seen is not None:
                seen.update(text=frame["text"], edited=frame["ts"])
        elif kind == "deleted":
            self.got.append(("deleted", room, frame["seq"], frame["by"]))
            view = self._tracked(room, frame).view
            if frame["seq"] in view:
                old = view[frame["seq"]]
                view[frame["seq"]] = {"seq": old["seq"], "ts": old["ts"], "from": old["from"],
                                      "deleted": True}
        elif kind == "join":
            self.got.append(("join", room, frame["name"]))
        elif kind == "part":
            self.got.append(("part", room, frame["name"], frame["reason"], frame.get("by")))
            if key(frame["name"]) == self.key:
                assert self.rooms.pop(room, None) is not None, (self.name, frame)
        elif kind == "invited":
            self.got.append(("invited", room, frame["by"]))
        elif kind == "joined":
            if "ref" not in frame:
                self.got.append(("joined", room))
            track = self.rooms.get(room)
            if track is None:
                self.rooms[room] = Track(frame["seq"] + 1)
            else:  # joined again: nothing happens (13); it has seen every message
                assert frame["seq"] == track.next - 1, (self.name, frame, track.next)
        elif kind == "parted":
            assert self.rooms.pop(room, None) is not None, (self.name, frame)

    def _tracked(self, room: str, frame: Message) -> Track:
        track = self.rooms.get(room)
        assert track is not None, f"{self.name} got {frame} of a room it is not in"
        return track

    def _msg(self, room: str, frame: Message) -> None:
        track = self._tracked(room, frame)
        seq = frame["seq"]
        if seq < track.next:
            # Only the original of an id this client sent again may come back (14).
            assert frame["from"] == self.name and frame.get("id") in self.resending, (
                f"{self.name}: repeated or out-of-order seq {seq} (next {track.next})", frame)
            return
        assert seq == track.next, f"{self.name}: gap in {room}, {seq} after {track.next - 1}"
        track.next += 1
        track.view[seq] = {k: v for k, v in frame.items() if k not in ("type", "room")}

    def wait(self, predicate: Callable[[Message], bool]) -> Message:
        """Read and process frames up to the first that satisfies ``predicate``."""
        while True:
            frame = self.conn.recv()
            self.process(frame)
            if predicate(frame):
                return frame

    # --- requests -----------------------------------------------------------------

    def send_request(self, message: Message) -> str:
        """Send ``message`` with a fresh id; the ``ref`` of its reply."""
        ref = f"q{next(_ids)}"
        self.conn.send({**message, "id": ref})
        return ref

    def reply(self, ref: str) -> Message:
        """The reply or error carrying ``ref`` (frames before it processed)."""
        if ref not in self.replies:
            self.wait(lambda f: f.get("ref") == ref)
        return self.replies.pop(ref)

    def request(self, message: Message) -> Message:
        return self.reply(self.send_request(message))

    def expect(self, message: Message, reply: str) -> Message:
        answer = self.request(message)
        assert answer["type"] == reply, (self.name, message, answer)
        return answer

    def refused(self, message: Message, code: str) -> None:
        answer = self.request(message)
        assert answer["type"] == "error" and answer["code"] == code, (message, answer)

    def send_say(self, room: str, ident: str, text: str) -> None:
        self.conn.send({"type": "say", "room": room, "text": text, "id": ident})

    def ack(self, room: str, ident: str) -> Message:
        """The acknowledgement of a ``say``: its ``msg`` from this client, by id."""
        frame = self.wait(lambda f: f.get("ref") == ident or (
            f["type"] == "msg" and f["from"] == self.name and f.get("id") == ident
            and key(f["room"]) == key(room)))
        assert frame["type"] == "msg", (self.name, frame)
        return frame

    def ping(self) -> str:
        token = f"b{next(_ids)}"
        self.conn.send({"type": "ping", "t": token})
        return token

    def pong(self, token: str) -> None:
        """Process every frame sent before the pong of ``ping`` (3.6)."""
        self.wait(lambda f: f["type"] == "pong" and f.get("t") == token)

    # --- sessions -----------------------------------------------------------------

    def hello(self, server: ServerProcess) -> None:
        """Connect and log in (its password, its token, resuming every room it follows)."""
        self.client = server.client()
        members: Message = {"password": PASSWORD,
                            "resume": {room: t.next - 1 for room, t in self.rooms.items()}}
        if self.token:
            members["token"] = self.token
        self.client.send(hello2(self.name, **members))

    def welcome(self) -> Message:
        welcome = self.conn.expect("welcome")
        self.token = welcome["token"]
        for entry in welcome["rooms"]:
            self.rooms.setdefault(key(entry["room"]), Track(entry["seq"] + 1))
        return welcome

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None


@dataclass
class Pending:
    """A ``say`` sent on a connection that was lost before its ack."""

    peer: Peer
    room: str
    ident: str
    text: str


@functools.cache
def _template() -> Path:
    """A database with the accounts (created on the control socket, a password
    hash each) and the room ``free`` (public, no owner), copied for every
    example: hashing once saves most of an example's start-up."""
    tmp = Path(tempfile.mkdtemp(prefix="chatd-v2-template-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    db = tmp / "template.sqlite3"
    with running_server(tmp, *FLAGS, db=str(db)) as server:
        for name in ACCOUNTS:
            add_account(server, name)
        assert server.request({"type": "room_add", "room": "free"})["type"] == "ok"
    assert not Path(f"{db}-wal").exists(), "the graceful stop left a WAL behind"
    return db


class RoomsMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="chatd-v2-stateful-"))
        self.db = str(self.tmp / "chat.sqlite3")
        shutil.copyfile(_template(), self.db)
        self.ctx: AbstractContextManager[ServerProcess] = running_server(
            self.tmp, *FLAGS, db=self.db)
        self.server = self.ctx.__enter__()
        self.counter = 0
        self.restarts = 0
        everyone = {key(name) for name in ACCOUNTS}
        self.rooms: dict[str, ModelRoom] = {
            "lobby": ModelRoom("lobby", "public", members=set(everyone)),
            "free": ModelRoom("free", "public"),
            "pub": ModelRoom("Pub", "public", key(OWNER)),
            "priv": ModelRoom("priv", "private", key(OWNER)),
        }
        self.markers: dict[tuple[str, str], int] = {}
        self.peers = {key(name): Peer(name) for name in ACCOUNTS}
        self._log_in(list(self.peers.values()), [])
        ann = self.peers[key(OWNER)]
        for room in ("pub", "priv"):
            ann.expect({"type": "join", "room": self.rooms[room].name,
                        "private": room == "priv"}, "joined")
            self.rooms[room].members.add(ann.key)

    def teardown(self) -> None:
        for peer in self.peers.values():
            peer.close()
        self.server.proc.kill()  # restart stops it gracefully; here only speed counts
        self.ctx.__exit__(None, None, None)
        shutil.rmtree(self.tmp, ignore_errors=True)

    # --- helpers ------------------------------------------------------------------

    def _fresh(self) -> str:
        self.counter += 1
        return f"{self.counter}"

    def _rooms_of(self, peer: Peer) -> list[str]:
        return sorted(k for k, room in self.rooms.items() if peer.key in room.members)

    def _barrier(self, peers: list[Peer]) -> None:
        """Every frame sent to ``peers`` so far is processed (pings sent together)."""
        tokens = [peer.ping() for peer in peers]
        for peer, token in zip(peers, tokens, strict=True):
            peer.pong(token)

    def _tell(self, room: ModelRoom, event: Event) -> None:
        """Every member (all are online between rules) gets ``event``."""
        for member in room.members:
            self.peers[member].expected.append(event)

    def _log_in(self, peers: list[Peer], pending: list[Pending]) -> None:
        """Log ``peers`` in (hellos first: their password checks run side by side),
        check each welcome against the model, read the resumed backlogs, then
        resend the ``pending`` says and put their acks into the model."""
        for peer in peers:
            peer.hello(self.server)
        for peer in peers:
            self._check_welcome(peer, peer.welcome(), pending)
        self._barrier(peers)
        for item in pending:
            item.peer.resending.add(item.ident)
            item.peer.send_say(item.room, item.ident, item.text)
            ack = item.peer.ack(item.room, item.ident)
            room = self.rooms[key(item.room)]
            said = Said(item.peer.name, item.ident, item.text)
            assert_entry(ack, said)
            assert ack["seq"] not in room.msgs, ("two messages with one seq", ack,
                                                 room.msgs[ack["seq"]])
            room.msgs[ack["seq"]] = said
        for peer in peers:
            peer.resending.clear()

    def _check_welcome(self, peer: Peer, welcome: Message, pending: list[Pending]) -> None:
        """``welcome.rooms`` (12): the model's rooms of the account, sorted, with
        their seq (counting pending says that may have been stored) and the
        read markers the model holds."""
        entries = welcome["rooms"]
        assert [key(e["room"]) for e in entries] == sorted(
            self._rooms_of(peer), key=lambda k: self.rooms[k].name.casefold()), welcome
        for entry in entries:
            room = self.rooms[key(entry["room"])]
            maybe = sum(1 for item in pending if key(item.room) == key(entry["room"]))
            assert room.last <= entry["seq"] <= room.last + maybe, (entry, room.last)
            assert entry["read"] == self.markers.get((key(room.name), peer.key), 0), (
                peer.name, entry, self.markers)
            assert (entry["room"], entry["kind"], entry["role"]) == (
                room.name, room.kind, room.role(peer.key)), entry

    def _drop(self, peers: list[Peer], data: st.DataObject, stop: Callable[[], None]
              ) -> list[Pending]:
        """Each of ``peers`` sends up to two says it never sees acknowledged;
        ``stop`` loses the connections; the says are the outboxes to resend."""
        pending = []
        for peer in peers:
            rooms = self._rooms_of(peer)
            for _ in range(data.draw(st.integers(0, 2) if rooms else st.just(0))):
                item = Pending(peer, self.rooms[data.draw(st.sampled_from(rooms))].name,
                               f"p{self._fresh()}", f"pending {self.counter}")
                peer.send_say(item.room, item.ident, item.text)
                pending.append(item)
        stop()
        for peer in peers:
            peer.close()
        return pending

    def _lost_ack(self, peer: Peer) -> None:
        """The client lost the ack of one of its messages: it says it again with
        its id (and another text) and gets the original back, as it is now (14):
        edited, or a tombstone carrying the id; nothing new is created."""
        mine = [(k, seq) for k in self._rooms_of(peer)
                for seq, said in self.rooms[k].msgs.items() if said.sender == peer.name]
        if not mine:
            return
        room_key, seq = max(mine, key=lambda item: item[1])
        room = self.rooms[room_key]
        said = room.msgs[seq]
        peer.resending.add(said.ident)
        peer.send_say(room.name, said.ident, "a different text: the id decides")
        ack = peer.ack(room.name, said.ident)
        peer.resending.clear()
        assert ack["seq"] == seq, ack
        assert_entry(ack, said, resent=True)

    # --- rules --------------------------------------------------------------------

    @rule(name=st.sampled_from(ACCOUNTS), room_key=st.sampled_from(["lobby", "free", "pub",
                                                                    "priv"]))
    def join(self, name: str, room_key: str) -> None:
        self._join(self.peers[key(name)], room_key)

    def _join(self, peer: Peer, room_key: str) -> None:
        """A join as the model allows it (13): again (nothing happens), refused
        (banned; private without an invitation or ownership), or a new member."""
        room = self.rooms[room_key]
        request = {"type": "join", "room": room.name}
        if peer.key not in room.members and (peer.key in room.bans or (
                room.kind == "private" and peer.key not in room.invites
                and peer.key != room.owner)):
            peer.refused(request, "not_allowed")
            return
        joined = peer.expect(request, "joined")
        assert (joined["room"], joined["kind"], joined["role"], joined["read"]) == (
            room.name, room.kind, room.role(peer.key),
            self.markers.get((room_key, peer.key), 0)), joined
        if peer.key not in room.members:
            self._tell(room, ("join", room_key, peer.name))
            room.members.add(peer.key)

    @rule(name=st.sampled_from(ACCOUNTS), data=st.data())
    def part(self, name: str, data: st.DataObject) -> None:
        peer = self.peers[key(name)]
        rooms = self._rooms_of(peer)
        if not rooms:
            return
        room_key = data.draw(st.sampled_from(rooms))
        room = self.rooms[room_key]
        if room.kind == "dm":
            peer.refused({"type": "part", "room": room.name}, "not_allowed")
            return
        peer.expect({"type": "part", "room": room.name}, "parted")
        room.members.discard(peer.key)
        self._tell(room, ("part", room_key, peer.name, "part", None))

    @rule(name=st.sampled_from(ACCOUNTS), data=st.data(), count=st.integers(1, 3))
    def say(self, name: str, data: st.DataObject, count: int) -> None:
        self._say(self.peers[key(name)], data, count)

    def _say(self, peer: Peer, data: st.DataObject, count: int) -> None:
        """``count`` says, pipelined; acknowledged in order with the next seqs."""
        rooms = self._rooms_of(peer)
        if not rooms:
            return
        sent = []
        for _ in range(count):
            room = self.rooms[data.draw(st.sampled_from(rooms))]
            said = Said(peer.name, f"s{self._fresh()}", f"text {self.counter}")
            peer.send_say(room.name, said.ident, said.text)
            sent.append((room, said))
        for room, said in sent:
            ack = peer.ack(room.name, said.ident)
            assert ack["seq"] == room.last + 1, (ack, room.last)
            assert_entry(ack, said)
            room.msgs[ack["seq"]] = said

    def _message(self, peer: Peer, data: st.DataObject, own: bool) -> tuple[str, int] | None:
        """A message of a room of ``peer``: with ``own`` one of its undeleted
        ones (if any), else any (maybe deleted, maybe another's)."""
        choices = [(k, seq) for k in self._rooms_of(peer) for seq in self.rooms[k].msgs]
        mine = [(k, seq) for k, seq in choices if self.rooms[k].msgs[seq].sender == peer.name
                and not self.rooms[k].msgs[seq].deleted]
        choices = mine if own and mine else choices
        return data.draw(st.sampled_from(choices)) if choices else None

    @rule(name=st.sampled_from(ACCOUNTS), data=st.data(), own=st.booleans())
    def edit(self, name: str, data: st.DataObject, own: bool) -> None:
        peer = self.peers[key(name)]
        chosen = self._message(peer, data, own)
        if chosen is None:
            return
        room_key, seq = chosen
        room = self.rooms[room_key]
        said = room.msgs[seq]
        text = f"edited {self._fresh()}"
        request = {"type": "edit", "room": room.name, "seq": seq, "text": text}
        if said.deleted:
            peer.refused(request, "no_such_message")
        elif said.sender != peer.name:
            peer.refused(request, "not_allowed")
        else:
            peer.expect(request, "ok")
            said.text, said.edited = text, True
            self._tell(room, ("edited", room_key, seq, text))

    @rule(name=st.sampled_from(ACCOUNTS), data=st.data(), own=st.booleans())
    def delete(self, name: str, data: st.DataObject, own: bool) -> None:
        peer = self.peers[key(name)]
        chosen = self._message(peer, data, own)
        if chosen is None:
            return
        room_key, seq = chosen
        room = self.rooms[room_key]
        said = room.msgs[seq]
        request = {"type": "delete", "room": room.name, "seq": seq}
        if said.deleted:
            peer.refused(request, "no_such_message")
        elif said.sender != peer.name and room.owner != peer.key:
            peer.refused(request, "not_allowed")
        else:
            peer.expect(request, "ok")
            said.deleted = True
            self._tell(room, ("deleted", room_key, seq, peer.name))

    @rule(name=st.sampled_from(ACCOUNTS), data=st.data())
    def mark(self, name: str, data: st.DataObject) -> None:
        peer = self.peers[key(name)]
        rooms = self._rooms_of(peer)
        if not rooms:
            return
        room_key = data.draw(st.sampled_from(rooms))
        room = self.rooms[room_key]
        seq = data.draw(st.integers(0, room.last + 1))
        request = {"type": "mark", "room": room.name, "seq": seq}
        if seq > room.last:
            peer.refused(request, "bad_request")
            return
        stored = max(seq, self.markers.get((room_key, peer.key), 0))
        marked = peer.expect(request, "marked")
        assert (marked["room"], marked["seq"]) == (room.name, stored), (marked, stored)
        self.markers[(room_key, peer.key)] = stored

    @rule(data=st.data(), ban=st.booleans(), by_operator=st.booleans(), rejoin=st.booleans())
    def kick(self, data: st.DataObject, ban: bool, by_operator: bool, rejoin: bool) -> None:
        """The owner kicks a member of its room, or an operator anyone anywhere
        (18); then maybe the one kicked tries to come back at once."""
        choices = [(k, member) for k, room in sorted(self.rooms.items()) if room.kind != "dm"
                   for member in sorted(room.members)]
        if not choices:
            return
        room_key, target = data.draw(st.sampled_from(choices))
        room = self.rooms[room_key]
        request = {"type": "kick", "room": room.name, "name": self.peers[target].name,
                   "ban": ban}
        owner = room.owner
        if by_operator or owner is None or owner not in room.members or target == owner:
            assert self.server.request(request)["type"] == "ok"
            by = "server"
        else:
            self.peers[owner].expect(request, "ok")
            by = self.peers[owner].name
        self._tell(room, ("part", room_key, self.peers[target].name,
                          "banned" if ban else "kicked", by))
        room.members.discard(target)
        room.invites.discard(target)
        if ban:
            room.bans.add(target)
        if rejoin:
            self._join(self.peers[target], room_key)

    @rule(data=st.data())
    def unban(self, data: st.DataObject) -> None:
        banned = [(k, name) for k, room in sorted(self.rooms.items())
                  for name in sorted(room.bans)]
        if not banned:
            return
        room_key, target = data.draw(st.sampled_from(banned))
        room = self.rooms[room_key]
        reply = self.server.request({"type": "unban", "room": room.name,
                                     "name": self.peers[target].name})
        assert reply["type"] == "ok", reply
        room.bans.discard(target)

    @precondition(lambda self: key(OWNER) in self.rooms["priv"].members)
    @rule(name=st.sampled_from(ACCOUNTS[1:]), accept=st.booleans())
    def invite(self, name: str, accept: bool) -> None:
        """The owner invites someone to ``priv``, who maybe joins at once."""
        room = self.rooms["priv"]
        if key(name) in room.members:
            return
        self.peers[key(OWNER)].expect({"type": "invite", "room": room.name, "name": name},
                                      "ok")
        self.peers[key(name)].expected.append(("invited", "priv", OWNER))
        room.invites.add(key(name))
        if accept:
            self._join(self.peers[key(name)], "priv")

    @rule(name=st.sampled_from(ACCOUNTS), to=st.sampled_from(ACCOUNTS))
    def dm(self, name: str, to: str) -> None:
        peer, other = self.peers[key(name)], self.peers[key(to)]
        room_key = dm_name(peer.key, other.key)
        joined = peer.expect({"type": "dm", "to": to}, "joined")
        assert (joined["room"], joined["kind"], joined["with"]) == (room_key, "dm", to), joined
        if room_key not in self.rooms:
            self.rooms[room_key] = ModelRoom(room_key, "dm", members={peer.key, other.key})
            if other is not peer:
                other.expected.append(("joined", room_key))

    @rule(name=st.sampled_from(ACCOUNTS), data=st.data(), lost_ack=st.booleans())
    def reconnect(self, name: str, data: st.DataObject, lost_ack: bool) -> None:
        """The connection dies with says in flight; the client logs in again with
        its token (taking the session over if the server still holds it),
        resumes every room and resends its outbox by id."""
        peer = self.peers[key(name)]
        pending = self._drop([peer], data, lambda: None)
        self._log_in([peer], pending)
        if lost_ack:
            self._lost_ack(peer)

    @precondition(lambda self: self.restarts < MAX_RESTARTS)
    @rule(data=st.data(), kill=st.booleans(), name=st.sampled_from(ACCOUNTS),
          acked=st.integers(0, 2))
    def restart(self, data: st.DataObject, kill: bool, name: str, acked: int) -> None:
        """The server stops (SIGTERM, or SIGKILL: acknowledged changes survive a
        crash, 14) right after ``acked`` acknowledged says and with others in
        flight, and starts again on the same database."""
        self._say(self.peers[key(name)], data, acked)

        def stop() -> None:
            if kill:
                self.server.proc.kill()
                self.server.proc.wait()
            self.ctx.__exit__(None, None, None)

        pending = self._drop(list(self.peers.values()), data, stop)
        self.restarts += 1
        self.ctx = running_server(self.tmp, *FLAGS, db=self.db)
        self.server = self.ctx.__enter__()
        self._log_in(list(self.peers.values()), pending)

    # --- what must hold after every step ------------------------------------------

    @invariant()
    def clients_see_the_model(self) -> None:
        assert self.server.proc.poll() is None, "the server died"
        self._barrier(list(self.peers.values()))
        for peer in self.peers.values():
            assert peer.got == peer.expected, (peer.name, peer.got, peer.expected)
            peer.got.clear()
            peer.expected.clear()
            assert sorted(peer.rooms) == self._rooms_of(peer), (peer.name, sorted(peer.rooms))
            for room_key, track in peer.rooms.items():
                room = self.rooms[room_key]
                assert track.next - 1 == room.last, (peer.name, room_key, track.next)
                for seq, entry in track.view.items():
                    assert_entry(entry, room.msgs[seq])

    @invariant()
    def history_serves_every_acknowledged_message_once(self) -> None:
        """Each room's history, paged from its newest message back to seq 1,
        is the model's (the first pages of all rooms asked for together)."""
        pages = []
        for room_key, room in sorted(self.rooms.items()):
            assert sorted(room.msgs) == list(range(1, room.last + 1)), room_key
            readers = sorted(room.members) or (list(self.peers) if room.kind == "public"
                                                else [])
            if readers:
                reader = self.peers[readers[0]]
                pages.append((room, reader, reader.send_request(self._page(room, room.last + 1))))
        for room, reader, first in pages:
            stored: list[Message] = []
            ref = first
            while True:
                reply = reader.reply(ref)
                assert reply["type"] == "history" and reply["room"] == room.name, reply
                if not reply["msgs"]:
                    break
                stored[:0] = reply["msgs"]
                ref = reader.send_request(self._page(room, reply["msgs"][0]["seq"]))
            assert [e["seq"] for e in stored] == list(range(1, room.last + 1)), (
                room.name, [e["seq"] for e in stored])
            for entry in stored:
                assert_entry(entry, room.msgs[entry["seq"]])

    @staticmethod
    def _page(room: ModelRoom, before: int) -> Message:
        return {"type": "history", "room": room.name, "before": before, "limit": HISTORY_PAGE}


# Every example starts a server, so a shrink phase (hundreds of examples) would
# outlast the per-test timeout; a failure prints its whole program of 25 steps
# instead, and the ci profile's derandomised run reproduces it.
RoomsMachine.TestCase.settings = settings(
    max_examples=10, stateful_step_count=25, deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate])
TestRooms = RoomsMachine.TestCase
