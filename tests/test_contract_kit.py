"""Helpers for the black-box contract suites (``test_contract_*.py``).

These suites are written from the wire contract alone, as an outside tester
would: raw bytes in, frames out, no knowledge of the server's internals. The
helpers build frames by hand (so a test can send what our own encoder never
would) and state the contract's rules for fatal errors once.
"""

from __future__ import annotations

import itertools
import json
import struct
from typing import Any

from tests.support import ServerProcess, TestClient

Message = dict[str, Any]

_names = itertools.count(1)


def unique(prefix: str) -> str:
    """A user name no other test on a shared server uses."""
    return f"{prefix}{next(_names)}"


def frame(payload: bytes) -> bytes:
    """One frame around raw payload bytes (anything, valid or not)."""
    return struct.pack(">I", len(payload)) + payload


def jframe(message: Any) -> bytes:
    """One frame around a JSON value, non-ASCII kept as UTF-8 (lone surrogates,
    which UTF-8 cannot carry, as ``\\uXXXX`` escapes: valid JSON)."""
    try:
        return frame(json.dumps(message, ensure_ascii=False).encode())
    except UnicodeEncodeError:
        return frame(json.dumps(message).encode())


def hello(name: str, **members: Any) -> bytes:
    return jframe({"type": "hello", "proto": 1, "name": name, **members})


def fatal_close(client: TestClient, code: str, **members: Any) -> Message:
    """§6: the fatal error is the connection's last frame, then it closes."""
    frames = client.wait_closed()
    assert frames, "closed without an error frame"
    error = frames[-1]
    assert error["type"] == "error" and error.get("code") == code, frames
    assert error["fatal"] is True, error
    assert isinstance(error["message"], str), error
    assert all(f["type"] != "error" for f in frames[:-1]), frames
    for key, value in members.items():
        assert error.get(key) == value, error
    return error


def nonfatal(client: TestClient, code: str, **members: Any) -> Message:
    """The next frame is this non-fatal error; the session carries on."""
    error = client.expect("error", code=code, fatal=False, **members)
    assert isinstance(error["message"], str), error
    if "ref" not in members:
        assert "ref" not in error, error
    quiet_then_pong(client)
    return error


def quiet_then_pong(client: TestClient) -> None:
    """Nothing else is pending: a ping's pong comes next."""
    client.send({"type": "ping", "t": "quiet"})
    client.expect("pong", t="quiet")


def fresh(server: ServerProcess, prefix: str = "u") -> TestClient:
    """A logged-in client with its backlog drained (by a ping barrier)."""
    client = server.login(unique(prefix))
    client.barrier()
    return client
