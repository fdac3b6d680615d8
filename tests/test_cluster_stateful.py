"""Cluster mode against a model: a hypothesis state machine on 2 nodes and 1 Redis.

Three accounts in three public rooms (``lobby``, ``r1``, ``r2``) say (one
client, or all of them at once from different nodes), edit, delete, join and
part on whatever node they are connected to, while a node or
Redis itself is killed with SIGKILL and started again (Redis on the same port
and directory: its append-only file is fsynced at every write), and clients
move between nodes. A client that lost its connection logs in on any live node
with its session token and ``hello.resume`` (its last seen seq per room) and
resends its outbox with the same ids, as a careful real client would; one
answered ``unavailable`` resends after ``retry_after_ms``.

Each client reads like a strict real one (:class:`Peer`): per room it follows
the next seq it must see, so a gap, a repeat (other than the original sent back
for a resent id, 14) or a message of a room it is not in fails at once. After
every step, once every client has caught up (cross-node delivery has no
barrier: waits have a deadline), the model must hold: each client has seen
every message of its rooms, with the sender and id the model holds per seq, and
every room event meant for it; ``history`` serves every acknowledged message
exactly once, seqs 1..last with no gap, no id twice, with its current text or
as a tombstone.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import Phase, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from tests.cluster_support import Node, RedisServer
from tests.support import TestClient
from tests.v2_support import PASSWORD, Event, Message, Said, add_account, hello2, key

ACCOUNTS = ("ann", "Bob", "cy")
ROOMS = ("lobby", "r1", "r2")
NODES = ("a", "b")
CROSS = 10.0  # deadline for anything that crosses nodes
RECOVER = 20.0  # deadline for the cluster to work again after a kill
HISTORY_PAGE = 200

_ids = itertools.count(1)


@dataclass
class Out:
    """A ``say`` in a client's outbox until its ack (its ``msg``) is seen."""

    room: str
    ident: str
    text: str
    sent: bool = False  # sent on the current connection and not refused


@dataclass
class ModelRoom:
    name: str
    members: set[str] = field(default_factory=set)
    msgs: dict[int, Said] = field(default_factory=dict)

    @property
    def last(self) -> int:
        return max(self.msgs, default=0)


class Peer:
    """One account's client: reads every frame in order and follows its rooms."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.key = key(name)
        self.client: TestClient | None = None
        self.node: Node | None = None
        self.token = ""
        self.next: dict[str, int] = {}  # room key -> the next seq it must see
        self.view: dict[str, dict[int, tuple[str, str | None]]] = {}
        self.outbox: dict[str, Out] = {}
        self.resending: set[str] = set()  # ids sent again on this connection
        self.acked: list[tuple[str, int, Said]] = []  # for the model to take
        self.got: list[Event] = []  # room events received
        self.expected: list[Event] = []  # room events the model sent it
        self.replies: dict[str, Message] = {}
        self.retry_at = 0.0

    @property
    def conn(self) -> TestClient:
        assert self.client is not None, f"{self.name} is not connected"
        return self.client

    # --- reading ------------------------------------------------------------------

    def process(self, frame: Message) -> None:
        kind = frame["type"]
        if kind == "error":
            assert frame["fatal"] is False, (self.name, frame)
            ref = frame.get("ref")
            if ref in self.outbox:
                assert frame["code"] == "unavailable", (self.name, frame)
                event("a say refused as unavailable")
                self.outbox[ref].sent = False
                self.retry_at = time.monotonic() + min(frame["retry_after_ms"], 1000) / 1000
            elif ref is not None:
                self.replies[ref] = frame
            return
        if kind == "pong":
            self.replies[f"pong:{frame.get('t')}"] = frame
            return
        if "ref" in frame:
            self.replies[frame["ref"]] = frame
        room = key(frame["room"]) if "room" in frame else ""
        if kind == "msg":
            self._msg(room, frame)
        elif kind == "edited":
            self.got.append(("edited", room, frame["seq"], frame["text"]))
        elif kind == "deleted":
            self.got.append(("deleted", room, frame["seq"], frame["by"]))
        elif kind == "join":
            self.got.append(("join", room, frame["name"]))
        elif kind == "part":
            self.got.append(("part", room, frame["name"], frame["reason"]))
            assert key(frame["name"]) != self.key, (self.name, "parted unasked", frame)
        elif kind == "joined":
            assert "ref" in frame, (self.name, "joined unasked", frame)
            if room not in self.next:
                self.next[room] = frame["seq"] + 1
                self.view[room] = {}
        elif kind == "parted":
            assert self.next.pop(room, None) is not None, (self.name, frame)
            self.view.pop(room, None)
        elif kind in ("presence", "typing", "ok", "history", "users", "rooms", "members",
                      "marked"):
            pass  # presence is not modelled here (nodes die; leases decide)
        else:
            raise AssertionError(f"{self.name}: unexpected frame {frame}")

    def _msg(self, room: str, frame: Message) -> None:
        assert room in self.next, f"{self.name} got {frame} of a room it does not follow"
        seq, ident, mine = frame["seq"], frame.get("id"), frame["from"] == self.name
        if seq < self.next[room]:
            # Only the original of an id this client sent again may come back (14).
            assert mine and ident in self.resending and (
                self.view[room].get(seq) == (self.name, ident)), (
                f"{self.name}: repeated or out-of-order seq {seq} in {room} "
                f"(next {self.next[room]})", frame)
        else:
            assert seq == self.next[room], (
                f"{self.name}: gap in {room}: {seq} after {self.next[room] - 1}", frame)
            self.next[room] += 1
            self.view[room][seq] = (frame["from"], ident)
        if mine and ident in self.outbox:
            out = self.outbox.pop(ident)
            assert key(out.room) == room, (out, frame)
            assert ident in self.resending or (
                not frame.get("deleted") and frame["text"] == out.text), (out, frame)
            self.acked.append((room, seq, Said(self.name, ident, frame.get("text", out.text),
                                               edited="edited" in frame,
                                               deleted=bool(frame.get("deleted")))))

    def read(self, timeout: float) -> bool:
        """Process one frame if one arrives within ``timeout``."""
        frame = self.conn.poll(timeout)
        if frame is None:
            return False
        self.process(frame)
        return True

    def wait(self, ref: str, timeout: float = CROSS) -> Message:
        deadline = time.monotonic() + timeout
        while ref not in self.replies:
            assert time.monotonic() < deadline, (self.name, "no reply", ref)
            self.read(max(0.01, deadline - time.monotonic()))
        return self.replies.pop(ref)

    def barrier(self) -> None:
        """Every frame this connection's node sent before the pong (3.6)."""
        token = f"b{next(_ids)}"
        self.conn.send({"type": "ping", "t": token})
        self.wait(f"pong:{token}")

    # --- requests -----------------------------------------------------------------

    def request(self, message: Message, timeout: float = RECOVER) -> Message:
        """Send with a fresh id; the reply. ``unavailable`` is retried after its
        ``retry_after_ms`` (the request had no effect, 6), within ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            ref = f"q{next(_ids)}"
            self.conn.send({**message, "id": ref})
            reply = self.wait(ref)
            if reply["type"] != "error" or reply["code"] != "unavailable":
                return reply
            assert time.monotonic() < deadline, (self.name, "still unavailable", message)
            time.sleep(min(reply["retry_after_ms"], 500) / 1000)

    def expect(self, message: Message, reply_type: str) -> Message:
        reply = self.request(message)
        assert reply["type"] == reply_type, (self.name, message, reply)
        return reply

    def refused(self, message: Message, code: str) -> None:
        reply = self.request(message)
        assert reply["type"] == "error" and reply["code"] == code, (self.name, message, reply)

    def send_say(self, out: Out) -> None:
        out.sent = True
        self.conn.send({"type": "say", "room": out.room, "text": out.text, "id": out.ident})

    def queue(self, room: str, text: str) -> Out:
        """A new say: into the outbox, and sent."""
        out = Out(room, f"s{next(_ids)}", text)
        self.outbox[out.ident] = out
        self.send_say(out)
        return out

    def settle(self, timeout: float = RECOVER) -> None:
        """Read until the outbox is empty, resending what was refused as
        ``unavailable`` once its ``retry_after_ms`` has passed."""
        deadline = time.monotonic() + timeout
        while self.outbox:
            assert time.monotonic() < deadline, (self.name, "outbox not acknowledged",
                                                 list(self.outbox.values()))
            if time.monotonic() >= self.retry_at:
                for out in self.outbox.values():
                    if not out.sent:
                        self.resending.add(out.ident)
                        self.send_say(out)
            self.read(0.05)

    # --- sessions -----------------------------------------------------------------

    def connect(self, node: Node, timeout: float = RECOVER) -> Message:
        """Log in on ``node`` with the token and ``resume``; read the backlog
        (a barrier after it), then resend the whole outbox by id."""
        deadline = time.monotonic() + timeout
        members: Message = {"password": PASSWORD,
                            "resume": {room: nxt - 1 for room, nxt in self.next.items()}}
        if self.token:
            members["token"] = self.token
        while True:
            client = node.client()
            client.send(hello2(self.name, **members))
            first = client.recv(CROSS)
            if first["type"] == "welcome":
                break
            event("a login refused as unavailable")
            client.close()
            # A node that cannot reach Redis yet may refuse; anything else fails.
            assert first["type"] == "error" and first["code"] == "unavailable", (
                self.name, node.name, first)
            assert time.monotonic() < deadline, (self.name, "login still refused", first)
            time.sleep(min(first.get("retry_after_ms", 200), 500) / 1000)
        self.client, self.node, self.token = client, node, first["token"]
        self.resending.clear()
        for entry in first["rooms"]:
            room = key(entry["room"])
            assert room in self.next, (self.name, "welcome names a room it is not in", entry)
            assert entry["seq"] >= self.next[room] - 1, (self.name, entry, self.next[room])
        self.barrier()
        for out in self.outbox.values():
            self.resending.add(out.ident)
            self.send_say(out)
        return first

    def drop(self) -> None:
        """The connection is lost (no ``bye``): says in flight stay in the outbox."""
        if self.client is not None:
            self.client.close()
            self.client = None
        self.node = None
        for out in self.outbox.values():
            out.sent = False


class ClusterMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="chatd-cluster-stateful-"))
        self.redis = RedisServer(self.tmp / "redis")
        self.redis.start()
        self.nodes = [Node(self.tmp, self.redis.url, name) for name in NODES]
        self.counter = 0
        self.peers: dict[str, Peer] = {}
        try:
            for node in self.nodes:
                node.start()
            first = self.nodes[0].server
            for name in ACCOUNTS:
                add_account(first, name)
            for room in ROOMS[1:]:
                reply = first.request({"type": "room_add", "room": room})
                assert reply["type"] == "ok", reply
            everyone = {key(name) for name in ACCOUNTS}
            self.rooms = {room: ModelRoom(room, everyone if room == "lobby" else set())
                          for room in ROOMS}
            for i, name in enumerate(ACCOUNTS):
                peer = self.peers[key(name)] = Peer(name)
                peer.next = {"lobby": 1}
                peer.view = {"lobby": {}}
                peer.connect(self.nodes[i % len(self.nodes)])
        except BaseException:
            self.teardown()
            raise

    def teardown(self) -> None:
        for peer in self.peers.values():
            peer.drop()
        try:
            for node in self.nodes:
                if node.alive:
                    node.kill()  # only speed counts here; a logged traceback still fails
        finally:
            self.redis.stop()
            shutil.rmtree(self.tmp, ignore_errors=True)

    # --- helpers ------------------------------------------------------------------

    def _fresh(self) -> str:
        self.counter += 1
        return f"{self.counter}"

    def _rooms_of(self, peer: Peer) -> list[str]:
        return sorted(k for k, room in self.rooms.items() if peer.key in room.members)

    def _take_acks(self) -> None:
        """Acknowledged says go into the model (a seq holds one message)."""
        for peer in self.peers.values():
            for room_key, seq, said in peer.acked:
                msgs = self.rooms[room_key].msgs
                if seq in msgs:
                    known = msgs[seq]
                    assert (known.sender, known.ident) == (said.sender, said.ident), (
                        "two messages with one seq", room_key, seq, known, said)
                else:
                    msgs[seq] = said
            peer.acked.clear()

    def _settle(self, peers: list[Peer]) -> None:
        for peer in peers:
            peer.settle()
        self._take_acks()

    def _in_flight(self, peer: Peer, data: st.DataObject) -> None:
        """0..2 says the peer sends and does not wait for."""
        rooms = self._rooms_of(peer)
        if not rooms:
            return
        for _ in range(data.draw(st.integers(0, 2))):
            room = self.rooms[data.draw(st.sampled_from(rooms))]
            peer.queue(room.name, f"in flight {self._fresh()}")

    def _live(self) -> list[Node]:
        return [node for node in self.nodes if node.alive]

    # --- rules --------------------------------------------------------------------

    @rule(name=st.sampled_from(ACCOUNTS), data=st.data(), count=st.integers(1, 3))
    def say(self, name: str, data: st.DataObject, count: int) -> None:
        peer = self.peers[key(name)]
        rooms = self._rooms_of(peer)
        if not rooms:
            return
        for _ in range(count):
            room = self.rooms[data.draw(st.sampled_from(rooms))]
            peer.queue(room.name, f"text {self._fresh()}")
        self._settle([peer])

    @rule(data=st.data())
    def chorus(self, data: st.DataObject) -> None:
        """Every client sends 1..3 says at once, from whatever node it is on:
        the rooms' seqs are shared, so the acks interleave."""
        for peer in self.peers.values():
            rooms = self._rooms_of(peer)
            for _ in range(data.draw(st.integers(1, 3)) if rooms else 0):
                room = self.rooms[data.draw(st.sampled_from(rooms))]
                peer.queue(room.name, f"chorus {self._fresh()}")
        self._settle(list(self.peers.values()))

    @rule(name=st.sampled_from(ACCOUNTS), data=st.data())
    def edit(self, name: str, data: st.DataObject) -> None:
        peer = self.peers[key(name)]
        mine = [(k, seq) for k in self._rooms_of(peer)
                for seq, said in self.rooms[k].msgs.items() if said.sender == peer.name]
        if not mine:
            return
        room_key, seq = data.draw(st.sampled_from(mine))
        room, said = self.rooms[room_key], self.rooms[room_key].msgs[seq]
        text = f"edited {self._fresh()}"
        request = {"type": "edit", "room": room.name, "seq": seq, "text": text}
        if said.deleted:
            peer.refused(request, "no_such_message")
            return
        peer.expect(request, "ok")
        said.text, said.edited = text, True
        self.expected_events(room, ("edited", room_key, seq, text))

    @rule(name=st.sampled_from(ACCOUNTS), data=st.data(), own=st.booleans())
    def delete(self, name: str, data: st.DataObject, own: bool) -> None:
        peer = self.peers[key(name)]
        choices = [(k, seq) for k in self._rooms_of(peer) for seq in self.rooms[k].msgs]
        mine = [(k, seq) for k, seq in choices if self.rooms[k].msgs[seq].sender == peer.name]
        choices = mine if own and mine else choices
        if not choices:
            return
        room_key, seq = data.draw(st.sampled_from(choices))
        room, said = self.rooms[room_key], self.rooms[room_key].msgs[seq]
        request = {"type": "delete", "room": room.name, "seq": seq}
        if said.deleted:
            peer.refused(request, "no_such_message")
        elif said.sender != peer.name:  # no room here has an owner or ops
            peer.refused(request, "not_allowed")
        else:
            peer.expect(request, "ok")
            said.deleted = True
            self.expected_events(room, ("deleted", room_key, seq, peer.name))

    @rule(name=st.sampled_from(ACCOUNTS), room_key=st.sampled_from(ROOMS))
    def join(self, name: str, room_key: str) -> None:
        peer, room = self.peers[key(name)], self.rooms[room_key]
        joined = peer.expect({"type": "join", "room": room.name}, "joined")
        assert (joined["room"], joined["kind"]) == (room.name, "public"), joined
        if peer.key in room.members:  # joined again: nothing happens (13)
            event("joined again")
            assert joined["seq"] >= room.last, (joined, room.last)
            return
        assert joined["seq"] == room.last, (joined, room.last)
        self.expected_events(room, ("join", room_key, peer.name))
        room.members.add(peer.key)

    @rule(name=st.sampled_from(ACCOUNTS), data=st.data())
    def part(self, name: str, data: st.DataObject) -> None:
        peer = self.peers[key(name)]
        rooms = self._rooms_of(peer)
        if not rooms:
            return
        room = self.rooms[data.draw(st.sampled_from(rooms))]
        peer.expect({"type": "part", "room": room.name}, "parted")
        room.members.discard(peer.key)
        self.expected_events(room, ("part", key(room.name), peer.name, "part"))

    @rule(name=st.sampled_from(ACCOUNTS), data=st.data(), graceful=st.booleans())
    def move(self, name: str, data: st.DataObject, graceful: bool) -> None:
        """The client leaves its node (``bye``, or a lost connection with says in
        flight) and logs in on a node of the cluster with ``resume``."""
        peer = self.peers[key(name)]
        self._in_flight(peer, data)
        if graceful:
            self._settle([peer])
            peer.conn.send({"type": "bye"})
            frames = peer.conn.wait_closed(CROSS)
            for frame in frames[:-1]:
                peer.process(frame)
            assert frames[-1] == {"type": "bye", "reason": "quit"}, frames
        peer.drop()
        peer.connect(data.draw(st.sampled_from(self._live())))
        self._settle([peer])

    @rule(index=st.integers(0, len(NODES) - 1), data=st.data())
    def kill_node(self, index: int, data: st.DataObject) -> None:
        """kill -9 a node with says in flight on it; its clients log in again
        (taking over their sessions with the token, or after the lease lapsed)
        on any live node; the node starts again on its directory."""
        node = self.nodes[index]
        victims = [peer for peer in self.peers.values() if peer.node is node]
        for peer in victims:
            self._in_flight(peer, data)
        node.kill()
        for peer in victims:
            peer.drop()
        event("kill -9 a node")
        if data.draw(st.booleans(), label="reconnect before the restart"):
            for peer in victims:
                peer.connect(data.draw(st.sampled_from(self._live())))
            node.start()
        else:
            node.start()
            for peer in victims:
                peer.connect(data.draw(st.sampled_from(self._live())))
        self._settle(list(self.peers.values()))

    @rule(data=st.data())
    def kill_redis(self, data: st.DataObject) -> None:
        """kill -9 Redis with says in flight from every client, start it again on
        the same port and directory; every client's outbox is then acknowledged
        (resent while ``unavailable``), and no connection is lost."""
        for peer in self.peers.values():
            self._in_flight(peer, data)
        event("kill -9 redis")
        self.redis.kill()
        self.redis.start()
        self._settle(list(self.peers.values()))

    def expected_events(self, room: ModelRoom, event: Event) -> None:
        """Every member (all are online between rules) gets ``event``."""
        for member in room.members:
            self.peers[member].expected.append(event)

    # --- what must hold after every step ------------------------------------------

    def _caught_up(self, peer: Peer) -> bool:
        return all(peer.next.get(k, 0) - 1 >= self.rooms[k].last for k in self._rooms_of(peer)
                   ) and len(peer.got) >= len(peer.expected)

    @invariant()
    def clients_see_the_model(self) -> None:
        for node in self.nodes:
            assert node.alive, f"node {node.name} died"
        assert self.redis.running, "redis died"
        peers = list(self.peers.values())
        self._settle(peers)
        deadline = time.monotonic() + CROSS
        for peer in peers:
            while not self._caught_up(peer):
                assert time.monotonic() < deadline, (
                    peer.name, "not caught up", peer.next,
                    {k: self.rooms[k].last for k in self._rooms_of(peer)},
                    peer.got, peer.expected)
                peer.read(0.05)
        for peer in peers:
            peer.barrier()
        self._take_acks()
        for peer in peers:
            assert Counter(peer.got) == Counter(peer.expected), (
                peer.name, peer.got, peer.expected)
            peer.got.clear()
            peer.expected.clear()
            assert sorted(peer.next) == self._rooms_of(peer), (peer.name, sorted(peer.next))
            for room_key, nxt in peer.next.items():
                room = self.rooms[room_key]
                assert nxt - 1 == room.last, (peer.name, room_key, nxt, room.last)
                for seq, (sender, ident) in peer.view[room_key].items():
                    said = room.msgs.get(seq)
                    assert said is not None, (peer.name, room_key, seq, "not in the model")
                    assert (sender, ident) == (said.sender, said.ident), (
                        peer.name, room_key, seq, sender, ident, said)
            peer.resending.clear()

    @invariant()
    def history_serves_every_acknowledged_message_once(self) -> None:
        for room_key, room in sorted(self.rooms.items()):
            assert sorted(room.msgs) == list(range(1, room.last + 1)), (
                room_key, "acknowledged seqs are not contiguous", sorted(room.msgs))
            readers = sorted(room.members) or sorted(self.peers)
            reader = self.peers[readers[0]]
            stored: list[Message] = []
            before = room.last + 1
            while True:
                reply = reader.expect({"type": "history", "room": room.name,
                                       "before": before, "limit": HISTORY_PAGE}, "history")
                if not reply["msgs"]:
                    break
                stored[:0] = reply["msgs"]
                before = reply["msgs"][0]["seq"]
            assert [e["seq"] for e in stored] == list(range(1, room.last + 1)), (
                room_key, [e["seq"] for e in stored])
            ids = [(e["from"], e.get("id")) for e in stored if not e.get("deleted")]
            assert len(ids) == len(set(ids)), (room_key, "an id stored twice", ids)
            for entry in stored:
                said = room.msgs[entry["seq"]]
                assert entry["from"] == said.sender, (entry, said)
                if said.deleted:
                    assert entry.get("deleted") is True and "text" not in entry, (entry, said)
                else:
                    assert not entry.get("deleted"), (entry, said)
                    assert (entry["text"], entry.get("id")) == (said.text, said.ident), (
                        entry, said)
                    assert ("edited" in entry) == said.edited, (entry, said)


# Every example starts Redis and two nodes and kills some; shrinking would
# outlast the per-test timeout, so a failure prints its whole program instead
# (the ci profile's derandomised run reproduces it).
ClusterMachine.TestCase.settings = settings(
    max_examples=12, stateful_step_count=16, deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate])
TestCluster = ClusterMachine.TestCase
