"""A timer heap with lazy deletion: the loop's select timeout comes from here.

Timers are never cancelled: an entry carries its target and a kind, and the
handler decides on firing whether it still applies (the connection may have
closed, or been active since, in which case it re-arms itself). Resetting a
heartbeat on every frame is therefore one attribute store, not a heap update,
and no turn ever scans every connection.
"""

from __future__ import annotations

import heapq
import itertools
from typing import Generic, TypeVar

T = TypeVar("T")


class Timers(Generic[T]):
    """Deadlines (monotonic seconds) for targets, popped in deadline order."""

    __slots__ = ("_counter", "_heap")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, T, str]] = []
        self._counter = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def schedule(self, deadline: float, target: T, kind: str) -> None:
        heapq.heappush(self._heap, (deadline, next(self._counter), target, kind))

    def next_deadline(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[tuple[T, str]]:
        """Every (target, kind) whose deadline is at or before ``now``, in order."""
        heap = self._heap
        due: list[tuple[T, str]] = []
        while heap and heap[0][0] <= now:
            _, _, target, kind = heapq.heappop(heap)
            due.append((target, kind))
        return due
