"""Contract §1 (framing, payload rules, strict member types), black-box."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ServerProcess, running_server
from tests.test_contract_kit import (
    fatal_close,
    frame,
    fresh,
    hello,
    jframe,
    nonfatal,
    unique,
)

MAX_FRAME = 6000
NO_BACKLOG = 2**53 - 1  # a since past every seq: no backlog


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("cframe"), "--max-frame", str(MAX_FRAME),
                        "--rate", "0") as srv:
        yield srv


def _padded_ping(size: int) -> bytes:
    """A valid ping frame whose payload is exactly ``size`` bytes."""
    base = b'{"type":"ping","t":""}'
    payload = base[:-2] + b"x" * (size - len(base)) + b'"}'
    assert len(payload) == size
    return frame(payload)


def _padded_hello(name: str, size: int) -> bytes:
    base = f'{{"type":"hello","proto":1,"name":"{name}","agent":""}}'.encode()
    payload = base[:-2] + b"a" * (size - len(base)) + b'"}'
    assert len(payload) == size
    return frame(payload)


def test_every_byte_boundary_split(server: ServerProcess) -> None:
    """One byte per send: the decoder is incremental."""
    name = unique("split")
    stream = (hello(name) + jframe({"type": "say", "text": "héllo", "id": "s1"})
              + jframe({"type": "ping", "t": [1, {"a": None}]}))
    with server.client() as client:
        for i in range(len(stream)):
            client.send_raw(stream[i:i + 1])
        client.expect("welcome", name=name)
        frames = client.drain_until(lambda m: m["type"] == "pong")
        assert [m["type"] for m in frames] == ["msg", "pong"], frames
        assert frames[0]["text"] == "héllo" and frames[0]["id"] == "s1"
        assert frames[1]["t"] == [1, {"a": None}]


def test_ten_frames_and_half_an_eleventh_in_one_send(server: ServerProcess) -> None:
    with server.client() as client:
        pings = b"".join(jframe({"type": "ping", "t": i}) for i in range(10))
        last = jframe({"type": "ping", "t": 10})
        client.send_raw(hello(unique("merge"), since=NO_BACKLOG) + pings + last[:2])
        client.expect("welcome")
        got = [client.expect("pong")["t"] for _ in range(10)]
        assert got == list(range(10))
        assert client.poll(0.2) is None
        client.send_raw(last[2:])
        client.expect("pong", t=10)


@pytest.mark.parametrize("header", [0, 4097, 2**32 - 1])
def test_bad_length_before_login_from_the_header_alone(
        server: ServerProcess, header: int) -> None:
    with server.client() as client:
        client.send_raw(struct.pack(">I", header))
        fatal_close(client, "frame_too_large")


@pytest.mark.parametrize("header", [0, MAX_FRAME + 1])
def test_bad_length_after_login_from_the_header_alone(
        server: ServerProcess, header: int) -> None:
    with fresh(server) as watcher, fresh(server) as client:
        watcher.barrier()
        client.send_raw(struct.pack(">I", header))
        fatal_close(client, "frame_too_large")
        leave = watcher.expect("leave", name=client.welcome["name"])
        assert leave["reason"] == "error"


def test_hello_of_exactly_4096_bytes_is_accepted(server: ServerProcess) -> None:
    name = unique("big")
    with server.client() as client:
        client.send_raw(_padded_hello(name, 4096))
        client.expect("welcome", name=name)


def test_frame_after_hello_in_the_same_send_gets_the_logged_in_limit(
        server: ServerProcess) -> None:
    """A 5000-byte frame right behind the hello is legal: it is after login."""
    with server.client() as client:
        client.send_raw(hello(unique("burst"), since=NO_BACKLOG) + _padded_ping(5000)
                        + _padded_ping(MAX_FRAME))
        welcome = client.expect("welcome")
        assert welcome["max_frame"] == MAX_FRAME
        client.expect("pong")
        client.expect("pong")


def test_hello_limit_is_max_frame_when_smaller(tmp_path: Path) -> None:
    with running_server(tmp_path, "--max-frame", "1000") as srv:
        with srv.client() as client:
            client.send_raw(_padded_hello("small1", 1000))
            assert client.expect("welcome")["max_frame"] == 1000
        with srv.client() as client:
            client.send_raw(struct.pack(">I", 1001))
            fatal_close(client, "frame_too_large")
        with srv.login("small2") as client:
            client.send_raw(_padded_ping(1000))
            client.drain_until(lambda m: m["type"] == "pong")
            client.send_raw(struct.pack(">I", 1001))
            fatal_close(client, "frame_too_large")


def _nest(depth: int) -> bytes:
    """A payload nested exactly ``depth`` levels (the object is level 1)."""
    inner = depth - 1
    return b'{"type":"ping","t":' + b"[" * inner + b"]" * inner + b"}"


BAD_FRAMES = {
    "bom": b'\xef\xbb\xbf{"type":"ping"}',
    "encoded_surrogate": b'{"type":"ping","t":"\xed\xa0\x80"}',
    "overlong_slash": b'{"type":"ping","t":"\xc0\xaf"}',
    "overlong_nul": b'{"type":"ping","t":"\xc0\x80"}',
    "bad_byte": b'{"type":"ping","t":"\xff"}',
    "truncated_utf8": b'{"type":"ping","t":"\xe2\x82"}',
    "nan": b'{"type":"ping","t":NaN}',
    "infinity": b'{"type":"ping","t":Infinity}',
    "minus_infinity": b'{"type":"ping","t":-Infinity}',
    "line_comment": b'{"type":"ping"} // c',
    "block_comment": b'{"type":"ping" /* c */}',
    "array": b'[{"type":"ping"}]',
    "string": b'"ping"',
    "number": b"1",
    "null": b"null",
    "no_type": b'{"t":1}',
    "int_type": b'{"type":1}',
    "null_type": b'{"type":null}',
    "two_objects": b'{"type":"ping"}{"type":"ping"}',
    "trailing_garbage": b'{"type":"ping"} x',
    "single_quotes": b"{'type':'ping'}",
    "trailing_comma": b'{"type":"ping",}',
    "depth_33": _nest(33),
    "huge_float": b'{"type":"ping","t":1e400}',
    "huge_negative": b'{"type":"ping","t":-1e400}',
    "huge_integer": b'{"type":"ping","t":1' + b"0" * 400 + b"}",
    "raw_control_in_string": b'{"type":"ping","t":"a\x01"}',
}


@pytest.mark.parametrize("payload", BAD_FRAMES.values(), ids=BAD_FRAMES.keys())
def test_bad_frame_before_login(server: ServerProcess, payload: bytes) -> None:
    with server.client() as client:
        client.send_raw(frame(payload))
        fatal_close(client, "bad_frame")


@pytest.mark.parametrize("payload", BAD_FRAMES.values(), ids=BAD_FRAMES.keys())
def test_bad_frame_after_login(server: ServerProcess, payload: bytes) -> None:
    with fresh(server) as client:
        client.send_raw(jframe({"type": "ping", "t": "before"}) + frame(payload)
                        + jframe({"type": "ping", "t": "after"}))
        client.expect("pong", t="before")
        fatal_close(client, "bad_frame")


GOOD_FRAMES = {
    "depth_32": (_nest(32), [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]),
    "whitespace_around": (b' \r\n\t{"type":"ping","t":1}\n ', 1),
    "duplicate_member_last_wins": (b'{"type":"nope","type":"ping","t":2}', 2),
    "escaped_unicode": (b'{"type":"ping","t":"\\u00e9\\ud83d\\ude00"}', "é😀"),
    "big_double": (b'{"type":"ping","t":1.7e308}', 1.7e308),
    "unknown_members": (b'{"type":"ping","t":3,"future":{"x":[1]}}', 3),
}


@pytest.mark.parametrize("payload,t", GOOD_FRAMES.values(), ids=GOOD_FRAMES.keys())
def test_valid_json_edge_cases_are_accepted(server: ServerProcess, payload: bytes,
                                            t: object) -> None:
    with fresh(server) as client:
        client.send_raw(frame(payload))
        assert client.expect("pong")["t"] == t


BAD_MEMBERS = [
    {"type": "say", "text": 5},
    {"type": "say", "text": None},
    {"type": "say"},
    {"type": "say", "text": "hi", "id": None},
    {"type": "say", "text": "hi", "id": ""},
    {"type": "say", "text": "hi", "id": "x" * 65},
    {"type": "say", "text": "hi", "id": 7},
    {"type": "say", "text": "hi", "id": "\ud800"},
    {"type": "pm", "text": "hi"},
    {"type": "pm", "to": 3, "text": "hi"},
    {"type": "history", "before": True},
    {"type": "history", "before": 1.0},
    {"type": "history", "before": 5.5},
    {"type": "history", "before": "5"},
    {"type": "history", "before": 0},
    {"type": "history", "before": -1},
    {"type": "history", "before": 2**53},
    {"type": "history"},
    {"type": "history", "before": 5, "limit": None},
    {"type": "history", "before": 5, "limit": 0},
    {"type": "history", "before": 5, "limit": 201},
    {"type": "history", "before": 5, "limit": False},
    {"type": "history", "before": 5, "limit": 2.0},
]


@pytest.mark.parametrize("request_", BAD_MEMBERS, ids=[str(i) for i in range(len(BAD_MEMBERS))])
def test_wrong_member_types_are_nonfatal_bad_request(server: ServerProcess,
                                                     request_: dict[str, object]) -> None:
    with fresh(server) as client:
        client.send_raw(jframe(request_))
        nonfatal(client, "bad_request")


def test_bad_request_with_valid_id_carries_ref(server: ServerProcess) -> None:
    with fresh(server) as client:
        client.send({"type": "history", "before": True, "id": "h1"})
        nonfatal(client, "bad_request", ref="h1")


def test_integer_range_edges_are_accepted(server: ServerProcess) -> None:
    with fresh(server) as client:
        client.send({"type": "history", "before": 2**53 - 1, "limit": 200, "id": "x" * 64})
        reply = client.expect("history", before=2**53 - 1, ref="x" * 64)
        assert isinstance(reply["msgs"], list)
        client.send({"type": "say", "text": "astral id", "id": "😀" * 64})
        assert client.expect("msg")["id"] == "😀" * 64


HELLO_BAD_MEMBERS = [  # bad_request is checked before unsupported_proto (§3.2)
    {"proto": True},
    {"proto": -1},
    {"proto": 2**53},
    {"proto": 1, "since": -5},
    {"proto": 1.0},
    {"proto": "1"},
    {"proto": None},
    {"name": None},
    {"name": 5},
    {"since": True},
    {"since": None},
    {"since": -1},
    {"since": 1.5},
    {"since": 2**53},
    {"token": None},
    {"token": 5},
    {"agent": None},
    {"agent": ["x"]},
    {"id": None},
    {"id": ""},
]


@pytest.mark.parametrize("members", HELLO_BAD_MEMBERS,
                         ids=[str(i) for i in range(len(HELLO_BAD_MEMBERS))])
def test_wrong_member_types_in_hello_are_fatal_bad_request(
        server: ServerProcess, members: dict[str, object]) -> None:
    with server.client() as client:
        client.send_raw(jframe({"type": "hello", "proto": 1, "name": unique("hb"), **members}))
        fatal_close(client, "bad_request")


def test_payload_split_from_its_header_at_several_points(server: ServerProcess) -> None:
    """Cuts of one say frame, each on its own connection, over real TCP."""
    for cut in range(1, 40, 3):
        with fresh(server, "cut") as client:
            data = jframe({"type": "say", "text": "ok", "id": f"cut{cut}"})
            client.send_raw(data[:cut])
            assert client.poll(0.02) is None
            client.send_raw(data[cut:])
            client.expect("msg", id=f"cut{cut}", text="ok")


def test_depth_counts_even_a_member_replaced_by_a_repeat(server: ServerProcess) -> None:
    """§1: the payload is nested 41 levels, whatever the last ``t`` says."""
    with fresh(server) as client:
        client.send_raw(frame(b'{"type":"ping","t":' + b"[" * 40 + b"]" * 40 + b',"t":1}'))
        error = client.recv()  # a pong (t 1) here fails at once
        assert (error["type"], error.get("code"), error.get("fatal")) == (
            "error", "bad_frame", True)


def test_out_of_range_number_counts_even_in_a_member_replaced_by_a_repeat(
        server: ServerProcess) -> None:
    with fresh(server) as client:
        client.send_raw(frame(b'{"type":"ping","t":1e400,"t":1}'))
        fatal_close(client, "bad_frame")
