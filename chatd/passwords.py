"""Password hash records: scrypt, self-describing, checked in constant time.

A record names its algorithm and carries its parameters and salt,
``scrypt$N$r$p$<salt>$<key>`` (base64), so the cost can be raised later: old
records still verify with the parameters they were made with, and
:func:`needs_rehash` tells the server to replace one after a successful login.

Today's parameters are N=2**14, r=8, p=1 (Django's default; about 40 ms and
16 MiB a hash), far too slow for the event loop: the server runs these
functions in :mod:`chatd.hashworker`. Nothing here touches the loop.

A record is read from the store, which may be damaged: :func:`verify_password`
answers False for anything it cannot read, and refuses parameters that would
make one check take minutes or gigabytes, instead of raising or stalling.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from typing import NamedTuple

from protocol.limits import PASSWORD_MAX_CHARS
from protocol.values import password_problem

ALGORITHM = "scrypt"
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
KEY_BYTES = 32

#: Today's records are about 90 characters; a longer one is damaged.
RECORD_MAX_CHARS = 256

# What a record may ask of one check: raised parameters fit, a damaged or
# hostile record cannot stall a worker. scrypt needs 128*r*(N+p+2) bytes.
_MAX_MEMORY = 256 * 1024 * 1024
_MAX_WORK = 64 * SCRYPT_N * SCRYPT_R * SCRYPT_P
_MAX_DIGITS = 10


class _Record(NamedTuple):
    n: int
    r: int
    p: int
    salt: bytes
    key: bytes


def hashable(password: str) -> bool:
    """Whether ``password`` could be an account's: at most PASSWORD_MAX_CHARS code
    points and no surrogate. One that is not is refused without a hash (the
    minimum length is not checked: it may have been lower when it was set)."""
    if len(password) > PASSWORD_MAX_CHARS:
        return False
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:  # a surrogate
        return False
    return True


def _scrypt(password: str, salt: bytes, *, n: int, r: int, p: int, size: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=size,
                          maxmem=_memory(n, r, p))


def _memory(n: int, r: int, p: int) -> int:
    return 128 * r * (n + p + 2)


def hash_password(password: str) -> str:
    """A new record for ``password`` with today's parameters and a fresh salt.

    Raises ValueError for a password that breaks the rule of contract §11: the
    server refuses those with ``weak_password`` before asking for a hash.
    """
    problem = password_problem(password)
    if problem is not None:
        raise ValueError(problem)
    salt = os.urandom(SALT_BYTES)
    key = _scrypt(password, salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, size=KEY_BYTES)
    return "$".join((ALGORITHM, str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P), _b64(salt),
                     _b64(key)))


def verify_password(password: str, record: str) -> bool:
    """Whether ``password`` is the one ``record`` was made from.

    False, never an exception, for a malformed record or a password that could
    not be an account's. The keys are compared in constant time.
    """
    parsed = _parse(record)
    if parsed is None or not hashable(password):
        return False
    try:
        key = _scrypt(password, parsed.salt, n=parsed.n, r=parsed.r, p=parsed.p,
                      size=len(parsed.key))
    except ValueError:  # OpenSSL refused the parameters after all
        return False
    return hmac.compare_digest(key, parsed.key)


def needs_rehash(record: str) -> bool:
    """Whether ``record`` was made with less than today's parameters (or cannot be
    read): after a successful login the server replaces it with a new hash."""
    parsed = _parse(record)
    return (
        parsed is None
        or parsed.n < SCRYPT_N
        or parsed.r < SCRYPT_R
        or parsed.p < SCRYPT_P
        or len(parsed.salt) < SALT_BYTES
        or len(parsed.key) < KEY_BYTES
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _parse(record: str) -> _Record | None:
    """The parts of a well-formed record within the limits above, else None."""
    if len(record) > RECORD_MAX_CHARS or not record.isascii():
        return None
    parts = record.split("$")
    if len(parts) != 6 or parts[0] != ALGORITHM:
        return None
    numbers = parts[1:4]
    if not all(_is_number(text) for text in numbers):
        return None
    n, r, p = (int(text) for text in numbers)
    if n < 2 or n & (n - 1) or n * r * p > _MAX_WORK or _memory(n, r, p) > _MAX_MEMORY:
        return None
    try:
        salt = base64.b64decode(parts[4], validate=True)
        key = base64.b64decode(parts[5], validate=True)
    except binascii.Error:
        return None
    if not salt or not 16 <= len(key) <= 64:
        return None
    return _Record(n, r, p, salt, key)


def _is_number(text: str) -> bool:
    """A positive decimal integer without sign, spaces or leading zero."""
    return 0 < len(text) <= _MAX_DIGITS and text.isdigit() and text[0] != "0"
