"""One loop turn's output, staged so fan-out costs per turn, not per message.

Broadcasts (``msg``, ``join``, ``leave``) go to ONE turn-wide list of encoded
frames. Every member of the audience (users and watchers) has a cursor into it:
the broadcasts before its cursor are already staged for it. A unicast to a
connection (a reply, an error, a ``pm``, a welcome) first stages the broadcasts
after that connection's cursor, then itself, so each connection sees frames in
the one global order of contract §3.6 (a reply never overtakes a ``msg``
accepted before its request).

At the end of the turn the list is joined ONCE into a blob; a member with no
unicasts gets that same blob object by reference. Public messages stay
revocable until then: if the store refuses the turn's batch, their entries
become empty and each sender's echo turns into an ``unavailable`` error in
place (see :class:`Outcome`), so nothing unstored ever reaches a socket.

Presence is batched across turns. A turn whose broadcasts are only ``join`` and
``leave`` does not visit the audience (10,000 logins one after another would
cost 10,000 x 10,000 pushes): its blob goes to the **presence log**, and each
member's ``mark`` says where its pending presence starts (a member that came
later starts at the end: its welcome lists the users). Any other output for a
member (a unicast, a public message, its final frame) is queued after its
pending presence, so §3.6 order holds; the rest waits for
:meth:`Turn.flush_presence` (the loop's presence timer), which gives every
member its part of one joined blob and empties the log. Marks are absolute
positions: the log's first entry is number ``presence_base``, and a mark below
it means "had everything up to the last flush".
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

from chatd.connection import CLOSED, USER, WATCHER, Asked, Connection
from chatd.history import Stored
from protocol import ProtocolError, encode

_AUDIENCE = (USER, WATCHER)


class Outcome:
    """Staged for the requester of a public message: what it gets depends on
    whether the store took the message. Committed: the ``msg`` itself (if the
    requester is in the audience) then ``ok`` (for an announcement). Refused:
    one ``unavailable`` error with the request's ref.
    """

    __slots__ = ("echo", "index", "ok", "ref")

    def __init__(self, index: int, echo: bool, ok: bytes | None, ref: str | None) -> None:
        self.index = index
        self.echo = echo
        self.ok = ok
        self.ref = ref


class Pending:
    """A public message accepted this turn but not yet in the store."""

    __slots__ = ("index", "ref", "stored")

    def __init__(self, stored: Stored, index: int, ref: str | None) -> None:
        self.stored = stored
        self.index = index
        self.ref = ref


class Turn:
    """Staged output of the current loop turn (see the module docstring)."""

    __slots__ = ("bcast", "failed", "pending", "pending_ids", "presence", "presence_base",
                 "presence_bytes", "presence_frames", "presence_joined", "touched",
                 "unicast_frames", "urgent")

    def __init__(self) -> None:
        self.bcast: list[bytes] = []
        self.touched: list[Connection] = []
        self.pending: list[Pending] = []
        self.pending_ids: set[tuple[str, str]] = set()
        self.failed: dict[int, bytes] = {}  # bcast index -> error frame for its sender
        self.unicast_frames = 0
        self.urgent = False  # a public message was broadcast (not only presence)
        self.presence: list[bytes] = []  # the presence log: blobs of presence-only turns
        self.presence_base = 0  # the absolute number of presence[0]
        self.presence_frames = [0]  # frames in presence[:i]
        self.presence_bytes = [0]  # bytes in presence[:i]
        self.presence_joined: bytes | None = None  # b"".join(presence), once needed

    def _staged(self, conn: Connection) -> list[Any]:
        """The connection's staged list, caught up with the broadcasts so far."""
        staged = conn.staged
        if staged is None:
            conn.staged = staged = []
            self.touched.append(conn)
        end = len(self.bcast)
        if conn.cursor < end and conn.state in _AUDIENCE:
            staged.append((conn.cursor, end))
            conn.cursor = end
        return staged

    def catch_up(self, conn: Connection) -> None:
        """Stage for ``conn`` every broadcast so far (before it leaves the audience)."""
        self._staged(conn)

    def unicast(self, conn: Connection, frame: bytes, frames: int = 1) -> None:
        self._staged(conn).append(frame)
        conn.staged_bytes += len(frame)
        self.unicast_frames += frames

    def broadcast(self, frame: bytes) -> None:
        self.bcast.append(frame)

    def skip_to_end(self, conn: Connection) -> None:
        """A new audience member: what was broadcast before is not for it (a new
        user finds it in its backlog), nor is its own ``join``."""
        if conn.staged is None:
            conn.staged = []
            self.touched.append(conn)
        conn.cursor = len(self.bcast)
        conn.mark = self.presence_base + len(self.presence)

    def public(
        self, conn: Connection | None, frame: bytes, stored: Stored, *, key: str,
        ref: str | None, ok: bytes | None,
    ) -> None:
        """Broadcast a public message and stage its requester's outcome."""
        index = len(self.bcast)
        if conn is not None:
            staged = self._staged(conn)
            echo = conn.state in _AUDIENCE
            staged.append(Outcome(index, echo, ok, ref))
            if echo:
                conn.cursor = index + 1
        self.bcast.append(frame)
        self.urgent = True
        self.pending.append(Pending(stored, index, ref))
        if stored.ident is not None:
            self.pending_ids.add((key, stored.ident))

    def take_pending(self) -> list[Pending]:
        pending = self.pending
        self.pending = []
        self.pending_ids = set()
        return pending

    def refuse(self, pending: Iterable[Pending], retry_after_ms: int) -> None:
        """The store refused these messages: revoke their broadcasts."""
        for item in pending:
            self.bcast[item.index] = b""
            self.failed[item.index] = encode(ProtocolError(
                "unavailable", "the server could not store the message; retry later",
                ref=item.ref, retry_after_ms=retry_after_ms,
            ).to_message())

    def release(self, audience: Iterable[Connection]) -> tuple[int, list[Connection]]:
        """Move everything staged to the out-buffers.

        Returns the number of frames queued and the connections given output.
        A presence-only turn's broadcasts reach the members it did not touch
        through the presence log; a public message is queued for everyone
        after their pending presence, which empties the log.

        Call only after the turn's messages were committed (or refused).
        """
        bcast = self.bcast
        count = len(bcast)
        failed = self.failed
        frames = self.unicast_frames
        blob = b""
        released = list(self.touched)
        presence = self.presence
        end = self.presence_base + len(presence)  # the log's end before this turn
        logged = count > 0 and not self.urgent  # this turn's broadcasts join the log
        if count:
            blob = b"".join(bcast)
            if self.urgent:
                for conn in audience:
                    if conn.staged is None:
                        if presence:
                            frames += self._push_presence(conn)
                        conn.push(blob)
                        released.append(conn)
                frames += (count - len(failed)) * (len(released) - len(self.touched))
        offsets: list[int] = []
        for conn in self.touched:
            staged = conn.staged
            assert staged is not None
            conn.staged = None
            conn.staged_bytes = 0
            if conn.state == CLOSED:  # lost meanwhile: nobody to send to
                conn.cursor = 0
                conn.mark = -1
                continue
            if conn.mark >= 0:  # its pending presence comes first
                frames += self._push_presence(conn)
            if conn.state in _AUDIENCE:
                conn.mark = end + 1 if logged else end
            else:
                conn.mark = -1
            if not offsets and count:
                offsets = [0, *itertools.accumulate(len(f) for f in bcast)]
            parts: list[bytes] = []
            for item in staged:
                kind = type(item)
                if kind is tuple:
                    start, stop = item
                    parts.append(blob[offsets[start]:offsets[stop]])
                    frames += stop - start
                elif kind is Outcome:
                    if item.index in failed:
                        parts.append(failed[item.index])
                        frames += 1
                    else:
                        if item.echo:
                            parts.append(bcast[item.index])
                            frames += 1
                        if item.ok is not None:
                            parts.append(item.ok)
                            frames += 1
                else:
                    parts.append(item)
            if conn.cursor < count and conn.state in _AUDIENCE:
                parts.append(blob[offsets[conn.cursor]:] if conn.cursor else blob)
                frames += count - conn.cursor
            conn.cursor = 0
            _push_parts(conn, parts)
        if logged:
            presence.append(blob)
            self.presence_frames.append(self.presence_frames[-1] + count)
            self.presence_bytes.append(self.presence_bytes[-1] + len(blob))
            self.presence_joined = None
        elif count and presence:  # a public message took everyone's presence along
            self._clear_presence()
        self.bcast = []
        self.touched = []
        self.failed = {}
        self.unicast_frames = 0
        self.urgent = False
        return frames, released

    def flush_presence(self, audience: Iterable[Connection]) -> tuple[int, list[Connection]]:
        """Queue every member's pending presence and empty the log (between
        turns: a connection touched this turn must take its own first).

        Returns the number of frames queued and the connections given them.
        """
        assert not self.touched
        if not self.presence:
            return 0, []
        frames = 0
        given: list[Connection] = []
        for conn in audience:
            count = self._push_presence(conn)
            if count:
                frames += count
                given.append(conn)
        self._clear_presence()
        return frames, given

    def _push_presence(self, conn: Connection) -> int:
        """Queue the member's pending presence: a part of ONE joined blob,
        shared by reference; returns the number of frames."""
        presence = self.presence
        first = max(conn.mark - self.presence_base, 0)
        if first >= len(presence):
            return 0
        joined = self.presence_joined
        if joined is None:
            joined = presence[0] if len(presence) == 1 else b"".join(presence)
            self.presence_joined = joined
        if first:
            conn.push_from(joined, self.presence_bytes[first])
        else:
            conn.push(joined)
        return self.presence_frames[-1] - self.presence_frames[first]

    def _clear_presence(self) -> None:
        """Every member had its presence: marks below the new base mean that."""
        self.presence_base += len(self.presence)
        self.presence = []
        self.presence_frames = [0]
        self.presence_bytes = [0]
        self.presence_joined = None


def _push_parts(conn: Connection, parts: list[bytes]) -> None:
    """Queue parts, joining runs of ordinary frames into one chunk each."""
    run: list[bytes] = []
    for part in parts:
        if isinstance(part, Asked):
            if run:
                conn.push(b"".join(run))
                run = []
            conn.push(part)
        elif part:
            run.append(part)
    if run:
        conn.push(run[0] if len(run) == 1 else b"".join(run))
