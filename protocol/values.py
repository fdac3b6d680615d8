"""The value rules of contract §2: names, texts, ids. Each rule lives only here.

Names are compared by :func:`name_key`; the server keeps and shows the NFC form
as typed. Text is checked in the contract's order: forbidden characters, then
emptiness after stripping, then length.
"""

from __future__ import annotations

import re
import unicodedata

from protocol.errors import ProtocolError
from protocol.limits import (
    ID_MAX_CHARS,
    NAME_MAX_CHARS,
    PASSWORD_MAX_CHARS,
    PASSWORD_MIN_CHARS,
    QUERY_MAX_CHARS,
    RESERVED_NAME,
    TOPIC_MAX_CHARS,
)

_NAME_PUNCTUATION = frozenset("_-.")
# Category Cc is exactly U+0000-001F and U+007F-009F; Cs is U+D800-DFFF.
_FORBIDDEN_TEXT = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def name_key(name: str) -> str:
    """The identity of a name: two names are one user when their keys match.

    Exactly the contract's words, ``casefold()`` of the NFC form. The key itself
    need not be NFC (U+01F0 folds to "j" + U+030C); it is only compared, never
    shown.
    """
    return unicodedata.normalize("NFC", name).casefold()


def name_problem(value: str) -> str | None:
    """Why ``value`` is not a valid user name, or None if it is one."""
    problem = _word_problem(value, "name")
    if problem is None and name_key(value) == RESERVED_NAME:
        return f"the name {RESERVED_NAME!r} is reserved"
    return problem


def _word_problem(value: str, what: str) -> str | None:
    """The rule shared by user and room names (contract §2, §11)."""
    name = unicodedata.normalize("NFC", value)
    if not 1 <= len(name) <= NAME_MAX_CHARS:
        return f"a {what} has 1 to {NAME_MAX_CHARS} characters"
    for char in name:
        if char not in _NAME_PUNCTUATION and unicodedata.category(char)[0] not in "LN":
            return f"a {what} may not contain {char!r}: only letters, digits, '_', '-' and '.'"
    return None


def normalize_name(value: str) -> str:
    """The NFC form of a valid name, as the server keeps it; else ``bad_name``."""
    problem = name_problem(value)
    if problem is not None:
        raise ProtocolError("bad_name", problem)
    return unicodedata.normalize("NFC", value)


def room_problem(value: str) -> str | None:
    """Why ``value`` is not a room name a room can be created with (no dm name),
    or None. Unlike user names, ``server`` is allowed (contract §11)."""
    return _word_problem(value, "room name")


def is_dm_name(value: str) -> bool:
    """Whether ``value`` is a well-formed dm room name: ``@X@Y``, X and Y
    non-empty and free of ``@``, X not greater than Y (contract §11)."""
    if not value.startswith("@"):
        return False
    parts = value[1:].split("@")
    return len(parts) == 2 and all(parts) and parts[0] <= parts[1]


def room_name_problem(value: str) -> str | None:
    """Why a request's ``room`` is neither a room name nor a dm room name."""
    if value.startswith("@"):
        return None if is_dm_name(value) else f"{value!r} is not a well-formed dm room name"
    return room_problem(value)


def room_key(name: str) -> str:
    """The identity of a room name: the casefold of a room name; a dm name
    (already made of casefolded names) is its own key."""
    return name if name.startswith("@") else name_key(name)


def dm_name(key_a: str, key_b: str) -> str:
    """The dm room of two accounts (by name key): ``@`` + keys sorted by code point."""
    low, high = sorted((key_a, key_b))
    return f"@{low}@{high}"


def password_problem(value: object) -> str | None:
    """Why ``value`` cannot be a password (``weak_password``), or None."""
    if not isinstance(value, str):
        return "a password is needed"
    if not PASSWORD_MIN_CHARS <= len(value) <= PASSWORD_MAX_CHARS:
        return f"a password has {PASSWORD_MIN_CHARS} to {PASSWORD_MAX_CHARS} characters"
    if _SURROGATE.search(value):
        return "a password may not hold surrogate code points"
    return None


def new_password(value: object, *, ref: str | None = None, fatal: bool = True) -> str:
    """``value`` as a new password, or ``weak_password`` (fatal at login, §17)."""
    problem = password_problem(value)
    if problem is not None:
        raise ProtocolError("weak_password", problem, ref=ref, fatal=fatal)
    assert isinstance(value, str)
    return value


def clean_topic(value: str, *, ref: str | None = None) -> str:
    """A topic: the text rules without the emptiness step (empty clears it)."""
    _check_chars(value, ref)
    topic = value.strip()
    if len(topic) > TOPIC_MAX_CHARS:
        raise ProtocolError(
            "text_too_long", f"a topic has at most {TOPIC_MAX_CHARS} characters", ref=ref)
    return topic


def clean_query(value: str, *, ref: str | None = None) -> str:
    """A search query: the text rules with at most QUERY_MAX_CHARS characters."""
    return clean_text(value, QUERY_MAX_CHARS, ref=ref)


def _check_chars(value: str, ref: str | None) -> None:
    if _FORBIDDEN_TEXT.search(value):
        raise ProtocolError(
            "bad_text", "text may not hold control characters (other than \\n and \\t) "
            "or surrogates", ref=ref,
        )


def clean_text(value: str, max_text: int, *, ref: str | None = None) -> str:
    """The stripped text to store and relay, or the first rule it breaks."""
    _check_chars(value, ref)
    text = value.strip()  # after the check above, str.strip() is exactly White_Space
    if not text:
        raise ProtocolError("empty_message", "text is empty", ref=ref)
    if len(text) > max_text:
        raise ProtocolError(
            "text_too_long", f"text has {len(text)} characters, at most {max_text}", ref=ref
        )
    return text


def is_valid_id(value: object) -> bool:
    """Whether ``value`` can be a request ``id``: 1..64 characters, no surrogates."""
    return (
        isinstance(value, str)
        and 1 <= len(value) <= ID_MAX_CHARS
        and _SURROGATE.search(value) is None
    )
