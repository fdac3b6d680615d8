"""The chat port against a real server: login, presence, messages, history."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from protocol import encode
from tests.support import ServerProcess, running_server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    with running_server(tmp_path, "--backlog", "3") as srv:
        yield srv


def test_welcome_members(server: ServerProcess) -> None:
    with server.client() as client:
        welcome = client.login("Alice", id="w1", agent="test")
    assert welcome["proto"] == 1
    assert welcome["name"] == "Alice"
    assert welcome["server"].startswith("chatd/")
    assert welcome["seq"] == 0 and welcome["oldest"] == 0
    assert welcome["users"] == ["Alice"]
    assert welcome["max_frame"] == 65536 and welcome["max_text"] == 4000
    assert welcome["heartbeat"] == 30
    assert welcome["ref"] == "w1"
    assert isinstance(welcome["token"], str) and len(welcome["token"]) >= 22


def test_name_is_normalised_and_kept_as_typed(server: ServerProcess) -> None:
    with server.client() as client:
        welcome = client.login("Ame\u0301lie")  # decomposed: NFC composes it
    assert welcome["name"] == "Am\u00e9lie"


def test_join_leave_and_user_lists(server: ServerProcess) -> None:
    with server.login("alice") as alice:
        bob = server.login("Bob")
        assert bob.welcome["users"] == ["alice", "Bob"]
        assert alice.expect("join", name="Bob")["ts"] > 0
        alice.send({"type": "who", "id": "q"})
        assert alice.expect("users", ref="q")["users"] == ["alice", "Bob"]
        bob.send({"type": "bye"})
        assert bob.wait_closed()[-1] == {"type": "bye", "reason": "quit"}
        assert alice.expect("leave", name="Bob")["reason"] == "quit"
        alice.send({"type": "who"})
        assert alice.expect("users")["users"] == ["alice"]


def test_lost_connection_gives_leave_lost(server: ServerProcess) -> None:
    with server.login("alice") as alice:
        bob = server.login("bob")
        alice.expect("join")
        bob.send_raw(b"\x00\x00\x00\x20{\"type\":")  # vanish mid-frame
        bob.close()
        assert alice.expect("leave", name="bob")["reason"] == "lost"


def test_say_reaches_everyone_with_id_and_stripped_text(server: ServerProcess) -> None:
    with server.login("alice") as alice, server.login("bob") as bob:
        alice.expect("join")
        alice.send({"type": "say", "text": "  hello\tworld \n", "id": "m1"})
        for client in (alice, bob):
            msg = client.expect("msg")
            assert msg["seq"] == 1 and msg["from"] == "alice"
            assert msg["text"] == "hello\tworld" and msg["id"] == "m1"
        bob.send({"type": "say", "text": "no id"})
        assert "id" not in alice.expect("msg", seq=2)


def test_idempotent_say_resends_the_original_to_the_sender_only(server: ServerProcess) -> None:
    with server.login("alice") as alice, server.login("bob") as bob:
        alice.expect("join")
        alice.send({"type": "say", "text": "once", "id": "x"})
        original = alice.expect("msg")
        bob.expect("msg", seq=1)
        # Same id: no new message, even with a text that breaks the rules.
        alice.send({"type": "say", "text": "", "id": "x"})
        assert alice.recv() == original
        # The same id from another user is another message.
        bob.send({"type": "say", "text": "mine", "id": "x"})
        assert bob.expect("msg")["seq"] == 2
        assert bob.barrier() == []
        assert alice.expect("msg")["seq"] == 2


def test_idempotent_say_matches_the_user_by_name_across_connections(
    server: ServerProcess,
) -> None:
    with server.login("alice") as alice:
        alice.send({"type": "say", "text": "one", "id": "k"})
        alice.expect("msg", seq=1)
        alice.send({"type": "bye"})
        alice.wait_closed()
    with server.login("ALICE") as again:
        again.drain_until(lambda m: m["type"] == "msg")  # backlog
        again.send({"type": "say", "text": "one", "id": "k"})
        assert again.expect("msg")["seq"] == 1
        again.send({"type": "say", "text": "two", "id": "k2"})
        assert again.expect("msg")["seq"] == 2


def test_pm_to_other_and_to_self(server: ServerProcess) -> None:
    with server.login("alice") as alice, server.login("Bob") as bob, \
            server.login("carol") as carol:
        alice.send({"type": "pm", "to": "BOB", "text": " psst ", "id": "p"})
        for client in (alice, bob):
            pm = client.drain_until(lambda m: m["type"] == "pm")[-1]
            assert pm["from"] == "alice" and pm["to"] == "Bob"
            assert pm["text"] == "psst" and pm["id"] == "p"
        assert all(m["type"] != "pm" for m in carol.barrier())
        alice.send({"type": "pm", "to": "alice", "text": "note to self"})
        assert alice.expect("pm")["to"] == "alice"
        assert alice.barrier() == []  # once, not twice
        alice.send({"type": "pm", "to": "nobody", "text": "x", "id": "n"})
        error = alice.expect("error", code="no_such_user", ref="n")
        assert error["fatal"] is False


def test_backlog_and_since(server: ServerProcess) -> None:
    with server.login("alice") as alice:
        for i in range(5):
            alice.send({"type": "say", "text": f"m{i}"})
        for i in range(5):
            alice.expect("msg", seq=i + 1)
    with server.client() as late:
        welcome = late.login("late")
        assert welcome["seq"] == 5 and welcome["oldest"] == 1
        backlog = [late.expect("msg")["seq"] for _ in range(3)]
        assert backlog == [3, 4, 5]  # --backlog 3
        assert late.barrier() == []
    with server.client() as resumer:
        resumer.login("resumer", since=1)
        assert [resumer.expect("msg")["seq"] for _ in range(4)] == [2, 3, 4, 5]
        assert resumer.barrier() == []
    with server.client() as current:
        current.login("current", since=5)
        assert current.barrier() == []


def test_history_pages_backwards(server: ServerProcess) -> None:
    with server.login("alice") as alice:
        for i in range(7):
            alice.send({"type": "say", "text": f"m{i}"})
        alice.drain_until(lambda m: m.get("seq") == 7)
        alice.send({"type": "history", "before": 8, "limit": 3, "id": "h"})
        page = alice.expect("history", ref="h", before=8)
        assert [m["seq"] for m in page["msgs"]] == [5, 6, 7]
        assert page["msgs"][0] == {"seq": 5, "ts": page["msgs"][0]["ts"], "from": "alice",
                                   "text": "m4"}
        alice.send({"type": "history", "before": 5})
        assert [m["seq"] for m in alice.expect("history")["msgs"]] == [1, 2, 3, 4]
        alice.send({"type": "history", "before": 1})
        assert alice.expect("history")["msgs"] == []
        for bad in ({"before": 0}, {"before": 5, "limit": 0}, {"before": 5, "limit": 201},
                    {"before": "5"}, {}):
            alice.send({"type": "history", "id": "b", **bad})
            alice.expect("error", code="bad_request", ref="b", fatal=False)


def test_ping_pong_echoes_t(server: ServerProcess) -> None:
    with server.login("alice") as alice:
        alice.send({"type": "ping", "t": {"any": [1, "json"]}, "id": "p"})
        assert alice.expect("pong") == {"type": "pong", "t": {"any": [1, "json"]}, "ref": "p"}
        alice.send({"type": "ping"})
        assert alice.expect("pong") == {"type": "pong"}
        alice.send({"type": "pong", "t": 1})  # an unsolicited pong is harmless
        assert alice.barrier() == []


def test_takeover_with_token(server: ServerProcess) -> None:
    with server.login("alice") as alice, server.login("bob") as bob:
        alice.expect("join")
        token = alice.welcome["token"]
        with server.client() as thief:
            thief.send({"type": "hello", "proto": 1, "name": "ALICE", "token": "wrong"})
            thief.expect("error", code="name_taken", fatal=True)
        with server.client() as again:
            welcome = again.login("ALICE", token=token)
            assert welcome["name"] == "alice"  # kept as first registered
            assert welcome["token"] != token
            assert welcome["users"] == ["bob", "alice"] or welcome["users"] == ["alice", "bob"]
            assert alice.wait_closed()[-1] == {"type": "bye", "reason": "replaced"}
            bob.send({"type": "say", "text": "still there?"})
            assert again.expect("msg")["text"] == "still there?"
            assert all(m["type"] not in ("join", "leave") for m in bob.barrier())
            bob.send({"type": "who"})
            assert sorted(bob.expect("users")["users"]) == ["alice", "bob"]


def test_name_collision_by_casefold(server: ServerProcess) -> None:
    with server.login("Straße"), server.client() as other:
        other.send({"type": "hello", "proto": 1, "name": "STRASSE", "id": "h"})
        error = other.expect("error", code="name_taken", ref="h")
        assert error["fatal"] is True
        other.wait_closed()


def test_name_is_free_once_closed(server: ServerProcess) -> None:
    with server.login("alice") as alice:
        watcher = server.login("watcher")
        alice.send({"type": "bye"})
        alice.wait_closed()
    watcher.expect("leave", name="alice")
    with server.login("alice") as again:
        assert again.welcome["name"] == "alice"
    watcher.close()


def test_frames_split_and_merged(server: ServerProcess) -> None:
    from protocol import encode

    with server.client() as client:
        data = encode({"type": "hello", "proto": 1, "name": "split"}) + b"".join(
            encode({"type": "say", "text": f"t{i}"}) for i in range(20))
        for i in range(0, len(data), 7):
            client.send_raw(data[i:i + 7])
        client.expect("welcome")
        seqs = [client.expect("msg")["seq"] for _ in range(20)]
        assert seqs == list(range(1, 21))


def test_fan_out_order_is_the_same_for_everyone(server: ServerProcess) -> None:
    clients = [server.login(f"u{i}") for i in range(6)]
    try:
        for client in clients:
            client.barrier()  # joins
        for round_ in range(20):
            for i, client in enumerate(clients):
                client.send({"type": "say", "text": f"{i}:{round_}"})
        logs = []
        for client in clients:
            msgs = client.drain_until(lambda m: m.get("seq") == 120, timeout=10)
            logs.append([(m["seq"], m["text"]) for m in msgs if m["type"] == "msg"])
        assert [seq for seq, _ in logs[0]] == list(range(1, 121))
        assert all(log == logs[0] for log in logs)
    finally:
        for client in clients:
            client.close()


def test_reply_never_overtakes_an_earlier_msg(server: ServerProcess) -> None:
    with server.login("alice") as alice, server.login("bob") as bob:
        alice.expect("join")
        for i in range(30):
            alice.send({"type": "say", "text": f"{i}"})
        alice.barrier()  # all 30 accepted before bob's ping is sent
        bob.send({"type": "ping", "t": "after"})
        seen = bob.drain_until(lambda m: m["type"] == "pong")
        assert [m["seq"] for m in seen if m["type"] == "msg"] == list(range(1, 31))


def test_server_has_one_thread_under_load(server: ServerProcess) -> None:
    clients = [server.login(f"load{i}") for i in range(10)]
    try:
        for i in range(50):
            clients[i % 10].send({"type": "say", "text": "x" * 64})
        assert server.threads() == 1
        for client in clients:
            client.drain_until(lambda m: m.get("seq") == 50, timeout=10)
        assert server.threads() == 1
    finally:
        for client in clients:
            client.close()


def test_a_long_resume_comes_whole_and_before_live_traffic(tmp_path: Path) -> None:
    with running_server(tmp_path, "--rate", "0", "--max-outbuf", "200000") as srv, \
            srv.login("writer") as writer:
        for i in range(2000):
            writer.send({"type": "say", "text": f"{i:04d} " + "r" * 1000})
        writer.drain_until(lambda m: m.get("seq") == 2000, timeout=20)
        resumer = srv.login("resumer", since=0)  # ~2 MB of backlog, 10x max_outbuf
        for i in range(5):
            writer.send({"type": "say", "text": f"live {i}"})
        writer.drain_until(lambda m: m.get("seq") == 2005, timeout=10)
        frames = resumer.drain_until(lambda m: m.get("seq") == 2005, timeout=20)
        seqs = [m["seq"] for m in frames if m["type"] == "msg"]
        assert seqs == list(range(1, 2006))
        assert resumer.welcome["seq"] == 2000
        resumer.close()


def test_a_half_closed_client_still_gets_everything_before_bye(tmp_path: Path) -> None:
    """Requests, ``bye``, then SHUT_WR without reading: the server's reply
    outgrows the socket buffers, and the client's FIN must not make the server
    drop what is still queued (contract §6: queued output, then the last frame)."""
    with running_server(tmp_path, "--rate", "0", "--max-outbuf", str(64 << 20)) as srv, \
            srv.login("halfway") as client:
        pad = "x" * 60_000
        count = 200  # 12 MB of pongs: more than loopback buffers hold
        client.sock.sendall(b"".join(encode({"type": "ping", "t": [i, pad]})
                                     for i in range(count)) + encode({"type": "bye"}))
        client.sock.shutdown(socket.SHUT_WR)
        frames = client.wait_closed(timeout=30)
        assert [f["t"][0] for f in frames if f["type"] == "pong"] == list(range(count))
        assert frames[-1] == {"type": "bye", "reason": "quit"}


def test_a_half_closed_session_still_gets_its_replies(tmp_path: Path) -> None:
    """Requests, then SHUT_WR without ``bye``: the session ends (``lost``),
    but the replies already queued still reach the peer, which can read."""
    with running_server(tmp_path, "--rate", "0", "--max-outbuf", str(64 << 20)) as srv, \
            srv.control() as watcher, srv.login("leaving") as client:
        watcher.send({"type": "watch"})
        watcher.expect("ok")
        pad = "x" * 60_000
        count = 200
        client.sock.sendall(b"".join(encode({"type": "ping", "t": [i, pad]})
                                     for i in range(count)))
        client.sock.shutdown(socket.SHUT_WR)
        frames = client.wait_closed(timeout=30)
        assert [f["t"][0] for f in frames if f["type"] == "pong"] == list(range(count))
        leave = watcher.expect("leave", timeout=10)
        assert leave["name"] == "leaving" and leave["reason"] == "lost"
