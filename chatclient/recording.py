"""How a session's conversation is written down: events as JSON, secrets masked.

Kept apart from :mod:`chatclient.transcript` (which replays, and so needs the
session) so that the session can record without importing its own replayer.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from chatclient.events import Event
from protocol.framing import Message

MASK = "********"
"""What a secret is recorded as: 8 characters, so a masked password still
passes the client's own length check when a transcript is replayed."""

_SECRETS = ("password", "old", "new", "code")


def redact_frame(message: Message) -> Message:
    """``message`` with its secret members masked (only where they are secret:
    ``hello``'s password and code, ``password``'s old and new)."""
    if message.get("type") not in ("hello", "password"):
        return message
    return {k: MASK if k in _SECRETS else v for k, v in message.items()}


def event_to_json(event: Event) -> dict[str, Any]:
    """``{"type": class name, fields...}`` with nested records as objects and
    tuples as lists: what ``json`` writes and reads back unchanged."""
    fields = dataclasses.asdict(event)
    normal: dict[str, Any] = json.loads(json.dumps(fields))
    return {"type": type(event).__name__, **normal}
