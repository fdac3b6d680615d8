"""Hypothesis strategies shared by the protocol tests: JSON values and messages."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import strategies as st

from protocol.limits import MAX_DEPTH

# Strings as JSON carries them: any code point but lone surrogates (those are
# covered by their own tests, as they only travel \u-escaped).
json_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | json_text
)

json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(json_text, children, max_size=4),
    max_leaves=6,
)


def depth(value: Any) -> int:
    """Nesting levels of containers in ``value`` (a scalar is level 0)."""
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


messages = st.builds(
    lambda kind, members: {**members, "type": kind},
    json_text,
    st.dictionaries(json_text, json_values, max_size=3),
).filter(lambda m: depth(m) <= MAX_DEPTH)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the given offsets (any order, repeats give empty chunks)."""
    points = sorted(min(max(c, 0), len(data)) for c in cuts)
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


cuts = st.lists(st.integers(min_value=0, max_value=10_000), max_size=40)
