"""Contract §15 (presence) and §19 (limits), black-box: presence goes once to
every session sharing a room, with the reason of the session's end; who lists
every online user; typing and mark take rate-limit tokens."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ServerProcess, TestClient, running_server
from tests.test_contract_kit import frame, jframe
from tests.v2_support import (
    PASSWORD,
    Message,
    account,
    bye,
    call,
    events,
    join,
    kinds,
    login2,
    quiet,
    unique,
)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("presence"), "--rate", "0") as server:
        yield server


def _presence(client: TestClient) -> list[Message]:
    frames = events(client)
    assert all(f["type"] == "presence" for f in frames), frames
    return frames


def test_presence_once_per_session_that_shares_a_room(srv: ServerProcess) -> None:
    traveller, neighbour, loner = (account(srv, p) for p in ("tr", "ne", "lo"))
    r1, r2 = unique("r"), unique("r")
    t = login2(srv, traveller, password=PASSWORD)
    n = login2(srv, neighbour, password=PASSWORD)
    lone = login2(srv, loner, password=PASSWORD)
    call(lone, {"type": "part", "room": "lobby"})
    for room in (r1, r2):  # shares lobby, r1 and r2
        join(t, room)
        join(n, room)
    events(n)
    bye(t)
    events(lone)
    gone = _presence(n)
    assert [(p["name"], p["online"], p["reason"]) for p in gone] == [
        (traveller, False, "quit")], gone
    assert gone[0].keys() == {"type", "name", "online", "ts", "reason"}
    t = login2(srv, traveller, password=PASSWORD)
    back = _presence(n)
    assert [(p["name"], p["online"]) for p in back] == [(traveller, True)], back
    assert back[0].keys() == {"type", "name", "online", "ts"}, back  # no reason
    quiet(lone)  # shares no room with the traveller
    # A lost connection (no bye) ends the session with reason lost.
    t.close()
    lost = n.drain_until(lambda m: m["type"] == "presence")
    assert [(p["name"], p["online"], p["reason"]) for p in lost] == [
        (traveller, False, "lost")], lost
    quiet(lone)
    n.close()
    lone.close()


def test_presence_reasons_error_and_kicked(srv: ServerProcess) -> None:
    watcher = login2(srv, unique("w"))
    name = unique("e")
    client = login2(srv, name)
    events(watcher)
    client.send_raw(frame(b"{not json"))
    client.wait_closed()
    client.close()
    gone = watcher.drain_until(lambda m: m["type"] == "presence")
    assert [(p["name"], p["online"], p["reason"]) for p in gone] == [(name, False, "error")]
    client = login2(srv, name)
    events(watcher)
    reply = srv.request({"type": "kick", "name": name})  # the version 1 kick: the session
    assert reply["type"] == "ok", reply
    frames = client.wait_closed()
    assert frames[-1]["type"] == "bye" and frames[-1]["reason"] == "kicked", frames
    client.close()
    gone = watcher.drain_until(lambda m: m["type"] == "presence")
    assert [(p["name"], p["online"], p["reason"]) for p in gone] == [(name, False, "kicked")]
    watcher.close()


def test_who_lists_every_online_user(srv: ServerProcess) -> None:
    loner = account(srv, "who")
    lone = login2(srv, loner, password=PASSWORD)
    call(lone, {"type": "part", "room": "lobby"})
    old_name = unique("old")
    old = srv.client()
    old.login(old_name)
    with login2(srv, unique("g")) as guest:
        reply = call(guest, {"type": "who"})
        assert reply["type"] == "users" and reply.keys() == {"type", "users", "ref"}
        assert {loner, old_name, guest.welcome["name"]} <= set(reply["users"])
        members = call(guest, {"type": "members", "room": "lobby"})["members"]
        online = {m["name"]: m["online"] for m in members}
        assert online[old_name] is True and loner not in online
    old.close()
    lone.close()


def test_typing_and_mark_take_rate_tokens(tmp_path: Path) -> None:
    with running_server(tmp_path, "--rate", "1", "--burst", "4") as srv:
        name = account(srv, "rl")
        with login2(srv, name, password=PASSWORD) as client:
            room = unique("r")
            client.send({"type": "join", "room": room, "id": "j"})  # one token
            burst: list[Message] = [{"type": "typing", "room": room}] * 6 + [
                {"type": "mark", "room": room, "seq": 0, "id": "m"},
                {"type": "mark", "id": "bad"}]  # checked after the rate limit
            client.send_raw(b"".join(jframe(m) for m in burst))
            frames = client.drain_until(lambda m: m.get("ref") == "bad")
            errors = kinds(frames, "error")
            assert all(e["code"] == "rate_limited" and e["fatal"] is False for e in errors)
            assert all(isinstance(e["retry_after_ms"], int) and e["retry_after_ms"] > 0
                       for e in errors), errors
            assert [e.get("ref") for e in errors][-2:] == ["m", "bad"], errors
            assert len(errors) >= 4, errors  # typings dropped too, each with its own error
        with login2(srv, account(srv, "rl"), password=PASSWORD) as client:
            burst = [{"type": "mark", "room": "lobby", "seq": 0, "id": f"m{i}"}
                     for i in range(7)] + [{"type": "typing", "room": "lobby"}]
            client.send_raw(b"".join(jframe(m) for m in burst))
            frames = client.drain_until(lambda m: m.get("ref") == "m6")
            marked = [f["ref"] for f in frames if f["type"] == "marked"]
            limited = [f.get("ref") for f in frames if f["type"] == "error"]
            assert 4 <= len(marked) <= 5 and marked == [f"m{i}" for i in range(len(marked))]
            assert limited == [f"m{i}" for i in range(len(marked), 7)], frames
            tail = client.recv()
            assert tail["type"] == "error" and tail["code"] == "rate_limited", tail
            assert "ref" not in tail


def test_lost_in_the_middle_of_a_frame(srv: ServerProcess) -> None:
    watcher = login2(srv, unique("w"))
    name = unique("half")
    client = login2(srv, name)
    events(watcher)
    client.send_raw(jframe({"type": "say", "room": "lobby", "text": "cut"})[:7])
    client.sock.shutdown(socket.SHUT_RDWR)
    client.close()
    gone = watcher.drain_until(lambda m: m["type"] == "presence")
    assert [(p["name"], p["reason"]) for p in gone] == [(name, "lost")]
    assert kinds(gone, "msg") == []
    watcher.close()
