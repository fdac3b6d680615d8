"""Request validation (§1 typing, §4, §8), the error table (§6) and the builders (§5)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import (
    CHAT_REQUESTS,
    CONTROL_REQUESTS,
    ERRORS,
    SERVER_EVENTS,
    Decoder,
    ProtocolError,
    decode_payload,
    encode,
    validate,
)
from protocol import messages as m
from protocol.limits import CLIENT_MAX_FRAME
from protocol.messages import V2_REQUESTS, Table
from tests.protocol_strategies import json_values

# The contract's tables, copied from its text (not from messages.py):
# member -> (kind, required), kind one of "int", "str", "any".
CHAT_SPEC: dict[str, dict[str, tuple[str, bool]]] = {
    "hello": {"proto": ("int", True), "name": ("str", True), "since": ("int", False),
              "token": ("str", False), "agent": ("str", False), "password": ("str", False)},
    "say": {"text": ("str", True)},
    "pm": {"to": ("str", True), "text": ("str", True)},
    "who": {},
    "history": {"before": ("int", True), "limit": ("int", False)},
    "ping": {"t": ("any", False)},
    "pong": {"t": ("any", True)},
    "bye": {},
}
# Version 2 (§12-§14). A password member that is missing or not a string is
# weak_password, not bad_request (§17): the table takes any value there ("any").
V2_SPEC: dict[str, dict[str, tuple[str, bool]]] = {
    "hello": {"proto": ("int", True), "name": ("str", True), "token": ("str", False),
              "agent": ("str", False), "password": ("str", False), "resume": ("obj", False),
              "register": ("bool", False), "code": ("str", False)},
    "say": {"room": ("str", True), "text": ("str", True)},
    "pm": CHAT_SPEC["pm"],
    "who": {},
    "history": {"room": ("str", True), "before": ("int", True), "limit": ("int", False)},
    "ping": CHAT_SPEC["ping"],
    "pong": CHAT_SPEC["pong"],
    "bye": {},
    "join": {"room": ("str", True), "private": ("bool", False), "since": ("int", False)},
    "part": {"room": ("str", True)},
    "rooms": {},
    "members": {"room": ("str", True)},
    "topic": {"room": ("str", True), "topic": ("str", True)},
    "invite": {"room": ("str", True), "name": ("str", True)},
    "kick": {"room": ("str", True), "name": ("str", True), "reason": ("str", False),
             "ban": ("bool", False)},
    "unban": {"room": ("str", True), "name": ("str", True)},
    "op": {"room": ("str", True), "name": ("str", True), "op": ("bool", True)},
    "dm": {"to": ("str", True)},
    "edit": {"room": ("str", True), "seq": ("int", True), "text": ("str", True)},
    "delete": {"room": ("str", True), "seq": ("int", True)},
    "typing": {"room": ("str", True)},
    "mark": {"room": ("str", True), "seq": ("int", True)},
    "search": {"query": ("str", True), "room": ("str", False), "limit": ("int", False),
               "before": ("int", False)},
    "password": {"old": ("str", True), "new": ("any", False)},
}
CONTROL_SPEC: dict[str, dict[str, tuple[str, bool]]] = {
    "status": {},
    "kick": {"name": ("str", True), "reason": ("str", False), "room": ("str", False),
             "ban": ("bool", False)},
    "announce": {"text": ("str", True), "room": ("str", False)},
    "watch": {},
    "shutdown": {},
    "account_add": {"name": ("str", True), "password": ("any", False)},
    "account_remove": {"name": ("str", True)},
    "account_password": {"name": ("str", True), "password": ("any", False)},
    "accounts": {},
    "rooms": {},
    "room_add": {"room": ("str", True), "private": ("bool", False)},
    "room_remove": {"room": ("str", True)},
    "topic": V2_SPEC["topic"],
    "unban": V2_SPEC["unban"],
    "op": V2_SPEC["op"],
}
SPECS = [(CHAT_REQUESTS, CHAT_SPEC), (V2_REQUESTS, V2_SPEC), (CONTROL_REQUESTS, CONTROL_SPEC)]
CASES = [
    (table, kind, spec[kind]) for table, spec in SPECS for kind in spec
]
_PREFIX = {id(CHAT_REQUESTS): "chat.", id(V2_REQUESTS): "v2.", id(CONTROL_REQUESTS): "control."}
CASE_IDS = [_PREFIX[id(t)] + k for t, k, _ in CASES]

GOOD = {"int": 1, "str": "x", "any": {"a": [1, None]}, "bool": True, "obj": {"lobby": 1}}
WRONG: dict[str, list[Any]] = {
    "int": [True, False, 1.0, 0.0, -1, 2**53, "1", None, [], {}],
    "str": [1, None, True, [], {}, 1.5],
    "any": [],
    "bool": [0, 1, "true", None, [], {}],
    "obj": [[], "x", 1, None, True],
}


def minimal(kind: str, members: dict[str, tuple[str, bool]]) -> dict[str, Any]:
    out: dict[str, Any] = {"type": kind}
    out.update({k: GOOD[v] for k, (v, required) in members.items() if required})
    return out


def full(kind: str, members: dict[str, tuple[str, bool]]) -> dict[str, Any]:
    out: dict[str, Any] = {"type": kind}
    out.update({k: GOOD[v] for k, (v, _) in members.items()})
    return out


def error_of(message: dict[str, Any], table: Table) -> ProtocolError:
    with pytest.raises(ProtocolError) as exc:
        validate(message, table)
    return exc.value


def test_tables_hold_exactly_the_contract_types() -> None:
    for table, spec in SPECS:
        assert set(table) == set(spec)


@pytest.mark.parametrize(("table", "kind", "members"), CASES, ids=CASE_IDS)
def test_request_member_rules(table: Table, kind: str, members: dict[str, Any]) -> None:
    assert validate(minimal(kind, members), table) is None
    assert validate({**full(kind, members), "id": "r1"}, table) == "r1"
    assert validate({**minimal(kind, members), "unknown": [1], "x": None}, table) is None
    for member, (member_kind, required) in members.items():
        if required:
            message = {**minimal(kind, members), "id": "r2"}
            del message[member]
            err = error_of(message, table)
            assert (err.code, err.ref, err.fatal) == ("bad_request", "r2", False)
        for wrong in WRONG[member_kind]:
            err = error_of({**minimal(kind, members), member: wrong, "id": "r3"}, table)
            assert (err.code, err.ref) == ("bad_request", "r3"), (member, wrong)


@pytest.mark.parametrize(("table", "kind", "members"), CASES, ids=CASE_IDS)
def test_invalid_id_is_bad_request_without_ref(
    table: Table, kind: str, members: dict[str, Any]
) -> None:
    for ident in ["", "x" * 65, "a\ud800", 7, None, True, ["x"]]:
        err = error_of({**minimal(kind, members), "id": ident}, table)
        assert (err.code, err.ref) == ("bad_request", None)


@given(st.text(min_size=1, max_size=64).filter(lambda s: not any(
    "\ud800" <= c <= "\udfff" for c in s)))
def test_any_valid_id_comes_back_as_ref(ident: str) -> None:
    assert validate({"type": "who", "id": ident}, CHAT_REQUESTS) == ident


@given(st.text(max_size=12).filter(lambda s: s not in CHAT_REQUESTS))
def test_unknown_type_keeps_ref(kind: str) -> None:
    err = error_of({"type": kind, "id": "q"}, CHAT_REQUESTS)
    assert (err.code, err.ref, err.fatal) == ("unknown_type", "q", False)


def test_control_types_are_unknown_on_the_chat_port_and_back() -> None:
    assert error_of({"type": "status"}, CHAT_REQUESTS).code == "unknown_type"
    assert error_of({"type": "say", "text": "x"}, CONTROL_REQUESTS).code == "unknown_type"


@pytest.mark.parametrize("value", [0, 1, 2**53 - 1])
def test_integer_range_edges_accepted(value: int) -> None:
    assert validate({"type": "hello", "proto": 1, "name": "a", "since": value}, CHAT_REQUESTS) \
        is None


@given(json_values)
def test_ping_t_takes_any_json_value(t: Any) -> None:
    assert validate({"type": "ping", "t": t}, CHAT_REQUESTS) is None
    assert validate({"type": "pong", "t": t}, CHAT_REQUESTS) is None
    reply = m.pong({"type": "ping", "t": t}, "r")
    assert reply == {"type": "pong", "t": t, "ref": "r"}


def test_pong_without_t_stays_without_t() -> None:
    assert m.pong({"type": "ping"}) == {"type": "pong"}


@pytest.mark.parametrize(
    ("members", "ok"),
    [
        ({"before": 1}, True),
        ({"before": 2**53 - 1, "limit": 200}, True),
        ({"before": 5, "limit": 1}, True),
        ({"before": 0}, False),
        ({"before": 5, "limit": 0}, False),
        ({"before": 5, "limit": 201}, False),
        ({"before": 5, "limit": None}, False),
        ({"before": 5.0}, False),
        ({"limit": 5}, False),
    ],
)
def test_history_ranges(members: dict[str, Any], ok: bool) -> None:
    message = {"type": "history", "id": "h", **members}
    if ok:
        assert validate(message, CHAT_REQUESTS) == "h"
    else:
        err = error_of(message, CHAT_REQUESTS)
        assert (err.code, err.ref) == ("bad_request", "h")


def test_hello_proto_out_of_range_is_bad_request_not_unsupported() -> None:
    """A wrong version is the server's ``unsupported_proto``; a non-integer is ours."""
    assert validate({"type": "hello", "proto": 2, "name": "a"}, CHAT_REQUESTS) is None
    assert error_of({"type": "hello", "proto": "1", "name": "a"}, CHAT_REQUESTS).code \
        == "bad_request"


# The error table of contract §6, copied from its text.
CONTRACT_ERRORS = {
    "bad_frame": True, "frame_too_large": True, "not_logged_in": True,
    "unsupported_proto": True, "bad_name": True, "name_taken": True, "auth_failed": True,
    "server_full": True, "timeout": True, "slow_consumer": True,
    "already_logged_in": False, "unknown_type": False, "bad_request": False,
    "empty_message": False, "text_too_long": False, "bad_text": False,
    "no_such_user": False, "rate_limited": False, "unavailable": False,
}
# §17: weak_password is fatal at login (ProtocolError takes fatal=False after it).
CONTRACT_ERRORS_V2 = {
    "bad_room": False, "no_such_room": False, "not_member": False, "not_allowed": False,
    "no_such_message": False, "registration_closed": True, "account_exists": True,
    "weak_password": True,
}


def test_error_table_is_the_contract_table() -> None:
    assert ERRORS == CONTRACT_ERRORS | CONTRACT_ERRORS_V2


def test_error_frames() -> None:
    err = ProtocolError("rate_limited", "slow down", ref="a", retry_after_ms=50)
    frame = err.to_message()
    assert frame == {"type": "error", "code": "rate_limited", "message": "slow down",
                     "fatal": False, "ref": "a", "retry_after_ms": 50}
    assert validate(frame, SERVER_EVENTS) is None
    assert ProtocolError("timeout", "t").to_message() == {
        "type": "error", "code": "timeout", "message": "t", "fatal": True}
    with pytest.raises(ValueError):
        ProtocolError("no_such_code", "x")


BUILT = [
    m.welcome(name="Alice", server="chatd/1.0.0", seq=3, oldest=1, users=["Alice"],
              max_frame=65536, max_text=4000, heartbeat=30, token="t" * 32, ref="w"),
    m.msg(1, 1_700_000_000_000, "Alice", "hi", "c1"),
    m.msg(2, 1_700_000_000_001, "server", "announcement"),
    m.pm("Alice", "bob", 5, "psst", "p1"),
    m.join("bob", 5),
    m.leave("bob", 6, "quit"),
    m.users(["Alice", "bob"], "u"),
    m.history(10, [{"seq": 1, "ts": 2, "from": "a", "text": "x"}], "h"),
    m.ping(123),
    m.pong({"type": "ping", "t": [1]}),
    m.bye("kicked", "be nice"),
    m.ok("k"),
]


@pytest.mark.parametrize("message", BUILT, ids=[b["type"] for b in BUILT])
def test_builders_make_valid_events_that_round_trip(message: dict[str, Any]) -> None:
    validate(message, SERVER_EVENTS)
    assert Decoder(CLIENT_MAX_FRAME).feed(encode(message)) == [message]


def test_builders_shapes() -> None:
    assert m.msg(1, 2, "a", "b") == {"type": "msg", "seq": 1, "ts": 2, "from": "a", "text": "b"}
    assert m.msg(1, 2, "a", "b", "i")["id"] == "i"
    assert "ref" not in m.users([])
    assert m.welcome(name="a", server="s", seq=0, oldest=0, users=[], max_frame=1,
                     max_text=1, heartbeat=1, token="t")["proto"] == 1
    assert m.bye("quit") == {"type": "bye", "reason": "quit"}
    leave_reasons = {"quit", "timeout", "error", "kicked", "slow_consumer", "shutdown", "lost"}
    assert leave_reasons == m.LEAVE_REASONS
    assert {"quit", "shutdown", "kicked", "replaced"} == m.BYE_REASONS


@pytest.mark.parametrize(
    ("literal", "ok"),
    [(b"0", True), (b"-0", True), (b"7", True), (b"9007199254740991", True),
     (b"9007199254740992", False), (b"-1", False), (b"1.0", False), (b"1e0", False),
     (b"-0.0", False), (b"true", False), (b"null", False), (b'"1"', False)],
)
def test_integer_members_from_the_wire(literal: bytes, ok: bool) -> None:
    """What a JSON integer is, decided on the bytes a peer sends."""
    message = decode_payload(b'{"type":"hello","proto":1,"name":"a","since":' + literal + b"}")
    if ok:
        assert validate(message, CHAT_REQUESTS) is None
    else:
        assert error_of(message, CHAT_REQUESTS).code == "bad_request"
