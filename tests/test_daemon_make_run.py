"""`make run`: starts the daemon once, says so when it already runs, says how to connect.

The venv setup step ($(STAMP)) is skipped here (STAMP= on the command line): the
test runs inside that venv already, and must not reinstall packages.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from chatd.pidfile import holder, wait_gone

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.skipif(not (BIN / "chatd").exists(), reason="chatd console script not installed")
def test_make_run_starts_the_daemon_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CHATD_") and k not in ("DISPLAY", "NOTIFY_SOCKET", "MAKEFLAGS")}
    env.update(CHATD_DATA_DIR=str(data_dir), CHATD_PORT="0", CHATD_DB=":memory:")

    def make_run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(["make", "-s", "-C", str(ROOT), "run", "STAMP=", f"BIN={BIN}"],
                              capture_output=True, text=True, env=env, timeout=60,
                              check=False, stdin=subprocess.DEVNULL)

    try:
        first = make_run()
        assert first.returncode == 0, first.stderr
        lines = first.stdout.splitlines()
        assert lines[0].startswith("chatd started (pid ")
        assert any(line.startswith("connect with: ") for line in lines)  # no DISPLAY
        pid = holder(data_dir / "chatd.pid")
        assert pid and f"(pid {pid})" in lines[0]

        second = make_run()
        assert second.returncode == 0, second.stderr
        assert second.stdout.splitlines()[0].startswith("chatd already runs")
        assert holder(data_dir / "chatd.pid") == pid

        stop = subprocess.run([str(BIN / "chatd"), "stop"], env=env, capture_output=True,
                              text=True, timeout=60, check=False)
        assert stop.returncode == 0, stop.stderr
    finally:
        left = holder(data_dir / "chatd.pid")
        if left:
            os.kill(left, signal.SIGKILL)
            wait_gone(left, 10)
