"""Contract §3 (session), §4 (requests) and §6/§7 (errors, liveness), black-box."""

from __future__ import annotations

import select
import socket
import struct
import time
from pathlib import Path

from tests.support import TestClient, running_server
from tests.test_contract_kit import Message, fatal_close, hello, jframe, nonfatal


def _say_all(client: TestClient, texts: list[str]) -> list[Message]:
    """Send says in one burst; their msgs (acknowledgements), in order."""
    client.send_raw(b"".join(jframe({"type": "say", "text": t}) for t in texts))
    frames = client.barrier()
    msgs = [m for m in frames if m["type"] == "msg"]
    assert [m["text"] for m in msgs] == texts, frames
    assert all("id" not in m for m in msgs)  # no id given, none carried
    return msgs


def test_backlog_since_and_history(tmp_path: Path) -> None:
    with running_server(tmp_path, "--backlog", "3", "--history", "5", "--rate", "0") as srv:
        with srv.login("seed") as seed:
            seed.barrier()
            msgs = _say_all(seed, [f"m{i}" for i in range(1, 9)])
            seqs = [m["seq"] for m in msgs]
            assert seqs == list(range(seqs[0], seqs[0] + 8))
            latest = seqs[-1]

        def backlog(**members: object) -> tuple[Message, list[Message]]:
            with srv.client() as client:
                client.send_raw(hello("reader", **members) + jframe({"type": "ping", "t": 0}))
                welcome = client.expect("welcome")
                frames = client.drain_until(lambda m: m["type"] == "pong")[:-1]
                assert all(m["type"] == "msg" for m in frames), frames
                assert all(m["seq"] <= welcome["seq"] for m in frames)
                client.send({"type": "bye"})
                client.wait_closed()
                return welcome, frames

        welcome, frames = backlog()
        assert welcome["seq"] == latest and welcome["oldest"] == latest - 4
        assert [m["seq"] for m in frames] == [latest - 2, latest - 1, latest]
        assert {"seq", "ts", "from", "text"} <= frames[0].keys()
        _, frames = backlog(since=0)
        assert [m["seq"] for m in frames] == list(range(latest - 4, latest + 1))
        _, frames = backlog(since=latest - 2)
        assert [m["seq"] for m in frames] == [latest - 1, latest]
        _, frames = backlog(since=latest)
        assert frames == []
        _, frames = backlog(since=latest + 100)
        assert frames == []
        _, frames = backlog(since=1)  # older than the oldest retained: all retained
        assert [m["seq"] for m in frames] == list(range(latest - 4, latest + 1))

        with srv.login("pager") as client:
            client.barrier()
            oldest = latest - 4

            def page(before: int, limit: int | None = None) -> list[int]:
                request: Message = {"type": "history", "before": before}
                if limit is not None:
                    request["limit"] = limit
                client.send(request)
                reply = client.expect("history", before=before)
                assert all("type" not in m for m in reply["msgs"])
                return [m["seq"] for m in reply["msgs"]]

            assert page(latest + 1) == list(range(oldest, latest + 1))
            assert page(latest + 1, 2) == [latest - 1, latest]
            assert page(latest, 2) == [latest - 2, latest - 1]
            assert page(oldest + 1, 200) == [oldest]
            assert page(oldest) == []
            assert page(1) == []
            assert page(2**53 - 1, 1) == [latest]
            # The idempotency check only sees retained messages (§7).
            client.send({"type": "say", "text": "late", "id": "late"})
            assert client.expect("msg", id="late")["seq"] == latest + 1


def test_join_to_others_and_leave_reasons(tmp_path: Path) -> None:
    with running_server(tmp_path, "--rate", "0") as srv, srv.login("watch") as watch:
        watch.barrier()

        def joined(name: str) -> TestClient:
            client = srv.login(name)
            frames = client.barrier()
            assert all(m["type"] != "join" for m in frames), frames
            join = watch.expect("join", name=name)
            assert isinstance(join["ts"], int)
            return client

        def left(name: str, reason: str) -> None:
            leave = watch.expect("leave", name=name, reason=reason)
            assert isinstance(leave["ts"], int)
            watch.send({"type": "who"})
            assert name not in watch.expect("users")["users"]

        quitter = joined("Quitter")
        quitter.send_raw(jframe({"type": "bye"}) + jframe({"type": "say", "text": "after"}))
        assert [m["type"] for m in quitter.wait_closed()] == ["bye"]
        left("Quitter", "quit")
        assert watch.barrier() == []  # the say after bye was never handled
        quitter.close()

        lost = joined("Lost")
        lost.send_raw(struct.pack(">I", 100) + b'{"type"')  # dies mid-frame
        lost.close()
        left("Lost", "lost")

        errant = joined("Errant")
        errant.send_raw(jframe([1]))
        fatal_close(errant, "bad_frame")
        left("Errant", "error")
        errant.close()

        with srv.login("QUITTER") as again:  # the name is free again at once
            assert again.welcome["name"] == "QUITTER"
        watch.expect("join", name="QUITTER")
        watch.expect("leave", name="QUITTER", reason="lost")
        assert watch.barrier() == []


def test_bye_then_half_close_keeps_the_last_frame(tmp_path: Path) -> None:
    """§3.5: the server half-closes and keeps reading, so a peer still sending
    does not turn the close into a reset that destroys the bye."""
    with running_server(tmp_path, "--rate", "0") as srv, srv.login("Chatty") as client:
        client.barrier()
        junk = jframe({"type": "ping", "t": "x" * 60000})
        client.send_raw(jframe({"type": "bye"}) + junk * 4)
        # Keep sending for a while after the server's FIN.
        deadline = time.monotonic() + 0.5
        saw_fin = False
        frames: list[Message] = []
        while time.monotonic() < deadline:
            try:
                client.send_raw(junk)
            except OSError:
                break
            if not saw_fin and _readable(client.sock):
                frames = client.wait_closed()
                saw_fin = True
        if not saw_fin:
            frames = client.wait_closed()
        assert [m["type"] for m in frames] == ["bye"] and frames[0]["reason"] == "quit"


def _readable(sock: socket.socket) -> bool:
    return bool(select.select([sock], [], [], 0)[0])


def test_takeover_with_token(tmp_path: Path) -> None:
    with running_server(tmp_path, "--rate", "0") as srv, srv.control() as watcher, \
            srv.login("Other") as other:
        watcher.send({"type": "watch"})
        watcher.expect("ok")
        other.barrier()
        old = srv.login("Alice")
        old.barrier()
        other.expect("join", name="Alice")
        token = old.welcome["token"]
        assert isinstance(token, str) and len(token) >= 22

        with srv.client() as wrong:
            wrong.send_raw(hello("alice", token=token + "x"))
            fatal_close(wrong, "name_taken")
        with srv.client() as thief:  # the token belongs to Alice, not Other
            thief.send_raw(hello("other", token=token))
            fatal_close(thief, "name_taken")

        new = srv.client()
        new.send_raw(hello("ALICE", token=token, id="t"))
        welcome = new.expect("welcome", ref="t")
        assert welcome["name"] == "Alice"
        assert welcome["token"] != token
        assert welcome["users"].count("Alice") == 1
        closing = old.wait_closed()
        assert closing[-1]["type"] == "bye" and closing[-1]["reason"] == "replaced", closing
        assert other.barrier() == []  # no leave, no join

        # The old token is spent; the new one works.
        with srv.client() as stale:
            stale.send_raw(hello("Alice", token=token))
            fatal_close(stale, "name_taken")
        new.send({"type": "say", "text": "still me", "id": "k"})
        assert new.drain_until(lambda m: m["type"] == "msg")[-1]["from"] == "Alice"
        assert other.expect("msg", id="k")["from"] == "Alice"
        new.close()
        other.expect("leave", name="Alice", reason="lost")
        watched = watcher.drain_until(lambda m: m["type"] == "leave")
        assert [(m["type"], m.get("name")) for m in watched] == [
            ("join", "Alice"), ("msg", None), ("leave", "Alice")]


def test_idempotent_say(tmp_path: Path) -> None:
    with running_server(tmp_path, "--rate", "0", "--max-text", "10") as srv, \
            srv.login("Sender") as sender, srv.login("Peer") as peer:
        sender.barrier()
        peer.barrier()
        sender.send({"type": "say", "text": " first ", "id": "dup"})
        original = sender.expect("msg", id="dup")
        assert peer.expect("msg") == original
        for text in ["different", "", "\x00", "x" * 50, "   "]:
            sender.send({"type": "say", "text": text, "id": "dup"})
            assert sender.expect("msg") == original
        # Another user may use the same id: a new message.
        peer.send({"type": "say", "text": "mine", "id": "dup"})
        mine = peer.expect("msg", id="dup")
        assert mine["from"] == "Peer"
        assert mine["seq"] == original["seq"] + 1
        assert sender.expect("msg") == mine
        assert peer.barrier() == []
        # After a reconnect, by name.
        sender.send({"type": "bye"})
        sender.wait_closed()
        peer.expect("leave", name="Sender")
        with srv.client() as again:
            again.send_raw(hello("SENDER", since=2**53 - 1)
                           + jframe({"type": "say", "text": "x", "id": "dup"}))
            again.expect("welcome")
            assert again.expect("msg") == original
        peer.expect("join")
        peer.expect("leave")
        assert peer.barrier() == []
        # A pm id is not a say id: pm is never deduplicated against says.
        peer.send({"type": "pm", "to": "Peer", "text": "p", "id": "dup"})
        assert peer.expect("pm")["id"] == "dup"


def test_pm_and_who(tmp_path: Path) -> None:
    with running_server(tmp_path, "--rate", "0") as srv, \
            srv.login("Ann") as ann, srv.login("bob") as bob:
        ann.barrier()
        bob.barrier()
        ann.send({"type": "pm", "to": "BOB", "text": " hi ", "id": "p"})
        sent = ann.expect("pm")
        got = bob.expect("pm")
        assert sent == got
        assert sent["from"] == "Ann" and sent["to"] == "bob" and sent["text"] == "hi"
        assert sent["id"] == "p" and isinstance(sent["ts"], int)
        assert "seq" not in sent
        ann.send({"type": "pm", "to": "ann", "text": "self"})
        to_self = ann.expect("pm")
        assert to_self["to"] == "Ann" and "id" not in to_self
        assert ann.barrier() == []  # once only
        assert bob.barrier() == []
        ann.send({"type": "pm", "to": "carol", "text": "x"})
        nonfatal(ann, "no_such_user")
        ann.send({"type": "who", "id": "w"})
        assert sorted(ann.expect("users", ref="w")["users"]) == ["Ann", "bob"]
        # A pm is not public: not in history, no seq used.
        ann.send({"type": "history", "before": 10})
        assert ann.expect("history")["msgs"] == []


def test_ping_barrier_orders_other_connections(tmp_path: Path) -> None:
    with running_server(tmp_path, "--rate", "0") as srv, \
            srv.login("Talker") as talker, srv.login("Listener") as listener:
        talker.barrier()
        listener.barrier()
        texts = [f"t{i}" for i in range(200)]
        talker.send_raw(b"".join(jframe({"type": "say", "text": t}) for t in texts)
                        + jframe({"type": "who", "id": "w"}) + jframe({"type": "ping", "t": 1}))
        frames = talker.drain_until(lambda m: m["type"] == "pong")
        assert [m["type"] for m in frames] == ["msg"] * 200 + ["users", "pong"]
        seqs = [m["seq"] for m in frames[:200]]
        assert seqs == list(range(seqs[0], seqs[0] + 200))
        # Every msg accepted before Listener's ping reaches it before the pong.
        got = [m for m in listener.barrier() if m["type"] == "msg"]
        assert [m["seq"] for m in got] == seqs


def test_handshake_timeout_with_a_partial_frame(tmp_path: Path) -> None:
    with running_server(tmp_path, "--handshake-timeout", "0.5") as srv, srv.client() as client:
        client.send_raw(hello("slow")[:3])
        fatal_close(client, "timeout")


def test_heartbeat_ping_then_timeout(tmp_path: Path) -> None:
    with running_server(tmp_path, "--heartbeat", "0.4") as srv, \
            srv.login("Idle") as idle, srv.login("Awake") as awake:
        ping = idle.drain_until(lambda m: m["type"] == "ping")[-1]
        assert "t" in ping
        awake.send({"type": "pong", "t": awake.expect("ping")["t"]})
        fatal_close(idle, "timeout")
        awake.drain_until(lambda m: m["type"] == "leave" and m["name"] == "Idle"
                          and m["reason"] == "timeout")


def test_rate_limit_drops_each_request_with_its_own_error(tmp_path: Path) -> None:
    with running_server(tmp_path, "--rate", "0.5", "--burst", "3") as srv, \
            srv.login("Peer") as peer, srv.client() as client:
        peer.send({"type": "ping", "t": 0})
        peer.expect("pong")
        client.send_raw(hello("Fast", since=2**53 - 1)
                        + b"".join(jframe({"type": "pong", "t": i}) for i in range(5))
                        + b"".join(jframe({"type": "say", "text": f"s{i}", "id": f"s{i}"})
                                   for i in range(6))
                        + jframe({"type": "pong", "t": 9}) + jframe({"type": "bye"}))
        client.expect("welcome")
        frames = client.wait_closed()
        assert [m["type"] for m in frames[:3]] == ["msg"] * 3
        errors = frames[3:6]
        assert [e.get("ref") for e in errors] == ["s3", "s4", "s5"], frames
        for error in errors:
            assert error["code"] == "rate_limited" and error["fatal"] is False
            assert isinstance(error["retry_after_ms"], int) and error["retry_after_ms"] > 0
        assert frames[6:] == [{"type": "bye", "reason": "quit"}]
        got = [m["text"] for m in peer.drain_until(lambda m: m["type"] == "leave")
               if m["type"] == "msg"]
        assert got == ["s0", "s1", "s2"]


def test_server_full_and_the_slot_freed(tmp_path: Path) -> None:
    with running_server(tmp_path, "--max-clients", "2") as srv, \
            srv.login("One"), srv.login("Two") as two:
        with srv.client() as third:
            third.send_raw(hello("Three"))
            fatal_close(third, "server_full")
        with srv.client() as taken:  # name_taken comes before server_full
            taken.send_raw(hello("one"))
            fatal_close(taken, "name_taken")
        two.send({"type": "bye"})
        two.wait_closed()
        with srv.login("Three") as three:
            assert sorted(three.welcome["users"]) == ["One", "Three"]


def test_requests_before_a_close_are_handled_then_leave_lost(tmp_path: Path) -> None:
    """Bytes that arrived before the FIN are requests like any other."""
    with running_server(tmp_path, "--rate", "0") as srv, srv.login("W") as watch:
        watch.barrier()
        gone = srv.client()
        gone.send_raw(hello("A") + jframe({"type": "say", "text": "last words"}))
        gone.close()
        seen = watch.drain_until(lambda m: m["type"] == "leave")
        assert [(m["type"], m.get("text"), m.get("reason")) for m in seen] == [
            ("join", None, None), ("msg", "last words", None), ("leave", None, "lost")]
        with srv.client() as half:
            half.send_raw(hello("B", since=2**53 - 1) + jframe({"type": "say", "text": "half"})
                          + jframe({"type": "who", "id": "w"}))
            half.sock.shutdown(socket.SHUT_WR)
            frames = half.wait_closed()
            assert [m["type"] for m in frames] == ["welcome", "msg", "users"]
        seen = watch.drain_until(lambda m: m["type"] == "leave")
        assert [m["type"] for m in seen] == ["join", "msg", "leave"]
        assert seen[-1]["reason"] == "lost"
