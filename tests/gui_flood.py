"""How much CPU a ``chatgui`` event-loop turn takes while 100 rooms fill up.

    .venv/bin/python -m tests.gui_flood [--rooms 100] [--messages 20000]

Starts Xvfb and a ``chatd`` (``--rate 0``), makes the account ``reader`` a
member of ``--rooms`` rooms (lobby and r001...), opens ``chatgui --name reader
--account --stats`` (no ``--state-file``: nothing but the window runs in it),
and once the window is logged in, this process sends ``--messages`` messages
as ``writer``, one room after another, as fast as the server takes them (lobby,
the room in front, gets its share and the last one). When the window's process
has gone idle (its CPU time stops growing), the window is closed the way a
window manager does it, and the turn times it prints at exit are shown with
the number of events it handled (which must cover every message).

``--read-ahead BYTES`` runs the window with ``chatclient.net.READ_AHEAD`` set
to BYTES (the most one ``poll`` reads, hence decodes, in a turn): to measure
what that bound does, not a setting of the client.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.gui_tools import xvfb
from tests.support import running_server
from tests.test_gui_xvfb import WAIT, send_wm_delete, wait_for
from tests.v2_support import PASSWORD, call, login2

CHUNK = 500  # messages sent between two barriers (the writer reads its echoes)
IDLE_SHARE = 0.05  # the window is idle below 5 % of a CPU over IDLE_SPAN
IDLE_SPAN = 1.0
DRAIN_LIMIT = 300.0
STATS_LINE = re.compile(r"chatgui: (\{.*\}) events=(\d+) rooms=(\d+)")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_idle(pid: int) -> float:
    """Wait until the process uses under IDLE_SHARE of a CPU; seconds waited."""
    start = time.monotonic()
    last = cpu_seconds(pid)
    while time.monotonic() - start < DRAIN_LIMIT:
        select.select([], [], [], IDLE_SPAN)
        now = cpu_seconds(pid)
        if now - last < IDLE_SHARE * IDLE_SPAN:
            return time.monotonic() - start
        last = now
    raise AssertionError("the window never went idle")


def start_window(display: str, tmp: Path, port: int,
                 read_ahead: int | None) -> subprocess.Popen[str]:
    """``chatgui --stats`` as a user runs it (no state file), logged in as reader."""
    args = ["--name", "reader", "--account", "--password", PASSWORD, "--port", str(port),
            "--stats"]
    patch = (f"import chatclient.net as net; net.READ_AHEAD = net.RECV_SIZE = {read_ahead}; "
             if read_ahead else "")
    code = f"import sys; {patch}from chatgui.app import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "DISPLAY": display, "CHATGUI_SETTINGS": str(tmp / "settings.json")}
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def window_id(display: str) -> int:
    def search() -> str:
        return subprocess.run(["xdotool", "search", "--onlyvisible", "--name", "^reader @ "],
                              env={**os.environ, "DISPLAY": display}, capture_output=True,
                              text=True, check=False).stdout.strip()
    return int(wait_for("the window", search).split()[0])


def flood(display: str, tmp: Path, rooms: int, messages: int,
          read_ahead: int | None = None) -> dict[str, Any]:
    names = ["lobby", *[f"r{i:03}" for i in range(1, rooms)]]
    with running_server(tmp, "--rate", "0", "--max-rooms", str(rooms + 10)) as server:
        for name in ("reader", "writer"):
            assert server.request({"type": "account_add", "name": name,
                                   "password": PASSWORD})["type"] == "ok"
        writer = login2(server, "writer", password=PASSWORD)
        reader = login2(server, "reader", password=PASSWORD)
        for name in names[1:]:
            call(writer, {"type": "join", "room": name})
            call(reader, {"type": "join", "room": name})
        reader.send({"type": "bye"})
        reader.close()
        proc = start_window(display, tmp, server.port, read_ahead)
        try:
            wid = window_id(display)
            wait_idle(proc.pid)  # logged in and drawn: quiet again
            started = time.monotonic()
            for first in range(0, messages, CHUNK):
                for i in range(first, min(messages, first + CHUNK)):
                    room = names[(i + 1) % rooms]  # the last one goes to lobby
                    writer.send({"type": "say", "room": room, "text": f"message {i} in {room}"})
                writer.barrier(first)
            sent = time.monotonic() - started
            drained = wait_idle(proc.pid)
            send_wm_delete(display, wid)
            _, err = proc.communicate(timeout=WAIT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=WAIT)
        writer.close()
    found = STATS_LINE.search(err)
    assert proc.returncode == 0 and found, err
    stats = json.loads(found.group(1))
    events = int(found.group(2))
    assert events >= messages, f"the window handled {events} events for {messages} messages"
    return {"rooms": int(found.group(3)), "messages": messages, "events": events,
            "sent_s": round(sent, 1), "idle_after_s": round(sent + drained, 1), **stats,
            "read_ahead": read_ahead or "default", "load_avg_1m": os.getloadavg()[0]}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.gui_flood", description=__doc__)
    parser.add_argument("--rooms", type=int, default=100)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--read-ahead", type=int, default=None, metavar="BYTES")
    args = parser.parse_args(argv)
    with xvfb() as display, tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(flood(display, Path(tmp), args.rooms, args.messages,
                                     args.read_ahead)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
