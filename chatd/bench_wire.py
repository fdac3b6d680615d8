"""Cheap readers of the server's byte stream for the load generator.

A load generator that decodes every frame's JSON measures itself, not the
server: one receiver process would need more CPU than the server spends per
delivery. So receivers count frames from the 4-byte length headers alone
(:class:`FrameCounter`), find a known marker with C-speed ``bytearray.count``
(:class:`MarkerCounter`: a sender's own echoes, a barrier ``pong``), or, at a
modest fixed load, pull a send time stamp out of each frame's text without
parsing the rest (:class:`StampReader`). All three accept a stream split at any
byte boundary.
"""

from __future__ import annotations

from array import array

from protocol.framing import frame_end, whole_frames
from protocol.limits import HEADER_SIZE

#: Digits of the CLOCK_MONOTONIC nanosecond stamp at the start of a latency text.
STAMP_DIGITS = 20
_TEXT_KEY = b'"text":"'


class FrameCounter:
    """Counts complete frames by walking length headers; payloads are skipped."""

    __slots__ = ("_head", "_need")

    def __init__(self) -> None:
        self._need = 0  # payload bytes of the current frame still to come
        self._head = b""  # a header split across reads

    def feed(self, buf: bytearray, n: int) -> int:
        """Frames completed by the first ``n`` bytes of ``buf``."""
        pos = 0
        frames = 0
        if self._head:
            take = HEADER_SIZE - len(self._head)
            if n < take:
                self._head += bytes(buf[:n])
                return 0
            self._need = frame_end(self._head + bytes(buf[:take])) - HEADER_SIZE
            self._head = b""
            pos = take
        if self._need:
            end = pos + self._need
            if end > n:
                self._need = end - n
                return 0
            pos = end
            frames = 1
            self._need = 0
        whole, pos = whole_frames(buf, pos, n)
        if n - pos >= HEADER_SIZE:
            self._need = frame_end(buf, pos) - n
        elif pos < n:
            self._head = bytes(buf[pos:n])
        return frames + whole


class MarkerCounter:
    """Counts occurrences of a byte marker, including ones split across reads.

    The last ``len(marker) - 1`` bytes are kept and searched together with the
    head of the next read; that overlap is too short to hold a whole marker, so
    no occurrence is counted twice.
    """

    __slots__ = ("_keep", "_marker", "_tail")

    def __init__(self, marker: bytes) -> None:
        if not marker:
            raise ValueError("empty marker")
        self._marker = marker
        self._keep = len(marker) - 1
        self._tail = b""

    def feed(self, buf: bytearray, n: int) -> int:
        marker = self._marker
        keep = self._keep
        hits = buf.count(marker, 0, n)
        joined = self._tail + bytes(buf[: min(n, keep)])
        if self._tail:
            hits += joined.count(marker)
        if keep == 0:
            return hits
        self._tail = bytes(buf[n - keep : n]) if n >= keep else joined[-keep:]
        return hits


class StampReader:
    """Splits the stream into frames and records ``now - stamp`` for each text.

    Used at a fixed, modest load (the latency test), where buffering each frame
    is affordable. A text that does not start with a stamp is counted, not timed.
    """

    __slots__ = ("_pend",)

    def __init__(self) -> None:
        self._pend = bytearray()

    def feed(self, data: memoryview, now_ns: int, out: array[int] | None) -> int:
        """Frames completed by ``data``; latencies (µs) go to ``out`` if given."""
        pend = self._pend
        pend += data
        size = len(pend)
        pos = 0
        frames = 0
        while size - pos >= HEADER_SIZE:
            end = frame_end(pend, pos)
            if end > size:
                break
            if out is not None:
                at = pend.find(_TEXT_KEY, pos + HEADER_SIZE, end)
                if at >= 0:
                    start = at + len(_TEXT_KEY)
                    stamp = pend[start : start + STAMP_DIGITS]
                    if stamp.isdigit():  # else not one of our stamped texts
                        out.append((now_ns - int(stamp)) // 1000)
            frames += 1
            pos = end
        if pos:
            del pend[:pos]
        return frames


def stamped_text(now_ns: int, size: int) -> str:
    """A ``size``-character text starting with the send time ``now_ns``."""
    stamp = f"{now_ns:0{STAMP_DIGITS}d}"
    return stamp + "x" * (size - len(stamp))
