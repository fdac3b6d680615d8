"""Names, texts and ids (contract §2), each checked against an independent oracle."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from protocol import (
    Decoder,
    ProtocolError,
    clean_text,
    encode,
    is_valid_id,
    name_key,
    name_problem,
    normalize_name,
)
from protocol.limits import CLIENT_MAX_FRAME, DEFAULT_MAX_TEXT
from protocol.messages import msg

# --- oracles, written from the contract's words rather than from values.py ---

NAME_CATEGORIES = {"Lu", "Ll", "Lt", "Lm", "Lo", "Nd", "Nl", "No"}

# Unicode White_Space (PropList.txt), the set the contract strips.
WHITE_SPACE = frozenset(
    [chr(c) for c in (*range(0x09, 0x0E), 0x20, 0x85, 0xA0, 0x1680, 0x2028, 0x2029,
                      0x202F, 0x205F, 0x3000)]
    + [chr(c) for c in range(0x2000, 0x200B)]
)


def oracle_name(value: str) -> str | None:
    """The name the server keeps, or None when the contract rejects ``value``."""
    nfc = unicodedata.normalize("NFC", value)
    if len(nfc) < 1 or len(nfc) > 32:
        return None
    for char in nfc:
        if char not in ("_", "-", ".") and unicodedata.category(char) not in NAME_CATEGORIES:
            return None
    if nfc.casefold() == "server":
        return None
    return nfc


def oracle_same_user(a: str, b: str) -> bool:
    return unicodedata.normalize("NFC", a).casefold() == unicodedata.normalize("NFC", b).casefold()


def forbidden(char: str) -> bool:
    category = unicodedata.category(char)
    return category == "Cs" or (category == "Cc" and char not in "\n\t")


def oracle_strip(text: str) -> str:
    start, end = 0, len(text)
    while start < end and text[start] in WHITE_SPACE:
        start += 1
    while end > start and text[end - 1] in WHITE_SPACE:
        end -= 1
    return text[start:end]


# --- strategies ---

INTERESTING = (
    # letters, digits (Nd, Nl, No), case oddities
    "aZé_-.0٣Ⅻ²ß\u017fİ\u0131ǅΣ\u03c3ςﬁK\u212a\u212bÅ"
    "e\u0301\u0308\u0345\u200d"  # combining marks, a joiner
    " \t\n\u00a0\u3000!@/\\'\"<>"  # white space and punctuation
    "\x00\x1f\x7f\x85\ud800\udfff"  # controls and surrogates
    "😀\U0001d518"  # astral: emoji (So) and a math letter (Lu)
)
name_candidates = st.one_of(
    st.text(max_size=40),
    st.text(st.sampled_from(INTERESTING), max_size=36),
    st.sampled_from(["server", "SERVER", "Server", "\u017ferver", "SERVER\u200d", "server1"]),
    st.text(st.characters(categories=("L", "N")), min_size=30, max_size=34),
)
valid_names = (
    st.text(
        st.characters(categories=("L", "N")) | st.sampled_from("_-.é\u0301\u212b\u017fßİΣ"),
        min_size=1,
        max_size=32,
    )
    .map(oracle_name)
    .filter(lambda n: n is not None)
    .map(str)
)

allowed_chars = st.characters(exclude_categories=("Cc", "Cs")) | st.sampled_from(
    ["\n", "\t", "\u0301", "\U0001f600", "\U0001d518", " ", "\u3000"]
)
forbidden_chars = st.sampled_from(
    [chr(c) for c in range(0x20) if chr(c) not in "\n\t"]
    + [chr(c) for c in range(0x7F, 0xA0)]
    + ["\ud800", "\udbff", "\udc00", "\udfff"]
)


# --- names ---


@given(name_candidates)
def test_every_string_is_a_valid_name_or_bad_name(value: str) -> None:
    expected = oracle_name(value)
    assert (name_problem(value) is None) == (expected is not None)
    if expected is None:
        with pytest.raises(ProtocolError) as exc:
            normalize_name(value)
        assert exc.value.code == "bad_name"
        assert exc.value.fatal
    else:
        assert normalize_name(value) == expected


@given(valid_names)
def test_case_and_normal_form_do_not_make_another_user(name: str) -> None:
    key = name_key(name)
    for other in (
        unicodedata.normalize("NFD", name),
        name.casefold(),
        unicodedata.normalize("NFD", name.casefold()),
    ):
        assert oracle_same_user(name, other)
        assert name_key(other) == key
    for other in (name.upper(), name.lower(), name.swapcase()):
        if oracle_same_user(name, other):
            assert name_key(other) == key


@given(name_candidates, name_candidates)
def test_name_key_is_the_contract_identity(a: str, b: str) -> None:
    assert (name_key(a) == name_key(b)) == oracle_same_user(a, b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Alice", "alice"),
        ("ALICE", "aLiCe"),
        ("Straße", "STRASSE"),
        ("\u00e9mile", "e\u0301mile"),  # NFC vs NFD
        ("\u00c9MILE", "e\u0301mile"),  # both at once
        ("\u212b", "å"),  # ANGSTROM SIGN is canonically Å
        ("\u212a", "k"),  # KELVIN SIGN is canonically K
        ("ΣΊΣΥΦΟΣ", "ΣΊΣΥΦΟΣ".lower()),  # lower() gives a final sigma
        ("ﬁx", "FIX"),  # a ligature folds to two letters
        ("\u01f0", "J\u030c"),  # folding leaves a combining mark
    ],
)
def test_same_user_examples(a: str, b: str) -> None:
    assert name_key(a) == name_key(b)


@pytest.mark.parametrize(
    ("a", "b"), [("alice", "alice2"), ("ǅ", "dž1"), ("a.b", "a-b"), ("\u0131", "i")]
)
def test_different_user_examples(a: str, b: str) -> None:
    assert name_key(a) != name_key(b)


def test_the_server_keeps_the_case_as_typed() -> None:
    assert normalize_name("Alice") == "Alice"
    assert normalize_name("e\u0301") == "\u00e9"


@pytest.mark.parametrize(
    "value",
    ["", "a" * 33, "a b", "a\tb", "a@b", "a/b", "😀", "server", "SeRvEr", "\u017ferver",
     "q\u0301", "\u0301", "a\ud800", "a\x00", " alice", "alice\n", "\u200d"],
)
def test_bad_name_examples(value: str) -> None:
    with pytest.raises(ProtocolError) as exc:
        normalize_name(value)
    assert exc.value.code == "bad_name"


@pytest.mark.parametrize(
    "value",
    ["a", "a" * 32, "_", "-", ".", "...", "Ⅻ", "²", "٣", "\U0001d518", "serverx", "e\u0301" * 32],
)
def test_good_name_examples(value: str) -> None:
    assert normalize_name(value) == unicodedata.normalize("NFC", value)


# --- text ---


@given(st.text(allowed_chars, max_size=60))
def test_allowed_text_round_trips_through_clean_text_and_framing(value: str) -> None:
    stripped = oracle_strip(value)
    assume(stripped)
    text = clean_text(value, DEFAULT_MAX_TEXT)
    assert text == stripped
    message = msg(1, 2, "alice", text, "id")
    assert Decoder(CLIENT_MAX_FRAME).feed(encode(message)) == [message]


@given(st.text(allowed_chars, max_size=20), forbidden_chars, st.text(allowed_chars, max_size=20))
def test_forbidden_character_is_bad_text_first(before: str, bad: str, after: str) -> None:
    value = before + bad + after
    with pytest.raises(ProtocolError) as exc:
        clean_text(value, 1, ref="r1")  # too long and maybe empty too: bad_text wins
    assert exc.value.code == "bad_text"
    assert exc.value.ref == "r1"
    assert not exc.value.fatal


@given(st.text(st.sampled_from(sorted(WHITE_SPACE - {"\x85"}) ), max_size=30))
def test_white_space_only_is_empty_message(value: str) -> None:
    forbidden_here = any(forbidden(c) for c in value)
    with pytest.raises(ProtocolError) as exc:
        clean_text(value, 0)
    assert exc.value.code == ("bad_text" if forbidden_here else "empty_message")


@given(st.text(allowed_chars, max_size=50), st.integers(min_value=0, max_value=50))
def test_length_counts_code_points_after_stripping(value: str, max_text: int) -> None:
    stripped = oracle_strip(value)
    assume(stripped)
    if len(stripped) <= max_text:
        assert clean_text(value, max_text) == stripped
    else:
        with pytest.raises(ProtocolError) as exc:
            clean_text(value, max_text)
        assert exc.value.code == "text_too_long"


@pytest.mark.parametrize(
    ("value", "max_text", "code"),
    [
        ("\x00", 10, "bad_text"),
        ("  \r  ", 10, "bad_text"),
        ("a\rb", 10, "bad_text"),
        ("a\x85b", 10, "bad_text"),  # NEXT LINE is Cc though also White_Space
        ("\ud83d", 10, "bad_text"),
        ("", 10, "empty_message"),
        (" \n\t\u3000\u2028 ", 10, "empty_message"),
        (" " * 20, 10, "empty_message"),
        ("abc", 2, "text_too_long"),
        ("😀😀😀", 2, "text_too_long"),
    ],
)
def test_text_rule_examples(value: str, max_text: int, code: str) -> None:
    with pytest.raises(ProtocolError) as exc:
        clean_text(value, max_text)
    assert exc.value.code == code


@pytest.mark.parametrize(
    ("value", "max_text", "expected"),
    [
        ("  hi  ", 2, "hi"),
        ("\n\tline one\nline two\t\n", 100, "line one\nline two"),
        ("😀😀", 2, "😀😀"),  # code points, not UTF-16 units or bytes
        ("e\u0301", 2, "e\u0301"),  # kept as sent: no normalisation of text
        ("\u200bzero width\u200b", 100, "\u200bzero width\u200b"),  # Cf, not White_Space
        ("\u180e x", 100, "\u180e x"),  # no longer White_Space
    ],
)
def test_text_kept_examples(value: str, max_text: int, expected: str) -> None:
    assert clean_text(value, max_text) == expected


# --- ids ---


@given(st.text(max_size=70) | st.integers() | st.none() | st.booleans())
def test_id_rule(value: object) -> None:
    expected = (
        isinstance(value, str)
        and 1 <= len(value) <= 64
        and not any(unicodedata.category(c) == "Cs" for c in value)
    )
    assert is_valid_id(value) == expected


@pytest.mark.parametrize(
    ("value", "valid"),
    [("a", True), ("x" * 64, True), ("😀" * 64, True), ("", False), ("x" * 65, False),
     ("a\ud800", False), (1, False), (None, False), ("\x00", True)],
)
def test_id_examples(value: object, valid: bool) -> None:
    assert is_valid_id(value) is valid
