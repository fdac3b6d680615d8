"""The flock-held pid file: a live server's is refused, a stale one is replaced."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from chatd.errors import StartupError
from chatd.pidfile import PidFile, holder, wait_gone


def test_held_while_open_removed_after(tmp_path: Path) -> None:
    path = tmp_path / "chatd.pid"
    assert holder(path) is None
    with PidFile(path):
        assert path.read_text() == f"{os.getpid()}\n"
        assert holder(path) == os.getpid()
    assert not path.exists()
    assert holder(path) is None


def test_second_holder_is_refused_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "chatd.pid"
    with PidFile(path):
        with pytest.raises(StartupError) as info:
            PidFile(path).acquire()  # flock: a second open file conflicts, same process too
        assert str(info.value) == f"chatd is already running (pid {os.getpid()}, pid file {path})"
        assert path.read_text() == f"{os.getpid()}\n"  # the refusal did not touch it
    assert not path.exists()


def test_stale_file_is_replaced(tmp_path: Path) -> None:
    """A file nobody holds, naming a pid that may even be alive (here: ours), is stale."""
    path = tmp_path / "chatd.pid"
    path.write_text("1\n")  # init is alive, but it holds no lock: stale
    assert holder(path) is None
    with PidFile(path):
        assert path.read_text() == f"{os.getpid()}\n"
    path.write_text("garbage")
    with PidFile(path):
        assert holder(path) == os.getpid()


def test_lock_dies_with_the_process(tmp_path: Path) -> None:
    """kill -9 leaves the file behind, but not the lock."""
    path = tmp_path / "chatd.pid"
    code = (
        "import sys; from pathlib import Path; from chatd.pidfile import PidFile\n"
        f"p = PidFile(Path({str(path)!r})); p.acquire(); print('held', flush=True)\n"
        "sys.stdin.read()\n"
    )
    with subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "held\n"
            assert holder(path) == proc.pid
            with pytest.raises(StartupError, match=f"pid {proc.pid}"):
                PidFile(path).acquire()
            proc.kill()
            assert wait_gone(proc.pid, 10)
        finally:
            proc.kill()
    assert path.exists()
    assert holder(path) is None
    with PidFile(path):
        assert holder(path) == os.getpid()


def test_release_leaves_a_successors_file_alone(tmp_path: Path) -> None:
    path = tmp_path / "chatd.pid"
    first = PidFile(path)
    first.acquire()
    os.unlink(path)  # e.g. an operator removed it, and a new server took the path
    with PidFile(path):
        first.release()
        assert path.exists()
        assert holder(path) == os.getpid()


def test_unwritable_directory_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(StartupError, match="cannot open pid file"):
        PidFile(tmp_path / "absent" / "chatd.pid").acquire()


def test_wait_gone_times_out_for_a_live_process() -> None:
    assert not wait_gone(os.getpid(), 0.01)
