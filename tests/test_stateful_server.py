"""A hypothesis state machine against a real server.

Clients connect, log in, send whole, merged, split, partial and garbage frames,
stall mid-frame, say bye and vanish, in any order. After every step: the server
is alive, ``who`` equals the live logged-in clients, and every live client got
every accepted message exactly once, in seq order, with no gap.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from protocol import encode
from tests.support import ServerProcess, TestClient, running_server

NAMES = ["ann", "Bob", "c\u00e9line", "d_1", "Eve.x", "f-f"]
GARBAGE = [b"\x00\x00\x00\x00", b"\x00\x00\x00\x02{}", b"\x00\x00\x00\x01[",
           b"\x00\x00\x00\x03\xff\xfe\xfd", b"\xff\xff\xff\xff"]


class Peer:
    """A logged-in test client and what it has seen of the public messages."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.start = client.welcome["seq"]
        self.got: list[tuple[int, str]] = []
        self.rest: bytes | None = None  # the unsent part of a frame: stalled mid-frame
        self.rest_text = ""

    def collect(self, frames: list[dict[str, Any]]) -> None:
        self.got.extend((m["seq"], m["text"]) for m in frames
                        if m["type"] == "msg" and m["seq"] > self.start)


class ChatMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="chatd-stateful-"))
        self.ctx: AbstractContextManager[ServerProcess] = running_server(
            self.tmp, "--rate", "0")
        self.server = self.ctx.__enter__()
        self.observer = Peer(self.server.login("observer"))
        self.peers: dict[str, Peer] = {}
        self.silent: list[TestClient] = []
        self.expected: list[str] = []  # texts of every say the server must accept
        self.counter = 0

    def teardown(self) -> None:
        for peer in self.peers.values():
            peer.client.close()
        for client in self.silent:
            client.close()
        self.observer.client.close()
        self.ctx.__exit__(None, None, None)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _text(self) -> str:
        self.counter += 1
        return f"t{self.counter}"

    def _active(self) -> list[str]:
        return [name for name, peer in self.peers.items() if peer.rest is None]

    # --- rules -------------------------------------------------------------

    @rule(name=st.sampled_from(NAMES))
    def login(self, name: str) -> None:
        client = self.server.client()
        if name in self.peers:
            client.send({"type": "hello", "proto": 1, "name": name.upper()})
            frames = client.wait_closed()
            assert frames[-1]["code"] == "name_taken"
            client.close()
            return
        client.login(name)
        self.peers[name] = Peer(client)

    @precondition(lambda self: self._active())
    @rule(data=st.data(), count=st.integers(1, 4), pieces=st.integers(1, 5))
    def say(self, data: st.DataObject, count: int, pieces: int) -> None:
        """``count`` says merged into one write, or split into ``pieces`` writes."""
        peer = self.peers[data.draw(st.sampled_from(self._active()))]
        texts = [self._text() for _ in range(count)]
        payload = b"".join(encode({"type": "say", "text": text}) for text in texts)
        step = max(1, len(payload) // pieces)
        for i in range(0, len(payload), step):
            peer.client.send_raw(payload[i:i + step])
        self.expected.extend(texts)

    @precondition(lambda self: self._active())
    @rule(data=st.data())
    def stall_mid_frame(self, data: st.DataObject) -> None:
        peer = self.peers[data.draw(st.sampled_from(self._active()))]
        text = self._text()
        frame = encode({"type": "say", "text": text})
        cut = data.draw(st.integers(1, len(frame) - 1))
        peer.client.send_raw(frame[:cut])
        peer.rest, peer.rest_text = frame[cut:], text

    @precondition(lambda self: any(p.rest is not None for p in self.peers.values()))
    @rule(data=st.data())
    def finish_frame(self, data: st.DataObject) -> None:
        stalled = [name for name, p in self.peers.items() if p.rest is not None]
        peer = self.peers[data.draw(st.sampled_from(stalled))]
        assert peer.rest is not None
        peer.client.send_raw(peer.rest)
        self.expected.append(peer.rest_text)
        peer.rest = None

    @precondition(lambda self: self._active())
    @rule(data=st.data(), garbage=st.sampled_from(GARBAGE))
    def garbage(self, data: st.DataObject, garbage: bytes) -> None:
        name = data.draw(st.sampled_from(self._active()))
        peer = self.peers.pop(name)
        peer.client.send_raw(garbage)
        frames = peer.client.wait_closed()
        assert frames[-1]["type"] == "error" and frames[-1]["fatal"] is True
        assert frames[-1]["code"] in ("bad_frame", "frame_too_large")
        peer.client.close()

    @precondition(lambda self: self._active())
    @rule(data=st.data())
    def bye(self, data: st.DataObject) -> None:
        peer = self.peers.pop(data.draw(st.sampled_from(self._active())))
        peer.client.send({"type": "bye"})
        assert peer.client.wait_closed()[-1] == {"type": "bye", "reason": "quit"}
        peer.client.close()

    @precondition(lambda self: self.peers)
    @rule(data=st.data())
    def vanish(self, data: st.DataObject) -> None:
        """Close without a word, possibly in the middle of a frame."""
        peer = self.peers.pop(data.draw(st.sampled_from(sorted(self.peers))))
        peer.client.sock.shutdown(socket.SHUT_RDWR)
        peer.client.close()

    @rule()
    def connect_silently(self) -> None:
        self.silent.append(self.server.client())

    @precondition(lambda self: self.silent)
    @rule()
    def drop_silent(self) -> None:
        self.silent.pop().close()

    # --- what must hold after every step ------------------------------------------

    @invariant()
    def everyone_saw_every_message_once_in_order(self) -> None:
        assert self.server.proc.poll() is None, "the server died"
        active = [self.peers[name] for name in self._active()]
        # Round 1 makes sure every earlier request was handled; after round 2
        # every accepted message has been delivered to everyone reading.
        for _ in range(2):
            for peer in [*active, self.observer]:
                peer.collect(peer.client.barrier())
        observer = self.observer
        observer.client.send({"type": "who"})
        frames = observer.client.drain_until(lambda m: m["type"] == "users")
        observer.collect(frames)
        assert sorted(frames[-1]["users"]) == sorted(["observer", *self.peers])
        seqs = [seq for seq, _ in observer.got]
        assert seqs == list(range(1, len(seqs) + 1))
        assert sorted(text for _, text in observer.got) == sorted(self.expected)
        for peer in active:
            assert peer.got == [item for item in observer.got if item[0] > peer.start]


ChatMachine.TestCase.settings = settings(max_examples=30, stateful_step_count=25,
                                         deadline=None)
TestChatServer = ChatMachine.TestCase
