"""Password hash records: round trips, wrong passwords, damaged records, the
password rule, and records made with other parameters (checked against
hashlib directly, not through the module's own parser)."""

from __future__ import annotations

import base64
import hashlib
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatd.passwords import (
    RECORD_MAX_CHARS,
    hash_password,
    hashable,
    needs_rehash,
    verify_password,
)
from protocol.limits import PASSWORD_MAX_CHARS

PASSWORD = "correct horse battery staple"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def make_record(password: str, *, n: int, r: int, p: int,
                salt: bytes = b"0123456789abcdef", size: int = 32) -> str:
    key = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=size,
                         maxmem=256 * 1024 * 1024)
    return f"scrypt${n}${r}${p}${b64(salt)}${b64(key)}"


@pytest.fixture(scope="module")
def record() -> str:
    return hash_password(PASSWORD)


def test_record_names_algorithm_parameters_and_salt(record: str) -> None:
    name, n, r, p, salt, key = record.split("$")
    assert (name, n, r, p) == ("scrypt", "16384", "8", "1")
    assert len(base64.b64decode(salt)) == 16
    expected = hashlib.scrypt(PASSWORD.encode(), salt=base64.b64decode(salt), n=16384, r=8,
                              p=1, dklen=32)
    assert base64.b64decode(key) == expected
    assert len(record) <= RECORD_MAX_CHARS
    assert not needs_rehash(record)


def test_same_password_gets_a_fresh_salt(record: str) -> None:
    other = hash_password(PASSWORD)
    assert other != record
    assert verify_password(PASSWORD, other)


def test_verify_right_and_wrong(record: str) -> None:
    assert verify_password(PASSWORD, record)
    for wrong in ("correct horse battery stapl", PASSWORD + " ", PASSWORD.upper(), "", "x" * 257):
        assert not verify_password(wrong, record)


@pytest.mark.parametrize("password", [
    "pässwörd-ünïcødé",
    "密码密码密码密码",
    "🔑🔑🔑🔑🔑🔑🔑🔑",
    "tab\tand\nnewline\x00nul",
    "é" * PASSWORD_MAX_CHARS,
    "🔑" * PASSWORD_MAX_CHARS,  # 256 code points, 1024 bytes of UTF-8
])
def test_unicode_passwords_round_trip(password: str) -> None:
    record = hash_password(password)
    assert verify_password(password, record)
    assert not verify_password(password[:-1], record)


def test_normalisation_is_not_applied() -> None:
    """The contract names no normalisation: NFC and NFD forms are different passwords."""
    nfc = unicodedata.normalize("NFC", "passwörd-é")
    nfd = unicodedata.normalize("NFD", nfc)
    assert nfc != nfd
    assert not verify_password(nfd, hash_password(nfc))


def test_what_could_be_a_password() -> None:
    assert hashable("🔑" * PASSWORD_MAX_CHARS)
    assert not hashable("🔑" * (PASSWORD_MAX_CHARS + 1))
    assert not hashable("password\ud800")
    assert hashable("")  # short ones are still checked: the minimum may have been lower


@pytest.mark.parametrize("bad", ["short", "x" * 257, "password\udc00", "\ud83d\udd11" * 4])
def test_hash_refuses_what_breaks_the_rule(bad: str) -> None:
    with pytest.raises(ValueError):
        hash_password(bad)


def test_verify_of_unhashable_password_is_false(record: str) -> None:
    assert not verify_password(PASSWORD + "\ud800", record)
    assert not verify_password(PASSWORD * 10, record)


def test_raised_parameters_still_verify_and_need_no_rehash() -> None:
    raised = make_record(PASSWORD, n=2**15, r=8, p=2, salt=bytes(range(24)), size=48)
    assert verify_password(PASSWORD, raised)
    assert not verify_password(PASSWORD + "!", raised)
    assert not needs_rehash(raised)


@pytest.mark.parametrize(("n", "r", "p", "salt", "size"), [
    (2**10, 8, 1, b"0123456789abcdef", 32),
    (2**14, 4, 1, b"0123456789abcdef", 32),
    (2**14, 8, 1, b"short", 32),
    (2**14, 8, 1, b"0123456789abcdef", 16),
])
def test_weaker_records_verify_but_need_rehash(n: int, r: int, p: int, salt: bytes,
                                               size: int) -> None:
    weak = make_record(PASSWORD, n=n, r=r, p=p, salt=salt, size=size)
    assert verify_password(PASSWORD, weak)
    assert needs_rehash(weak)


def _malformed(good: str) -> list[str]:
    name, n, r, p, salt, key = good.split("$")
    return [
        "",
        "$",
        "scrypt",
        good + "$",
        "$" + good,
        good.replace("scrypt", "SCRYPT"),
        good.replace("scrypt", "bcrypt"),
        "$".join((name, n, r, p, salt)),  # no key
        "$".join((name, n, r, p, "", key)),  # empty salt
        "$".join((name, n, r, p, salt, b64(b"too short"))),
        "$".join((name, n, r, p, salt, key[:-1])),  # key cut mid-character
        "$".join((name, n, r, p, salt + "!", key)),  # not base64
        "$".join((name, n, r, p, salt[:-1], key)),  # bad padding
        "$".join((name, "16383", r, p, salt, key)),  # N not a power of two
        "$".join((name, "1", r, p, salt, key)),
        "$".join((name, "0", r, p, salt, key)),
        "$".join((name, "016384", r, p, salt, key)),
        "$".join((name, "+16384", r, p, salt, key)),
        "$".join((name, " 16384", r, p, salt, key)),
        "$".join((name, "١٦٣٨٤", r, p, salt, key)),  # Arabic-Indic digits
        "$".join((name, "-16384", r, p, salt, key)),
        "$".join((name, n, "0", p, salt, key)),
        "$".join((name, n, r, "0", salt, key)),
        "$".join((name, str(2**40), r, p, salt, key)),  # terabytes: refused, not tried
        "$".join((name, str(2**20), "64", p, salt, key)),
        "$".join((name, n, r, "1000000", salt, key)),  # hours of work
        "$".join((name, n, r, "99999999999", salt, key)),
        good + "é",
        good + "=" * RECORD_MAX_CHARS,
    ]


def test_malformed_records_are_false_not_errors(record: str) -> None:
    for bad in _malformed(record):
        assert not verify_password(PASSWORD, bad), bad
        assert needs_rehash(bad), bad


@given(st.text(max_size=300))
def test_any_text_record_is_false_without_error(text: str) -> None:
    assert not verify_password(PASSWORD, text)
