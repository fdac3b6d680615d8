"""Contract §3.3/§3.6 (backlog versus live traffic, one global order) and the
finer points of §4 (idempotent say, takeover), under real concurrency."""

from __future__ import annotations

import time
from pathlib import Path

from tests.support import running_server
from tests.test_contract_kit import Message, fatal_close, hello, jframe, nonfatal


def test_logins_during_a_stream_see_every_seq_exactly_once(tmp_path: Path) -> None:
    """A client logging in with since=0 while messages flow gets each seq once:
    the older ones in its backlog (seq <= welcome.seq), the rest live."""
    with running_server(tmp_path, "--rate", "0") as srv, srv.login("Talker") as talker:
        talker.barrier()
        readers = []
        burst = b"".join(jframe({"type": "say", "text": f"m{i}"}) for i in range(40))
        for n in range(8):
            talker.send_raw(burst)
            reader = srv.client()
            reader.send_raw(hello(f"R{n}", since=0))
            readers.append(reader)
        talker.send_raw(burst + jframe({"type": "ping", "t": "end"}))
        last = [m for m in talker.drain_until(lambda m: m["type"] == "pong", 10)
                if m["type"] == "msg"][-1]["seq"]
        for reader in readers:
            welcome = reader.expect("welcome")
            frames = reader.barrier(timeout=10)
            msgs = [m for m in frames if m["type"] == "msg"]
            seqs = [m["seq"] for m in msgs]
            assert seqs == list(range(1, last + 1)), (welcome["seq"], seqs)
            # The backlog (every seq up to welcome.seq) comes first, whole.
            backlog = sum(1 for m in msgs if m["seq"] <= welcome["seq"])
            assert backlog == welcome["seq"]
            assert frames[:backlog] == msgs[:backlog]
            reader.close()


def test_same_id_twice_in_one_burst_is_one_message(tmp_path: Path) -> None:
    with running_server(tmp_path, "--rate", "0") as srv, \
            srv.login("Sender") as sender, srv.login("Peer") as peer:
        sender.barrier()
        peer.barrier()
        sender.send_raw(jframe({"type": "say", "text": "a", "id": "same"})
                        + jframe({"type": "say", "text": "b", "id": "same"})
                        + jframe({"type": "say", "text": "c", "id": "other"}))
        first = sender.expect("msg", id="same", text="a")
        assert sender.expect("msg") == first
        assert sender.expect("msg", id="other")["seq"] == first["seq"] + 1
        got = [m for m in peer.barrier() if m["type"] == "msg"]
        assert [m["text"] for m in got] == ["a", "c"]


def test_id_of_a_message_no_longer_retained_makes_a_new_one(tmp_path: Path) -> None:
    with running_server(tmp_path, "--rate", "0", "--history", "2") as srv, \
            srv.login("Sender") as sender:
        sender.send({"type": "say", "text": "old", "id": "again"})
        old = sender.drain_until(lambda m: m["type"] == "msg")[-1]
        for i in range(2):
            sender.send({"type": "say", "text": f"filler{i}"})
            sender.expect("msg")
        sender.send({"type": "say", "text": "new", "id": "again"})
        new = sender.expect("msg", id="again", text="new")
        assert new["seq"] == old["seq"] + 3


def test_history_default_limit_is_50(tmp_path: Path) -> None:
    with running_server(tmp_path, "--rate", "0") as srv, srv.login("Many") as client:
        client.send_raw(b"".join(jframe({"type": "say", "text": str(i)}) for i in range(60)))
        client.barrier()
        client.send({"type": "history", "before": 61})
        seqs = [m["seq"] for m in client.expect("history", before=61)["msgs"]]
        assert seqs == list(range(11, 61))


def test_token_for_a_name_not_online_is_an_ordinary_login(tmp_path: Path) -> None:
    with running_server(tmp_path) as srv:
        with srv.login("Ghost") as first:
            token = first.welcome["token"]
            first.send({"type": "bye"})
            first.wait_closed()
        with srv.client() as again:
            again.send_raw(hello("ghost", token=token))
            welcome = again.expect("welcome", name="ghost")
            assert welcome["token"] != token


def test_takeover_new_session_gets_its_backlog_and_live_traffic(tmp_path: Path) -> None:
    with running_server(tmp_path, "--rate", "0") as srv, srv.login("Other") as other:
        other.barrier()
        old = srv.login("Me")
        other.expect("join", name="Me")
        old.send({"type": "say", "text": "before", "id": "b"})
        before = old.drain_until(lambda m: m["type"] == "msg")[-1]
        new = srv.client()
        new.send_raw(hello("Me", token=old.welcome["token"], since=before["seq"] - 1))
        new.expect("welcome", name="Me")
        assert new.expect("msg") == before
        other.send({"type": "say", "text": "live"})
        assert new.drain_until(lambda m: m["type"] == "msg")[-1]["text"] == "live"
        closing = old.wait_closed()
        assert closing[-1]["type"] == "bye" and closing[-1]["reason"] == "replaced"
        assert all(m.get("text") != "live" for m in closing)
        # The same id from the new connection is the same user's: no duplicate.
        new.send({"type": "say", "text": "x", "id": "b"})
        assert new.expect("msg") == before
        assert [m for m in other.barrier() if m["type"] != "msg"] == []
        new.close()
        old.close()


def test_failed_login_tells_nobody(tmp_path: Path) -> None:
    with running_server(tmp_path) as srv, srv.login("Watch") as watch:
        watch.barrier()
        for message in [hello("bad name"), jframe({"type": "ping"}), jframe([1])]:
            with srv.client() as client:
                client.send_raw(message)
                client.wait_closed()
        with srv.client() as client:
            client.send_raw(hello("Late")[:5])
        assert watch.barrier() == []


def test_pm_to_names_not_online(tmp_path: Path) -> None:
    with running_server(tmp_path) as srv, srv.login("Zo\u00eb") as zoe:
        zoe.barrier()
        for to in ["", "server", "SERVER", "a b", "x" * 40, "nobody"]:
            zoe.send({"type": "pm", "to": to, "text": "hi", "id": "p"})
            nonfatal(zoe, "no_such_user", ref="p")
        zoe.send({"type": "pm", "to": "ZOE\u0308", "text": "decomposed"})  # NFD, other case
        assert zoe.expect("pm")["to"] == "Zo\u00eb"


def test_fatal_error_comes_after_the_output_queued_before_it(tmp_path: Path) -> None:
    with running_server(tmp_path, "--rate", "0") as srv, \
            srv.login("Doomed") as doomed, srv.login("Peer") as peer:
        doomed.barrier()
        peer.barrier()
        doomed.send_raw(b"".join(jframe({"type": "say", "text": str(i)}) for i in range(30))
                        + jframe({"type": "ping", "t": 1}) + b"\x00\x00\x00\x00"
                        + jframe({"type": "say", "text": "never"}))
        frames = doomed.wait_closed()
        assert [m["type"] for m in frames] == ["msg"] * 30 + ["pong", "error"]
        assert frames[-1]["code"] == "frame_too_large" and frames[-1]["fatal"] is True
        got = peer.drain_until(lambda m: m["type"] == "leave")
        assert [m["text"] for m in got[:-1]] == [str(i) for i in range(30)]
        assert got[-1]["reason"] == "error"
        assert peer.barrier() == []  # nothing after the fatal frame was handled


def test_max_outbuf_cuts_a_reader_that_stops(tmp_path: Path) -> None:
    with running_server(tmp_path, "--rate", "0", "--max-outbuf", "200000") as srv, \
            srv.login("Sleepy") as sleepy, srv.login("Loud") as loud:
        sleepy.barrier()
        loud.barrier()
        text = "y" * 3000
        deadline = time.monotonic() + 8
        left: Message | None = None
        while left is None and time.monotonic() < deadline:
            loud.send_raw(b"".join(jframe({"type": "say", "text": text}) for _ in range(20)))
            for frame_ in loud.barrier():
                if frame_["type"] == "leave":
                    left = frame_
        assert left is not None and left["name"] == "Sleepy"
        assert left["reason"] == "slow_consumer"
        frames = sleepy.wait_closed(10)
        if frames[-1]["type"] == "error":
            assert frames[-1]["code"] == "slow_consumer" and frames[-1]["fatal"] is True
        # The loud one is unharmed.
        loud.send({"type": "who"})
        assert loud.drain_until(lambda m: m["type"] == "users")[-1]["users"] == ["Loud"]


def test_not_logged_in_is_fatal_even_for_a_valid_hello_after_it(tmp_path: Path) -> None:
    with running_server(tmp_path) as srv, srv.client() as client:
        client.send_raw(jframe({"type": "who", "id": "w"}))
        error = fatal_close(client, "not_logged_in")
        assert error.get("ref") == "w"


def test_big_history_replies_and_backlogs_keep_their_place_in_the_stream(
        tmp_path: Path) -> None:
    """A reply larger than max_outbuf (so a server may stream it) still sits at
    its place in the one global order: every msg accepted before the request
    arrives before the reply, every later one after it."""
    with running_server(tmp_path, "--rate", "0", "--max-outbuf", "400000",
                        "--backlog", "200") as srv, \
            srv.login("Talker") as talker, srv.login("Reader") as reader, \
            srv.client() as late:
        reader.barrier()
        say = jframe({"type": "say", "text": "z" * 3900})
        for _ in range(4):
            talker.send_raw(say * 50)
            talker.barrier(timeout=10)
        frames = reader.barrier(timeout=10)
        late_frames: list[Message] = []
        for round_ in range(4):
            talker.send_raw(say * 30)
            reader.send({"type": "history", "before": 2**53 - 1, "limit": 200})
            if round_ == 1:
                late.send_raw(hello("Late", since=0))
            talker.send_raw(say * 30)
            talker.barrier(timeout=10)
            frames += reader.barrier(timeout=10)
            if round_ >= 1:
                late_frames += late.barrier(timeout=10)
        last_seen = 0
        replies = 0
        for message in frames:
            if message["type"] == "msg":
                assert last_seen in (0, message["seq"] - 1), message["seq"]
                last_seen = message["seq"]
            elif message["type"] == "history":
                replies += 1
                assert len(message["msgs"]) == 200
                assert message["msgs"][-1]["seq"] == last_seen
        assert replies == 4
        welcome = late_frames[0]
        assert welcome["type"] == "welcome"
        msgs = [m for m in late_frames if m["type"] == "msg"]
        assert [m["seq"] for m in msgs] == list(range(1, last_seen + 1))
        assert late_frames[1:welcome["seq"] + 1] == msgs[:welcome["seq"]]
