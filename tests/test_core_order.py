"""Property: the core's staging keeps contract §3.6 order, whatever the requests
in each turn and whether the store refuses a turn's batch.

Every request carries a unique id that comes back in what it produces (``msg``
and ``pm`` ``id``, replies' and errors' ``ref``), so each frame a user gets maps
to the request that produced it; the requests' global order must be respected
by every recipient, every accepted ``say`` reaches every user exactly once, a
refused one reaches nobody and gets its sender exactly one ``unavailable``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.test_core_turns import Harness

USERS = 3
KINDS = ("say", "ping", "who", "pm", "empty")

Action = tuple[int, str, int]  # (sender, kind, pm target)
_action = st.tuples(st.integers(0, USERS - 1), st.sampled_from(KINDS),
                    st.integers(0, USERS - 1))
_turns = st.lists(st.tuples(st.lists(_action, max_size=8), st.booleans()),
                  min_size=1, max_size=6)


def _request(kind: str, ident: str, target: str) -> dict[str, Any]:
    if kind == "say":
        return {"type": "say", "text": f"text {ident}", "id": ident}
    if kind == "empty":
        return {"type": "say", "text": "  ", "id": ident}
    if kind == "pm":
        return {"type": "pm", "to": target, "text": "psst", "id": ident}
    return {"type": kind, "id": ident}


@settings(max_examples=150, deadline=None)
@given(turns=_turns)
def test_staging_keeps_the_global_order(
    tmp_path_factory: pytest.TempPathFactory, turns: list[Any]
) -> None:
    h = Harness(Path(tmp_path_factory.mktemp("order")))
    names = [f"user{i}" for i in range(USERS)]
    conns = [h.login(name) for name in names]
    for conn in conns:
        h.frames(conn)  # joins
    got: list[list[dict[str, Any]]] = [[] for _ in range(USERS)]
    index = 0
    accepted: list[int] = []  # action indices of accepted says, in order
    refused: set[int] = set()
    actions: dict[int, Action] = {}
    for batch, fail in turns:
        h.history.failing = fail
        h.turn()
        for sender, kind, target in batch:
            index += 1
            actions[index] = (sender, kind, target)
            h.send(conns[sender], _request(kind, f"a{index}", names[target]))
            if kind == "say" and fail:
                refused.add(index)
            elif kind == "say":
                accepted.append(index)
        h.end()
        for i, conn in enumerate(conns):
            got[i].extend(h.frames(conn))

    def source(frame: dict[str, Any]) -> int | None:
        ident = frame.get("id", frame.get("ref"))
        return int(ident[1:]) if ident else None

    for i in range(USERS):
        order = [source(f) for f in got[i]]
        known = [n for n in order if n is not None]
        assert known == sorted(known), f"user{i} got frames out of order: {got[i]}"
        # Exactly the frames it should get, once each.
        expected = sorted(
            [n for n, (s, kind, t) in actions.items()
             if s == i or (kind == "say" and n not in refused) or (kind == "pm" and t == i)]
        )
        assert known == expected
        for frame in got[i]:
            n = source(frame)
            assert n is not None
            sender, kind, _ = actions[n]
            if kind == "say":
                if n in refused:
                    assert frame["type"] == "error" and frame["code"] == "unavailable"
                else:
                    assert frame["type"] == "msg" and frame["from"] == names[sender]
            elif kind == "empty":
                assert frame["code"] == "empty_message"
            else:
                assert frame["type"] == {"ping": "pong", "who": "users", "pm": "pm"}[kind]
        seqs = [f["seq"] for f in got[i] if f["type"] == "msg"]
        assert seqs == list(range(1, len(accepted) + 1))
    assert h.core.lobby.seq == len(accepted)
    assert [s.seq for s in h.history.after(0)] == list(range(1, len(accepted) + 1))
