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
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from typing import Any

from chatd.connection import CLOSED, Asked, Connection
from protocol import ProtocolError, encode

_NEVER = 1 << 62  # a window that has not ended


class Channel:
    """An audience and its broadcasts of the current turn."""

    __slots__ = ("blob", "conns", "frames", "numbers", "offsets")

    def __init__(self) -> None:
        self.conns: set[Connection] = set()
        self.frames: list[bytes] = []
        self.numbers: list[int] = []  # the turn-wide number of each frame
        self.blob = b""
        self.offsets: list[int] | None = None

    def __repr__(self) -> str:
        return f"<Channel {len(self.conns)} conns, {len(self.frames)} frames>"


class Outcome:
    """A requester's answer that depends on whether the store took the turn:
    ``ok`` (a frame, or nothing when the broadcast itself is the answer), or
    one ``unavailable`` error with the request's ref."""

    __slots__ = ("ok", "ref", "refused")

    def __init__(self, ok: bytes, ref: str | None) -> None:
        self.ok = ok
        self.ref = ref
        self.refused = False


class Turn:
    """Staged output of the current loop turn (see the module docstring)."""

    __slots__ = ("active", "count", "durable", "outcomes", "touched", "unicast_frames")

    def __init__(self) -> None:
        self.count = 0
        self.active: list[Channel] = []
        self.touched: list[Connection] = []
        self.unicast_frames = 0
        #: (channel, index) of every broadcast that depends on this turn's commit
        self.durable: list[tuple[Channel, int]] = []
        self.outcomes: list[Outcome] = []

    # --- staging -----------------------------------------------------------

    def _touch(self, conn: Connection) -> list[Any]:
        staged = conn.staged
        if staged is None:
            conn.staged = staged = []
            self.touched.append(conn)
        return staged

    def unicast(self, conn: Connection, frame: bytes, frames: int = 1) -> None:
        """A frame for one connection, after every broadcast staged so far."""
        self._touch(conn).append((self.count, frame))
        conn.staged_bytes += len(frame)
        self.unicast_frames += frames

    def outcome(self, conn: Connection, ok: bytes, ref: str | None) -> None:
        """Stage ``ok`` for ``conn`` unless the turn's commit fails."""
        item = Outcome(ok, ref)
        self.outcomes.append(item)
        self._touch(conn).append((self.count, item))
        conn.staged_bytes += len(ok)

    def broadcast(self, channel: Channel, frame: bytes, *, durable: bool = False,
                  skip: Connection | None = None) -> None:
        """A frame for every subscriber of ``channel`` (but ``skip``)."""
        if not channel.frames:
            if not channel.conns:
                return
            self.active.append(channel)
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
        channel.conns.add(conn)
        window = self._windows(conn).get(channel)
        if window is None:
            self._windows(conn)[channel] = [self.count, _NEVER]
        else:  # left and came back in one turn: one window, gap included
            window[1] = _NEVER

    def unsubscribe(self, conn: Connection, channel: Channel) -> None:
        """``conn`` gets the broadcasts staged so far, none after."""
        if conn not in channel.conns:
            return
        channel.conns.discard(conn)
        windows = self._windows(conn)
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
        for channel in active:
            channel.frames = []
            channel.numbers = []
            channel.blob = b""
            channel.offsets = None
        self.active = []
        self.touched = []
        self.count = 0
        self.unicast_frames = 0
        self.durable = []
        self.outcomes = []
        return frames, released

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
        for conn, channels in seen.items():
            released.append(conn)
            if len(channels) == 1:
                conn.push(channels[0].blob)
                frames += sum(1 for f in channels[0].frames if f)
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
        windows: dict[Any, list[int]] = conn.windows or {}
        conn.staged = None
        conn.windows = None
        conn.staged_bytes = 0
        if conn.state == CLOSED:  # lost meanwhile: nobody to send to
            return 0
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
            if type(item) is Outcome:
                if item.refused:
                    parts.append(encode(ProtocolError(
                        "unavailable", "the server could not store this; retry later",
                        ref=item.ref, retry_after_ms=retry_after_ms,
                    ).to_message()))
                    frames += 1
                elif item.ok:
                    parts.append(item.ok)
                    frames += 1
            else:
                parts.append(item)
        while pending is not None:
            parts.append(pending[1])
            frames += 1
            pending = next(events, None)
        _push_parts(conn, parts)
        return frames


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
