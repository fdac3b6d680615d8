"""The bench's cheap stream readers must count exactly, however reads split."""

from __future__ import annotations

import itertools
from array import array

from chatd.bench_wire import FrameCounter, MarkerCounter, StampReader, stamped_text
from protocol.framing import encode

_STREAM = b"".join(
    encode(m)
    for m in (
        {"type": "join", "name": "a", "ts": 1},
        {"type": "msg", "seq": 1, "ts": 2, "from": "ann", "text": stamped_text(1_000_000, 30)},
        {"type": "msg", "seq": 2, "ts": 3, "from": "bob", "text": "hello"},
        {"type": "msg", "seq": 3, "ts": 4, "from": "ann", "text": stamped_text(2_000_000, 24)},
        {"type": "pong", "t": "x"},
    )
)


def _chunks(data: bytes, cuts: list[int]) -> list[bytearray]:
    bounds = [0, *cuts, len(data)]
    return [bytearray(data[a:b]) for a, b in itertools.pairwise(bounds) if b > a]


def _splits() -> list[list[int]]:
    """Every single cut, every pair of cuts two bytes apart, and byte by byte."""
    n = len(_STREAM)
    return [[i] for i in range(1, n)] + [[i, i + 2] for i in range(1, n - 2)] + [
        list(range(1, n))
    ]


def _feed(reader: FrameCounter | MarkerCounter, cuts: list[int]) -> int:
    total = 0
    for chunk in _chunks(_STREAM, cuts):
        buf = chunk + bytearray(8)  # recv_into leaves stale bytes after n
        total += reader.feed(buf, len(chunk))
    return total


def test_frame_counter_counts_every_frame_at_any_split() -> None:
    for cuts in _splits():
        assert _feed(FrameCounter(), cuts) == 5, cuts


def test_marker_counter_counts_each_marker_once_at_any_split() -> None:
    for cuts in _splits():
        assert _feed(MarkerCounter(b'"from":"ann"'), cuts) == 2, cuts
        assert _feed(MarkerCounter(b'"from":"bob"'), cuts) == 1, cuts
        assert _feed(MarkerCounter(b'"from":"an"'), cuts) == 0, cuts


def test_stamp_reader_times_stamped_texts_only() -> None:
    for cuts in _splits():
        reader = StampReader()
        out: array[int] = array("q")
        frames = sum(
            reader.feed(memoryview(chunk), 5_000_000, out) for chunk in _chunks(_STREAM, cuts)
        )
        assert frames == 5
        assert sorted(out) == [3000, 4000]  # µs: (5 ms - 2 ms), (5 ms - 1 ms)
