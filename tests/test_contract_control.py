"""Contract §8 (control socket) and §9 (shutdown), black-box."""

from __future__ import annotations

import signal
import stat
import struct
from pathlib import Path

from tests.support import running_server
from tests.test_contract_kit import Message, fatal_close, frame, hello, jframe


def test_status_members_and_counters(tmp_path: Path) -> None:
    with running_server(tmp_path, "--rate", "0") as srv:
        assert stat.S_IMODE(srv.control_path.stat().st_mode) == 0o600
        with srv.login("Ann") as ann, srv.client() as anonymous:
            ann.send({"type": "say", "text": "one"})
            ann.send({"type": "pm", "to": "ann", "text": "two"})
            ann.send({"type": "say", "text": ""})  # refused: not counted
            ann.barrier()
            assert srv.request({"type": "announce", "text": "three"})["type"] == "ok"
            anonymous.send_raw(b"\x00")  # connected, half a header, not logged in
            status = srv.request({"type": "status", "id": "s"})
            assert status["type"] == "status" and status["ref"] == "s"
            assert isinstance(status["server"], str)
            assert isinstance(status["uptime_s"], (int, float)) and status["uptime_s"] >= 0
            assert status["clients"] == 2
            assert status["users"] == ["Ann"]
            assert status["seq"] == 2
            assert status["msgs_in"] == 3
            for key in ("frames_out", "bytes_in", "bytes_out"):
                assert isinstance(status[key], int) and status[key] > 0, (key, status)
                assert not isinstance(status[key], bool)


def test_kick_announce_watch(tmp_path: Path) -> None:
    with running_server(tmp_path, "--rate", "0", "--max-text", "10") as srv, \
            srv.control() as watcher:
        watcher.send({"type": "watch", "id": "w"})
        watcher.expect("ok", ref="w")
        with srv.login("Stra\u00dfe") as victim, srv.login("Bob") as bob:
            bob.barrier()
            assert watcher.expect("join", name="Stra\u00dfe")["ts"] > 0
            watcher.expect("join", name="Bob")
            reply = srv.request({"type": "kick", "name": "STRASSE", "reason": "spam",
                                 "id": "k"})
            assert reply == {"type": "ok", "ref": "k"}
            frames = victim.wait_closed()
            assert frames[-1]["type"] == "bye" and frames[-1]["reason"] == "kicked"
            assert frames[-1]["message"] == "spam"
            bob.expect("leave", name="Stra\u00dfe", reason="kicked")
            watcher.expect("leave", name="Stra\u00dfe", reason="kicked")

            error = srv.request({"type": "kick", "name": "nobody", "id": "n"})
            assert error["type"] == "error" and error["code"] == "no_such_user"
            assert error["ref"] == "n" and error["fatal"] is False

            reply = srv.request({"type": "announce", "text": "\u3000hello\u3000"})
            assert reply["type"] == "ok"
            msg = bob.expect("msg")
            assert msg["from"] == "server" and msg["text"] == "hello"
            assert isinstance(msg["seq"], int) and isinstance(msg["ts"], int)
            assert watcher.expect("msg") == {**msg, "room": "lobby"}  # v2 shape (§10)
            bob.send({"type": "history", "before": msg["seq"] + 1})
            assert bob.expect("history")["msgs"] == [{k: v for k, v in msg.items()
                                                     if k != "type"}]
            for text, code in [("", "empty_message"), (" ", "empty_message"),
                               ("a\x00", "bad_text"), ("x" * 11, "text_too_long")]:
                error = srv.request({"type": "announce", "text": text, "id": "a"})
                assert error["type"] == "error" and error["code"] == code, error
                assert error["ref"] == "a"
            bob.send({"type": "say", "text": "hi"})
            assert watcher.expect("msg")["text"] == "hi"
            bob.send({"type": "pm", "to": "bob", "text": "private"})
            bob.barrier()
        watcher.expect("leave", name="Bob", reason="lost")
        assert watcher.poll(0.2) is None  # the pm never reached the watcher


def test_control_errors(tmp_path: Path) -> None:
    with running_server(tmp_path) as srv:
        cases: list[tuple[Message, str]] = [
            ({"type": "nosuch", "id": "1"}, "unknown_type"),
            ({"type": "kick", "id": "2"}, "bad_request"),
            ({"type": "kick", "name": 5, "id": "3"}, "bad_request"),
            ({"type": "kick", "name": "x", "reason": None, "id": "4"}, "bad_request"),
            ({"type": "announce", "id": "5"}, "bad_request"),
            ({"type": "announce", "text": None, "id": "6"}, "bad_request"),
        ]
        with srv.control() as ctl:
            for request, code in cases:
                ctl.send(request)
                ctl.expect("error", code=code, fatal=False, ref=request["id"])
            ctl.send({"type": "status"})
            assert "ref" not in ctl.expect("status")
        with srv.control() as ctl:
            ctl.send_raw(frame(b"{nope"))
            fatal_close(ctl, "bad_frame")
        with srv.control() as ctl:
            ctl.send_raw(struct.pack(">I", 0))
            fatal_close(ctl, "frame_too_large")


def test_sigterm_shutdown(tmp_path: Path) -> None:
    with running_server(tmp_path, "--grace", "1.5") as srv, srv.control() as watcher:
        watcher.send({"type": "watch"})
        watcher.expect("ok")
        clients = [srv.login(name) for name in ("A", "B")]
        for client in clients:
            client.barrier()
        stuck = srv.login("Stuck")  # never reads again
        stuck.send_raw(b"".join(jframe({"type": "ping", "t": "x" * 30000})
                                for _ in range(20)))  # < max_outbuf
        watcher.drain_until(lambda m: m["type"] == "join" and m["name"] == "Stuck")
        pid_files = list(srv.data_dir.glob("*.pid"))
        assert pid_files, list(srv.data_dir.iterdir())
        srv.proc.send_signal(signal.SIGTERM)
        for client in clients:
            frames = client.wait_closed()
            assert frames[-1] == {"type": "bye", "reason": "shutdown"}, frames
            assert all(m["type"] == "join" for m in frames[:-1]), frames
        leaves = watcher.wait_closed()
        assert sorted(m["name"] for m in leaves) == ["A", "B", "Stuck"]
        assert all(m["type"] == "leave" and m["reason"] == "shutdown" for m in leaves)
        assert srv.wait_exit(10) == 0
        assert not srv.control_path.exists()
        assert all(not p.exists() for p in pid_files)
        stuck.close()


def test_control_shutdown_and_restart_keeps_seq_and_retention(tmp_path: Path) -> None:
    db = str(tmp_path / "h.sqlite3")
    with running_server(tmp_path, "--history", "3", "--rate", "0", db=db) as srv:
        with srv.client() as client:
            client.send_raw(hello("Keeper", since=0))
            assert client.expect("welcome")["oldest"] == 0
            client.send_raw(b"".join(jframe({"type": "say", "text": f"k{i}", "id": f"k{i}"})
                                     for i in range(5)))
            seq = client.drain_until(lambda m: m.get("id") == "k4")[-1]["seq"]
            assert seq == 5
            assert srv.request({"type": "shutdown", "id": "x"}) == {"type": "ok", "ref": "x"}
            assert client.wait_closed()[-1] == {"type": "bye", "reason": "shutdown"}
        assert srv.wait_exit(10) == 0
    with running_server(tmp_path, "--history", "3", "--rate", "0", db=db) as srv, \
            srv.client() as client:
        client.send_raw(hello("Keeper", since=0))
        welcome = client.expect("welcome")
        assert welcome["seq"] == 5 and welcome["oldest"] == 3
        assert [client.expect("msg")["text"] for _ in range(3)] == ["k2", "k3", "k4"]
        client.send({"type": "say", "text": "again", "id": "k1"})  # no longer retained
        assert client.expect("msg", id="k1")["seq"] == 6
        client.send({"type": "say", "text": "again", "id": "k4"})  # retained: the original
        original = client.expect("msg", id="k4")
        assert (original["seq"], original["text"], original["from"]) == (5, "k4", "Keeper")


def test_shutdown_flushes_pending_output_before_bye(tmp_path: Path) -> None:
    db = str(tmp_path / "h.sqlite3")
    with running_server(tmp_path, "--rate", "0", db=db) as srv, \
            srv.login("Talker") as talker, srv.login("Reader") as reader:
        reader.barrier()
        talker.barrier()
        talker.send_raw(jframe({"type": "say", "text": "m" * 1000}) * 600)  # ~0.6 MB each way
        talker.barrier(timeout=10)  # all accepted; Reader has read none of it
        srv.proc.send_signal(signal.SIGTERM)
        frames = reader.wait_closed(timeout=10)
        assert [m["type"] for m in frames] == ["msg"] * 600 + ["bye"]
        assert frames[-1]["reason"] == "shutdown"
        assert srv.wait_exit(10) == 0
        last = frames[-2]["seq"]
    with running_server(tmp_path, db=db) as srv, srv.login("Later") as later:
        assert later.welcome["seq"] == last
