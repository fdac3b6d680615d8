"""Record the transcripts in this directory from a real ``chatd``.

Run from the project root: ``.venv/bin/python -m tests.transcripts.capture``.
The files are test vectors: ``tests/test_client_transcripts.py`` replays each
through a fresh session and expects the same frames and events.
"""

from __future__ import annotations

import json
import signal
import tempfile
from pathlib import Path

from chatclient.events import (
    Acked,
    HistoryPage,
    LoggedIn,
    MessageDeleted,
    MessageEdited,
    Reconnecting,
    RoomJoined,
)
from chatclient.net import Connection
from chatclient.session import ClientSession
from tests.client_support import free_port, has, pump
from tests.support import running_server

HERE = Path(__file__).parent
PASSWORD = "correct horse battery"


def save(name: str, session: ClientSession) -> None:
    path = HERE / f"{name}.json"
    path.write_text(json.dumps(session.transcript(), indent=1, ensure_ascii=False) + "\n")
    print("wrote", path)


def login_join_say_edit(tmp: Path) -> None:
    with running_server(tmp, "--guests", "true") as srv:
        srv.request({"type": "account_add", "name": "alice", "password": PASSWORD})
        session = ClientSession("alice", password=PASSWORD, rooms=["dev"], record=True)
        conn = Connection(session, srv.host, srv.port)
        pump(conn, has(RoomJoined))
        session.say("dev", "hello, world")
        session.say("lobby", "hi lobby")
        pump(conn, has(Acked, 2))
        session.edit("dev", 1, "hello, edited world")
        pump(conn, has(MessageEdited))
        session.delete("lobby", 1)
        pump(conn, has(MessageDeleted))
        session.mark("dev")
        session.history("dev", before=10)
        pump(conn, has(HistoryPage))
        conn.close_and_wait()
        assert session.status == "done"
        save("login_join_say_edit", session)


def reconnect_after_crash(tmp: Path) -> None:
    port = free_port()
    db = str(tmp / "history.sqlite3")
    flags = ("--guests", "true", "--port", str(port), "--sync", "full")
    session = ClientSession("carol", rooms=["dev"], record=True)
    conn = Connection(session, "127.0.0.1", port)
    with running_server(tmp, *flags, db=db) as srv:
        pump(conn, has(RoomJoined))
        session.say("dev", "before the crash")
        pump(conn, has(Acked))
        srv.proc.send_signal(signal.SIGKILL)
        srv.proc.wait()
        pump(conn, has(Reconnecting))
        session.say("dev", "typed while the server was down")
        session.say("lobby", "and one for the lobby")
    with running_server(tmp, *flags, db=db):
        pump(conn, lambda seen: not session.outbox and has(LoggedIn)(seen), timeout=20)
        conn.close_and_wait()
        assert session.status == "done"
    save("reconnect_after_crash", session)


def main() -> None:
    with tempfile.TemporaryDirectory() as one, tempfile.TemporaryDirectory() as two:
        login_join_say_edit(Path(one))
        reconnect_after_crash(Path(two))


if __name__ == "__main__":
    main()
