"""Helpers for the version 2 black-box conformance suites (``test_v2_*.py``).

The suites are written from PROTOCOL.md Part II alone, as an outside tester
would: they drive a real ``chatd`` over its sockets and never look inside it.
Every request a helper sends carries a fresh ``id``, so its reply is found by
``ref`` (13: "every version 2 request that succeeds gets exactly one reply")
while the events that came before it stay in the inbox, in order, for the test
to inspect. Nothing here sleeps to synchronise: waits are for frames, with a
deadline, and a ``ping``/``pong`` round trip is the barrier of 3.6.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from tests.support import ServerProcess, TestClient
from tests.test_contract_kit import Message, fatal_close, jframe, unique

PASSWORD = "correct horse battery"
"""The password every account of these suites is created with (11: 8..256)."""

_ids = itertools.count(1)

__all__ = ["PASSWORD", "Event", "Message", "Said", "account", "add_account", "bye", "call",
           "dm_name", "error", "events", "hello2", "join", "key", "kinds", "login2", "ok",
           "quiet", "refused", "say", "summary", "unique"]

# --- the model the stateful suites keep of what the server acknowledged ----------

Event = tuple[Any, ...]
"""A room event as a stateful suite records it: (kind, room key, details...)."""


def key(name: str) -> str:
    """A room's or user's identity (11: casefold; a dm name is its own key)."""
    return name.casefold()


@dataclass
class Said:
    """An acknowledged message as a stateful suite's model holds it."""

    sender: str
    ident: str
    text: str
    edited: bool = False
    deleted: bool = False


def hello2(name: str, **members: Any) -> Message:
    """A version 2 ``hello`` (12)."""
    return {"type": "hello", "proto": 2, "name": name, **members}


def login2(srv: ServerProcess, name: str, **members: Any) -> TestClient:
    """A version 2 session; its ``welcome`` in ``.welcome``, its backlog in the inbox."""
    client = srv.client()
    client.send(hello2(name, **members))
    client.welcome = client.expect("welcome")
    assert client.welcome["proto"] == 2, client.welcome
    return client


def refused(srv: ServerProcess, code: str, hello: Message) -> Message:
    """Send ``hello`` (any version, any members) and expect fatal ``code`` (12, 17)."""
    with srv.client() as client:
        client.send_raw(jframe(hello))
        return fatal_close(client, code)


def add_account(srv: ServerProcess, name: str, password: str = PASSWORD) -> None:
    """Create an account over the control socket (18)."""
    reply = srv.request({"type": "account_add", "name": name, "password": password})
    assert reply["type"] == "ok", reply


def account(srv: ServerProcess, prefix: str) -> str:
    """A new account with a name no other test uses."""
    name = unique(prefix)
    add_account(srv, name)
    return name


def call(client: TestClient, request: Message) -> Message:
    """Send ``request`` with a fresh ``id``; its reply (or error), found by ``ref``.

    Frames that arrive before the reply stay in the inbox in their order, so a
    test can still see the events that preceded it.
    """
    ref = f"r{next(_ids)}"
    client.send({**request, "id": ref})
    frames = client.drain_until(lambda m: m.get("ref") == ref)
    client.inbox[:0] = frames[:-1]
    reply = frames[-1]
    assert reply["type"] != "error" or reply["fatal"] is False, reply
    return reply


def error(client: TestClient, request: Message, code: str) -> Message:
    """``request`` must fail with the non-fatal error ``code`` (17), carrying ``ref``."""
    reply = call(client, request)
    assert reply["type"] == "error" and reply["code"] == code, (request, reply)
    assert reply["fatal"] is False and isinstance(reply["message"], str), reply
    return reply


def ok(client: TestClient, request: Message) -> Message:
    """``request`` must succeed with the reply ``ok``."""
    reply = call(client, request)
    assert reply["type"] == "ok", (request, reply)
    return reply


def say(client: TestClient, room: str, text: str, msg_id: str | None = None) -> Message:
    """A ``say``; its acknowledgement, the ``msg`` from this user in ``room`` that
    carries its ``id`` (14: others' messages may carry the same id)."""
    ident = msg_id if msg_id is not None else f"s{next(_ids)}"
    client.send({"type": "say", "room": room, "text": text, "id": ident})
    me = client.welcome["name"]
    frames = client.drain_until(
        lambda m: (m["type"] == "msg" and m.get("id") == ident and m["from"] == me
                   and m["room"].casefold() == room.casefold())
        or (m["type"] == "error" and m.get("ref") == ident))
    client.inbox[:0] = frames[:-1]
    assert frames[-1]["type"] == "msg", frames[-1]
    return frames[-1]


def join(client: TestClient, room: str, **members: Any) -> Message:
    """``join`` that must succeed; the ``joined`` reply (13)."""
    reply = call(client, {"type": "join", "room": room, **members})
    assert reply["type"] == "joined", reply
    return reply


def bye(client: TestClient) -> None:
    """End a session with ``bye`` and wait until the server has closed it, so
    that its name is free again (3.5)."""
    client.send({"type": "bye"})
    frames = client.wait_closed()
    assert frames and frames[-1] == {"type": "bye", "reason": "quit"}, frames
    client.close()


def events(client: TestClient) -> list[Message]:
    """Every frame pending for ``client`` now (a ping barrier, 3.6)."""
    return client.barrier(f"b{next(_ids)}")


def quiet(client: TestClient) -> None:
    """Nothing at all is pending for ``client``."""
    pending = events(client)
    assert pending == [], pending


def summary(welcome_or_list: Message | list[Message], room: str) -> Message:
    """The entry for ``room`` in ``welcome.rooms`` (or a ``rooms`` list)."""
    entries = (welcome_or_list["rooms"] if isinstance(welcome_or_list, dict)
               else welcome_or_list)
    found = [e for e in entries if e["room"].casefold() == room.casefold()]
    assert len(found) == 1, (room, entries)
    return found[0]


def dm_name(a: str, b: str) -> str:
    """The dm room name of two accounts (11)."""
    x, y = sorted((a.casefold(), b.casefold()))
    return f"@{x}@{y}"


def kinds(frames: list[Message], *types: str) -> list[Message]:
    """The frames of the given types, in order."""
    return [m for m in frames if m["type"] in types]
