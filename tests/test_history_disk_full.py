"""A real full disk under the SQLite store: a small tmpfs filled to the brim.

Where mounting is not allowed, the same situation is made with a file size
limit (RLIMIT_FSIZE, set on the process that writes the database): writes past
it fail as a full disk's do. CPython ignores SIGXFSZ, so the write just fails.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatd.records import (
    AddMessage,
    EditMessage,
    Op,
    PutMarker,
    PutMember,
    PutRoom,
    RoomRecord,
    Stored,
)
from chatd.store import StoreError
from chatd.store_sqlite import SqliteStore

#: Room for a fresh database and a WAL of 1000 pages (its checkpoint size),
#: each commit of the search index writing several pages.
DISK_SIZE = 8 * 1024 * 1024
LOBBY = "lobby"


class SmallDisk:
    """A directory on a file system that can be filled and freed on demand."""

    def __init__(self, path: Path, mounted: bool) -> None:
        self.path = path
        self.mounted = mounted
        self.filler = path / "filler"
        self.pid = 0  # the process whose file size limit plays the full disk

    def fill(self) -> None:
        """Leave no room for the database to grow."""
        if not self.mounted:
            largest = max(p.stat().st_size for p in self.path.iterdir())
            resource.prlimit(self.pid or os.getpid(), resource.RLIMIT_FSIZE,
                             (largest, resource.RLIM_INFINITY))
            return
        chunk = b"\0" * 4096
        with open(self.filler, "ab") as out:
            try:
                while True:
                    out.write(chunk)
                    out.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                # Some bytes may sit in the buffer; closing cannot write them.
                with contextlib.suppress(OSError):
                    out.close()

    def free(self) -> None:
        if self.mounted:
            self.filler.unlink(missing_ok=True)
        else:
            with contextlib.suppress(ProcessLookupError):  # that process has ended
                resource.prlimit(self.pid or os.getpid(), resource.RLIMIT_FSIZE,
                                 (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


@contextlib.contextmanager
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    """An 8 MiB tmpfs at ``tmp_path/disk`` (we run as root), else the limit."""
    where = tmp_path / "disk"
    where.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_SIZE}", "tmpfs",
                            str(where)], capture_output=True, check=False)
    disk = SmallDisk(where, mount.returncode == 0)
    try:
        yield disk
    finally:
        disk.free()
        if disk.mounted:
            subprocess.run(["umount", "-l", str(where)], check=True)


def message(seq: int) -> Stored:
    return Stored(seq, 1_700_000_000_000 + seq, "Alice", f"{seq} " + "x" * 3000, f"id{seq}")


def add(seqs: range) -> list[Op]:
    return [AddMessage(LOBBY, message(seq)) for seq in seqs]


def open_lobby(path: str) -> SqliteStore:
    store = SqliteStore(path, retain=10_000, tail=5)
    store.commit([PutRoom(RoomRecord(LOBBY, LOBBY, "public"))])
    return store


def test_full_disk_refuses_the_commit_and_recovers(tmp_path: Path) -> None:
    with small_disk(tmp_path) as disk:
        path = str(disk.path / "h.sqlite3")
        store = open_lobby(path)
        log = store.log(LOBBY)
        for seq in range(1, 11):
            store.commit(add(range(seq, seq + 1)))
        disk.fill()
        failed: list[Op] | None = None
        for _ in range(200):  # the WAL may still have a few free pages
            batch = add(range(log.last_seq + 1, log.last_seq + 4))
            try:
                store.commit(batch)
            except StoreError as exc:
                assert "h.sqlite3" in str(exc)
                failed = batch
                break
        assert failed is not None, "the disk never filled up"
        stored = log.last_seq
        assert stored == failed[0].msg.seq - 1  # type: ignore[union-attr]
        # Everything stored before stays readable, from memory and from disk.
        assert [m.seq for m in log.after(0)] == list(range(1, stored + 1))
        assert log.before(4, 2) == [message(2), message(3)]  # beyond the tail
        assert log.find("alice", f"id{stored + 1}") is None
        assert log.find("alice", "id2") == message(2)
        # Still full: refused again, and the store stays as it was.
        with pytest.raises(StoreError):
            store.commit(failed)
        assert log.last_seq == stored
        disk.free()
        batch = add(range(stored + 1, stored + 4))
        store.commit(batch)
        store.close()
        store = SqliteStore(path, retain=10_000, tail=5)
        log = store.log(LOBBY)
        assert [m.seq for m in log.after(0)] == list(range(1, stored + 4))
        assert log.find("alice", f"id{stored + 3}") == message(stored + 3)
        store.close()


def long_edit(seq: int) -> EditMessage:
    return EditMessage(LOBBY, seq, "edited " + "y" * 20_000, 1_800_000_000_000)


@pytest.mark.parametrize("kind", ["edit", "member", "marker"])
def test_full_disk_refuses_other_changes_too(tmp_path: Path, kind: str) -> None:
    """An edit, a membership and a read marker: refused whole on a full disk,
    nothing of them served, and stored once there is room again."""
    with small_disk(tmp_path) as disk:
        path = str(disk.path / "h.sqlite3")
        store = open_lobby(path)
        log = store.log(LOBBY)
        store.commit(add(range(1, 11)))
        disk.fill()
        failed: list[Op] | None = None
        for round_ in range(2000):  # the WAL may still have a few free pages
            if kind == "edit":
                ops: list[Op] = [long_edit(1 + round_ % 10)]
            elif kind == "member":
                # Many rows: a membership is small, the disk must fill.
                ops = [PutMember(LOBBY, f"user{round_}-{i}-" + "n" * 200, "member")
                       for i in range(20)]
            else:
                ops = [PutMarker(LOBBY, f"user{round_}-{i}-" + "n" * 200, 5)
                       for i in range(20)]
            before = (log.latest(10), store.load())
            try:
                store.commit(ops)
            except StoreError as exc:
                assert "h.sqlite3" in str(exc)
                failed = ops
                break
        assert failed is not None, "the disk never filled up"
        assert (log.latest(10), store.load()) == before  # nothing of it applied
        disk.free()
        store.commit(failed)
        store.close()
        store = SqliteStore(path, retain=10_000, tail=5)
        snap = store.load()
        if kind == "edit":
            edit = failed[0]
            assert isinstance(edit, EditMessage)
            got = store.log(LOBBY).get(edit.seq)
            assert got is not None and (got.text, got.edited) == (edit.text, edit.edited)
        elif kind == "member":
            assert {(r.room, r.account, r.role) for r in failed  # type: ignore[union-attr]
                    } <= set(snap.members)
        else:
            assert {(r.room, r.account, r.seq) for r in failed  # type: ignore[union-attr]
                    } <= set(snap.markers)
        store.close()
