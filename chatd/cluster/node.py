"""One cluster node's side of Redis: the store, the feed, names, leases.

:class:`Cluster` stands where a single server has its SQLite store
(:class:`chatd.store.Store`): the core loads its state from it at start and
commits each turn's changes to it. What differs:

- A message is not numbered by the node. :meth:`Cluster.say` runs the ``say``
  script (its seq comes from the room's counter in Redis) and EVERY node,
  the sender's included, delivers it when it comes back on the feed, so all
  clients see one order whatever node they are on. The reply only settles the
  requester: ``unavailable`` if Redis refused or broke, the original message
  if the id was used before (on any node).
- Other changes (rooms, memberships, accounts, markers, edits) are applied by
  the core at once, as on a single server, and committed by
  :meth:`Cluster.commit`: ONE ``meta`` script per turn writes them to the
  state hash and appends them to the change feed, with the frames they caused
  (recorded by :class:`chatd.turn.Turn`), for the other nodes to apply and
  replay to their own clients. The turn is not released before Redis answers.
- A new room or account is reserved first (``reserve``): of two nodes
  making the same one at once, the second finds the first's.
- The feed: one ``XREAD BLOCK`` on a second connection reads the change feed
  and the stream of every room, from this node's cursors (:meth:`sync` reads
  the same without blocking, for a login).
- Names: a login claims its name in Redis (``claim``); a name online on
  another node is taken unless the login gives that session's token, which
  moves the session here (the other node is told by a ``kick`` on the feed).
- Presence: each node renews a lease; a node whose lease stays missing is
  reaped by the first other node that sees it, which announces its users
  ``lost``; a node that finds itself reaped claims its names again.
- What could not be sent while Redis was away (names given back, presence)
  waits in :attr:`Cluster.outbox` and goes when it is back.

The node keeps only caches (each room's retained messages, in memory), which
it rebuilds from Redis at start.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hiredis

from chatd import records
from chatd.cluster import codec, replay, scripts
from chatd.cluster.link import LinkDown, RedisLink
from chatd.connection import CLOSING
from chatd.errors import StartupError
from chatd.records import AccountRecord, Op, RoomRecord, Snapshot, Stored
from chatd.rooms import Person
from chatd.settings import RedisUrl, Settings
from chatd.store import StoreError
from chatd.store_memory import MemoryLog, MemoryStore
from protocol import ProtocolError, encode
from protocol import messages as m
from protocol.limits import LOBBY

if TYPE_CHECKING:
    from chatd.connection import Connection
    from chatd.core import Core
    from chatd.rooms import Room

log = logging.getLogger("chatd.cluster")

LEASE_MS = 3000  # a node silent this long is taken for dead
RENEW_S = 1.0  # how often a node renews its lease and looks for dead ones
REAP_GRACE_S = 2 * LEASE_MS / 1000  # after Redis comes back, time for every node to renew
COMMIT_TIMEOUT_S = 5.0  # a turn's changes wait this long for Redis at most
START_TIMEOUT_S = 5.0
FEED_BLOCK_MS = 1000  # the feed asks again at least this often
FEED_COUNT = 1000  # entries per stream per read
OUTBOX_MAX = 100_000  # commands kept for a Redis that is away
WAIT_BUDGET_S = 0.1  # a turn takes no more requests after waiting this long
CLUSTER_FILE = "cluster-id"  # in the data dir: the cluster this node has served

_LOG_PREFIX = "chat:{r:"
_LOG_SUFFIX = "}:log"

Done = Callable[[Any], None]


def _failed(reply: Any) -> bool:
    return isinstance(reply, (hiredis.ReplyError, LinkDown))


class Cluster:
    """See the module docstring."""

    def __init__(self, settings: Settings, url: RedisUrl) -> None:
        self.settings = settings
        self.url = url
        self.node = secrets.token_hex(6)
        self.cache = MemoryStore(retain=settings.history)
        self.cmd = RedisLink(url, "commands", self._commands_up)
        self.feed = RedisLink(url, "feed", self._feed_up)
        self.cluster_id = ""
        self.core: Core | None = None
        self.cursors: dict[str, str] = {}  # room key -> last stream id read
        self.meta_cursor = "0-0"
        self.feed_waiting = False
        self.feed_retry = 0.0  # after a failed read: not before this time
        self.next_tick = 0.0
        self.reap_after = 0.0  # no reaping before (Redis just came back)
        self.nodes = 1  # live nodes seen at the last lease round
        self.listed = False  # this node's first lease renewal is done
        #: Numbers of this node's commits that Redis confirmed: their entries on
        #: the feed are skipped (applied already). A commit refused here for a
        #: broken link may still have been stored: its entry is applied then.
        self.commits = 0
        self.waited = 0.0  # seconds this turn spent waiting for Redis (see _wait)
        self.reserved: list[str] = []  # state fields reserved for this turn's commit
        self.confirmed: set[int] = set()
        self._snapshot: Snapshot | None = None
        self._online: list[tuple[str, str]] = []  # chat:online as read at start
        #: Fire-and-forget commands that met a broken link, sent when it is back.
        self.outbox: deque[Sequence[Any]] = deque()
        #: This turn's messages by room: (room, script arguments, callbacks).
        self.says: dict[str, tuple[Room, list[Any], list[Done]]] = {}

    # --- start -----------------------------------------------------------------

    def start(self, data_dir: Path) -> None:
        """Connect, join (or found) the cluster, read the state and every room's
        messages. Raises :class:`StartupError` with one line for a person."""
        try:
            self.cmd.connect_now(START_TIMEOUT_S)
            self._join(data_dir)
            self._check_durability()
            self._snapshot = self._read_state()
            online = self._sync(("HGETALL", scripts.ONLINE))
            self._online = list(zip(online[::2], online[1::2], strict=True))
            for record in self._snapshot.rooms:
                self._read_room(record.key)
            self.feed.connect_now(START_TIMEOUT_S)
        except LinkDown as exc:
            raise StartupError(f"cluster: {exc}") from None
        self.reap_after = time.monotonic() + REAP_GRACE_S
        log.info("cluster node %s on %s: %d room(s), %d account(s)", self.node, self.url,
                 len(self._snapshot.rooms), len(self._snapshot.accounts))

    def adopt(self, core: Core) -> None:
        """Who is online on the other nodes when this one starts (afterwards,
        presence on the feed keeps it current)."""
        for key, value in self._online:
            node, _, name = value.split("\t", 2)
            person = core.people.get(key)
            if node == self.node:
                continue
            if person is None:  # a guest there: its rooms are not known here
                person = core.people[key] = Person(key, name, account=False)
            core.remote_online[key] = (name, list(person.rooms))
            if LOBBY in person.rooms:
                core.lobby_online_set(person, True)
        self._online = []

    def _sync(self, args: Sequence[Any]) -> Any:
        """One command, waited for (only at start, before the loop runs)."""
        box: list[Any] = []
        self.cmd.call(args, box.append)
        if not self.cmd.wait(lambda: bool(box), START_TIMEOUT_S) or not box:
            raise LinkDown(f"no answer from {self.url} to {args[0]}")
        if isinstance(box[0], Exception):
            raise LinkDown(f"{args[0]} failed: {box[0]}")
        return box[0]

    def _join(self, data_dir: Path) -> None:
        """The cluster id: made by the first node; a node that served a cluster
        refuses a Redis that lost it (an emptied Redis would number from 1)."""
        path = data_dir / CLUSTER_FILE
        known = path.read_text().strip() if path.exists() else ""
        current = self._sync(("GET", scripts.CLUSTER))
        if current is None:
            if known:
                raise StartupError(
                    f"cluster: {self.url} holds no cluster data, but this node served cluster "
                    f"{known}: Redis lost its data (restore its AOF file), or remove {path} "
                    "to start a new, empty cluster")
            self._sync(("SET", scripts.CLUSTER, secrets.token_hex(8), "NX"))
            current = self._sync(("GET", scripts.CLUSTER))
            log.info("cluster %s founded in %s", current, self.url)
        elif known and known != current:
            raise StartupError(f"cluster: {self.url} serves cluster {current}, but this node "
                               f"served {known}; remove {path} to join the new one")
        self.cluster_id = str(current)
        path.write_text(self.cluster_id + "\n")

    def _check_durability(self) -> None:
        try:
            aof = self._sync(("CONFIG", "GET", "appendonly"))
            fsync = self._sync(("CONFIG", "GET", "appendfsync"))
            policy = self._sync(("CONFIG", "GET", "maxmemory-policy"))
        except LinkDown:
            return  # CONFIG may be renamed away; the operator knows then
        if policy[1:] != ["noeviction"]:
            log.warning("Redis runs with maxmemory-policy %s: when full it may evict the "
                        "cluster's data; set noeviction (docs/cluster.md)", "".join(policy[1:]))
        if aof[1:] != ["yes"] or fsync[1:] != ["always"]:
            log.warning("Redis runs with appendonly %s, appendfsync %s: an acknowledged "
                        "message can be lost if Redis or its machine stops; see "
                        "docs/cluster.md (appendonly yes, appendfsync always)",
                        "".join(aof[1:]), "".join(fsync[1:]))

    def _read_state(self) -> Snapshot:
        last = self._sync(("XREVRANGE", scripts.META, "+", "-", "COUNT", 1))
        self.meta_cursor = last[0][0] if last else "0-0"
        raw = self._sync(("HGETALL", scripts.STATE))
        return codec.snapshot(dict(zip(raw[::2], raw[1::2], strict=True)))

    def _read_room(self, room: str) -> None:
        _, log_key, _ = scripts.room_keys(room)
        cursor = "-"
        while True:
            batch = self._sync(("XRANGE", log_key, cursor, "+", "COUNT", 10_000))
            self._apply_entries(room, batch, live=False)
            if len(batch) < 10_000:
                return
            cursor = "(" + batch[-1][0]

    # --- the core's store ---------------------------------------------------------

    def load(self) -> Snapshot:
        assert self._snapshot is not None, "start() first"
        snap, self._snapshot = self._snapshot, None
        return snap

    def log(self, room: str) -> MemoryLog:
        self.cursors.setdefault(room, "0-0")
        return self.cache.log(room)

    def search(self, rooms: Sequence[str], terms: Sequence[str], limit: int,
               before: int | None = None) -> list[tuple[str, Stored]]:
        return self.cache.search(rooms, terms, limit, before)

    def close(self) -> None:
        self.cmd.close()
        self.feed.close()

    def commit(self, ops: Sequence[Op], shared: list[list[Any]] | None = None) -> None:
        """Store a turn's changes (not messages) in Redis and put them on the
        feed with the frames they caused; wait for the answer. Raises
        :class:`StoreError` if Redis refused, broke or did not answer in time."""
        cmds = codec.commands(ops)
        self._send_says()  # (before this turn's changes, as they came)
        self.commits += 1
        number = self.commits
        payload = self._payload([codec.op_to_json(op) for op in ops], shared or [], number)
        box: list[Any] = []
        try:
            self.cmd.call(("EVALSHA", scripts.SHA["meta"], len(cmds.keys), *cmds.keys,
                           self.cluster_id, self.node, payload, *cmds.args), box.append)
        except LinkDown as exc:
            reserved, self.reserved = self.reserved, []
            for field in reserved:  # not made after all (sent when Redis is back)
                self._fire(("HDEL", scripts.STATE, field))
            raise StoreError(str(exc)) from None
        answered = self._wait(box)
        reserved, self.reserved = self.reserved, []
        if not answered:  # (it may yet be stored: see _apply_meta)
            self.cmd.close("no answer in time")
            raise StoreError(f"Redis did not answer in {COMMIT_TIMEOUT_S:g} s")
        if isinstance(box[0], hiredis.ReplyError):  # refused: nothing of it was written
            for field in reserved:  # so the rooms and accounts it made are not made
                self._fire(("HDEL", scripts.STATE, field))
        if _failed(box[0]):
            raise StoreError(str(box[0]))
        self.confirmed.add(number)
        self.cache.commit(ops)
        for op in ops:
            if isinstance(op, records.RemoveRoom):
                self.cursors.pop(op.room, None)
                if self.core is not None:
                    self.core.echoed(op.room)  # its messages' echoes will not come

    def share(self, shared: list[list[Any]]) -> None:
        """Frames without a durable change (typing, presence): on the feed,
        not waited for; lost if Redis is down, like any live-only frame."""
        if not shared:
            return
        self._fire(("XADD", scripts.META, "MAXLEN", "~", scripts.META_MAXLEN, "*",
                    "n", self.node, "p", self._payload([], shared)))

    @staticmethod
    def _payload(ops: list[Any], shared: list[list[Any]], number: int = 0) -> str:
        frames: list[list[Any]] = []
        for item in shared:
            kind = item[0]
            if kind == "p":  # presence: an event, not a frame
                frames.append(item)
            elif kind == "g":  # a guest's membership
                frames.append(["g", codec.op_to_json(item[1])])
            elif kind in ("u", "u2", "x"):  # for one user: a frame (x: its last)
                frames.append([kind, item[1], _text(item[2]), *item[3:]])
            else:
                frames.append([kind, item[1], _text(item[2]), item[3]])
        return json.dumps({"o": ops, "f": frames, "c": number}, ensure_ascii=False,
                          separators=(",", ":"))

    # --- messages --------------------------------------------------------------------

    def say(self, room: Room, sender: str, sender_key: str, text: str, *, ident: str | None,
            done: Done) -> None:
        """Queue a message for the room's ``say`` script (one call per room
        and turn); ``done(reply)`` gets [1, seq, ts], [0, seq, entries] for an
        id used before, or the failure."""
        if self.cmd.sock is None:
            done(LinkDown(f"no link to Redis at {self.url}"))
            return
        batch = self.says.get(room.key)
        if batch is None:
            batch = self.says[room.key] = (room, [], [])
        batch[1].extend((sender_key, ident or "", sender, text))
        batch[2].append(done)

    def _send_says(self) -> None:
        """The turn's messages, one script call per room."""
        says, self.says = self.says, {}
        for key, (room, args, callbacks) in says.items():
            try:
                self.cmd.call(("EVALSHA", scripts.SHA["say"], 4, *scripts.room_keys(key),
                               scripts.gone_key(key),
                               self.settings.history, room.seq, scripts.TRIM_EVERY, *args),
                              functools.partial(_each, callbacks))
            except LinkDown as exc:
                _each(callbacks, exc)

    def stored(self, room: Room, reply: list[Any]) -> Stored | None:
        """The message an ``id used before`` reply names: as this node's cache
        has it now, else as Redis sent it."""
        seq = int(reply[1])
        found = self.cache.log(room.key).get(seq)
        if found is not None or not reply[2]:
            return found
        return _message(seq, _fields(reply[2][0][1]))

    # --- new rooms and accounts ---------------------------------------------------------

    def reserve_room(self, record: RoomRecord) -> RoomRecord | None:
        """Make the room this node's, or the record of whoever made it first
        (RESERVE). Waits for Redis, as a commit does; ``unavailable`` if it
        cannot tell."""
        field, value = codec.room_field(record)
        existing = self._reserve(field, value, scripts.room_keys(record.key)[0],
                                 scripts.gone_key(record.key))
        return None if existing is None else codec.room_record(record.key, existing)

    def reserve_account(self, record: AccountRecord) -> str | None:
        """As :meth:`reserve_room`, for an account: None if it is this node's."""
        return self._reserve(*codec.account_field(record))

    def _wait(self, box: list[Any]) -> bool:
        """Wait for one answer (see RedisLink.wait), counting the time in
        :attr:`waited`: the core stops taking requests for the turn once a
        turn has waited WAIT_BUDGET_S, so many commits in one turn (a client
        that pipelines edits) cannot hold the loop for long."""
        started = time.monotonic()
        try:
            return self.cmd.wait(lambda: bool(box), COMMIT_TIMEOUT_S)
        finally:
            self.waited += time.monotonic() - started

    def waited_enough(self) -> bool:
        """Whether this turn has waited for Redis long enough (WAIT_BUDGET_S)."""
        return self.waited > WAIT_BUDGET_S

    def _reserve(self, field: str, value: str, *room: str) -> str | None:
        keys = [scripts.CLUSTER, scripts.STATE, *room]
        box: list[Any] = []
        try:
            self.cmd.call(("EVALSHA", scripts.SHA["reserve"], len(keys), *keys,
                           self.cluster_id, field, value), box.append)
        except LinkDown:
            pass
        else:
            if not self._wait(box):
                self.cmd.close("no answer in time")
        if not box or _failed(box[0]):
            raise ProtocolError("unavailable", "the cluster cannot be reached; retry later",
                                retry_after_ms=1000)
        if isinstance(box[0], str):
            return box[0]
        self.reserved.append(field)  # this turn's commit writes the rest
        return None

    # --- names -------------------------------------------------------------------------

    def claim(self, key: str, name: str, token: str, *, given: str | None, done: Done) -> None:
        try:
            self.cmd.call(("EVALSHA", scripts.SHA["claim"], 3, scripts.ONLINE, scripts.META,
                           scripts.CLUSTER, key, self.node, token, given or "", name,
                           self.cluster_id), done)
        except LinkDown as exc:
            done(exc)

    def look_up(self, key: str, done: Done) -> None:
        """Who holds this name, as ``node<TAB>token<TAB>name`` (None: nobody)."""
        try:
            self.cmd.call(("HGET", scripts.ONLINE, key), done)
        except LinkDown as exc:
            done(exc)

    def moved(self, key: str, name: str, token: str) -> None:
        """A session taken over on this node: the name's new token."""
        self._fire(("HSET", scripts.ONLINE, key, f"{self.node}\t{token}\t{name}"))

    def release(self, key: str, token: str, *, node: str | None = None) -> None:
        """The name is free again, if this session (of ``node``, by default
        this one) still holds it."""
        self._fire(("EVALSHA", scripts.SHA["release"], 1, scripts.ONLINE, key,
                    node or self.node, token))

    def _fire(self, args: Sequence[Any]) -> None:
        """A command nobody waits for (a name given back, presence on the
        feed): if the link is down, or breaks before its answer, it is sent
        again once the link is back, in order (each is harmless twice)."""
        try:
            self.cmd.call(args, functools.partial(self._fired, args))
        except LinkDown:
            self._later(args)

    def _fired(self, args: Sequence[Any], reply: Any) -> None:
        if isinstance(reply, LinkDown):
            self._later(args)

    def _later(self, args: Sequence[Any]) -> None:
        if len(self.outbox) >= OUTBOX_MAX:
            log.warning("Redis has been away long: dropping a change for the other nodes")
            self.outbox.popleft()
        self.outbox.append(args)

    # --- the loop's interface ------------------------------------------------------------

    def links(self) -> Iterator[RedisLink]:
        yield self.cmd
        yield self.feed

    def flush(self) -> None:
        self._send_says()
        self.cmd.flush()
        self.feed.flush()

    def next_deadline(self) -> float:
        return self.next_tick

    def tick(self, now: float) -> None:
        """Leases, reaping and reconnecting, every RENEW_S."""
        if now < self.next_tick:
            return
        self.next_tick = now + RENEW_S
        self.cmd.overdue(now, COMMIT_TIMEOUT_S)
        self.feed.overdue(now, FEED_BLOCK_MS / 1000 + COMMIT_TIMEOUT_S)
        for link in self.links():
            if link.sock is None:
                try:
                    link.connect()
                except LinkDown as exc:
                    log.debug("%s", exc)
        if not self.cmd.up:
            return
        self._renew()
        with contextlib.suppress(LinkDown):
            if now >= self.reap_after:
                self.cmd.call(("EVALSHA", scripts.SHA["reap"], 3, scripts.NODES, scripts.ONLINE,
                               scripts.SUSPECTS, self.node, scripts.CONFIRM_MS), self._reaped)
            self.cmd.call(("SCARD", scripts.NODES), self._counted)

    def _renew(self) -> None:
        with contextlib.suppress(LinkDown):
            self.cmd.call(("EVALSHA", scripts.SHA["renew"], 3, scripts.lease_key(self.node),
                           scripts.NODES, scripts.SUSPECTS, self.node, LEASE_MS), self._renewed)

    def _renewed(self, reply: Any) -> None:
        if reply == 1 and self.listed:
            self._rejoin()
        if isinstance(reply, int):
            self.listed = True

    def _rejoin(self) -> None:
        """This node's lease lapsed (it stalled, or lost Redis for long) and
        another node announced its users lost: claim their names again; a
        name someone took meanwhile ends its session here (``replaced``)."""
        core = self.core
        assert core is not None
        log.warning("this node's lease lapsed and its users were announced lost: "
                    "claiming %d name(s) again", len(core.online))
        for conn in list(core.online.values()):
            self.claim(conn.key, conn.name, conn.token, given=conn.token,
                       done=functools.partial(self._reclaimed, conn))

    def _reclaimed(self, conn: Connection, reply: Any) -> None:
        core = self.core
        assert core is not None
        if conn.state >= CLOSING or core.online.get(conn.key) is not conn:
            if isinstance(reply, list) and reply[0] == 1:
                self.release(conn.key, conn.token)
            return
        if isinstance(reply, list) and reply[0] == 1:
            person = conn.person
            core.presence_shared(person, True, None, list(person.rooms), LOBBY in person.rooms)
        elif isinstance(reply, list):  # taken meanwhile by a new session elsewhere
            core.close(conn, encode(m.bye("replaced")), None)

    def _counted(self, reply: Any) -> None:
        if isinstance(reply, int):
            self.nodes = reply

    def _reaped(self, reply: Any) -> None:
        if _failed(reply) or not reply:
            return
        core = self.core
        assert core is not None
        gone = list(zip(reply[::2], reply[1::2], strict=True))
        log.warning("a node's lease lapsed: announcing %d of its users lost", len(gone))
        turn = core.turn
        record, turn.record = turn.record, []  # (not the turn's other, uncommitted frames)
        try:
            for key, name in gone:
                replay.offline(core, key, name, "lost", None)
            self.share(turn.record)
        finally:
            turn.record = record

    def _commands_up(self, link: RedisLink) -> None:
        for body in scripts.SCRIPTS.values():
            link.call(("SCRIPT", "LOAD", body))
        if self.core is not None:  # back after a break: renew before anyone reaps
            link.call(("EVALSHA", scripts.SHA["renew"], 3, scripts.lease_key(self.node),
                       scripts.NODES, scripts.SUSPECTS, self.node, LEASE_MS), self._renewed)
            self.reap_after = time.monotonic() + REAP_GRACE_S
            outbox, self.outbox = self.outbox, deque()
            for args in outbox:
                link.call(args, functools.partial(self._fired, args))

    def _feed_up(self, link: RedisLink) -> None:
        self.feed_waiting = False
        self.read_feed()

    # --- the feed --------------------------------------------------------------------------

    def read_feed(self) -> None:
        """Ask for what came after the cursors (once none is outstanding)."""
        if self.feed_waiting or self.feed.sock is None or time.monotonic() < self.feed_retry:
            return
        keys, ids = self._streams()
        self.feed.call(("XREAD", "COUNT", FEED_COUNT, "BLOCK", FEED_BLOCK_MS, "STREAMS", *keys,
                        *ids), self._fed)
        self.feed_waiting = True

    def _fed(self, reply: Any) -> None:
        self.feed_waiting = False
        if isinstance(reply, LinkDown):
            return
        if isinstance(reply, hiredis.ReplyError):  # asked again at the next tick
            self.feed_retry = time.monotonic() + RENEW_S
        self._read(reply)
        self.read_feed()

    def sync(self, done: Callable[[], None]) -> None:
        """Read everything written so far before ``done()`` runs (one XREAD
        without blocking, on the command link): a client that moves from
        another node finds here what it did there (its markers, its
        messages), even if the feed has not brought it yet."""
        keys, ids = self._streams()

        def answered(reply: Any) -> None:
            if not isinstance(reply, LinkDown):
                self._read(reply)
            done()

        try:
            self.cmd.call(("XREAD", "COUNT", FEED_COUNT, "STREAMS", *keys, *ids), answered)
        except LinkDown:
            done()

    def _streams(self) -> tuple[list[str], list[str]]:
        rooms = list(self.cursors)
        keys = [scripts.META, *(scripts.room_keys(r)[1] for r in rooms)]
        ids = [self.meta_cursor, *(self.cursors[r] for r in rooms)]
        return keys, ids

    def _read(self, reply: Any) -> None:
        """An XREAD's entries (the feed's, or a sync's: each entry is applied
        once, whichever read brings it first)."""
        if isinstance(reply, hiredis.ReplyError):
            log.error("reading the feed failed: %s", reply)
            return
        if not reply:
            return
        core = self.core
        assert core is not None
        for stream, entries in reply:
            if stream == scripts.META:
                for ident, fields in entries:
                    if _after(ident, self.meta_cursor):
                        self.meta_cursor = ident
                        self._apply_meta(core, _fields(fields))
            elif stream.startswith(_LOG_PREFIX) and stream.endswith(_LOG_SUFFIX):
                room = stream[len(_LOG_PREFIX):-len(_LOG_SUFFIX)]
                cursor = self.cursors.get(room)
                if cursor is None:
                    continue  # removed meanwhile
                fresh = entries if _after(entries[0][0], cursor) else [
                    e for e in entries if _after(e[0], cursor)]
                self._apply_entries(room, fresh, live=True)

    def _apply_entries(self, room: str, entries: list[Any], live: bool) -> None:
        """Entries of a room's stream: messages (delivered when ``live``), edits
        and deletions (their frames come with their change on the feed).

        A message's fields are in the order the ``say`` script writes them
        (k m ts . s . sk . i . t .): read by position, it is the hot path."""
        log_ = self.cache.log(room)
        core = self.core
        for ident, fields in entries:
            if fields[1] == "m":
                seq = int(ident[:-2])  # "<seq>-0"
                if seq <= log_.last_seq:
                    continue
                if seq != log_.last_seq + 1:  # trimmed while this node was away
                    log_.restart(seq - 1)
                    if core is not None:  # their echoes will not come
                        core.echoed(room, seq - 1)
                stored = Stored(seq, int(fields[3]), fields[5], fields[11], fields[9] or None)
                log_.add(stored)
                if live and core is not None:
                    core.delivered(room, stored)
            else:
                values = _fields(fields)
                if values["k"] == "e":
                    log_.change(records.EditMessage(room, int(values["seq"]), values["t"],
                                                    int(values["ed"])))
                elif values["k"] == "d":
                    log_.change(records.DeleteMessage(room, int(values["seq"])))
        if entries:
            self.cursors[room] = entries[-1][0]

    def _apply_meta(self, core: Core, values: dict[str, str]) -> None:
        node = values.get("n")
        if "kick" in values:
            if values.get("node") == self.node:
                replay.kicked(core, values["kick"])
            return
        try:
            payload = json.loads(values["p"])
        except (KeyError, ValueError) as exc:
            log.error("a bad change on the feed (from node %s): %s", node, exc)
            return
        if node == self.node:
            number = payload.get("c", 0)
            if number in self.confirmed:
                self.confirmed.discard(number)
            elif number:  # (0: frames only, sent here already)
                log.warning("a change this node refused (Redis did not answer) was "
                            "stored after all: applying it")
                self._replay(core, payload)
            return
        self._replay(core, payload)

    def _replay(self, core: Core, payload: dict[str, Any]) -> None:
        ops = [codec.op_from_json(op) for op in payload.get("o", ())]
        replay.apply(core, payload.get("f", ()), ops)
        for op in ops:
            if isinstance(op, records.PutRoom):
                self.cursors.setdefault(op.room.key, "0-0")
            elif isinstance(op, records.RemoveRoom):
                self.cursors.pop(op.room, None)
        self.cache.commit([op for op in ops
                           if isinstance(op, records.PutRoom | records.RemoveRoom)])

    def status(self) -> dict[str, Any]:
        return {"node": self.node, "redis": str(self.url), "nodes": self.nodes,
                "redis_up": self.cmd.up}


def _each(callbacks: list[Done], reply: Any) -> None:
    """One ``say`` script's answer, to each message's callback."""
    if isinstance(reply, list) and len(reply) == len(callbacks):
        for callback, answer in zip(callbacks, reply, strict=True):
            callback(answer)
        return
    for callback in callbacks:
        callback(reply)


def _text(data: bytes) -> str:
    """A frame's JSON, for the feed (the header is made again on replay)."""
    return bytes(data[4:]).decode()


def _after(ident: str, cursor: str) -> bool:
    """Whether stream id ``ident`` comes after ``cursor`` (both ``ms-seq``)."""
    a, _, b = ident.partition("-")
    c, _, d = cursor.partition("-")
    return (int(a), int(b)) > (int(c), int(d))


def _fields(flat: list[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _message(seq: int, values: dict[str, str]) -> Stored:
    return Stored(seq, int(values["ts"]), values["s"], values["t"], values.get("i") or None)
