"""The client session against a real ``chatd``: login, refusals, loss, resume.

Every wait is a deadline on a condition (the session is polled, the socket is
waited on with ``select``); nothing sleeps to synchronise.
"""

from __future__ import annotations

import select
import signal
import socket
import time
from collections.abc import Callable

import pytest

from chatgui.session import CONNECTED, OFFLINE, RECONNECTING, Event, Session
from protocol.errors import ProtocolError
from tests.support import running_server

WAIT = 10.0


class Recorder:
    """A session plus everything it reported."""

    def __init__(self, name: str, port: int, **kwargs: object) -> None:
        self.session = Session(name, "127.0.0.1", port, **kwargs)  # type: ignore[arg-type]
        self.events: list[Event] = []

    def poll(self) -> None:
        self.events += self.session.poll()

    def kinds(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.kind == kind]

    def texts(self) -> list[str]:
        return [e.msg["text"] for e in self.kinds("message")]

    def statuses(self) -> list[str]:
        return [e.status for e in self.kinds("status")]


def run(recorders: list[Recorder], until: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time: " + repr(
                [r.events[-5:] for r in recorders]))
        socks = [r.session.socket for r in recorders if r.session.socket is not None]
        select.select(socks, [], [], 0.02)
        for r in recorders:
            r.poll()


def logged_in(r: Recorder) -> bool:
    return r.session.status == CONNECTED


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_login_chat_and_private_message(tmp_path):
    with running_server(tmp_path) as server:
        alice, bob = Recorder("alice", server.port), Recorder("Bob", server.port)
        run([alice], lambda: logged_in(alice))
        run([alice, bob], lambda: logged_in(bob) and "Bob" in alice.session.users.values())
        assert any(e.kind == "join" and e.msg["name"] == "Bob" for e in alice.events)
        assert sorted(bob.session.users.values()) == ["Bob", "alice"]

        ident = alice.session.say("  hello Bob  ")
        assert [p.ident for p in alice.session.outbox] == [ident]
        run([alice, bob], lambda: "hello Bob" in bob.texts() and not alice.session.outbox)
        assert [e.ident for e in alice.kinds("acked")] == [ident]
        assert alice.texts() == ["hello Bob"]  # the echo, shown once

        pm = bob.session.pm("ALICE", "psst")
        run([alice, bob], lambda: bool(alice.kinds("pm")) and not bob.session.outbox)
        assert alice.kinds("pm")[0].msg["from"] == "Bob"
        assert bob.kinds("acked")[-1].ident == pm

        bob.session.pm("nobody", "hello?")  # not online: refused, not retried
        run([bob], lambda: bool(bob.kinds("error")))
        error = bob.kinds("error")[0]
        assert error.code == "no_such_user" and error.ident and not bob.session.outbox

        bob.session.close()
        run([alice, bob], lambda: bob.session.finished and bool(alice.kinds("leave")))
        assert alice.kinds("leave")[0].msg["reason"] == "quit"


def test_text_rules_checked_before_sending(tmp_path):
    with running_server(tmp_path) as server:
        alice = Recorder("alice", server.port)
        run([alice], lambda: logged_in(alice))
        for text, code in [("   ", "empty_message"), ("x" * 4001, "text_too_long"),
                           ("bell\x07", "bad_text")]:
            with pytest.raises(ProtocolError) as caught:
                alice.session.say(text)
            assert caught.value.code == code
        assert not alice.session.outbox


@pytest.mark.parametrize("name", ["server", "two words", "", "x" * 33])
def test_bad_name_refused_before_connecting(name):
    with pytest.raises(ValueError):
        Session(name, "127.0.0.1", 1)


def test_refusal_stops_the_session(tmp_path):
    with running_server(tmp_path) as server:
        alice = Recorder("alice", server.port)
        run([alice], lambda: logged_in(alice))
        twin = Recorder("ALICE", server.port)
        run([alice, twin], lambda: twin.session.finished)
        failed = twin.kinds("failed")
        assert [f.code for f in failed] == ["name_taken"]
        assert twin.session.status == OFFLINE and twin.session.socket is None
        assert twin.session.poll() == []  # no reconnect attempt follows


def test_wrong_password_is_refused(tmp_path):
    with running_server(tmp_path, "--password", "sesame") as server:
        wrong = Recorder("alice", server.port, password="open")
        right = Recorder("bob", server.port, password="sesame")
        run([wrong, right], lambda: wrong.session.finished and logged_in(right))
        assert wrong.kinds("failed")[0].code == "auth_failed"


def test_unreachable_address_fails_fast_with_a_clear_message():
    port = free_port()  # nothing listens there now
    alice = Recorder("alice", port)
    start = time.monotonic()
    run([alice], lambda: alice.session.finished, timeout=8)
    assert time.monotonic() - start < 6
    failed = alice.kinds("failed")[0]
    assert failed.code == "unreachable"
    assert f"cannot connect to 127.0.0.1:{port}" in failed.detail


def test_server_killed_and_restarted_every_message_sent_exactly_once(tmp_path):
    """Lose the server mid-session, type while it is gone, get everything through."""
    db = str(tmp_path / "history.sqlite3")  # durable: the restart keeps seq and history
    with running_server(tmp_path, db=db) as server:
        port = server.port
        alice = Recorder("alice", server.port)
        run([alice], lambda: logged_in(alice))
        alice.session.say("before the crash")
        run([alice], lambda: not alice.session.outbox)
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(WAIT)
        run([alice], lambda: alice.session.status == RECONNECTING)
        assert alice.kinds("status")[-1].delay >= 0.5  # backing off, not spinning
        typed = [f"typed offline {i}" for i in range(5)]
        for text in typed:
            alice.session.say(text)
        assert len(alice.session.outbox) == 5
    with running_server(tmp_path, "--port", str(port), db=db) as server:
        carol = Recorder("carol", server.port)
        run([carol], lambda: logged_in(carol))
        carol.session.say("said while alice was away")
        run([carol], lambda: not carol.session.outbox)
        run([alice, carol], lambda: not alice.session.outbox, timeout=20)
        run([alice, carol], lambda: carol.texts().count(typed[-1]) == 1)
        welcome = alice.kinds("welcome")
        assert welcome[-1].detail == "resumed"
        # Resumed with since: what carol said while alice was away reached her.
        assert "said while alice was away" in alice.texts()
        seqs = [e.msg["seq"] for e in alice.kinds("message")]
        assert seqs == sorted(set(seqs))  # de-duplicated, in order
        # Exactly once on the server: a fresh client's backlog holds each text once.
        dave = Recorder("dave", server.port)
        run([dave], lambda: logged_in(dave) and len(dave.texts()) >= 7)
        for text in ["before the crash", *typed]:
            assert dave.texts().count(text) == 1, text
        assert dave.texts()[-5:] == typed  # in the order typed


def test_ack_lost_with_the_connection_is_not_duplicated(tmp_path):
    """The server accepted a say but the echo was lost: resending creates no copy."""
    with running_server(tmp_path) as server:
        alice, bob = Recorder("alice", server.port), Recorder("bob", server.port)
        run([alice, bob], lambda: logged_in(alice) and logged_in(bob))
        alice.session.say("exactly once")
        alice.poll()  # sends it; the echo is not read yet
        run([bob], lambda: "exactly once" in bob.texts())
        sock = alice.session.socket
        assert sock is not None and alice.session.outbox
        sock.close()  # the connection dies with the echo unread
        alice.poll()
        assert alice.session.status == RECONNECTING
        run([alice, bob], lambda: not alice.session.outbox and logged_in(alice), timeout=20)
        bob.session.say("barrier")
        run([alice, bob], lambda: "barrier" in alice.texts())
        assert alice.texts().count("exactly once") == 1
        assert bob.texts().count("exactly once") == 1


def test_server_ping_is_answered(tmp_path):
    with running_server(tmp_path, "--heartbeat", "0.5") as server:
        alice = Recorder("alice", server.port)
        run([alice], lambda: logged_in(alice))
        alice.session._heartbeat = 60.0  # only the server pings here
        stop = time.monotonic() + 2.5  # five heartbeats: a silent client is cut at two
        run([alice], lambda: time.monotonic() > stop or alice.session.status != CONNECTED)
        assert alice.session.status == CONNECTED
        assert alice.statuses().count(CONNECTED) == 1


def test_history_pages_go_back_to_the_oldest(tmp_path):
    with running_server(tmp_path, "--rate", "0", "--backlog", "10") as server:
        writer = Recorder("writer", server.port)
        run([writer], lambda: logged_in(writer))
        for i in range(1, 121):
            writer.session.say(f"m{i}")
        run([writer], lambda: not writer.session.outbox)
        reader = Recorder("reader", server.port)
        run([reader], lambda: logged_in(reader) and len(reader.texts()) == 10)
        assert all(e.history for e in reader.kinds("message"))
        oldest = reader.kinds("message")[0].msg["seq"]
        pages: list[list[str]] = []
        while reader.session.request_history(oldest):
            run([reader], lambda: len(reader.kinds("history")) > len(pages))
            msgs = reader.kinds("history")[-1].msg["msgs"]
            pages.append([m["text"] for m in msgs])
            if msgs:
                oldest = msgs[0]["seq"]
        texts = [t for page in reversed(pages) for t in page] + reader.texts()
        assert texts == [f"m{i}" for i in range(1, 121)]


def test_stale_session_is_taken_over_with_the_token(tmp_path):
    """The client gives up on a silent connection the server still holds."""
    with running_server(tmp_path) as server:
        offset = [0.0]
        alice = Recorder("alice", server.port, clock=lambda: time.monotonic() + offset[0])
        bob = Recorder("bob", server.port)
        run([alice, bob], lambda: logged_in(alice) and logged_in(bob))
        run([alice, bob], lambda: "bob" in alice.session.users)
        old = alice.session.socket
        assert old is not None
        keep = old.dup()  # no FIN reaches the server: it still holds alice
        try:
            offset[0] += 61.0  # two silent heartbeats: the session declares it dead
            run([alice], lambda: alice.session.status == RECONNECTING)
            run([alice, bob], lambda: len(alice.kinds("welcome")) == 2)
            assert alice.kinds("welcome")[-1].detail == "resumed"
            assert not alice.kinds("failed")  # not refused as name_taken
            bob.session.say("still there?")
            run([alice, bob], lambda: "still there?" in alice.texts())
            # bob never saw alice leave or join again: she never went away.
            assert [e.msg["name"] for e in bob.kinds("leave")] == []
            assert all(e.msg["name"] != "alice" for e in bob.kinds("join"))
        finally:
            keep.close()


def test_message_over_the_servers_frame_limit_is_refused_locally(tmp_path):
    with running_server(tmp_path, "--max-frame", "1024", "--max-text", "4000") as server:
        alice = Recorder("alice", server.port)
        run([alice], lambda: logged_in(alice))
        assert alice.session.max_frame == 1024
        with pytest.raises(ProtocolError) as caught:
            alice.session.say("é" * 600)  # 600 characters, but 1200 bytes of UTF-8
        assert caught.value.code == "text_too_long" and not alice.session.outbox
        alice.session.say("x" * 900)
        run([alice], lambda: not alice.session.outbox)
        assert alice.statuses().count(CONNECTED) == 1  # never cut off
