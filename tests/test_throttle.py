"""The password-guessing throttle (contract §12) with a fake clock: each rule,
then hypothesis against a literal model of the rule, then its memory bound."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from chatd.throttle import GuessThrottle

IP = "192.0.2.7"
OTHER_IP = "198.51.100.1"


def fail(throttle: GuessThrottle, times: list[float], address: str = IP,
         key: str = "alice") -> None:
    for now in times:
        assert throttle.blocked(address, key, now) == 0
        throttle.begin(address, key, now)
        throttle.failed(address, key, now)


def test_four_failures_do_not_block_the_fifth_does() -> None:
    throttle = GuessThrottle()
    fail(throttle, [0.0, 1.0, 2.0, 3.0])
    assert throttle.blocked(IP, "alice", 3.5) == 0
    fail(throttle, [10.0])
    assert throttle.blocked(IP, "alice", 10.0) == 50_000  # 60 s after the first failure
    assert throttle.blocked(IP, "alice", 59.9995) == 1  # an integer > 0 to the end
    assert throttle.blocked(IP, "alice", 60.0) == 0


def test_asking_does_not_count() -> None:
    """A refused login (and the question itself) adds nothing."""
    throttle = GuessThrottle()
    fail(throttle, [0.0] * 5)
    for now in range(60):
        assert throttle.blocked(IP, "alice", float(now)) == 60_000 - now * 1000
    assert throttle.blocked(IP, "alice", 60.0) == 0


def test_only_failures_within_60_s_count() -> None:
    throttle = GuessThrottle()
    fail(throttle, [0.0, 20.0, 40.0, 59.0])
    fail(throttle, [60.0])  # the failure at 0 s has left the window
    assert throttle.blocked(IP, "alice", 60.0) == 0
    fail(throttle, [61.0])  # 20, 40, 59, 60, 61: five within 60 s
    assert throttle.blocked(IP, "alice", 61.0) == 19_000  # until 60 s after 20 s


def test_after_the_wait_one_more_failure_blocks_again() -> None:
    """The newest five failures decide: a guess after the wait, if wrong, is
    again five within 60 s."""
    throttle = GuessThrottle()
    fail(throttle, [0.0, 10.0, 20.0, 30.0, 40.0])
    assert throttle.blocked(IP, "alice", 59.0) == 1000
    fail(throttle, [60.0])
    assert throttle.blocked(IP, "alice", 60.0) == 10_000  # until 60 s after 10 s


def test_success_does_not_reset() -> None:
    throttle = GuessThrottle()
    fail(throttle, [0.0, 1.0, 2.0, 3.0])
    throttle.begin(IP, "alice", 4.0)
    throttle.passed(IP, "alice", 4.0)
    fail(throttle, [5.0])
    assert throttle.blocked(IP, "alice", 5.0) == 55_000


def test_pairs_are_separate() -> None:
    throttle = GuessThrottle()
    fail(throttle, [0.0] * 5)
    assert throttle.blocked(IP, "alice", 1.0) > 0
    assert throttle.blocked(OTHER_IP, "alice", 1.0) == 0
    assert throttle.blocked(IP, "bob", 1.0) == 0


def test_checks_under_way_count_until_they_end() -> None:
    """Five guesses sent at once are all in the worker before any fails."""
    throttle = GuessThrottle()
    for _ in range(5):
        assert throttle.blocked(IP, "alice", 0.0) == 0
        throttle.begin(IP, "alice", 0.0)
    assert throttle.blocked(IP, "alice", 0.1) == 60_000
    throttle.passed(IP, "alice", 0.2)
    assert throttle.blocked(IP, "alice", 0.2) == 0
    for _ in range(4):
        throttle.failed(IP, "alice", 0.3)
    assert throttle.blocked(IP, "alice", 0.3) == 0  # four failures
    fail(throttle, [1.0])
    assert throttle.blocked(IP, "alice", 1.0) == 59_300


def test_failed_without_begin_counts_too() -> None:
    throttle = GuessThrottle()
    for now in (0.0, 1.0, 2.0, 3.0, 4.0):
        throttle.failed(IP, "alice", now)
    assert throttle.blocked(IP, "alice", 4.0) == 56_000
    throttle.passed(IP, "alice", 5.0)  # nothing under way: harmless
    assert throttle.blocked(IP, "alice", 5.0) == 55_000


def test_entries_expire() -> None:
    throttle = GuessThrottle()
    for index in range(50):
        fail(throttle, [index * 0.1], key=f"name{index}")
    assert len(throttle) == 50
    for step in range(25):  # every call sweeps a little
        assert throttle.blocked(OTHER_IP, "x", 100.0 + step) == 0
    assert len(throttle) == 0


def test_a_passed_check_leaves_nothing_behind() -> None:
    throttle = GuessThrottle()
    throttle.begin(IP, "alice", 0.0)
    throttle.passed(IP, "alice", 1.0)
    assert len(throttle) == 0


def test_cycling_names_is_capped() -> None:
    throttle = GuessThrottle(max_entries=100)
    for index in range(1000):
        throttle.failed(IP, f"name{index}", 0.0)
    assert len(throttle) == 100
    for _ in range(4):
        throttle.failed(IP, "name999", 0.0)
    assert throttle.blocked(IP, "name999", 0.0) > 0  # the newest are kept
    assert throttle.blocked(IP, "name0", 0.0) == 0  # the oldest were dropped


# --- the rule against a literal model ------------------------------------------

PAIRS = [(IP, "alice"), (IP, "bob"), (OTHER_IP, "alice")]


def model_blocked(failures: list[float], checking: int, now: float) -> int:
    """Contract §12 said literally: blocked while some five failures lie within
    60 s and 60 s have not passed since the first of them; a check under way
    counts as a failure now. Milliseconds until the latest such end."""
    times = sorted(failures + [now] * checking)
    ends = [times[i] + 60 for i in range(len(times) - 4) if times[i + 4] - times[i] < 60]
    end = max(ends, default=now)
    return math.ceil((end - now) * 1000) if end > now else 0


operations = st.lists(
    st.tuples(
        st.integers(0, 40),  # quarter seconds since the previous operation
        st.sampled_from(["login-fail", "login-pass", "begin", "fail", "pass"]),
        st.sampled_from(PAIRS),
    ),
    max_size=80,
)


@given(operations)
def test_throttle_matches_the_model(ops: list[tuple[int, str, tuple[str, str]]]) -> None:
    throttle = GuessThrottle()
    failures: dict[tuple[str, str], list[float]] = {pair: [] for pair in PAIRS}
    checking = dict.fromkeys(PAIRS, 0)
    now = 0.0
    for quarters, action, pair in ops:
        now += quarters / 4  # quarters: exact in binary, so the model's sums are exact
        address, key = pair
        wait = throttle.blocked(address, key, now)
        assert wait == model_blocked(failures[pair], checking[pair], now)
        step = action
        if action.startswith("login"):  # a whole login: refused, or checked and answered
            if wait:
                continue
            throttle.begin(address, key, now)
            checking[pair] += 1
            step = "fail" if action == "login-fail" else "pass"
        if step == "begin":
            throttle.begin(address, key, now)
            checking[pair] += 1
        elif step == "fail":
            throttle.failed(address, key, now)
            checking[pair] = max(0, checking[pair] - 1)
            failures[pair].append(now)
        elif step == "pass":
            throttle.passed(address, key, now)
            checking[pair] = max(0, checking[pair] - 1)
