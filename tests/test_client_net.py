"""chatclient against a real ``chatd``: the socket driver and the session end to end."""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

from chatclient.events import (
    Acked,
    Closed,
    Done,
    Failed,
    HistoryPage,
    LoggedIn,
    MessageAdded,
    MessageEdited,
    Reconnecting,
    RoomJoined,
)
from chatclient.net import Connection
from chatclient.session import ClientSession
from tests.client_support import free_port, has, pump
from tests.support import running_server

PASSWORD = "correct horse battery"


def account(srv, name: str) -> None:
    reply = srv.request({"type": "account_add", "name": name, "password": PASSWORD})
    assert reply["type"] == "ok", reply


def test_login_join_say_edit_history(tmp_path: Path) -> None:
    with running_server(tmp_path, "--guests", "true") as srv:
        account(srv, "alice")
        session = ClientSession("alice", password=PASSWORD, rooms=["dev"])
        conn = Connection(session, srv.host, srv.port)
        events = pump(conn, has(RoomJoined))
        login = next(e for e in events if isinstance(e, LoggedIn))
        assert login.account and [r.name for r in login.rooms] == ["lobby"]
        ident = session.say("dev", "hello")
        events = pump(conn, has(MessageAdded))
        assert Acked(ident, "dev", 1) in events
        added = next(e for e in events if isinstance(e, MessageAdded))
        assert added.msg.mine and added.live and added.msg.text == "hello"
        assert session.outbox == []
        edit = session.edit("dev", 1, "hello again")
        events = pump(conn, has(MessageEdited))
        assert Done(edit, "edit") in events
        session.history("dev")
        page = next(e for e in pump(conn, has(HistoryPage)) if isinstance(e, HistoryPage))
        assert page.msgs == ()  # the only message is delivered already: deduped
        assert not session.has_older("dev")
        assert Closed() in conn.close_and_wait()
        assert conn.fileno() is None


def test_unreachable_first_login_fails(tmp_path: Path) -> None:
    session = ClientSession("alice")
    conn = Connection(session, "127.0.0.1", free_port())
    events = pump(conn, has(Failed))
    assert next(e for e in events if isinstance(e, Failed)).code == "unreachable"
    assert session.status == "done" and not session.wants_connection(1e12)


def test_wrong_password_is_final(tmp_path: Path) -> None:
    with running_server(tmp_path) as srv:
        account(srv, "alice")
        conn = Connection(ClientSession("alice", password="not the password"), srv.host,
                          srv.port)
        failed = [e for e in pump(conn, has(Failed)) if isinstance(e, Failed)]
        assert failed[0].code == "auth_failed"


def test_server_restart_with_pending_messages_in_two_rooms(tmp_path: Path) -> None:
    """Messages typed before, during and after a server crash, in two rooms:
    each reaches the server exactly once, and the client shows each once."""
    port = free_port()
    db = str(tmp_path / "history.sqlite3")
    flags = ("--guests", "true", "--port", str(port), "--sync", "full")
    session = ClientSession("alice", password=PASSWORD, rooms=["dev", "ops"])
    conn = Connection(session, "127.0.0.1", port)
    sent: dict[str, list[str]] = {"dev": [], "ops": []}

    def say(room: str, text: str) -> None:
        session.say(room, text)
        sent[room].append(text)

    events = []
    with running_server(tmp_path, *flags, db=db) as srv:
        account(srv, "alice")
        events += pump(conn, has(RoomJoined, 2))
        for n in range(3):
            say("dev", f"dev before {n}")
            say("ops", f"ops before {n}")
        events += pump(conn, has(Acked, 6))
        say("dev", "dev in flight")
        say("ops", "ops in flight")
        events += conn.poll()  # written to the socket; the acks are not awaited
        srv.proc.send_signal(signal.SIGKILL)
        srv.proc.wait()
        events += pump(conn, has(Reconnecting))
        say("dev", "dev while down")
        say("ops", "ops while down")
        assert len(session.outbox) >= 2
    with running_server(tmp_path, *flags, db=db) as srv:
        events += pump(conn, lambda seen: not session.outbox and any(
            isinstance(e, LoggedIn) and e.resumed for e in seen), timeout=20)
        assert sum(isinstance(e, LoggedIn) for e in events) == 2
        for room in ("dev", "ops"):
            shown = Counter(e.msg.text for e in events
                            if isinstance(e, MessageAdded) and e.room == room)
            assert shown == Counter(sent[room]), (room, shown)
        with srv.client() as other:
            other.send({"type": "hello", "proto": 2, "name": "bob"})
            other.expect("welcome")
            for room in ("dev", "ops"):
                other.send({"type": "history", "room": room, "before": 1000, "id": room})
                reply = other.expect("history")
                stored = Counter(m["text"] for m in reply["msgs"])
                assert stored == Counter(sent[room]), (room, stored)
        conn.close_and_wait()
