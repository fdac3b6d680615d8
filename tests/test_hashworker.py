"""The hash worker end to end: real worker processes, waited for with a
selector and a deadline; a worker killed mid-job; submits that never block;
no child left behind. Plus the job size bound and the inline hasher."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatd import hashworker
from chatd.hashworker import JOB_MAX_BYTES, Hasher, HashWorker, InlineHasher, make_job
from chatd.passwords import RECORD_MAX_CHARS, hash_password, verify_password
from protocol import encode
from protocol.limits import PASSWORD_MAX_CHARS

PASSWORD = "correct horse battery staple"
DEADLINE_S = 60.0
Results = dict[int, str | bool | None]


@pytest.fixture(scope="module")
def record() -> str:
    return hash_password(PASSWORD)


@pytest.fixture
def worker() -> Iterator[HashWorker]:
    hasher = HashWorker()
    try:
        yield hasher
    finally:
        hasher.close()


def children() -> set[int]:
    """This process's children, zombies included (Linux /proc)."""
    pids: set[int] = set()
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/children") as file:
            pids.update(int(pid) for pid in file.read().split())
    return pids


def collect(hasher: HashWorker, count: int, got: Results | None = None) -> Results:
    """Results until ``count`` jobs are answered, as the server's loop would
    get them: select on ``fileno()``, then ``results()``."""
    got = {} if got is None else got
    deadline = time.monotonic() + DEADLINE_S
    with selectors.DefaultSelector() as sel:
        sel.register(hasher.fileno(), selectors.EVENT_READ)
        while len(got) < count:
            left = deadline - time.monotonic()
            assert left > 0, f"only {len(got)} of {count} results before the deadline"
            sel.select(left)
            for job, result in hasher.results():
                assert job not in got, f"job {job} answered twice"
                got[job] = result
    return got


def quiet(hasher: HashWorker) -> bool:
    """Nothing to read: the loop would not be woken for nothing."""
    with selectors.DefaultSelector() as sel:
        sel.register(hasher.fileno(), selectors.EVENT_READ)
        return not sel.select(0)


def wait_exit(pid: int) -> None:
    """Wait (with a deadline) until ``pid`` has exited; pidfd: an event, not a poll."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            assert sel.select(DEADLINE_S), f"process {pid} did not exit"
    finally:
        os.close(fd)


def submit_checks(hasher: Hasher, record: str) -> None:
    hasher.submit(1, "verify", PASSWORD, record)
    hasher.submit(2, "verify", "wrong password", record)
    hasher.submit(3, "verify", PASSWORD * 20, record)


def test_both_hashers_answer_alike(worker: HashWorker, record: str) -> None:
    inline = InlineHasher()
    submit_checks(inline, record)
    submit_checks(worker, record)
    expected = {1: True, 2: False, 3: False}
    assert dict(inline.results()) == expected
    assert collect(worker, 3) == expected


def threads() -> int:
    return len(os.listdir("/proc/self/task"))


def test_jobs_in_flight_all_arrive(worker: HashWorker, record: str) -> None:
    before = threads()
    for job in range(40):
        password = PASSWORD if job % 2 else PASSWORD + "?"
        worker.submit(job, "verify", password, record)
    worker.submit(40, "hash", "another password")
    worker.submit(41, "hash", "pässwörd-🔑")
    assert worker.pending() == 42
    got = collect(worker, 42)
    assert {job: got[job] for job in range(40)} == {job: job % 2 == 1 for job in range(40)}
    made = got[40]
    assert isinstance(made, str)
    assert verify_password("another password", made)
    assert isinstance(got[41], str) and got[41].startswith("scrypt$")
    assert worker.pending() == 0
    assert quiet(worker)
    assert threads() == before  # the server stays one thread


def test_inputs_that_cannot_match_are_answered_false(worker: HashWorker, record: str) -> None:
    worker.submit(1, "verify", PASSWORD * 20, record)  # longer than any password
    worker.submit(2, "verify", PASSWORD + "\ud800", record)  # a surrogate
    worker.submit(3, "verify", PASSWORD, record + "$" * RECORD_MAX_CHARS)
    worker.submit(4, "verify", PASSWORD, "scrypt$16384$8$1$é$é")
    worker.submit(5, "verify", PASSWORD, "not a record")
    assert collect(worker, 5) == dict.fromkeys(range(1, 6), False)


def test_bad_submits_raise_at_once(worker: HashWorker, record: str) -> None:
    with pytest.raises(ValueError):
        worker.submit(1, "hash", "short")
    with pytest.raises(ValueError):
        worker.submit(2, "rehash", PASSWORD, record)
    with pytest.raises(ValueError):
        worker.submit(3, "verify", PASSWORD)
    assert worker.pending() == 0


def test_submit_never_blocks_even_when_the_worker_stops(worker: HashWorker) -> None:
    """With the worker stopped, nothing reads its stdin: a write beyond the
    pipe's capacity would block for good. 1000 submits must return."""
    (pid,) = children()
    os.kill(pid, signal.SIGSTOP)
    try:
        def submit_many() -> None:
            for job in range(1000):
                worker.submit(job, "verify", "x" * 300, "")

        # A thread in the test only, to notice a submit that hangs.
        submitter = threading.Thread(target=submit_many)
        submitter.start()
        submitter.join(DEADLINE_S)
        assert not submitter.is_alive(), "submit blocked"
        assert worker.pending() == 1000
    finally:
        os.kill(pid, signal.SIGCONT)
    assert collect(worker, 1000) == dict.fromkeys(range(1000), False)


def test_killed_worker_fails_its_jobs_and_is_replaced(worker: HashWorker, record: str) -> None:
    (first,) = children()
    for job in range(4):
        worker.submit(job, "verify", PASSWORD, record)
    got = collect(worker, 1)  # the first is done: the second is being computed
    os.kill(first, signal.SIGKILL)
    got = collect(worker, 4, got)
    assert None in got.values()
    assert all(result in (True, None) for result in got.values())
    worker.submit(10, "verify", PASSWORD, record)
    assert collect(worker, 1) == {10: True}
    assert worker.pending() == 0
    live = children()
    assert len(live) == 1 and first not in live  # the killed one was reaped


def test_close_leaves_no_child(record: str) -> None:
    before = children()
    hasher = HashWorker(processes=2)
    mine = children() - before
    assert len(mine) == 2
    for job in range(6):
        hasher.submit(job, "verify", PASSWORD, record)
    hasher.close()  # with jobs in flight
    assert not children() & mine
    for pid in mine:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    hasher.close()  # twice is harmless


def test_several_processes_share_the_jobs(record: str) -> None:
    hasher = HashWorker(processes=2)
    try:
        for job in range(8):
            hasher.submit(job, "verify", PASSWORD, record)
        assert collect(hasher, 8) == dict.fromkeys(range(8), True)
    finally:
        hasher.close()


def test_worker_runs_at_lower_priority_and_ignores_ctrl_c(worker: HashWorker,
                                                          record: str) -> None:
    (pid,) = children()
    worker.submit(1, "verify", PASSWORD, record)
    assert collect(worker, 1) == {1: True}  # it has started: it lowered its priority first
    # Idle-time work on Linux (only what nothing else wants); else a lower nice.
    if os.sched_getscheduler(pid) != os.SCHED_IDLE:
        mine = os.getpriority(os.PRIO_PROCESS, 0)
        assert os.getpriority(os.PRIO_PROCESS, pid) == min(19, mine + hashworker.NICENESS)
    os.kill(pid, signal.SIGINT)
    worker.submit(2, "verify", PASSWORD, record)
    assert collect(worker, 1) == {2: True}
    assert children() == {pid}


def test_worker_exits_when_the_server_dies() -> None:
    """A server killed without close(): its worker sees stdin close and exits."""
    code = (
        "import os; from chatd.hashworker import HashWorker; HashWorker(); "
        "print(open(f'/proc/{os.getpid()}/task/{os.getpid()}/children').read(), flush=True); "
        "os._exit(0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=DEADLINE_S, check=True).stdout
    (pid,) = (int(word) for word in out.split())
    wait_exit(pid)


def test_a_worker_that_cannot_start_fails_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    hasher = HashWorker()
    try:
        hasher.submit(1, "verify", PASSWORD, "")
        hasher.submit(2, "hash", PASSWORD)
        assert collect(hasher, 2) == {1: None, 2: None}
        assert hasher.pending() == 0
        assert quiet(hasher)
    finally:
        hasher.close()


def test_a_worker_that_dies_at_start_fails_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "executable", "/bin/false")
    hasher = HashWorker()
    try:
        for job in range(3):
            hasher.submit(job, "verify", PASSWORD, "")
        assert collect(hasher, 3) == dict.fromkeys(range(3), None)
        assert hasher.pending() == 0
    finally:
        hasher.close()
    assert not children()


def test_inline_hasher_hands_results_out_only_through_results(record: str) -> None:
    hasher = InlineHasher()
    hasher.submit(1, "verify", PASSWORD, record)
    hasher.submit(2, "verify", "wrong password", record)
    hasher.submit(3, "verify", PASSWORD * 20, record)
    hasher.submit(4, "hash", PASSWORD)
    assert hasher.pending() == 4
    done = dict(hasher.results())
    made = done.pop(4)
    assert done == {1: True, 2: False, 3: False}
    assert isinstance(made, str) and verify_password(PASSWORD, made)
    assert hasher.pending() == 0
    assert hasher.results() == []
    with pytest.raises(ValueError):
        hasher.submit(5, "hash", "short")


_passwords = st.text(st.characters(exclude_categories=["Cs"]), max_size=PASSWORD_MAX_CHARS)


@given(_passwords, st.text(max_size=RECORD_MAX_CHARS + 20))
def test_every_job_fits_the_bound(password: str, record: str) -> None:
    assert len(encode(make_job("verify", password, record))) <= JOB_MAX_BYTES
    if len(password) >= 8:
        assert len(encode(make_job("hash", password, None))) <= JOB_MAX_BYTES


def test_the_longest_jobs_fit_the_bound() -> None:
    for char in ("\0", "\x1f", '"', "\\", "é", "\u2028", "\uffff", "🔑"):
        for record in (char * RECORD_MAX_CHARS, "\0" * RECORD_MAX_CHARS):
            job = make_job("verify", char * PASSWORD_MAX_CHARS, record)
            assert len(encode(job)) <= JOB_MAX_BYTES


def test_a_starved_worker_is_raised_and_lowered_again(worker: HashWorker, record: str) -> None:
    """Idle-time work never runs while other programs keep the CPUs busy: a
    job held longer than STARVED_S gets its worker ordinary scheduling (at the
    lowest priority) until it has nothing to do."""
    (pid,) = children()
    worker.submit(0, "verify", PASSWORD, record)
    assert collect(worker, 1) == {0: True}  # it has started: it made itself idle-time work
    assert os.sched_getscheduler(pid) == os.SCHED_IDLE
    os.kill(pid, signal.SIGSTOP)  # as starved as it gets
    try:
        worker.submit(1, "verify", PASSWORD, record)
        worker.tick(time.monotonic())
        assert os.sched_getscheduler(pid) == os.SCHED_IDLE  # not starved yet
        worker.tick(time.monotonic() + hashworker.STARVED_S)
        assert os.sched_getscheduler(pid) == os.SCHED_OTHER
        assert os.getpriority(os.PRIO_PROCESS, pid) == 19
    finally:
        os.kill(pid, signal.SIGCONT)
    assert collect(worker, 1) == {1: True}
    assert os.sched_getscheduler(pid) == os.SCHED_IDLE  # nothing to do: idle-time again
