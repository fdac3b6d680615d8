"""Replies the request modules share: the server's name, and error frames."""

from __future__ import annotations

import logging
from typing import Any

from chatd import __version__
from protocol import ProtocolError

log = logging.getLogger("chatd.core")

SERVER_NAME = f"chatd/{__version__}"
ANNOUNCER = "server"  # the ``from`` of an announcement, the ``by`` of an operator
UNAVAILABLE_RETRY_MS = 1000  # what ``unavailable`` asks a requester to wait


def fatal_message(exc: ProtocolError) -> dict[str, Any]:
    """The error frame of a fatal close: before login every error is fatal."""
    out = exc.to_message()
    out["fatal"] = True
    return out


def not_fatal(exc: ProtocolError) -> dict[str, Any]:
    """On the control socket only framing errors are fatal (§18)."""
    out = exc.to_message()
    out["fatal"] = False
    return out


def unreadable(purpose: str, exc: Exception, ref: str | None) -> ProtocolError:
    """Log a failed history read and give the ``unavailable`` error that reports it."""
    log.error("cannot read history for %s: %s", purpose, exc)
    return ProtocolError(
        "unavailable", "the server cannot read its history; retry later", ref=ref,
        retry_after_ms=UNAVAILABLE_RETRY_MS,
    )
