"""Contract §2 (names, text, ids) and the hello check order of §3.2, black-box."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ServerProcess, running_server
from tests.test_contract_kit import fatal_close, fresh, hello, jframe, nonfatal, unique

MAX_TEXT = 10


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("cvalues"), "--max-text", str(MAX_TEXT),
                        "--rate", "0") as srv:
        yield srv


GOOD_NAMES = {
    "nfc_composes": ("e\u0301" * 32, "\u00e9" * 32),  # 64 code points typed, 32 after NFC
    "exactly_32": ("a" * 32, "a" * 32),
    "one_char": ("Z", "Z"),
    "punctuation": ("a_b-c.d", "a_b-c.d"),
    "only_punct": ("._-", "._-"),
    "other_digits": ("\u0663\u0664x", "\u0663\u0664x"),  # Arabic-Indic digits (Nd)
    "letter_number": ("\u216b\u2160", "\u216b\u2160"),  # Roman numerals (Nl)
    "cjk": ("\u732b\u5b50", "\u732b\u5b50"),
    "astral_letter": ("\U0001d400bc", "\U0001d400bc"),  # MATHEMATICAL BOLD A (Lu)
    "server_prefix": ("servers", "servers"),
    "other_numbers": ("x\u00b2\u00bd", "x\u00b2\u00bd"),  # No
    "modifier_letter": ("\u02b0a", "\u02b0a"),  # Lm
    "angstrom_sign": ("\u212bx", "\u00c5x"),  # NFC maps the sign to the letter
}


@pytest.mark.parametrize("typed,shown", GOOD_NAMES.values(), ids=GOOD_NAMES.keys())
def test_good_names_are_kept_as_typed_after_nfc(server: ServerProcess, typed: str,
                                                shown: str) -> None:
    with server.client() as client:
        welcome = client.login(typed)
        assert welcome["name"] == shown
        assert shown in welcome["users"]


BAD_NAMES = {
    "empty": "",
    "33_chars": "a" * 33,
    "33_after_nfc": "e\u0301" * 33,
    "space": "a b",
    "at": "a@b",
    "combining_mark_left_after_nfc": "x\u0301",
    "zero_width_space": "a\u200bb",
    "emoji": "a\U0001f600",
    "control": "a\x01",
    "server": "server",
    "Server": "Server",
    "SERVER": "SERVER",
    "long_s_server": "\u017fERVER",  # casefolds to "server"
    "lone_surrogate": "a\ud800",
    "nbsp": "a\u00a0b",
    "nfc_leaves_a_mark": "\u0958",  # NFC: DEVANAGARI KA + NUKTA (Mn)
}


@pytest.mark.parametrize("name", BAD_NAMES.values(), ids=BAD_NAMES.keys())
def test_bad_names(server: ServerProcess, name: str) -> None:
    with server.client() as client:
        client.send_raw(hello(name, id="h"))
        fatal_close(client, "bad_name", ref="h")


def test_casefold_collision_and_name_shown_as_first_typed(server: ServerProcess) -> None:
    with server.login("Stra\u00dfe") as first:
        first.barrier()
        with server.client() as second:
            second.send_raw(hello("STRASSE"))
            fatal_close(second, "name_taken")
        with server.login(unique("Other")) as other:
            other.barrier()
            other.send({"type": "pm", "to": "strasse", "text": "hi"})
            sent = other.expect("pm")
            assert sent["to"] == "Stra\u00dfe"
            got = first.drain_until(lambda m: m["type"] == "pm")[-1]
            assert got["to"] == "Stra\u00dfe" and got["from"] == other.welcome["name"]


TEXTS = {
    # text sent -> (error code) or (stored text)
    "ideographic_space": ("\u3000hi\u3000", "hi"),
    "nbsp": ("\u00a0hi\u00a0", "hi"),
    "line_separator": ("\u2028hi\u2029", "hi"),
    "tabs_newlines": ("\t\n hi there \n\t", "hi there"),
    "inner_kept": ("a \n\t b", "a \n\t b"),
    "zero_width_not_white": ("\u200b", "\u200b"),
    "ten_after_strip": ("   " + "x" * MAX_TEXT + "\u3000", "x" * MAX_TEXT),
    "ten_astral": ("\U0001f600" * MAX_TEXT, "\U0001f600" * MAX_TEXT),
    "ten_combining": ("e\u0301" * 5, "e\u0301" * 5),
}


@pytest.mark.parametrize("text,stored", TEXTS.values(), ids=TEXTS.keys())
def test_text_is_stripped_of_white_space(server: ServerProcess, text: str,
                                         stored: str) -> None:
    with fresh(server) as client:
        client.send_raw(jframe({"type": "say", "text": text, "id": "t"}))
        assert client.expect("msg", id="t")["text"] == stored
        client.send_raw(jframe({"type": "pm", "to": client.welcome["name"], "text": text}))
        assert client.expect("pm")["text"] == stored
        client.send({"type": "history", "before": client.welcome["seq"] + 10, "limit": 1})
        assert client.expect("history")["msgs"][-1]["text"] == stored


BAD_TEXTS = {
    "empty": ("", "empty_message"),
    "spaces": ("  \t\n ", "empty_message"),
    "unicode_spaces": ("\u3000\u00a0\u2003\u202f", "empty_message"),
    "nul": ("a\x00b", "bad_text"),
    "del": ("a\x7fb", "bad_text"),
    "cr": ("a\rb", "bad_text"),
    "c1_nel": ("a\x85b", "bad_text"),  # NEL is White_Space but Cc
    "nel_only": ("\x85", "bad_text"),  # bad_text is checked before stripping
    "control_in_spaces": ("   \x01   ", "bad_text"),
    "lone_surrogate": ("\udc00", "bad_text"),
    "control_and_long": ("x" * 20 + "\x02", "bad_text"),
    "eleven": ("x" * (MAX_TEXT + 1), "text_too_long"),
    "eleven_astral": ("\U0001f600" * (MAX_TEXT + 1), "text_too_long"),
    "long_spaces_only": (" " * 50, "empty_message"),
}


@pytest.mark.parametrize("text,code", BAD_TEXTS.values(), ids=BAD_TEXTS.keys())
def test_text_rules_in_order(server: ServerProcess, text: str, code: str) -> None:
    with fresh(server) as client:
        client.send_raw(jframe({"type": "say", "text": text, "id": "b1"}))
        nonfatal(client, code, ref="b1")
        client.send_raw(jframe({"type": "pm", "to": client.welcome["name"], "text": text,
                                "id": "b2"}))
        nonfatal(client, code, ref="b2")


def test_error_without_id_has_no_ref(server: ServerProcess) -> None:
    with fresh(server) as client:
        client.send({"type": "say", "text": ""})
        nonfatal(client, "empty_message")
        client.send({"type": "nosuch"})
        nonfatal(client, "unknown_type")
        client.send({"type": "nosuch", "id": "u"})
        nonfatal(client, "unknown_type", ref="u")


def test_every_reply_carries_ref(server: ServerProcess) -> None:
    name = unique("ref")
    with server.client() as client:
        client.send_raw(hello(name, id="r0", since=2**53 - 1))
        assert client.expect("welcome")["ref"] == "r0"
        client.send({"type": "who", "id": "r1"})
        assert client.expect("users", ref="r1")["users"].count(name) == 1
        client.send({"type": "history", "before": 1, "id": "r2"})
        client.expect("history", ref="r2", msgs=[])
        client.send({"type": "ping", "id": "r3", "t": None})
        pong = client.expect("pong", ref="r3")
        assert "t" in pong and pong["t"] is None
        client.send({"type": "hello", "proto": 1, "name": name, "id": "r4"})
        nonfatal(client, "already_logged_in", ref="r4")
        client.send({"type": "say", "text": "x", "id": "r5"})
        msg = client.expect("msg", id="r5")
        assert "ref" not in msg
        client.send({"type": "pm", "to": name, "text": "x", "id": "r6"})
        pm = client.expect("pm", id="r6")
        assert "ref" not in pm
        client.send({"type": "pm", "to": "nobody-here", "text": "x", "id": "r7"})
        nonfatal(client, "no_such_user", ref="r7")


@pytest.mark.parametrize("t", [None, 0, -1.5, "s", [1, [2]], {"a": {"b": None}}, True])
def test_ping_echoes_any_t(server: ServerProcess, t: object) -> None:
    with fresh(server) as client:
        client.send({"type": "ping", "t": t})
        pong = client.expect("pong")
        assert "t" in pong and pong["t"] == t and type(pong["t"]) is type(t)


def test_ping_without_t_and_client_pongs(server: ServerProcess) -> None:
    with fresh(server) as client:
        client.send({"type": "ping"})
        assert "t" not in client.expect("pong")
        client.send({"type": "pong", "t": 1})
        client.send({"type": "pong", "t": {"any": "value"}})
        assert client.barrier() == []


# --- hello check order (§3.2) ---------------------------------------------------


def _hello_error(server: ServerProcess, message: dict[str, object], code: str) -> None:
    with server.client() as client:
        client.send_raw(jframe({"type": "hello", **message}))
        fatal_close(client, code)


def test_hello_check_order(tmp_path: Path) -> None:
    with running_server(tmp_path, "--password", "pw", "--max-clients", "1") as srv:
        with srv.login("Taken", password="pw") as taken:
            taken.barrier()
            cases: list[tuple[dict[str, object], str]] = [
                ({"proto": 3, "name": "server"}, "unsupported_proto"),
                ({"proto": 3, "name": 5}, "bad_request"),
                ({"name": "x"}, "bad_request"),
                ({"proto": 1}, "bad_request"),
                ({"proto": 1, "name": "x", "since": "0"}, "bad_request"),
                ({"proto": 1, "name": "x", "password": 7}, "bad_request"),
                ({"proto": 0, "name": "Taken"}, "unsupported_proto"),
                ({"proto": 1, "name": "a b", "password": "no"}, "bad_name"),
                ({"proto": 1, "name": "SERVER"}, "bad_name"),
                ({"proto": 1, "name": "taken", "password": "no"}, "auth_failed"),
                ({"proto": 1, "name": "taken"}, "auth_failed"),
                ({"proto": 1, "name": "fresh", "password": "no"}, "auth_failed"),
                ({"proto": 1, "name": "TAKEN", "password": "pw"}, "name_taken"),
                ({"proto": 1, "name": "fresh", "password": "pw"}, "server_full"),
            ]
            for message, code in cases:
                _hello_error(srv, message, code)
            taken.send({"type": "bye"})
            taken.wait_closed()
        # The slot and the name are free again as soon as the connection closed.
        with srv.login("TAKEN", password="pw") as again:
            assert again.welcome["name"] == "TAKEN"


@pytest.mark.parametrize("first", [
    {"type": "say", "text": "hi"},
    {"type": "ping", "t": 1},
    {"type": "pong", "t": 1},
    {"type": "bye"},
    {"type": "who"},
    {"type": "nosuch"},
    {"type": "status"},
])
def test_first_frame_not_hello_is_not_logged_in(server: ServerProcess,
                                                first: dict[str, object]) -> None:
    with server.client() as client:
        client.send_raw(jframe({**first, "id": "f"}) + hello(unique("late")))
        fatal_close(client, "not_logged_in")


def test_names_are_nfc_compared(server: ServerProcess) -> None:
    composed = unicodedata.normalize("NFC", "Zo\u00eb" + unique(""))
    decomposed = unicodedata.normalize("NFD", composed)
    with server.login(decomposed) as first:
        assert first.welcome["name"] == composed
        with server.client() as second:
            second.send_raw(hello(composed))
            fatal_close(second, "name_taken")
