"""A login storm: account logins at a fixed rate, each paying the real password hash.

The server checks an account's password with scrypt (tens of ms of CPU) in a
worker process, so that logins do not make the chat wait. The storm tests
that promise: it runs next to a one-room latency run and logs in a fresh
account every ``1/rate`` seconds (fresh, so no login meets the session of an
earlier one: ``name_taken`` would be the bench's fault), waits for its
``welcome`` and hangs up. The accounts are created first, on the control
socket; they are put in the server's default rooms, which the bench makes a
room of their own so that the timed room's frames stay the room's messages.

A login's latency is ``hello`` sent to ``welcome`` read. Logins started in the
measured window are timed; those still unanswered a grace period after it
are counted as unfinished, and refusals are counted by error code (when the
offered rate is above what the hash workers can do, the queue grows, and so
do the latencies, until the server's handshake timeout refuses them): a storm
beyond the server's means is a result to report, not a failure of the bench.
"""

from __future__ import annotations

import selectors
import socket
import time
from array import array
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from chatd.bench_load import (
    RECV_SIZE,
    SETUP_TIMEOUT,
    WELCOME_HEAD,
    hello,
    refusal,
    wait_until,
    work,
)
from chatd.bench_server import BenchError
from chatd.control_client import ControlClient, ControlError
from protocol.framing import decode_payload, frame_end
from protocol.limits import HEADER_SIZE, PROTO_V2

PASSWORD = "bench-password"
#: Seconds after the window to wait for the welcomes of logins started in it.
GRACE = 10.0


def create_accounts(control: Path, names: list[str]) -> None:
    """``account_add`` each name on the control socket (pipelined: each costs a hash)."""
    try:
        with ControlClient(control, timeout=SETUP_TIMEOUT) as client:
            refs = [client.send({"type": "account_add", "name": name, "password": PASSWORD})
                    for name in names]
            for ref in refs:
                client.reply(ref)
    except ControlError as exc:
        raise BenchError(f"creating the storm's accounts: {exc}") from None


@dataclass(frozen=True)
class StormSpec:
    host: str
    port: int
    names: list[str]  # one account per login, in order
    rate: float  # logins per second


class _Login:
    __slots__ = ("first", "name", "sent_ns")

    def __init__(self, name: str, sent_ns: int) -> None:
        self.name = name
        self.sent_ns = sent_ns
        self.first = bytearray()  # the bytes of the first frame, until it is whole


def _answer(login: _Login, data: bytes) -> str | None:
    """Collect the first frame: None until it is whole, then ``welcome`` or the
    refusal's error code (``closed`` if the server hung up first)."""
    if not data:
        return "closed"
    first = login.first
    first += data
    if len(first) < HEADER_SIZE or len(first) < frame_end(first):
        return None
    if first.startswith(WELCOME_HEAD, HEADER_SIZE):
        return "welcome"
    message = decode_payload(first[HEADER_SIZE : frame_end(first)])
    if message.get("type") != "error":
        raise refusal(message)  # not a login's answer at all
    return str(message.get("code"))


def _storm(spec: StormSpec, times: tuple[int, int, int]) -> dict[str, Any]:
    t_start, t_m0, t_m1 = times
    interval_ns = int(1e9 / spec.rate)
    grace_end = t_m1 + int(GRACE * 1e9)
    sel = selectors.DefaultSelector()
    names = iter(spec.names)
    samples: array[int] = array("q")  # µs, logins started in the window
    started = answered_in_window = 0
    refused: dict[str, int] = {}  # error code -> logins started in the window
    next_ns = t_start
    wait_until(t_start)
    while True:
        now = time.monotonic_ns()
        while next_ns <= now and next_ns < t_m1:
            name = next(names, None)
            if name is None:
                raise BenchError("the storm ran out of accounts")
            sent = time.monotonic_ns()
            sock = socket.create_connection((spec.host, spec.port), timeout=SETUP_TIMEOUT)
            sock.sendall(hello(name, PROTO_V2, PASSWORD))
            sock.setblocking(False)
            sel.register(sock, selectors.EVENT_READ, _Login(name, sent))
            started += sent >= t_m0
            next_ns += interval_ns
        pending = len(sel.get_map())
        if now >= grace_end or (now >= t_m1 and not pending):
            break
        due = next_ns if next_ns < t_m1 else grace_end
        for key, _ in sel.select(max(0.0, (due - time.monotonic_ns()) / 1e9)):
            login: _Login = key.data
            answering = key.fileobj
            assert isinstance(answering, socket.socket)
            try:
                data = answering.recv(RECV_SIZE)
            except ConnectionError:
                data = b""
            answer = _answer(login, data)
            if answer is None:
                continue
            got = time.monotonic_ns()
            sel.unregister(answering)
            answering.close()
            if answer != "welcome":
                if login.sent_ns >= t_m0:
                    refused[answer] = refused.get(answer, 0) + 1
                continue
            if login.sent_ns >= t_m0:
                samples.append((got - login.sent_ns) // 1000)
            answered_in_window += t_m0 <= got < t_m1
    unfinished = sum(key.data.sent_ns >= t_m0 for key in sel.get_map().values())
    for key in list(sel.get_map().values()):
        key.fileobj.close()  # type: ignore[union-attr]
    sel.close()
    return {"started": started, "answered_in_window": answered_in_window,
            "unfinished": unfinished, "refused": refused, "samples": samples}


def storm_worker(pipe: Connection, spec: StormSpec) -> None:
    """Wait for the parent's times, storm, report."""

    def body() -> None:
        pipe.send(("ready", None))
        _, times = pipe.recv()
        pipe.send(("done", _storm(spec, times)))

    work(pipe, body)
