"""One loop turn's output, staged per channel so fan-out costs per turn, not per message.

A **channel** is one audience: the online members of a room (version 2
sessions), the version 1 sessions of ``lobby``, the control-socket watchers.
Every broadcast of the turn gets the next number of ONE turn-wide count and is
appended to its channel's list. At the end of the turn each channel's frames
are joined ONCE into a blob, and a subscriber that got nothing else this turn
gets that very blob by reference: a turn with traffic in 3 rooms costs 3
joins, not one per recipient.

A connection that got anything else (a reply, an error, a ``pm``, a welcome),
that is in several channels with traffic this turn, or whose subscriptions
changed during the turn, is **touched**: its output is merged by broadcast
number, each unicast placed after the broadcasts numbered before it was
staged. So every connection sees frames in the one global order of contract
§3.6 (a reply never overtakes a ``msg`` accepted before its request, and a
reply comes before the events its own request caused).

Durable changes stay revocable until the end of the turn: if the store refuses
the turn's commit, their broadcasts become empty and each requester's
:class:`Outcome` turns into an ``unavailable`` error in place, so nothing
unstored ever reaches a socket.

Presence is batched across turns. A turn whose broadcasts are all **lazy**
(the ``join``/``leave``/``presence`` of logins and logouts) does not visit the
channels' subscribers (10,000 logins one after another would cost 10,000 x
10,000 pushes and sends): its frames go to each channel's **lazy log**, and
each subscriber's ``lazy_pos`` says where its pending part starts (one that
came later starts at the end). Before anything else reaches a connection (it
is touched, or a turn with other traffic releases) its pending lazy frames go
first, merged by number, so §3.6 order holds; the rest waits for
:meth:`Turn.flush_lazy` (the loop's presence timer), which gives every
subscriber its part of ONE joined blob per channel and empties the logs.
Numbers count across turns, so frames of several turns merge in order.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
from collections.abc import Iterable
from typing import Any

from chatd.connection import CLOSED, Asked, Connection
from protocol import ProtocolError, encode

_NEVER = 1 << 62  # a window that has not ended


class Channel:
    """An audience and its broadcasts of the current turn."""

    __slots__ = ("blob", "conns", "frames", "lazy", "lazy_base", "lazy_numbers", "numbers",
                 "offsets", "tag")

    def __init__(self, tag: tuple[str, str] | None = None) -> None:
        #: What the channel is to other cluster nodes (chatd.cluster): a room's
        #: version 2 members ("r", key), lobby's version 1 sessions ("1", key).
        #: Broadcasts to a tagged channel are recorded.
        self.tag = tag
        self.conns: set[Connection] = set()
        self.frames: list[bytes] = []
        self.numbers: list[int] = []  # the number of each frame
        self.blob = b""
        self.offsets: list[int] | None = None  # where each frame starts in blob, once needed
        self.lazy: list[bytes] = []  # lazy frames of earlier turns, not yet sent to all
        self.lazy_numbers: list[int] = []
        self.lazy_base = 0  # the absolute position of lazy[0]

    def lazy_end(self) -> int:
        return self.lazy_base + len(self.lazy)

    def __repr__(self) -> str:
        return f"<Channel {len(self.conns)} conns, {len(self.frames)} frames>"


class Outcome:
    """A frame that depends on whether the store took the turn: a requester's
    answer (``ok``: a frame, or nothing when the broadcast itself is the
    answer) becomes one ``unavailable`` error with the request's ref if not;
    a ``silent`` one (an event for one connection) is then dropped."""

    __slots__ = ("ok", "ref", "refused", "silent")

    def __init__(self, ok: bytes, ref: str | None, silent: bool = False) -> None:
        self.ok = ok
        self.ref = ref
        self.refused = False
        self.silent = silent


class Turn:
    """Staged output of the current loop turn (see the module docstring)."""

    __slots__ = ("active", "count", "durable", "lazy_channels", "lazy_conns", "lazy_frames",
                 "outcomes", "record",
                 "touched", "unicast_frames", "urgent")

    def __init__(self) -> None:
        self.count = 0  # numbers given so far: they grow across turns
        self.urgent = False  # a broadcast of this turn is not lazy
        self.lazy_channels: set[Channel] = set()  # channels whose lazy log is not empty
        self.lazy_conns: set[Connection] = set()  # connections with lazy frames of their own
        self.lazy_frames = 0  # lazy frames pushed this turn (counted at release)
        self.active: list[Channel] = []
        self.touched: list[Connection] = []
        self.unicast_frames = 0
        #: (channel, index) of every broadcast that depends on this turn's commit
        self.durable: list[tuple[Channel, int]] = []
        self.outcomes: list[Outcome] = []
        #: In cluster mode, what this node's requests broadcast to tagged
        #: channels (tag kind, key, frame, lazy), for the other nodes to
        #: replay; None while nothing is recorded (single server, or while
        #: replaying what another node sent).
        self.record: list[list[Any]] | None = None

    def take_record(self) -> list[list[Any]]:
        """The recorded broadcasts so far (and an empty record from now)."""
        record = self.record
        if not record:
            return []
        self.record = []
        return record

    # --- staging -----------------------------------------------------------

    def _touch(self, conn: Connection) -> list[Any]:
        staged = conn.staged
        if staged is None:
            conn.staged = staged = []
            self.touched.append(conn)
            if self.lazy_channels or conn.lazy_own is not None:
                self._catch_up(conn)
        return staged

    @staticmethod
    def _pending(conn: Connection, channel: Channel) -> int:
        """Where the connection's pending part of the channel's lazy log starts."""
        pos = conn.lazy_pos.get(channel) if conn.lazy_pos is not None else None
        return 0 if pos is None or pos < channel.lazy_base else pos - channel.lazy_base

    def _catch_up(self, conn: Connection) -> None:
        """Push the connection's pending lazy frames (all of earlier turns) now,
        merged by number, before anything of this turn."""
        streams = self._own_lazy(conn)
        for channel in self.lazy_channels:
            if conn in channel.conns:
                start = self._pending(conn, channel)
                if start < len(channel.lazy):
                    streams.append(list(zip(channel.lazy_numbers[start:],
                                            channel.lazy[start:], strict=True)))
                _set_pos(conn, channel, channel.lazy_end())
        if streams:
            frames = [f for _, f in (heapq.merge(*streams) if len(streams) > 1 else streams[0])]
            conn.push(b"".join(frames))
            self.lazy_frames += len(frames)

    def _own_lazy(self, conn: Connection) -> list[list[tuple[int, bytes]]]:
        """The connection's own lazy frames as a stream (taken: emptied)."""
        own = conn.lazy_own
        if own is None:
            return []
        conn.lazy_own = None
        self.lazy_conns.discard(conn)
        return [own]

    def lazy_unicast(self, conn: Connection, frame: bytes) -> None:
        """A presence frame for one connection that may wait like the lazy
        logs: a login seen by the members of several rooms costs an append
        per member, not a push and a send per member per login."""
        if conn.staged is not None:  # it gets output this turn anyway
            self.unicast(conn, frame)
            return
        if conn.lazy_own is None:
            conn.lazy_own = []
            self.lazy_conns.add(conn)
        conn.lazy_own.append((self.count, frame))
        self.count += 1

    def unicast(self, conn: Connection, frame: bytes, frames: int = 1) -> None:
        """A frame for one connection, after every broadcast staged so far."""
        self._touch(conn).append((self.count, frame))
        conn.staged_bytes += len(frame)
        self.unicast_frames += frames

    def outcome(self, conn: Connection, ok: bytes, ref: str | None, *,
                silent: bool = False) -> None:
        """Stage ``ok`` for ``conn`` unless the turn's commit fails (then an
        ``unavailable`` error in its place, or nothing if ``silent``)."""
        item = Outcome(ok, ref, silent)
        self.outcomes.append(item)
        self._touch(conn).append((self.count, item))
        conn.staged_bytes += len(ok)

    def broadcast(self, channel: Channel, frame: bytes, *, durable: bool = False,
                  skip: Connection | None = None, lazy: bool = False) -> None:
        """A frame for every subscriber of ``channel`` (but ``skip``); ``lazy``
        frames (presence) may wait for :meth:`flush_lazy` if nothing else goes."""
        if self.record is not None and channel.tag is not None:
            self.record.append([*channel.tag, frame, lazy])
        if not channel.frames:
            if not channel.conns:
                return
            self.active.append(channel)
        if not lazy:
            self.urgent = True
        if durable:
            self.durable.append((channel, len(channel.frames)))
        channel.frames.append(frame)
        channel.numbers.append(self.count)
        if skip is not None and skip in channel.conns:
            windows = self._windows(skip)
            windows.setdefault(channel, [0, _NEVER])
            skipped = windows.setdefault(None, [])
            skipped.append(self.count)
        self.count += 1

    def _windows(self, conn: Connection) -> dict[Any, list[int]]:
        self._touch(conn)
        if conn.windows is None:
            conn.windows = {}
        windows: dict[Any, list[int]] = conn.windows
        return windows

    def subscribe(self, conn: Connection, channel: Channel) -> None:
        """From now on ``conn`` gets the channel's broadcasts (not earlier ones)."""
        if conn in channel.conns:
            return
        windows = self._windows(conn)  # touches it: its pending lazy frames go first
        channel.conns.add(conn)
        if channel.lazy:  # (with an empty log, no position means the same)
            _set_pos(conn, channel, channel.lazy_end())
        window = windows.get(channel)
        if window is None:
            self._windows(conn)[channel] = [self.count, _NEVER]
        else:  # left and came back in one turn: one window, gap included
            window[1] = _NEVER

    def unsubscribe(self, conn: Connection, channel: Channel) -> None:
        """``conn`` gets the broadcasts staged so far, none after."""
        if conn not in channel.conns:
            return
        windows = self._windows(conn)  # touches it: its pending lazy frames go first
        channel.conns.discard(conn)
        window = windows.get(channel)
        if window is None:
            windows[channel] = [0, self.count]
        else:
            window[1] = self.count

    # --- commit outcome ------------------------------------------------------

    def take_durable(self) -> tuple[list[tuple[Channel, int]], list[Outcome]]:
        durable, outcomes = self.durable, self.outcomes
        self.durable = []
        self.outcomes = []
        return durable, outcomes

    @staticmethod
    def refuse(durable: Iterable[tuple[Channel, int]], outcomes: Iterable[Outcome]) -> None:
        """The store refused the turn: revoke its broadcasts and answers."""
        for channel, index in durable:
            channel.frames[index] = b""
        for item in outcomes:
            item.refused = True

    # --- release -------------------------------------------------------------

    def release(self, retry_after_ms: int) -> tuple[int, list[Connection]]:
        """Move everything staged to the out-buffers; call only after the
        turn's commit (or its refusal). Returns the number of frames queued
        and the connections given output."""
        frames = self.unicast_frames
        released = list(self.touched)
        active = [ch for ch in self.active if ch.frames]
        if active and not self.urgent:
            return self._release_lazy(active, released, frames, retry_after_ms)
        if active and self.lazy_waiting():  # other traffic takes everyone's presence along
            more, given = self.flush_lazy()
            frames += more
            released.extend(given)
        for channel in active:
            channel.blob = b"".join(channel.frames)
        if len(active) == 1:
            channel = active[0]
            count = sum(1 for f in channel.frames if f)
            for conn in channel.conns:
                if conn.staged is None:
                    conn.push(channel.blob)
                    released.append(conn)
                    frames += count
        elif active:
            frames += self._release_many(active, released)
        for conn in self.touched:
            frames += self._release_touched(conn, active, retry_after_ms)
        return self._done(active, frames, released)

    def _done(self, active: list[Channel], frames: int, released: list[Connection]
              ) -> tuple[int, list[Connection]]:
        for channel in active:
            channel.frames = []
            channel.numbers = []
            channel.blob = b""
            channel.offsets = None
        frames += self.lazy_frames
        self.lazy_frames = 0
        self.active = []
        self.touched = []
        self.urgent = False
        self.unicast_frames = 0
        self.durable = []
        self.outcomes = []
        return frames, released

    def _release_lazy(self, active: list[Channel], released: list[Connection], frames: int,
                      retry_after_ms: int) -> tuple[int, list[Connection]]:
        """A presence-only turn: its frames join the lazy logs; only the touched
        connections get theirs now (after their pending part)."""
        for conn in self.touched:
            frames += self._release_touched(conn, active, retry_after_ms)
        for channel in active:
            for number, frame in zip(channel.numbers, channel.frames, strict=True):
                if frame:
                    channel.lazy.append(frame)
                    channel.lazy_numbers.append(number)
            if channel.lazy:
                self.lazy_channels.add(channel)
            end = channel.lazy_end()
            for conn in self.touched:
                if conn in channel.conns:
                    _set_pos(conn, channel, end)
        return self._done(active, frames, released)

    def lazy_waiting(self) -> bool:
        return bool(self.lazy_channels or self.lazy_conns)

    def flush_lazy(self) -> tuple[int, list[Connection]]:
        """Give every subscriber its pending lazy frames and empty the logs:
        one joined blob per channel, shared by reference (a subscriber of
        several channels with pending frames gets them merged by number)."""
        if not self.lazy_waiting():
            return 0, []
        frames = 0
        given: list[Connection] = []
        joined: dict[Channel, tuple[bytes, list[int]]] = {}
        several: dict[Connection, list[Channel]] = {conn: [] for conn in self.lazy_conns}
        for channel in self.lazy_channels:
            blob = b"".join(channel.lazy)
            offsets = [0]
            for frame in channel.lazy:
                offsets.append(offsets[-1] + len(frame))
            joined[channel] = (blob, offsets)
            for conn in channel.conns:
                several.setdefault(conn, []).append(channel)
        for conn, channels in several.items():
            if len(channels) == 1 and conn.lazy_own is None:
                channel = channels[0]
                start = self._pending(conn, channel)
                if start >= len(channel.lazy):
                    continue
                blob, offsets = joined[channel]
                conn.push_from(blob, offsets[start])
                frames += len(channel.lazy) - start
            else:
                streams = self._own_lazy(conn)
                for channel in channels:
                    start = self._pending(conn, channel)
                    streams.append(list(zip(channel.lazy_numbers[start:],
                                            channel.lazy[start:], strict=True)))
                merged = [f for _, f in heapq.merge(*streams)]
                if not merged:
                    continue
                conn.push(b"".join(merged))
                frames += len(merged)
            given.append(conn)
        for channel in self.lazy_channels:
            channel.lazy_base = channel.lazy_end()
            channel.lazy = []
            channel.lazy_numbers = []
        self.lazy_channels = set()
        return frames, given

    @staticmethod
    def _release_many(active: list[Channel], released: list[Connection]) -> int:
        """Untouched subscribers of several active channels: a blob each if they
        are in one, a merge by number if in more."""
        seen: dict[Connection, list[Channel]] = {}
        for channel in active:
            for conn in channel.conns:
                if conn.staged is None:
                    got = seen.get(conn)
                    if got is None:
                        seen[conn] = [channel]
                    else:
                        got.append(channel)
        frames = 0
        counts = {channel: sum(1 for f in channel.frames if f) for channel in active}
        for conn, channels in seen.items():
            released.append(conn)
            if len(channels) == 1:
                conn.push(channels[0].blob)
                frames += counts[channels[0]]
                continue
            merged = [frame for _, frame in heapq.merge(
                *(zip(ch.numbers, ch.frames, strict=True) for ch in channels)) if frame]
            conn.push(b"".join(merged))
            frames += len(merged)
        return frames

    @staticmethod
    def _release_touched(conn: Connection, active: list[Channel], retry_after_ms: int) -> int:
        staged = conn.staged
        assert staged is not None
        windows: dict[Any, list[int]] | None = conn.windows
        conn.staged = None
        conn.windows = None
        conn.staged_bytes = 0
        if conn.state == CLOSED:  # lost meanwhile: nobody to send to
            return 0
        if windows is None:
            mine = [channel for channel in active if conn in channel.conns]
            if len(mine) <= 1:
                return _release_sliced(conn, staged, mine[0] if mine else None, retry_after_ms)
            windows = {}
        skipped = set(windows.get(None, ()))
        streams = []
        for channel in active:
            window = windows.get(channel)
            if window is None:
                if conn not in channel.conns:
                    continue
                start, stop = 0, _NEVER
            else:
                start, stop = window
            streams.append([(n, f) for n, f in zip(channel.numbers, channel.frames, strict=True)
                            if start <= n < stop and f and n not in skipped])
        parts: list[bytes] = []
        frames = 0
        events = heapq.merge(*streams) if len(streams) != 1 else iter(streams[0])
        pending = next(events, None)
        for number, item in staged:
            while pending is not None and pending[0] < number:
                parts.append(pending[1])
                frames += 1
                pending = next(events, None)
            frames += _staged_part(item, parts, retry_after_ms)
        while pending is not None:
            parts.append(pending[1])
            frames += 1
            pending = next(events, None)
        _push_parts(conn, parts)
        return frames


def _release_sliced(conn: Connection, staged: list[Any], channel: Channel | None,
                    retry_after_ms: int) -> int:
    """The common touched connection: in at most one active channel, with no
    window or skip. Its unicasts split the channel's blob into slices (a
    sender gets its echoes as a few slices, not frame by frame)."""
    parts: list[bytes] = []
    frames = 0
    start = 0
    numbers: list[int] = []
    offsets: list[int] = []
    blob = b""
    if channel is not None:
        numbers = channel.numbers
        if not channel.blob:
            channel.blob = b"".join(channel.frames)
        blob = channel.blob
        if channel.offsets is None:
            channel.offsets = [0, *itertools.accumulate(len(f) for f in channel.frames)]
        offsets = channel.offsets
    for number, item in staged:
        stop = bisect.bisect_left(numbers, number, start)
        if stop > start:
            parts.append(blob[offsets[start]:offsets[stop]])
            frames += stop - start
            start = stop
        frames += _staged_part(item, parts, retry_after_ms)
    if start < len(numbers):
        parts.append(blob[offsets[start]:] if start else blob)
        frames += len(numbers) - start
    _push_parts(conn, parts)
    return frames


def _staged_part(item: Any, parts: list[bytes], retry_after_ms: int) -> int:
    """Add one staged unicast or outcome to ``parts``; returns the frames it adds
    (a plain unicast was counted when staged)."""
    if type(item) is not Outcome:
        parts.append(item)
        return 0
    if item.refused:
        if item.silent:
            return 0
        parts.append(encode(ProtocolError(
            "unavailable", "the server could not store this; retry later",
            ref=item.ref, retry_after_ms=retry_after_ms,
        ).to_message()))
        return 1
    if item.ok:
        parts.append(item.ok)
        return 1
    return 0


def _set_pos(conn: Connection, channel: Channel, pos: int) -> None:
    if conn.lazy_pos is None:
        conn.lazy_pos = {}
    conn.lazy_pos[channel] = pos


def _push_parts(conn: Connection, parts: list[bytes]) -> None:
    """Queue parts, joining runs of ordinary frames into one chunk each (asked-for
    frames stay apart: they do not count toward max_outbuf)."""
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
