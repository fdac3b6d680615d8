"""Framing: round trips under any chunking, hostile bytes, headers, ``limit``."""

from __future__ import annotations

import struct
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import Decoder, ProtocolError, decode_payload, encode
from protocol.framing import frame, frame_end, whole_frames
from protocol.limits import CLIENT_MAX_FRAME, HEADER_SIZE, LOGIN_MAX_FRAME
from tests.protocol_strategies import cuts, messages, split


def header(length: int) -> bytes:
    return struct.pack(">I", length)


def feed_all(decoder: Decoder, chunks: list[bytes]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for chunk in chunks:
        out += decoder.feed(chunk)
        assert decoder.pending < decoder.max_frame + HEADER_SIZE
    return out


@given(st.lists(messages, max_size=5), cuts)
def test_any_messages_any_chunking_round_trip(msgs: list[dict[str, Any]], at: list[int]) -> None:
    stream = b"".join(encode(m) for m in msgs)
    decoder = Decoder(CLIENT_MAX_FRAME)
    assert feed_all(decoder, split(stream, at)) == msgs
    assert decoder.pending == 0
    # The worst chunking, on the same stream: one byte at a time.
    decoder = Decoder(CLIENT_MAX_FRAME)
    assert feed_all(decoder, [stream[i : i + 1] for i in range(len(stream))]) == msgs
    assert decoder.pending == 0


def reference(stream: bytes, max_frame: int) -> tuple[list[dict[str, Any]], str | None]:
    """The messages a whole ``stream`` holds and the error that ends it (non-incremental)."""
    out: list[dict[str, Any]] = []
    pos = 0
    while len(stream) - pos >= HEADER_SIZE:
        (length,) = struct.unpack_from(">I", stream, pos)
        if not 1 <= length <= max_frame:
            return out, "frame_too_large"
        if len(stream) - pos - HEADER_SIZE < length:
            break
        try:
            out.append(decode_payload(stream[pos + HEADER_SIZE : pos + HEADER_SIZE + length]))
        except ProtocolError as exc:
            return out, exc.code
        pos += HEADER_SIZE + length
    return out, None


# Hostile streams: real frames, frames with junk payloads, and raw junk, mixed,
# with lengths small enough that random headers are often plausible.
_junk_frame = st.binary(max_size=40).map(lambda p: header(len(p)) + p)
_valid_frame = messages.map(encode)
_hostile = st.lists(
    _valid_frame | _junk_frame | st.binary(max_size=12)
    | st.sampled_from([header(0), header(2**32 - 1), b"\x00\x00", b"\x00\x00\x00"]),
    max_size=8,
).map(b"".join)


@given(_hostile, cuts, st.integers(min_value=1, max_value=300))
def test_hostile_bytes_decode_or_raise_protocol_error(
    stream: bytes, at: list[int], max_frame: int
) -> None:
    expected, error = reference(stream, max_frame)
    decoder = Decoder(max_frame)
    got: list[dict[str, Any]] = []
    try:
        for chunk in split(stream, at):
            got += decoder.feed(chunk)
            assert decoder.pending < max_frame + HEADER_SIZE
    except ProtocolError as exc:
        assert exc.code == error
        assert exc.fatal
        got += exc.decoded
        assert decoder.pending == 0
        with pytest.raises(ProtocolError) as again:
            decoder.feed(b"\x00\x00\x00\x01{")
        assert again.value.code == error
        assert again.value.decoded == []
        assert decoder.pending == 0
    else:
        assert error is None
    assert got == expected


@given(st.binary(max_size=200), cuts)
def test_raw_bytes_never_raise_anything_else(stream: bytes, at: list[int]) -> None:
    decoder = Decoder(LOGIN_MAX_FRAME)
    try:
        for chunk in split(stream, at):
            decoder.feed(chunk)
            assert decoder.pending < LOGIN_MAX_FRAME + HEADER_SIZE
    except ProtocolError as exc:
        assert exc.code in ("bad_frame", "frame_too_large")


@given(
    st.integers(min_value=1, max_value=2**20),
    st.one_of(st.just(0), st.integers(min_value=1, max_value=2**32 - 1)),
)
def test_bad_header_rejected_at_its_fourth_byte(max_frame: int, length: int) -> None:
    decoder = Decoder(max_frame)
    head = header(length)
    for i in range(3):
        assert decoder.feed(head[i : i + 1]) == []
    if 1 <= length <= max_frame:
        assert decoder.feed(head[3:]) == []
        assert decoder.pending == HEADER_SIZE
    else:
        with pytest.raises(ProtocolError) as exc:
            decoder.feed(head[3:])
        assert exc.value.code == "frame_too_large"
        assert decoder.pending == 0


def test_oversize_header_rejected_before_payload_in_same_chunk() -> None:
    decoder = Decoder(LOGIN_MAX_FRAME)
    with pytest.raises(ProtocolError) as exc:
        decoder.feed(header(LOGIN_MAX_FRAME + 1) + b"x" * 100)
    assert exc.value.code == "frame_too_large"
    assert decoder.pending == 0


def test_frame_of_exactly_max_frame_is_accepted() -> None:
    filler = "x" * (LOGIN_MAX_FRAME - len(encode({"type": "say", "text": ""})) + HEADER_SIZE)
    frame = encode({"type": "say", "text": filler})
    assert len(frame) == LOGIN_MAX_FRAME + HEADER_SIZE
    assert Decoder(LOGIN_MAX_FRAME).feed(frame) == [{"type": "say", "text": filler}]


def test_decoded_carries_messages_before_the_bad_frame() -> None:
    good = [{"type": "say", "text": "a"}, {"type": "who"}]
    stream = b"".join(encode(m) for m in good) + header(3) + b"{1}" + encode({"type": "bye"})
    decoder = Decoder(LOGIN_MAX_FRAME)
    with pytest.raises(ProtocolError) as exc:
        decoder.feed(stream)
    assert exc.value.code == "bad_frame"
    assert exc.value.decoded == good
    assert exc.value.to_message()["fatal"] is True


def test_limit_returns_at_most_limit_and_keeps_the_rest() -> None:
    msgs = [{"type": "say", "text": str(i)} for i in range(5)]
    stream = b"".join(encode(m) for m in msgs)
    decoder = Decoder(LOGIN_MAX_FRAME)
    assert decoder.feed(stream, limit=2) == msgs[:2]
    assert decoder.pending == len(stream) - sum(len(encode(m)) for m in msgs[:2])
    assert decoder.feed(limit=0) == []
    assert decoder.feed(limit=1) == msgs[2:3]
    assert decoder.feed() == msgs[3:]
    assert decoder.pending == 0


def test_limit_lets_the_server_raise_max_frame_after_login() -> None:
    """A hello pipelined with a big frame: read one, raise the limit, read on."""
    big = {"type": "say", "text": "y" * 10_000}
    stream = encode({"type": "hello", "proto": 1, "name": "a"}) + encode(big)
    decoder = Decoder(LOGIN_MAX_FRAME)
    assert decoder.feed(stream, limit=1) == [{"type": "hello", "proto": 1, "name": "a"}]
    decoder.max_frame = 65536
    assert decoder.feed() == [big]
    with pytest.raises(ProtocolError) as exc:
        Decoder(LOGIN_MAX_FRAME).feed(stream)
    assert exc.value.code == "frame_too_large"
    assert exc.value.decoded == [{"type": "hello", "proto": 1, "name": "a"}]


def test_limit_defers_a_bad_header_until_it_is_read() -> None:
    decoder = Decoder(LOGIN_MAX_FRAME)
    stream = encode({"type": "who"}) + header(0)
    assert decoder.feed(stream, limit=1) == [{"type": "who"}]
    with pytest.raises(ProtocolError):
        decoder.feed()


def test_incomplete_frame_stays_buffered_not_lost() -> None:
    frame = encode({"type": "say", "text": "hello"})
    decoder = Decoder(LOGIN_MAX_FRAME)
    assert decoder.feed(frame[:-1]) == []
    assert decoder.pending == len(frame) - 1
    assert decoder.feed(frame[-1:] + frame[:2]) == [{"type": "say", "text": "hello"}]
    assert decoder.pending == 2


def test_surrogates_in_echoed_values_are_escaped_and_survive() -> None:
    ping = {"type": "pong", "t": "x\ud800y"}
    frame = encode(ping)
    assert b"\\ud800" in frame
    assert Decoder(LOGIN_MAX_FRAME).feed(frame) == [ping]


def test_encoder_is_compact_utf8() -> None:
    assert encode({"type": "say", "text": "é"}) == header(26) + '{"type":"say","text":"é"}'.encode()


@given(st.binary(min_size=1, max_size=300))
def test_frame_puts_the_big_endian_length_before_the_payload(payload: bytes) -> None:
    assert frame(payload) == header(len(payload)) + payload
    assert frame_end(frame(payload)) == HEADER_SIZE + len(payload)


@given(st.lists(st.binary(min_size=1, max_size=70), max_size=6), st.data())
def test_whole_frames_finds_exactly_the_complete_frames(
    payloads: list[bytes], data: st.DataObject
) -> None:
    stream = b"".join(frame(p) for p in payloads)
    ends = [sum(HEADER_SIZE + len(p) for p in payloads[: i + 1]) for i in range(len(payloads))]
    stop = data.draw(st.integers(0, len(stream)), label="stop")
    complete = [end for end in ends if end <= stop]
    assert whole_frames(stream, 0, stop) == (len(complete), complete[-1] if complete else 0)
    # From any frame boundary, and where the next frame ends.
    start = data.draw(st.sampled_from([0, *complete]), label="start")
    count, pos = whole_frames(stream, start, stop)
    assert count == sum(1 for end in complete if end > start) and pos == (complete or [0])[-1]
    if pos < len(stream):
        assert frame_end(stream, pos) == ends[len(complete)]


def test_max_frame_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Decoder(0)


def test_megabyte_one_byte_at_a_time_completes() -> None:
    """O(bytes fed): a 1 MiB frame dribbled byte by byte (no timing asserted;
    a quadratic decoder would blow the test timeout)."""
    big = {"type": "say", "text": "z" * (1 << 20)}
    frame = encode(big)
    decoder = Decoder(CLIENT_MAX_FRAME)
    feed = decoder.feed
    out: list[dict[str, Any]] = []
    for i in range(len(frame)):
        out += feed(frame[i : i + 1])
    assert out == [big]


def test_importing_protocol_loads_no_socket_module() -> None:
    code = "import protocol, sys; assert 'socket' not in sys.modules; " \
        "assert 'selectors' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
