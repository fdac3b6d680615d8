"""The terminal's state (current room, unread counts, lines) over a real ClientSession.

The session is sans-I/O: these tests play the server by feeding it frames and
read what it would send, so every rule of :class:`chatterm.chat.Chat` is
checked against the wire, without sockets.
"""

from __future__ import annotations

import itertools
from typing import Any

from chatclient.session import ClientSession
from chatterm.chat import MARK_EVERY, Chat
from chatterm.lines import Line
from protocol import Decoder, encode
from protocol.limits import CLIENT_MAX_FRAME

NOW = 100.0


def summary(room: str, seq: int = 0, read: int = 0, kind: str = "public",
            **extra: Any) -> dict[str, Any]:
    return {"room": room, "kind": kind, "topic": "", "seq": seq, "oldest": min(seq, 1),
            "read": read, "role": "member", **extra}


def welcome(name: str, rooms: list[dict[str, Any]], account: bool = True) -> dict[str, Any]:
    return {"type": "welcome", "proto": 2, "name": name, "server": "chatd", "token": "t",
            "max_frame": 65536, "max_text": 4000, "heartbeat": 30, "account": account,
            "rooms": rooms}


def msg(room: str, seq: int, sender: str, text: str, **extra: Any) -> dict[str, Any]:
    return {"type": "msg", "room": room, "seq": seq, "ts": 1_700_000_000_000, "from": sender,
            "text": text, **extra}


class Wire:
    """A Chat over a ClientSession, with the server's side played by the test."""

    def __init__(self, rooms: list[dict[str, Any]], room: str | None = None,
                 auto_mark: bool = False) -> None:
        ids = itertools.count(1)
        self.session = ClientSession("bob", new_id=lambda: f"r{next(ids)}",
                                     rooms=[room] if room else ())
        self.chat = Chat(self.session, room, auto_mark=auto_mark)
        self.decoder = Decoder(CLIENT_MAX_FRAME)
        self.session.connection_started(NOW, "test")
        self.session.connection_made(NOW)
        assert self.sent()[0]["type"] == "hello"
        self.feed(welcome("bob", rooms))

    def feed(self, *frames: dict[str, Any], now: float = NOW) -> list[Line]:
        self.session.receive_data(b"".join(encode(f) for f in frames), now)
        return [line for event in self.session.events()
                for line in self.chat.apply(event, now)]

    def type(self, text: str) -> list[Line]:
        return self.chat.handle(text)

    def sent(self) -> list[dict[str, Any]]:
        return self.decoder.feed(self.session.data_to_send())


def test_join_moves_the_current_room_at_once_so_the_next_line_goes_there():
    wire = Wire([summary("lobby")])
    assert wire.chat.current == "lobby"
    wire.type("/join Ops")
    wire.type("hi")
    assert wire.chat.current == "ops"
    assert [(f["type"], f["room"].casefold()) for f in wire.sent()] == [
        ("join", "ops"), ("say", "ops")]


def test_a_refused_join_goes_back_to_the_room_before_it():
    wire = Wire([summary("lobby")])
    wire.type("/join secret")
    (join,) = wire.sent()
    lines = wire.feed({"type": "error", "code": "not_allowed", "ref": join["id"],
                       "message": "private room", "fatal": False})
    assert wire.chat.current == "lobby"
    assert [line.style for line in lines] == ["error"]
    assert "private room" in lines[0].text


def test_messages_read_room_then_sender_then_text():
    wire = Wire([summary("lobby", seq=3), {**summary("@alice@bob", kind="dm"), "with": "alice"}])
    lines = wire.feed(msg("lobby", 4, "alice", "hi bob"), msg("@alice@bob", 1, "alice", "psst"),
                      msg("lobby", 5, "bob", "hi alice"))
    assert [line.text for line in lines] == [
        "[lobby] <alice> hi bob", "[@alice] <alice> psst", "[lobby] <bob> hi alice"]
    assert [line.style for line in lines] == ["message", "message", "own"]


def test_edit_and_delete_without_a_number_mean_my_last_message_here():
    wire = Wire([summary("lobby", seq=1)])
    assert wire.type("/edit oops")[0].style == "error"  # nothing of mine yet
    assert wire.sent() == []
    wire.type("first")
    (say,) = wire.sent()
    wire.feed(msg("lobby", 2, "bob", "first", id=say["id"]), msg("lobby", 3, "alice", "later"))
    wire.type("/edit first!")
    wire.type("/delete")
    wire.type("/delete #3")
    assert [(f["type"], f["seq"]) for f in wire.sent()] == [
        ("edit", 2), ("delete", 2), ("delete", 3)]
    assert wire.sent() == []


def test_unread_counts_rooms_out_of_view_and_looking_clears_and_marks_them():
    wire = Wire([summary("lobby", seq=10, read=10), summary("ops", seq=5, read=3)],
                auto_mark=True)
    assert wire.chat.current == "lobby"
    assert wire.chat.unread("ops") == 2  # from the read marker at login
    wire.feed(msg("ops", 6, "alice", "a"), msg("ops", 7, "alice", "b"), msg("lobby", 11, "al", "c"))
    assert wire.chat.unread("ops") == 4 and wire.chat.unread("lobby") == 0
    marks = [f for f in wire.sent() if f["type"] == "mark"]
    assert [(f["room"], f["seq"]) for f in marks] == [("lobby", 11)]  # the room in view
    wire.chat.step(+1, NOW + MARK_EVERY)
    assert wire.chat.current == "ops" and wire.chat.unread("ops") == 0
    assert [(f["room"], f["seq"]) for f in wire.sent() if f["type"] == "mark"] == [("ops", 7)]


def test_a_pipe_marks_only_when_told():
    wire = Wire([summary("lobby", seq=1)])
    wire.feed(msg("lobby", 2, "alice", "a"))
    assert wire.sent() == []
    wire.type("/mark")
    assert [(f["type"], f["room"]) for f in wire.sent()] == [("mark", "lobby")]


def test_dm_goes_to_the_conversation_and_shows_the_partner():
    wire = Wire([summary("lobby")])
    wire.type("/dm Alice")
    (dm,) = wire.sent()
    assert dm["type"] == "dm" and wire.chat.current == "@alice@bob"
    wire.feed({"type": "joined", "ref": dm["id"], **summary("@alice@bob", kind="dm"),
               "with": "Alice", "members": []})
    assert wire.chat.where("@alice@bob") == "@Alice"
    assert wire.chat.ordered() == ["@alice@bob", "lobby"]


def test_room_given_on_the_command_line_is_kept_while_it_is_joined():
    wire = Wire([summary("lobby")], room="ops")
    assert wire.chat.current == "ops"
    assert [(f["type"], f["room"]) for f in wire.sent()] == [("join", "ops")]


def test_what_the_server_would_refuse_is_refused_here_and_nothing_is_sent():
    wire = Wire([summary("lobby")])
    for typed, code in (("bell \x07", "bad_text"), ("/join #ops", "bad_room"),
                        ("/dm no spaces", "usage")):
        (line,) = wire.type(typed)
        assert line.style == "error" and code in line.text, line
    assert wire.sent() == []
    assert wire.chat.current == "lobby"
