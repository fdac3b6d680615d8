"""Replaying a recorded conversation (:meth:`ClientSession.transcript`) as a test vector.

A transcript is the session's whole exchange with one server: the bytes that
came in (base64, chunked as they arrived), the driver's calls with their times,
the user's intents, and what the session said back (frames sent, events). Any
client that claims to speak the protocol the same way can replay it: feed the
same inputs at the same times and compare what comes out. The ids and random
draws the session took are part of the record, so a replay is deterministic.
"""

from __future__ import annotations

import base64
import random
from collections import deque
from typing import Any

from chatclient.recording import MASK
from chatclient.session import ClientSession

Transcript = dict[str, Any]


class _Draws(random.Random):
    """A ``Random`` whose ``uniform`` gives back the recorded backoff delays."""

    def __init__(self, draws: list[float]) -> None:
        super().__init__(0)
        self._draws = deque(draws)

    def uniform(self, a: float, b: float) -> float:
        return self._draws.popleft()


def outputs(transcript: Transcript) -> list[dict[str, Any]]:
    """The recorded ``sent`` and ``event`` steps, in order: what a replay must match."""
    return [step for step in transcript["steps"] if "sent" in step or "event" in step]


def replay(transcript: Transcript) -> Transcript:
    """Run ``transcript``'s inputs through a fresh session; its own transcript.

    Compare ``outputs`` of both to check a client against a recording.
    """
    header = transcript["session"]
    steps = transcript["steps"]
    ids = deque(step["id"] for step in steps if "id" in step)
    session = ClientSession(
        header["name"],
        password=MASK if header["password"] else None,
        register=header["register"],
        code=header["code"],
        agent=header["agent"],
        rooms=header["rooms"],
        rng=_Draws([step["draw"] for step in steps if "draw" in step]),
        new_id=ids.popleft,
        record=True,
    )
    for step in steps:
        call = step.get("call")
        now = step.get("now", 0.0)
        if call == "connection_started":
            session.connection_started(now, step["address"])
        elif call == "connection_made":
            session.connection_made(now)
        elif call == "receive_data":
            session.receive_data(base64.b64decode(step["data"]), now)
        elif call == "connection_lost":
            session.connection_lost(now, step["reason"])
        elif call == "tick":
            session.tick(now)
        elif "intent" in step:
            session._now = now  # the time of the intent: its last driver call's
            getattr(session, step["intent"])(*step["args"], **step["kwargs"])
        session.data_to_send()
        session.events()
    return session.transcript()
