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

from chatd.history import Stored, StoreError
from chatd.store_sqlite import SqliteHistory

DISK_SIZE = 512 * 1024


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
    """A 512 KiB tmpfs at ``tmp_path/disk`` (we run as root), else the limit."""
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


def test_full_disk_refuses_the_batch_and_recovers(tmp_path: Path) -> None:
    with small_disk(tmp_path) as disk:
        path = str(disk.path / "h.sqlite3")
        store = SqliteHistory(path, retain=10_000, tail=5)
        for seq in range(1, 11):
            store.append([message(seq)])
        disk.fill()
        failed: list[Stored] | None = None
        for _ in range(200):  # the WAL may still have a few free pages
            batch = [message(store.last_seq + i) for i in range(1, 4)]
            try:
                store.append(batch)
            except StoreError as exc:
                assert "h.sqlite3" in str(exc)
                failed = batch
                break
        assert failed is not None, "the disk never filled up"
        stored = store.last_seq
        assert stored == failed[0].seq - 1  # nothing of the failed batch counts
        # Everything stored before stays readable, from memory and from disk.
        assert [m.seq for m in store.after(0)] == list(range(1, stored + 1))
        assert store.before(4, 2) == [message(2), message(3)]  # beyond the tail
        assert store.find("alice", f"id{failed[0].seq}") is None
        assert store.find("alice", "id2") == message(2)
        # Still full: refused again, and the store stays as it was.
        with pytest.raises(StoreError):
            store.append(failed)
        assert store.last_seq == stored
        disk.free()
        batch = [message(store.last_seq + i) for i in range(1, 4)]
        store.append(batch)
        store.close()
        store = SqliteHistory(path, retain=10_000, tail=5)
        assert [m.seq for m in store.after(0)] == list(range(1, batch[-1].seq + 1))
        assert store.find("alice", f"id{batch[-1].seq}") == batch[-1]
        store.close()
