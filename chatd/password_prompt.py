"""Where ``chatd account add`` and ``chatd account passwd`` get a password.

Never from the command line: argv is visible to every local user (``ps``) and
lands in shell history. On a terminal the password is asked without echo, twice,
because a typo nobody can see would lock the account's owner out. Otherwise it is
the first line of stdin, so a script can pipe it in
(``printf '%s\\n' "$pw" | chatd account add bob``). The password rules
themselves are the server's (``weak_password``), not repeated here.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable
from typing import TextIO


class PasswordInputError(Exception):
    """No password could be read; the message is one line for the operator."""


def read_password(
    stdin: TextIO | None,
    prompt: str,
    ask: Callable[[str], str] | None = None,
) -> str:
    """The new password: asked twice on a tty (through ``ask``, by default
    :func:`getpass.getpass`, which does not echo), else stdin's first line.

    Only the line ending is removed from a piped line: spaces may be part of a
    password.
    """
    if stdin is None or stdin.closed:
        raise PasswordInputError("no password: stdin is closed")
    if stdin.isatty():
        ask = ask or getpass.getpass
        try:
            first = ask(prompt)
            second = ask("repeat the password: ")
        except EOFError:
            raise PasswordInputError("no password given") from None
        if first != second:
            raise PasswordInputError("the two passwords differ; nothing was changed")
        return first
    try:
        line = stdin.readline()
    except UnicodeDecodeError as exc:
        raise PasswordInputError(f"stdin is not text in {exc.encoding}") from None
    if not line:
        raise PasswordInputError("no password: stdin is empty (give it as the first line)")
    return line.removesuffix("\n").removesuffix("\r")
