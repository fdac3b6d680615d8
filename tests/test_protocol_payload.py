"""The strict payload rules of contract §1, case by case and fuzzed."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import ProtocolError, decode_payload, encode_payload
from protocol.limits import MAX_DEPTH
from tests.protocol_strategies import depth, json_values


def nested(levels: int) -> bytes:
    """An object ``levels`` deep counting itself as level 1 (lists inside)."""
    inner = "[" * (levels - 1) + "]" * (levels - 1)
    return ('{"type":"x","v":' + (inner or "0") + "}").encode()


def nested_objects(levels: int) -> bytes:
    text = '{"type":"x"}'
    for _ in range(levels - 1):
        text = '{"type":"x","o":' + text + "}"
    return text.encode()


BAD_FRAMES = {
    "bom": b'\xef\xbb\xbf{"type":"x"}',
    "encoded surrogate": b'{"type":"x","t":"\xed\xa0\x80"}',
    "overlong slash": b'{"type":"x","t":"\xc0\xaf"}',
    "overlong 3-byte": b'{"type":"x","t":"\xe0\x80\xaf"}',
    "beyond U+10FFFF": b'{"type":"x","t":"\xf4\x90\x80\x80"}',
    "lone continuation": b'{"type":"x","t":"\x80"}',
    "truncated sequence": b'{"type":"x","t":"\xe2\x82"}',
    "latin-1": b'{"type":"x","t":"\xe9"}',
    "NaN": b'{"type":"x","n":NaN}',
    "Infinity": b'{"type":"x","n":Infinity}',
    "-Infinity": b'{"type":"x","n":-Infinity}',
    "line comment": b'{"type":"x"} // hi',
    "block comment": b'{"type":"x",/* hi */"n":1}',
    "1e400": b'{"type":"x","n":1e400}',
    "-1e400": b'{"type":"x","n":-1e400}',
    "1E+400": b'{"type":"x","n":1E+400}',
    "long mantissa": b'{"type":"x","n":' + b"9" * 200 + b"e200}",
    "huge int": b'{"type":"x","n":1' + b"0" * 309 + b"}",
    "huge negative int": b'{"type":"x","n":-1' + b"0" * 309 + b"}",
    "enormous int": b'{"type":"x","n":' + b"7" * 5000 + b"}",
    "array": b'[{"type":"x"}]',
    "string": b'"type"',
    "number": b"1",
    "null": b"null",
    "no type": b'{"text":"hi"}',
    "type null": b'{"type":null}',
    "type number": b'{"type":1}',
    "type list": b'{"type":["x"]}',
    "trailing garbage": b'{"type":"x"}x',
    "two objects": b'{"type":"x"}{"type":"y"}',
    "whitespace only": b"   ",
    "newline only": b"\n",
    "nul byte": b"\x00",
    "unquoted key": b'{type:"x"}',
    "single quotes": b"{'type':'x'}",
    "trailing comma": b'{"type":"x",}',
    "raw control char in string": b'{"type":"x","t":"a\x01b"}',
    "raw newline in string": b'{"type":"x","t":"a\nb"}',
    "leading zero": b'{"type":"x","n":01}',
    "plus sign": b'{"type":"x","n":+1}',
    "bare decimal point": b'{"type":"x","n":1.}',
    "hex": b'{"type":"x","n":0x10}',
    "non-JSON white space": b'\x0c{"type":"x"}',
    "non-breaking space": '\u00a0{"type":"x"}'.encode(),
    "depth 33 lists": nested(MAX_DEPTH + 1),
    "depth 33 objects": nested_objects(MAX_DEPTH + 1),
    "very deep": b'{"type":"x","v":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
}


@pytest.mark.parametrize("payload", BAD_FRAMES.values(), ids=BAD_FRAMES.keys())
def test_bad_payload_is_bad_frame(payload: bytes) -> None:
    with pytest.raises(ProtocolError) as exc:
        decode_payload(payload)
    assert exc.value.code == "bad_frame"
    assert exc.value.fatal


GOOD_FRAMES: dict[str, tuple[bytes, dict[str, Any]]] = {
    "minimal": (b'{"type":"x"}', {"type": "x"}),
    "json white space around": (b' \t\r\n{"type":"x"} \n', {"type": "x"}),
    "duplicate keys: last wins": (b'{"type":"a","type":"b","n":1,"n":2}', {"type": "b", "n": 2}),
    "unknown members kept": (b'{"type":"x","future":[1,{"a":null}]}',
                             {"type": "x", "future": [1, {"a": None}]}),
    "escaped surrogate pair": (b'{"type":"\\ud83d\\ude00"}', {"type": "\U0001f600"}),
    "lone escaped surrogate (a text rule, not framing)": (
        b'{"type":"say","text":"\\ud800"}', {"type": "say", "text": "\ud800"}),
    "astral raw": ('{"type":"\U0001f600"}'.encode(), {"type": "\U0001f600"}),
    "largest double": (b'{"type":"x","n":1.7976931348623157e308}',
                       {"type": "x", "n": 1.7976931348623157e308}),
    "308-digit int": (b'{"type":"x","n":1' + b"0" * 307 + b"}", {"type": "x", "n": 10**307}),
    "309-digit int inside the double range": (
        b'{"type":"x","n":1' + b"0" * 308 + b"}", {"type": "x", "n": 10**308}),
    "underflow is zero, not an error": (b'{"type":"x","n":1e-400}', {"type": "x", "n": 0.0}),
    "long digit run in a string": (
        b'{"type":"x","s":"' + b"1" * 400 + b'"}', {"type": "x", "s": "1" * 400}),
    "depth 32 lists": (nested(MAX_DEPTH), json.loads(nested(MAX_DEPTH))),
    "depth 32 objects": (nested_objects(MAX_DEPTH), json.loads(nested_objects(MAX_DEPTH))),
    "many shallow containers": (
        b'{"type":"x","v":[' + b",".join([b"[]"] * 100) + b"]}",
        {"type": "x", "v": [[]] * 100}),
}


@pytest.mark.parametrize(
    ("payload", "expected"), GOOD_FRAMES.values(), ids=GOOD_FRAMES.keys()
)
def test_good_payload_decodes(payload: bytes, expected: dict[str, Any]) -> None:
    assert decode_payload(payload) == expected


@given(st.binary(max_size=64))
def test_arbitrary_payload_decodes_to_object_or_bad_frame(payload: bytes) -> None:
    try:
        value = decode_payload(payload)
    except ProtocolError as exc:
        assert exc.code == "bad_frame"
    else:
        assert isinstance(value, dict)
        assert isinstance(value["type"], str)


@given(json_values)
def test_any_json_value_is_accepted_exactly_when_contract_says(value: Any) -> None:
    """Oracle: an object with a string ``type`` and at most 32 levels."""
    payload = json.dumps(value, ensure_ascii=False).encode()
    ok = isinstance(value, dict) and isinstance(value.get("type"), str)
    if ok and depth(value) <= MAX_DEPTH:
        assert decode_payload(payload) == value
    else:
        with pytest.raises(ProtocolError):
            decode_payload(payload)


@given(json_values, st.integers(min_value=1, max_value=MAX_DEPTH + 3))
def test_depth_limit_on_generated_nesting(value: Any, levels: int) -> None:
    wrapped: Any = value
    for _ in range(levels - 1):
        wrapped = [wrapped]
    message = {"type": "x", "v": wrapped}
    payload = encode_payload(message)
    if depth(message) <= MAX_DEPTH:
        assert decode_payload(payload) == message
    else:
        with pytest.raises(ProtocolError):
            decode_payload(payload)


def test_encoder_rejects_nan() -> None:
    with pytest.raises(ValueError):
        encode_payload({"type": "x", "n": float("nan")})
