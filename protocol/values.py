"""The value rules of contract §2: names, texts, ids. Each rule lives only here.

Names are compared by :func:`name_key`; the server keeps and shows the NFC form
as typed. Text is checked in the contract's order: forbidden characters, then
emptiness after stripping, then length.
"""

from __future__ import annotations

import re
import unicodedata

from protocol.errors import ProtocolError
from protocol.limits import ID_MAX_CHARS, NAME_MAX_CHARS, RESERVED_NAME

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
    name = unicodedata.normalize("NFC", value)
    if not 1 <= len(name) <= NAME_MAX_CHARS:
        return f"a name has 1 to {NAME_MAX_CHARS} characters"
    for char in name:
        if char not in _NAME_PUNCTUATION and unicodedata.category(char)[0] not in "LN":
            return f"a name may not contain {char!r}: only letters, digits, '_', '-' and '.'"
    if name_key(name) == RESERVED_NAME:
        return f"the name {RESERVED_NAME!r} is reserved"
    return None


def normalize_name(value: str) -> str:
    """The NFC form of a valid name, as the server keeps it; else ``bad_name``."""
    problem = name_problem(value)
    if problem is not None:
        raise ProtocolError("bad_name", problem)
    return unicodedata.normalize("NFC", value)


def clean_text(value: str, max_text: int, *, ref: str | None = None) -> str:
    """The stripped text to store and relay, or the first rule it breaks."""
    if _FORBIDDEN_TEXT.search(value):
        raise ProtocolError(
            "bad_text", "text may not hold control characters (other than \\n and \\t) "
            "or surrogates", ref=ref,
        )
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
