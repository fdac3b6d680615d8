"""``chatgui`` for real: windows on an Xvfb display started by the test, driven
with xdotool like a user would, checked through the server's control socket
(``watch``) and through each window's own state (``--state-file``).

Xvfb picks a free display itself (``-displayfd``). Closing a window is done as
a window manager does it, with a ``WM_DELETE_WINDOW`` client message (sent with
libX11 through ctypes: there is no window manager on the bare display).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import select
import signal
import subprocess
import sys
import time
import tkinter as tk
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chatgui.lines import Line
from chatgui.logview import LogView
from tests.gui_tools import xvfb
from tests.support import TestClient, running_server

WAIT = 15.0


@pytest.fixture(scope="module")
def display() -> Iterator[str]:
    with xvfb() as name:
        yield name


def wait_for(what: str, cond: Callable[[], Any], timeout: float = WAIT) -> Any:
    """Poll ``cond`` until it returns something true; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        select.select([], [], [], 0.05)


def send_wm_delete(display: str, window: int) -> None:
    """What a window manager's close button does: a WM_DELETE_WINDOW message."""
    x11 = ctypes.cdll.LoadLibrary(ctypes.util.find_library("X11") or "libX11.so.6")
    x11.XOpenDisplay.restype = ctypes.c_void_p
    x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x11.XInternAtom.restype = ctypes.c_ulong
    x11.XInternAtom.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    x11.XFlush.argtypes = [ctypes.c_void_p]
    x11.XCloseDisplay.argtypes = [ctypes.c_void_p]

    class ClientMessage(ctypes.Structure):
        _fields_ = [("type", ctypes.c_int), ("serial", ctypes.c_ulong),
                    ("send_event", ctypes.c_int), ("display", ctypes.c_void_p),
                    ("window", ctypes.c_ulong), ("message_type", ctypes.c_ulong),
                    ("format", ctypes.c_int), ("l", ctypes.c_long * 5)]

    class XEvent(ctypes.Union):
        _fields_ = [("xclient", ClientMessage), ("pad", ctypes.c_long * 24)]

    x11.XSendEvent.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_long,
                               ctypes.POINTER(XEvent)]
    dpy = x11.XOpenDisplay(display.encode())
    assert dpy, f"cannot open display {display}"
    try:
        event = XEvent()
        event.xclient.type = 33  # ClientMessage
        event.xclient.window = window
        event.xclient.message_type = x11.XInternAtom(dpy, b"WM_PROTOCOLS", 0)
        event.xclient.format = 32
        event.xclient.l[0] = x11.XInternAtom(dpy, b"WM_DELETE_WINDOW", 0)
        assert x11.XSendEvent(dpy, window, 0, 0, ctypes.byref(event))
        x11.XFlush(dpy)
    finally:
        x11.XCloseDisplay(dpy)


class Gui:
    """One ``chatgui`` process and what its window shows."""

    def __init__(self, display: str, tmp: Path, label: str, *args: str,
                 env: dict[str, str] | None = None) -> None:
        self.display = display
        self.state_file = tmp / f"{label}.state.json"
        self.env = {**os.environ, "DISPLAY": display,
                    "CHATGUI_SETTINGS": str(tmp / f"{label}.settings.json"), **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "chatgui", "--state-file", str(self.state_file), *args],
            env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True)

    def state(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.state_file.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            return {}

    def wait(self, what: str, cond: Callable[[dict[str, Any]], Any],
             timeout: float = WAIT) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            assert self.proc.poll() is None or cond(self.state()), (
                f"chatgui exited: {self.proc.stderr.read() if self.proc.stderr else ''}")
            state = self.state()
            return state if state and cond(state) else None
        try:
            result: dict[str, Any] = wait_for(what, check, timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the window shows {self.state()}") from None
        return result

    def xdotool(self, *args: str) -> str:
        done = subprocess.run(["xdotool", *args], env=self.env, capture_output=True,
                              text=True, timeout=WAIT, check=False)
        return done.stdout.strip()

    def window(self, title_regex: str) -> int:
        """The X window whose title matches (ASCII: xdotool matches bytes)."""
        found = wait_for(f"window {title_regex!r}", lambda: self.xdotool(
            "search", "--onlyvisible", "--name", title_regex))
        return int(found.split()[0])

    def type_text(self, window: int, text: str) -> None:
        """Keys into ``window``: no window manager, so focus it by hand first."""
        self.xdotool("windowraise", str(window))  # no window manager: windows overlap
        self.xdotool("windowfocus", "--sync", str(window))
        if text:
            self.xdotool("type", "--delay", "5", text)

    def type_line(self, window: int, text: str, key: str = "Return") -> None:
        self.type_text(window, text)
        self.xdotool("key", key)

    def click(self, window: int, box: list[int]) -> None:
        """Click the middle of a rectangle from the window's state."""
        self.xdotool("windowraise", str(window))
        self.xdotool("mousemove", str(box[0] + box[2] // 2), str(box[1] + box[3] // 2),
                     "click", "1")

    def lines(self) -> list[str]:
        return list(self.state().get("lines", []))

    def exit_code(self) -> int:
        return self.proc.wait(WAIT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(WAIT)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


@contextlib.contextmanager
def gui(display: str, tmp: Path, label: str, *args: str) -> Iterator[Gui]:
    window = Gui(display, tmp, label, *args)
    try:
        yield window
    finally:
        window.stop()


def watcher(server: Any) -> TestClient:
    watch: TestClient = server.control()
    watch.send({"type": "watch"})
    watch.expect("ok")
    return watch


def next_msg(watch: TestClient) -> dict[str, Any]:
    return watch.drain_until(lambda m: m["type"] == "msg", timeout=WAIT)[-1]


def connected(state: dict[str, Any]) -> bool:
    return state.get("status") == "connected"


def test_monitor_shows_users_and_messages(display, tmp_path):
    deep = tmp_path / ("a-data-directory-deep-enough-for-a-long-socket-path-" * 2)
    deep.mkdir()
    with running_server(deep) as server, server.login("carol") as carol, \
            gui(display, tmp_path, "monitor", "--monitor", "--control",
                str(server.control_path)) as monitor:
        assert len(bytes(server.control_path)) > 108  # longer than sun_path holds
        monitor.wait("carol online", lambda s: s.get("connected") and s["users"] == ["carol"])
        carol.send({"type": "say", "text": "hello operators"})
        monitor.wait("the message", lambda s: any(
            ln["text"].endswith("<carol> hello operators") for ln in s["lines"]))
        with server.login("dave"):
            monitor.wait("dave joined", lambda s: s["users"] == ["carol", "dave"])
        monitor.wait("dave left", lambda s: s["users"] == ["carol"])
        monitor.type_line(monitor.window("^chatd monitor"), "maintenance at five")
        said = carol.drain_until(lambda m: m["type"] == "msg" and m["from"] == "server")
        assert said[-1]["text"] == "maintenance at five"


@pytest.fixture
def text_widget(display: str) -> Iterator[tk.Text]:
    root = tk.Tk(screenName=display)
    widget = tk.Text(root, width=60, height=10)
    widget.pack()
    root.update()
    try:
        yield widget
    finally:
        root.destroy()


def shown(widget: tk.Text) -> list[str]:
    return str(widget.get("1.0", "end-1c")).splitlines()


def numbered(first: int, last: int) -> list[Line]:
    return [Line("other", f"m{i}", i) for i in range(first, last + 1)]


def test_log_is_trimmed_in_batches_and_keeps_the_newest(text_widget):
    log = LogView(text_widget, max_lines=10, trim_batch=5)
    for i in range(1, 31):
        log.append(numbered(i, i))
        text_widget.update()  # a turn of the event loop: the view follows the end
        assert log.lines <= 15 and len(shown(text_widget)) == log.lines
    assert shown(text_widget)[-1] == "m30"
    assert log.oldest_seq() == int(shown(text_widget)[0][1:])
    log.append(numbered(31, 100))  # one turn brings more than the log keeps
    assert shown(text_widget) == [f"m{i}" for i in range(91, 101)]
    assert [t for _, t in log.texts] == shown(text_widget) and log.oldest_seq() == 91


def test_pending_lines_stay_last_until_acknowledged(text_widget):
    log = LogView(text_widget)
    log.append(numbered(1, 1))
    log.add_pending("a", Line("pending", "(sending) first"))
    log.add_pending("b", Line("pending", "(sending) second"))
    log.append(numbered(2, 2))
    assert shown(text_widget) == ["m1", "m2", "(sending) first", "(sending) second"]
    log.drop_pending("a")
    log.append([Line("own", "first", 3)])
    assert shown(text_widget) == ["m1", "m2", "first", "(sending) second"]
    log.drop_pending("b")
    log.drop_pending("b")  # twice (an ack after an error): harmless
    assert shown(text_widget) == ["m1", "m2", "first"]


def test_history_pages_go_below_the_header(text_widget):
    log = LogView(text_widget)
    log.pinned = 1
    log.append([Line("separator", "— history —"), *numbered(50, 52)])
    log.prepend(numbered(47, 49))
    log.prepend(numbered(45, 46))
    assert shown(text_widget) == ["— history —", *[f"m{i}" for i in range(45, 53)]]
    assert log.oldest_seq() == 45 and log.lines == 9


def test_log_reading_back_is_not_trimmed_away_until_three_bounds(text_widget):
    log = LogView(text_widget, max_lines=10, trim_batch=5)
    log.append(numbered(1, 10))
    text_widget.update()
    text_widget.yview_moveto(0.0)  # the user scrolled up to read
    text_widget.update()
    for i in range(11, 31):
        log.append(numbered(i, i))
        text_widget.update()
    assert shown(text_widget)[0] == "m1" and log.lines == 30  # left alone while reading
    log.append(numbered(31, 31))  # past three bounds: trimmed anyway
    assert log.lines == 10 and shown(text_widget)[-1] == "m31"
