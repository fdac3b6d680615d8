"""Corner cases of the contract that a strict outside suite would probe:
closing without a reset (§3.5), one error per failed request (§6), strict
integer ranges in hello (§1), forward compatibility, and watchers (§8)."""

from __future__ import annotations

import contextlib
import json
import random
import signal
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ConnectionClosed, ServerProcess, TestClient, running_server
from tests.test_contract_kit import (
    Message,
    fatal_close,
    frame,
    fresh,
    hello,
    jframe,
    nonfatal,
    unique,
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("cedges"), "--rate", "0") as srv:
        yield srv


JUNK = jframe({"type": "ping", "t": "j" * 50000}) * 8  # 400 kB the server never reads


@pytest.mark.parametrize("fatal,code", [
    (frame(b"[1]"), "bad_frame"),
    (struct.pack(">I", 0), "frame_too_large"),
    (hello("bad name"), "bad_name"),
    (jframe({"type": "who"}), "not_logged_in"),
], ids=["bad_frame", "frame_too_large", "bad_name", "not_logged_in"])
def test_fatal_error_survives_a_peer_that_keeps_sending(server: ServerProcess, fatal: bytes,
                                                        code: str) -> None:
    """Unread input at close would make the kernel send a reset, which can
    destroy the error frame; the server half-closes and drains instead."""
    with server.client() as client:
        if code in ("bad_frame", "frame_too_large"):
            client.send_raw(hello(unique("junk"), since=2**53 - 1))
            client.expect("welcome")
        with contextlib.suppress(OSError):  # the error must arrive all the same
            client.send_raw(fatal + JUNK)
        fatal_close(client, code)


def test_one_error_per_failed_request(server: ServerProcess) -> None:
    with fresh(server) as client:
        client.send({"type": "say", "text": "\x00", "id": 5})
        nonfatal(client, "bad_request")
        client.send({"type": "say", "text": "\x00", "id": "e", "extra": [1]})
        nonfatal(client, "bad_text", ref="e")
        client.send({"type": "SAY", "text": "hi", "id": "c"})
        nonfatal(client, "unknown_type", ref="c")
        client.send({"type": "welcome", "id": "w"})
        nonfatal(client, "unknown_type", ref="w")
        client.send({"type": "history", "limit": 5, "id": "h"})
        nonfatal(client, "bad_request", ref="h")


def test_unknown_members_are_ignored(server: ServerProcess) -> None:
    name = unique("fwd")
    with server.client() as client:
        client.send_raw(hello(name, future={"caps": [1, 2]}, password="unused", agent="x/1"))
        client.expect("welcome", name=name)
        client.send({"type": "say", "text": "hi", "id": "f", "color": "red", "to": 5})
        msg = client.drain_until(lambda m: m["type"] == "msg" and m.get("id") == "f")[-1]
        assert "color" not in msg and msg["from"] == name


def test_join_and_leave_show_the_nfc_name_as_typed(server: ServerProcess) -> None:
    with fresh(server) as watch:
        typed = "Ame\u0301lie" + unique("")
        shown = "Am\u00e9lie" + typed[len("Ame\u0301lie"):]
        with server.login(typed) as client:
            assert client.welcome["name"] == shown
            watch.expect("join", name=shown)
        watch.expect("leave", name=shown, reason="lost")


def test_several_talkers_one_order_without_gaps(server: ServerProcess) -> None:
    """Every user and watcher gets every public msg (announcements too), in
    increasing seq, with no gaps."""
    talkers = [fresh(server, "talk") for _ in range(3)]
    listener = fresh(server, "listen")
    with server.control() as watcher, server.control() as operator:
        watcher.send({"type": "watch"})
        watcher.expect("ok")
        for round_ in range(5):
            for n, talker in enumerate(talkers):
                talker.send_raw(b"".join(jframe({"type": "say", "text": f"{n}"})
                                         for _ in range(20)))
            operator.send({"type": "announce", "text": f"round {round_}"})
        for talker in talkers:
            talker.barrier()
        for _ in range(5):
            operator.expect("ok")
        seen = [m for m in listener.barrier() if m["type"] == "msg"]
        seqs = [m["seq"] for m in seen]
        assert len(seqs) == 305 and seqs == list(range(seqs[0], seqs[0] + 305))
        # Watchers get the version 2 shape (§10): the same msg, with its room.
        watched = [{k: v for k, v in m.items() if k != "room"}
                   for m in watcher.drain_until(lambda m: m.get("seq") == seqs[-1])
                   if m["type"] == "msg"]
        assert watched == seen
    for talker in talkers:
        talker.close()
    listener.close()


def test_watchers_see_new_messages_only(tmp_path: Path) -> None:
    with running_server(tmp_path, "--rate", "0") as srv, \
            srv.control() as w1, srv.control() as w2:
        for watcher in (w1, w2):
            watcher.send({"type": "watch"})
            watcher.expect("ok")
        with srv.login("Dup") as client:
            client.send({"type": "say", "text": "once", "id": "d"})
            msg = client.drain_until(lambda m: m["type"] == "msg")[-1]
            client.send({"type": "say", "text": "twice", "id": "d"})
            assert client.expect("msg") == msg
            client.send({"type": "bye"})
            client.wait_closed()
        for watcher in (w1, w2):
            assert [m["type"] for m in watcher.drain_until(lambda m: m["type"] == "leave")] \
                == ["join", "msg", "leave"]
            assert watcher.poll(0.2) is None
        with srv.login("Kicked") as victim:
            victim.barrier()
            assert srv.request({"type": "kick", "name": "kicked"})["type"] == "ok"
            bye = victim.wait_closed()[-1]
            assert bye["type"] == "bye" and bye["reason"] == "kicked"
            assert isinstance(bye.get("message", ""), str)


def test_control_socket_edges(tmp_path: Path) -> None:
    with running_server(tmp_path, "--max-text", "10") as srv:
        cases: list[tuple[Message, str]] = [({"type": "say", "text": "x"}, "unknown_type"),
                              ({"type": "hello", "proto": 1, "name": "x"}, "unknown_type"),
                              ({"type": "status", "id": 5}, "bad_request"),
                              ({"type": "status", "id": ""}, "bad_request")]
        for request, code in cases:
            reply = srv.request(request)
            assert reply["type"] == "error" and reply["code"] == code, (request, reply)
            assert reply["fatal"] is False
        with srv.control() as ctl:
            ctl.send_raw(struct.pack(">I", 2**31))
            fatal_close(ctl, "frame_too_large")
        reply = srv.request({"type": "announce", "text": " " + "x" * 10 + " ", "id": "a"})
        assert reply == {"type": "ok", "ref": "a"}
        with srv.client() as client:
            client.send_raw(hello("late", since=0))
            client.expect("welcome")
            msg = client.expect("msg")
            assert msg["text"] == "x" * 10 and msg["from"] == "server" and "id" not in msg


def test_sigint_shuts_down_like_sigterm(tmp_path: Path) -> None:
    with running_server(tmp_path) as srv, srv.login("A") as client:
        client.barrier()
        srv.proc.send_signal(signal.SIGINT)
        assert client.wait_closed() == [{"type": "bye", "reason": "shutdown"}]
        assert srv.wait_exit(10) == 0
        assert not srv.control_path.exists()


def _when_allowed(client: TestClient, request: Message) -> Message:
    """Send ``request`` until it is not rate limited, waiting as told."""
    deadline = time.monotonic() + 5
    while True:
        client.send(request)
        reply = client.recv()
        if reply["type"] != "error" or reply["code"] != "rate_limited":
            return reply
        assert reply["ref"] == request["id"] and time.monotonic() < deadline
        assert client.poll(reply["retry_after_ms"] / 1000) is None


def test_a_failed_say_has_no_effect_on_its_id(tmp_path: Path) -> None:
    """§6: the offending request had no effect, so its id was never accepted."""
    with running_server(tmp_path, "--rate", "2", "--burst", "2") as srv, \
            srv.login("Retry") as client:
        client.send({"type": "say", "text": " ", "id": "a"})
        client.expect("error", code="empty_message", ref="a")
        client.send({"type": "say", "text": "now", "id": "a"})
        assert client.expect("msg", id="a")["text"] == "now"
        client.send({"type": "say", "text": "dropped", "id": "b"})
        client.expect("error", code="rate_limited", ref="b")
        reply = _when_allowed(client, {"type": "say", "text": "kept", "id": "b"})
        assert reply["type"] == "msg" and reply["text"] == "kept"
        history = _when_allowed(client, {"type": "history", "before": 2**53 - 1, "id": "h"})
        assert [(m["id"], m["text"]) for m in history["msgs"]] == [("a", "now"), ("b", "kept")]


def test_connections_still_in_the_handshake_get_bye_at_shutdown(tmp_path: Path) -> None:
    with running_server(tmp_path) as srv, srv.client() as idle, srv.client() as half:
        half.send_raw(hello("Half")[:6])
        deadline = time.monotonic() + 5
        while srv.request({"type": "status"})["clients"] < 2:
            assert time.monotonic() < deadline, "the server never accepted both"
        srv.proc.send_signal(signal.SIGTERM)
        assert idle.wait_closed() == [{"type": "bye", "reason": "shutdown"}]
        assert half.wait_closed() == [{"type": "bye", "reason": "shutdown"}]
        assert srv.wait_exit(10) == 0


MUTATIONS = b'{}[]":,\\ 0e-.\x00\xff\xc3tu'
SEEDS = [
    {"type": "say", "text": "hello", "id": "s"},
    {"type": "pm", "to": "nobody", "text": "x"},
    {"type": "history", "before": 5, "limit": 3},
    {"type": "ping", "t": [1, {"a": "b"}]},
    {"type": "who", "id": "w"},
    {"type": "hello", "proto": 1, "name": "x"},
]


def test_mutated_frames_get_replies_or_a_clean_fatal_error(server: ServerProcess) -> None:
    """Seeded byte mutations of valid payloads: each gets a reply, a non-fatal
    error, or a fatal error as the last frame; never a silent close or a hang,
    and the server keeps serving everyone else."""
    rng = random.Random(1)
    with fresh(server, "bystander") as bystander:
        for case in range(150):
            payload = bytearray(json.dumps(rng.choice(SEEDS)).encode())
            for _ in range(rng.randint(1, 3)):
                pos = rng.randrange(len(payload))
                payload[pos] = rng.choice(MUTATIONS + bytes([rng.randrange(256)]))
            with fresh(server, "fuzz") as client:
                client.send_raw(frame(bytes(payload)) + jframe({"type": "ping", "t": case}))
                frames: list[Message] = []
                while not frames or frames[-1] != {"type": "pong", "t": case}:
                    try:
                        frames.append(client.recv())
                    except ConnectionClosed:
                        assert frames and frames[-1]["type"] == "error", (payload, frames)
                        assert frames[-1]["fatal"] is True
                        break
                for message in frames:
                    if message["type"] == "error":
                        assert isinstance(message["code"], str)
                        assert isinstance(message["fatal"], bool)
        bystander.send({"type": "who", "id": "alive"})
        bystander.drain_until(lambda m: m["type"] == "users")


def test_name_is_free_right_after_a_fatal_error(server: ServerProcess) -> None:
    name = unique("Again")
    with server.login(name) as first:
        first.send_raw(frame(b"not json") + JUNK[:1000])
        fatal_close(first, "bad_frame")
        with server.login(name.upper()) as second:  # while the server may still drain
            assert second.welcome["name"] == name.upper()
