"""The password-guessing throttle of contract §12, pure: the clock is passed in.

Rule: once 5 password checks for one account name (by key) from one client
address (the IP, without port) have failed within 60 s, further logins for that
name from that address are refused until 60 s have passed since the first of
those failures. Said as a count: a login is refused while 5 or more failures of
the pair lie in the last 60 s, and may go ahead once the oldest of the newest 5
is 60 s old. A success does not reset the count; a login without a password,
or one refused here, checks nothing and does not add to it.

Checks run in a worker (:mod:`chatd.hashworker`) and take a while, so an
attacker could start a hundred at once before the first failure is known. A
check therefore counts as a failure from :meth:`GuessThrottle.begin` until
:meth:`GuessThrottle.passed` ends it (a failed one stays, as the failure
recorded by :meth:`GuessThrottle.failed`).

Memory is bounded: an entry lives while it has failures in the window or checks
under way, the oldest entries are swept a few at each call, and past
``max_entries`` the oldest is dropped. An attacker who cycles names to push out
the entry of the name they guess pays a failed check (a hash) for each entry,
so that reset costs them ``max_entries`` hashes.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque

LIMIT = 5
WINDOW_S = 60.0
MAX_ENTRIES = 65_536
_SWEEP = 2  # entries looked at per call: more than one is created per call


class _Entry:
    """One (address, key): its newest failures, oldest first, and checks under way."""

    __slots__ = ("checking", "failures")

    def __init__(self, limit: int) -> None:
        self.failures: deque[float] = deque(maxlen=limit)
        self.checking = 0


class GuessThrottle:
    """Failed password checks per (client address, account name key)."""

    def __init__(self, limit: int = LIMIT, window_s: float = WINDOW_S,
                 max_entries: int = MAX_ENTRIES) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_entries = max_entries
        # Ordered by newest failure (an entry moves to the end when one is
        # added), so the sweep finds the expired entries at the front.
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def blocked(self, address: str, key: str, now: float) -> int:
        """0 if a login may check its password now, else milliseconds to wait (> 0)."""
        self._sweep(now)
        entry = self._entries.get((address, key))
        if entry is None:
            return 0
        cutoff = now - self.window_s
        times = [t for t in entry.failures if t > cutoff] + [now] * entry.checking
        if len(times) < self.limit:
            return 0
        return max(1, math.ceil((times[-self.limit] + self.window_s - now) * 1000))

    def begin(self, address: str, key: str, now: float) -> None:
        """A password check for this pair is under way (call after ``blocked``)."""
        self._sweep(now)
        self._entry(address, key).checking += 1

    def failed(self, address: str, key: str, now: float) -> None:
        """A password check for this pair failed (ending one begun, if any)."""
        self._sweep(now)
        entry = self._entry(address, key)
        entry.checking = max(0, entry.checking - 1)
        entry.failures.append(now)
        self._entries.move_to_end((address, key))

    def passed(self, address: str, key: str, now: float) -> None:
        """A begun check succeeded or was abandoned: it no longer counts."""
        self._sweep(now)
        entry = self._entries.get((address, key))
        if entry is None:
            return
        entry.checking = max(0, entry.checking - 1)
        if self._expired(entry, now):
            del self._entries[(address, key)]

    def _entry(self, address: str, key: str) -> _Entry:
        entry = self._entries.get((address, key))
        if entry is None:
            if len(self._entries) >= self.max_entries:
                self._entries.popitem(last=False)
            entry = self._entries[(address, key)] = _Entry(self.limit)
        return entry

    def _expired(self, entry: _Entry, now: float) -> bool:
        """Nothing left to count: no check under way, no failure in the window."""
        return not entry.checking and (
            not entry.failures or entry.failures[-1] <= now - self.window_s
        )

    def _sweep(self, now: float) -> None:
        """Drop expired entries from the front, a few at a time."""
        entries = self._entries
        for _ in range(_SWEEP):
            if not entries:
                return
            pair, entry = next(iter(entries.items()))
            if not self._expired(entry, now):
                return
            del entries[pair]
