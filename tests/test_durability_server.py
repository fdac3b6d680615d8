"""Durability end to end: a real chatd on an SQLite file, killed, restarted,
resumed, and run out of disk. An acknowledged message is never lost and never
duplicated; seq never skips or repeats."""

from __future__ import annotations

import selectors
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from protocol import encode
from tests.support import Pipelined, ServerProcess, TestClient, running_server
from tests.test_history_disk_full import small_disk

Message = dict[str, Any]
DEADLINE = 20.0


def kill(server: ServerProcess) -> None:
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(10)


def history_of(client: TestClient, upto: int) -> list[Message]:
    """Every retained message, by paging ``history`` backwards from ``upto``
    (frames before the first reply, such as a backlog, are skipped)."""
    pages: list[list[Message]] = []
    before = upto + 1
    while True:
        client.send({"type": "history", "before": before, "limit": 200})
        reply = client.drain_until(lambda m: m["type"] == "history", DEADLINE)[-1]
        assert reply["before"] == before
        page = reply["msgs"]
        if not page:
            break
        pages.append(page)
        before = page[0]["seq"]
    return [msg for page in reversed(pages) for msg in page]


def assert_gapless(msgs: list[Message]) -> None:
    seqs = [m["seq"] for m in msgs]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))) if seqs else True


class Sender(Pipelined):
    """A non-blocking client that pipelines its outbox of ``say``s (each with
    an id) and records what the server acknowledged (its own ``msg`` echo)."""

    def __init__(self, name: str, outbox: list[str], window: int = 64) -> None:
        super().__init__()
        self.name = name
        self.outbox = outbox  # ids, in order; the text is derived from the id
        self.window = window
        self.acked: dict[str, int] = {}  # id -> seq
        self.conflicts: list[Message] = []  # an id acknowledged with two seqs
        self.seen: list[Message] = []  # every msg received, in order
        self.out_of_order: list[Message] = []  # seq not above the last one seen
        self.sent: set[str] = set()  # ever sent, on any connection
        self.resent: set[str] = set()  # sent before, unacked at the reconnect
        self.errors: list[Message] = []
        self.todo: list[str] = []
        self.pending: set[str] = set()  # sent on this connection, not yet acked

    def connect(self, server: ServerProcess, since: int | None) -> None:
        client = server.client()
        # The outbox: every id not acknowledged, in order, is sent (again).
        self.todo = [i for i in self.outbox if i not in self.acked]
        self.resent = self.sent - set(self.acked)
        self.pending = set()
        self.out = b""
        client.login(self.name, **({} if since is None else {"since": since}))
        self.attach(client)

    @property
    def done(self) -> bool:
        return not self.todo and not self.pending

    def pump_out(self) -> None:
        assert self.sock is not None
        while self.todo and len(self.pending) < self.window:
            ident = self.todo.pop(0)
            self.out += encode({"type": "say", "text": f"text of {ident}", "id": ident})
            self.pending.add(ident)
            self.sent.add(ident)
        self.flush()

    def receive(self, msg: Message) -> None:
        if msg["type"] == "error":
            self.errors.append(msg)
        if msg["type"] != "msg":
            return
        if self.seen and msg["seq"] <= self.seen[-1]["seq"]:
            self.out_of_order.append(msg)
        else:
            self.seen.append(msg)
        if msg["from"] == self.name and msg.get("id") is not None:
            ident = msg["id"]
            self.pending.discard(ident)
            if self.acked.setdefault(ident, msg["seq"]) != msg["seq"]:
                self.conflicts.append(msg)




def drive(senders: list[Sender], until: Any, deadline: float) -> None:
    """Run every sender until ``until()`` is true or they reach EOF."""
    with selectors.DefaultSelector() as sel:
        for s in senders:
            assert s.sock is not None
            sel.register(s.sock, selectors.EVENT_READ, s)
        live = len(senders)
        while not until() and live:
            assert time.monotonic() < deadline, "senders did not finish in time"
            for s in senders:
                if s.sock is not None and s.sock in sel.get_map():
                    s.pump_out()
            for key, _ in sel.select(0.05):
                sender: Sender = key.data
                if not sender.pump_in():
                    sel.unregister(key.fileobj)
                    live -= 1


def test_kill_9_under_load_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    db = str(tmp_path / "h.sqlite3")
    senders = [Sender(f"user{c}", [f"c{c}-{n}" for n in range(1000)]) for c in range(10)]
    deadline = time.monotonic() + DEADLINE
    with running_server(tmp_path, "--rate", "0", "--history", "20000", db=db) as server:
        for s in senders:
            s.connect(server, None)
        drive(senders, lambda: sum(len(s.acked) for s in senders) >= 3000, deadline)
        kill(server)
        # Acks the server wrote before it died still count: read to EOF.
        drive(senders, lambda: False, deadline)
    before_restart = {(s.name, i): seq for s in senders for i, seq in s.acked.items()}
    assert 3000 <= len(before_restart) < 10_000
    for s in senders:
        s.close()
    with running_server(tmp_path, "--rate", "0", "--history", "20000", db=db) as server:
        for s in senders:
            s.connect(server, max((m["seq"] for m in s.seen), default=0))
        drive(senders, lambda: all(s.done for s in senders), deadline)
        assert not [e for s in senders for e in s.errors]
        with server.login("auditor") as auditor:
            stored = history_of(auditor, auditor.welcome["seq"])
    # Every acknowledged message is there exactly once, with the seq it was
    # acknowledged with; all 10,000 ids exactly once; seq has no gap or repeat.
    assert_gapless(stored)
    assert stored[0]["seq"] == 1 and len(stored) == 10_000
    by_id = {(m["from"], m["id"]): m["seq"] for m in stored}
    assert len(by_id) == 10_000
    for key, seq in before_restart.items():
        assert by_id[key] == seq, key
    stored_unacked = 0
    for s in senders:
        assert s.acked == {i: by_id[(s.name, i)] for i in s.outbox}
        assert not s.conflicts
        # Every client saw msgs in increasing seq, none twice, except the
        # originals the server sent back for resent ids that it had stored.
        for msg in s.out_of_order:
            assert msg["from"] == s.name and msg["id"] in s.resent
            assert by_id[(s.name, msg["id"])] == msg["seq"]
        stored_unacked += len(s.out_of_order)
    print(f"{len(before_restart)} acked before kill -9; {stored_unacked} stored but "
          f"unacknowledged, resent and answered with the original")


def send_many(client: TestClient, count: int, prefix: str) -> list[Message]:
    """Pipeline ``count`` says and return their echoes (acks), in order
    (frames that came before, such as a backlog, are skipped)."""
    client.barrier()
    data = b"".join(encode({"type": "say", "text": f"{prefix} {n}", "id": f"{prefix}{n}"})
                    for n in range(count))
    client.send_raw(data)
    echoes = client.drain_until(lambda m: m.get("id") == f"{prefix}{count - 1}", DEADLINE)
    mine = [m for m in echoes if m["type"] == "msg"]
    assert [m["id"] for m in mine] == [f"{prefix}{n}" for n in range(count)]
    return mine


def test_resent_outbox_after_a_crash_creates_no_duplicate(tmp_path: Path) -> None:
    db = str(tmp_path / "h.sqlite3")
    outbox = [f"o{n}" for n in range(200)]
    with running_server(tmp_path, "--rate", "0", db=db) as server:
        alice = server.login("alice")
        alice.barrier()
        alice.send_raw(b"".join(encode({"type": "say", "text": i, "id": i}) for i in outbox))
        echoes = alice.drain_until(lambda m: m.get("id") == "o199", DEADLINE)
        # The client crashes having handled the acks up to o49 only: to it,
        # o50..o199 are unacknowledged although the server stored them all.
        seen = {m["id"]: m["seq"] for m in echoes if m["type"] == "msg"}
        acked = {i: seen[i] for i in outbox[:50]}
        alice.close()
        kill(server)
    with running_server(tmp_path, "--rate", "0", db=db) as server:
        alice = server.login("alice", since=acked["o49"])
        backlog = alice.barrier()
        assert [m["id"] for m in backlog] == outbox[50:]
        alice.send_raw(b"".join(encode({"type": "say", "text": i, "id": i})
                                for i in outbox[50:]))
        replies = alice.drain_until(lambda m: m.get("id") == "o199", DEADLINE)
        # Each resent id gets its original back, with its old seq: nothing new.
        assert replies == backlog
        assert {m["id"]: m["seq"] for m in replies} == {i: seen[i] for i in outbox[50:]}
        new = send_many(alice, 3, "new")
        assert [m["seq"] for m in new] == [201, 202, 203]
        stored = history_of(alice, 203)
        alice.close()
    assert_gapless(stored)
    assert [m["id"] for m in stored] == [*outbox, "new0", "new1", "new2"]


# 12,000 reaches past the store's in-memory tail (10,000): the replay then
# starts from disk. Bob pipelines them all before reading, hence max-outbuf.
@pytest.mark.parametrize("gap", [30, 12_000])
def test_resume_with_since_across_a_crash(tmp_path: Path, gap: int) -> None:
    db = str(tmp_path / "h.sqlite3")
    flags = ("--rate", "0", "--history", "20000", "--max-outbuf", str(16 << 20))
    with running_server(tmp_path, *flags, db=db) as server:
        bob = server.login("bob")
        send_many(bob, 20, "early")
        with server.login("alice") as alice:
            alice.barrier()
            seen = alice.welcome["seq"]
        missed = send_many(bob, gap - 10, "before-crash")
        kill(server)
    with running_server(tmp_path, *flags, db=db) as server:
        bob = server.login("bob")
        missed += send_many(bob, 10, "after-crash")
        alice = server.login("alice", since=seen)
        backlog = alice.barrier()
        assert all(m["seq"] <= alice.welcome["seq"] for m in backlog)
        assert backlog == missed  # every missed message, in order, none twice
        live = send_many(bob, 5, "live")
        assert alice.barrier() == live
        assert all(m["seq"] > alice.welcome["seq"] for m in live)
        bob.close()
        alice.close()


def test_history_pages_survive_restarts(tmp_path: Path) -> None:
    db = str(tmp_path / "h.sqlite3")
    flags = ("--rate", "0", "--history", "700")
    with running_server(tmp_path, *flags, db=db) as server, server.login("bob") as bob:
        for round_ in range(3):
            send_many(bob, 300, f"r{round_}-")
        pages = history_of(bob, 900)
    assert len(pages) == 700 and pages[0]["seq"] == 201  # exactly the newest 700
    assert_gapless(pages)
    for stop in (None, "kill"):  # a graceful stop (SIGTERM), then kill -9
        with running_server(tmp_path, *flags, db=db) as server:
            with server.login("carol") as carol:
                assert (carol.welcome["seq"], carol.welcome["oldest"]) == (900, 201)
                assert history_of(carol, 900) == pages
                carol.send({"type": "history", "before": 201})
                assert carol.expect("history")["msgs"] == []
                # An id of a retained message is still known after the restart.
            with server.login("bob") as bob:
                bob.barrier()
                bob.send({"type": "say", "text": "again", "id": "r2-299"})
                assert bob.expect("msg")["seq"] == 900
            if stop == "kill":
                kill(server)


def test_full_disk_refuses_with_unavailable_and_recovers(tmp_path: Path) -> None:
    with small_disk(tmp_path) as disk, ExitStack() as stack:
        db = str(disk.path / "h.sqlite3")
        server = stack.enter_context(running_server(tmp_path, "--rate", "0", db=db))
        disk.pid = server.pid
        alice = stack.enter_context(server.login("alice"))
        watcher = stack.enter_context(server.login("watcher"))
        acked = [m["seq"] for m in send_many(alice, 5, "warm")]
        disk.fill()
        refused: list[Message] = []
        big = "x" * 1000  # 300 of them stay below max_outbuf for the watcher
        for n in range(300):  # the WAL may still have a few free pages
            alice.send({"type": "say", "text": f"{n} {big}", "id": f"full{n}"})
            reply = alice.recv(DEADLINE)
            if reply["type"] == "error":
                refused.append(reply)
                break
            assert reply["type"] == "msg" and reply["id"] == f"full{n}"
            acked.append(reply["seq"])
        assert refused, "the disk never filled up"
        error = refused[0]
        assert error["code"] == "unavailable" and not error["fatal"]
        assert error["ref"] == f"full{n}" and error["retry_after_ms"] > 0
        # Nobody was disconnected; the refused message reached no one.
        alice.barrier()
        assert [m["seq"] for m in watcher.barrier() if m["type"] == "msg"] == acked
        server.wait_log("could not store")
        disk.free()
        alice.send({"type": "say", "text": f"{n} {big}", "id": f"full{n}"})
        retried = alice.expect("msg", id=f"full{n}")
        assert retried["seq"] == acked[-1] + 1  # the refused seq was given back
        acked.append(retried["seq"])
        kill(server)
        server = stack.enter_context(running_server(tmp_path, "--rate", "0", db=db))
        with server.login("auditor") as auditor:
            stored = history_of(auditor, auditor.welcome["seq"])
        assert [m["seq"] for m in stored] == acked == list(range(1, len(acked) + 1))


def test_corrupt_database_is_a_one_line_startup_error(tmp_path: Path) -> None:
    db = tmp_path / "h.sqlite3"
    db.write_bytes(b"definitely not SQLite\n" * 500)
    result = subprocess.run(
        [sys.executable, "-m", "chatd", "run", "--port", "0", "--data-dir",
         str(tmp_path / "data"), "--db", str(db)],
        capture_output=True, text=True, timeout=DEADLINE, check=False)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("chatd") and str(db) in last, result.stderr
