"""The bench's cheap stream readers must count exactly, however reads split."""

from __future__ import annotations

import itertools
from array import array

from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionType
from wsproto.events import Ping, TextMessage

from chatd.bench_wire import FrameCounter, MarkerCounter, StampReader, stamped_text
from chatd.bench_ws import WsFrameCounter
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


def _ws_stream(kind: ConnectionType) -> tuple[bytes, int]:
    """Frames of an open WebSocket's ``kind`` end (a client's are masked):
    messages with 7-bit, 16-bit and 64-bit lengths, one in two fragments, and
    a ping; the stream and the number of messages in it."""
    conn = Connection(kind)
    parts = [conn.send(TextMessage(data="x" * size)) for size in (0, 5, 125, 126, 300, 70_000)]
    parts.append(conn.send(Ping(b"p")))
    parts.append(conn.send(TextMessage(data="ab", message_finished=False)))
    parts.append(conn.send(TextMessage(data="cd", message_finished=True)))
    return b"".join(parts), 7


@settings(max_examples=200, deadline=None)
@given(kind=st.sampled_from([ConnectionType.SERVER, ConnectionType.CLIENT]),
       cuts=st.lists(st.integers(min_value=1, max_value=71_000), max_size=30))
def test_ws_frame_counter_counts_whole_messages_at_any_split(
    kind: ConnectionType, cuts: list[int]
) -> None:
    stream, messages = _ws_stream(kind)
    counter = WsFrameCounter()
    total = 0
    for chunk in _chunks(stream, sorted({c for c in cuts if c < len(stream)})):
        total += counter.feed(chunk + bytearray(16), len(chunk))
    assert total == messages
