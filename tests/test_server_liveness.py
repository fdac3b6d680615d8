"""Timeouts, heartbeat, slow consumers and lost peers (contract §3, §6, §7)."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chatd.control_client import connect_unix
from protocol import encode
from tests.support import ConnectionClosed, TestClient, running_server


def test_handshake_timeout(tmp_path: Path) -> None:
    with running_server(tmp_path, "--handshake-timeout", "0.5") as srv:
        with srv.client() as silent, srv.client() as partial:
            partial.send_raw(b"\x00\x00\x00\x30{\"type\":\"hel")
            for client in (silent, partial):
                frames = client.wait_closed(timeout=5)
                assert frames[-1]["code"] == "timeout" and frames[-1]["fatal"] is True
        with srv.client() as quick:  # a prompt hello is unaffected
            quick.login("quick")
            assert quick.barrier() == []


def test_heartbeat_ping_then_timeout(tmp_path: Path) -> None:
    with running_server(tmp_path, "--heartbeat", "0.5") as srv, \
            srv.control() as watcher, srv.login("sleepy") as sleepy:
        watcher.send({"type": "watch"})  # a watcher needs no heartbeat
        watcher.expect("ok")
        assert sleepy.welcome["heartbeat"] == 0.5
        started = time.monotonic()
        ping = sleepy.expect("ping", timeout=5)
        assert "t" in ping
        frames = sleepy.wait_closed(timeout=5)
        assert frames[-1]["code"] == "timeout" and frames[-1]["fatal"] is True
        assert time.monotonic() - started >= 0.5  # not before one heartbeat
        leave = watcher.expect("leave", timeout=5)
        assert leave["name"] == "sleepy" and leave["reason"] == "timeout"


def test_answering_pings_keeps_the_session(tmp_path: Path) -> None:
    with running_server(tmp_path, "--heartbeat", "0.6") as srv, srv.login("awake") as awake:
        for _ in range(4):
            ping = awake.expect("ping", timeout=5)
            awake.send({"type": "pong", "t": ping["t"]})
        assert awake.barrier() == []


def test_any_frame_counts_as_alive(tmp_path: Path) -> None:
    with running_server(tmp_path, "--heartbeat", "1") as srv, srv.login("chatty") as chatty:
        seen = []
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            chatty.send({"type": "who"})
            seen.extend(chatty.drain_until(lambda m: m["type"] == "users"))
            frame = chatty.poll(0.1)
            if frame is not None:
                seen.append(frame)
        assert [m["type"] for m in seen if m["type"] != "users"] == []  # never a ping


def _seq_is(seq: int) -> Callable[[dict[str, Any]], bool]:
    return lambda message: message.get("seq") == seq


def _slow_client(host: str, port: int) -> TestClient:
    """A client with a tiny receive buffer that does not read."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    sock.connect((host, port))
    return TestClient(sock)


def test_slow_consumer_is_cut_off_and_others_carry_on(tmp_path: Path) -> None:
    with running_server(tmp_path, "--max-outbuf", "50000", "--rate", "0") as srv, \
            srv.login("fast", since=0) as fast, _slow_client(srv.host, srv.port) as slow:
        slow.login("slow")
        fast.expect("join", name="slow")
        text = "y" * 3000
        sent = 0
        leave = None
        deadline = time.monotonic() + 20
        while leave is None and time.monotonic() < deadline:
            for _ in range(20):
                fast.send({"type": "say", "text": text})
            sent += 20
            frames = fast.drain_until(_seq_is(sent), timeout=10)
            leave = next((m for m in frames if m["type"] == "leave"), None)
        assert leave is not None, "the slow consumer was never cut off"
        assert leave["name"] == "slow" and leave["reason"] == "slow_consumer"
        frames = slow.wait_closed(timeout=10)
        errors = [m for m in frames if m["type"] == "error"]
        # Either the error made it as the last frame, or (a frame was partly
        # out) the connection was just closed.
        assert not errors or (frames[-1]["code"] == "slow_consumer"
                              and frames[-1]["fatal"] is True)
        fast.send({"type": "who"})
        assert fast.drain_until(lambda m: m["type"] == "users")[-1]["users"] == ["fast"]


def test_vanishing_mid_frame_gives_leave_lost(tmp_path: Path) -> None:
    with running_server(tmp_path) as srv, srv.login("alice") as alice:
        for cut in (2, 7):
            name = f"gone{cut}"
            client = srv.login(name)
            alice.expect("join", name=name)
            data = b"\x00\x00\x00\x40" + b'{"type":"say","text":"never finished"}'
            client.send_raw(data[:cut])
            client.sock.shutdown(socket.SHUT_WR)
            with contextlib.suppress(ConnectionClosed):
                client.wait_closed()
            client.close()
            leave = alice.drain_until(lambda m: m["type"] == "leave")[-1]
            assert leave == {"type": "leave", "name": name, "ts": leave["ts"],
                             "reason": "lost"}


def test_many_connections_and_threads(tmp_path: Path) -> None:
    with running_server(tmp_path, "--rate", "0") as srv:
        clients = [srv.login(f"c{i}") for i in range(40)]
        try:
            for i, client in enumerate(clients):
                client.send({"type": "say", "text": f"from {i}"})
            assert srv.threads() == 1
            for client in clients:
                seen = client.drain_until(lambda m: m.get("seq") == 40, timeout=10)
                seqs = [m["seq"] for m in seen if m["type"] == "msg"]
                assert seqs == sorted(seqs) and seqs[-1] == 40
        finally:
            for client in clients:
                client.close()


def test_out_of_file_descriptors_backs_off_without_spinning(tmp_path: Path) -> None:
    with running_server(tmp_path, max_fds=48) as srv:
        first = srv.login("first")
        extra: list[TestClient] = []
        try:
            for _ in range(60):  # more than the server can hold
                extra.append(srv.client())
            # The server keeps serving the sessions it has.
            first.send({"type": "say", "text": "still here"})
            assert first.expect("msg")["text"] == "still here"
            before = srv.cpu_seconds()
            assert first.poll(1.0) is None  # a second of being out of descriptors
            assert srv.cpu_seconds() - before < 0.5  # backing off, not spinning
            assert "cannot accept" in srv.stderr_text()
            for client in extra[:30]:
                client.close()
            # The queued connections are accepted once descriptors are free.
            with extra[-1] as late:
                late.login("late", since=10**9)
                assert late.barrier() == []
        finally:
            first.close()
            for client in extra:
                client.close()


def test_refused_before_hello_when_handshakes_exceed_max_clients(tmp_path: Path) -> None:
    with running_server(tmp_path, "--max-clients", "2") as srv:
        waiting = [srv.client() for _ in range(2)]
        try:
            for client in waiting:  # make sure the server accepted them
                client.send_raw(b"\x00")
            with srv.client() as third:
                frames = third.wait_closed()
                assert frames[-1]["code"] == "server_full" and frames[-1]["fatal"] is True
        finally:
            for client in waiting:
                client.close()


def test_a_watcher_that_stops_reading_is_cut_off(tmp_path: Path) -> None:
    with running_server(tmp_path, "--max-outbuf", "50000", "--rate", "0") as srv:
        watcher = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        watcher.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        watcher.settimeout(5)
        connect_unix(watcher, srv.control_path)
        deaf = TestClient(watcher)
        deaf.send({"type": "watch"})
        deaf.expect("ok")
        with srv.login("loud", since=10**9) as loud:
            sent = 0
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                for _ in range(20):
                    loud.send({"type": "say", "text": "w" * 3000})
                sent += 20
                loud.drain_until(_seq_is(sent), timeout=10)
                if srv.request({"type": "status"})["watchers"] == 0:
                    break
            assert srv.request({"type": "status"})["watchers"] == 0
        frames = deaf.wait_closed(timeout=10)
        assert not frames or frames[-1]["type"] == "msg" or (
            frames[-1]["code"] == "slow_consumer")
        deaf.close()


def test_requests_wait_while_their_replies_are_unread(tmp_path: Path) -> None:
    """History replies do not count toward max_outbuf, but a client that asks
    without reading is not served faster than it reads (memory stays bounded)."""
    with running_server(tmp_path, "--max-outbuf", "100000", "--rate", "0") as srv:
        with srv.login("writer") as writer:
            for _ in range(200):
                writer.send({"type": "say", "text": "h" * 3000})
            writer.drain_until(_seq_is(200), timeout=10)
        greedy = _slow_client(srv.host, srv.port)
        greedy.login("greedy", since=10**9)
        rss_before = srv.rss_kib()
        request = encode({"type": "history", "before": 201, "limit": 200})
        greedy.sock.sendall(request * 400)  # 400 replies of 600 kB each, if it were served
        status = srv.request({"type": "status"})
        assert status["users"] == ["greedy"]  # not cut off: it asked for all that
        assert srv.rss_kib() - rss_before < 60_000
        greedy.sock.settimeout(10)
        pages = 0
        while pages < 3:  # it is served as it reads
            frame = greedy.recv(timeout=10)
            if frame["type"] == "history":
                assert len(frame["msgs"]) == 200
                pages += 1
        greedy.close()


def test_both_listeners_out_of_descriptors_in_one_turn(tmp_path: Path) -> None:
    """Chat and control connections queued while accepts are paused: when
    both listeners are ready in one turn and descriptors are still short, the
    second must not pause (unregister) again and crash the server."""
    with running_server(tmp_path, max_fds=48) as srv:
        first = srv.login("first")
        extra: list[TestClient] = []
        try:
            for _ in range(60):
                extra.append(srv.client())
            for _ in range(5):
                extra.append(srv.control())
            assert first.poll(1.0) is None  # several pause/resume rounds
            first.send({"type": "say", "text": "still here"})
            assert first.expect("msg")["text"] == "still here"
            assert srv.proc.poll() is None
        finally:
            first.close()
            for client in extra:
                client.close()
