"""Password hashes off the event loop: worker processes behind pipes.

A hash costs tens of milliseconds of CPU (:mod:`chatd.passwords`); on the
loop that would stall every session for each login, so :class:`HashWorker`
runs them in child processes (``python -m chatd.hashworker``) and the loop
only ever does non-blocking pipe I/O:

* jobs go down each child's stdin and results come back on its stdout, as
  frames of the wire protocol (:func:`protocol.encode`, :class:`protocol.Decoder`);
  a child answers its jobs in order, so a result needs no job id;
* a write never blocks: at most ``capacity // JOB_MAX_BYTES`` jobs are in a
  child's pipe at once (the longest possible job, times that, fits the pipe),
  the rest wait in memory and go out as results come back;
* all children's stdouts sit in one private selector whose descriptor is
  :meth:`HashWorker.fileno`, so the loop registers one descriptor however many
  children there are and however often they are replaced;
* a child that dies (killed, crashed) fails its jobs in flight with ``None``,
  so the server answers ``unavailable`` instead of leaving a login hanging,
  and is replaced when the next job needs it (not at once: a child that cannot
  start must not make the loop spin).

Children run as idle-time work (``SCHED_IDLE``): they get a CPU only when
nothing else wants it, so a login storm slows logins down, not the chat (at
``nice`` 10, or even 19, a worker still took time slices from the loop: the
room's p99 moved 2 to 3 times instead of 1.5). Idle-time work starves while
other programs keep every CPU busy, so a worker whose job has made no progress
for STARVED_S is raised to ordinary scheduling at ``nice`` 19 (:meth:`HashWorker.tick`)
and lowered again once it has nothing to do.
They exit when their stdin closes, so a server that dies takes its workers
with it. Subprocesses, not threads nor
``multiprocessing``: the server stays one thread (multiprocessing's queues
start feeder threads), and a fresh interpreter holds none of the server's
sockets or files.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import select
import selectors
import signal
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Protocol

import chatd
from chatd.passwords import RECORD_MAX_CHARS, hash_password, hashable, verify_password
from protocol import Decoder, Message, ProtocolError, encode
from protocol.limits import PASSWORD_MAX_CHARS
from protocol.values import password_problem

log = logging.getLogger(__name__)

Result = str | bool | None

#: A worker's priority below the server's when it is not idle-time work
#: (added to its nice value; the kernel caps the result at 19, the lowest).
NICENESS = 19
#: Seconds a worker may hold a job without a result before it is raised out
#: of idle-time scheduling (see the module docstring).
STARVED_S = 1.0
READ_SIZE = 64 * 1024


def _job(op: str, password: str, record: str = "") -> Message:
    return {"type": op, "password": password, "record": record}


#: The longest frame a job can be: a password and a record of the most code
#: points allowed, every one escaped by JSON as ``\\u0000`` (6 bytes; no UTF-8
#: form is longer, and a job never holds a surrogate, which alone could make
#: the encoder escape everything). Also the frame limit of both directions: a
#: result (a record, or a bool) is shorter.
JOB_MAX_BYTES = len(encode(_job("verify", "\0" * PASSWORD_MAX_CHARS, "\0" * RECORD_MAX_CHARS)))

#: The job sent for a verify whose inputs could never match: its answer, False,
#: comes back like any other (from the worker, when the loop is told to look).
_NO_MATCH = _job("verify", "")


class Hasher(Protocol):
    """What the server needs of a password hasher; answers come only from
    :meth:`results`, which the loop calls when :meth:`HashWorker.fileno` is
    readable."""

    def submit(self, job: int, op: str, password: str, record: str | None = None) -> None:
        """Start ``op`` (``hash`` -> a record, ``verify`` -> a bool) for ``job``.

        Raises ValueError for an unknown op, a verify without record, or a
        hash of a password that breaks the rule of contract §11.
        """

    def results(self) -> list[tuple[int, Result]]:
        """The jobs finished since the last call; ``None``: the job failed."""

    def cancel(self, job: int) -> None:
        """Forget ``job`` if no worker has it yet (its requester is gone); a job
        already handed out finishes and its result is ignored by the caller."""

    def workers(self) -> int:
        """How many jobs can run at once."""

    def pending(self) -> int:
        """Jobs submitted whose result has not been returned yet."""

    def close(self) -> None:
        """Stop; results not yet returned are lost."""


def make_job(op: str, password: str, record: str | None) -> Message:
    """One job, after the checks every hasher makes (so it fits JOB_MAX_BYTES)."""
    if op == "hash":
        problem = password_problem(password)
        if problem is not None:
            raise ValueError(problem)
        return _job(op, password)
    if op != "verify":
        raise ValueError(f"unknown op {op!r}")
    if record is None:
        raise ValueError("verify needs a record")
    if not hashable(password) or len(record) > RECORD_MAX_CHARS or not record.isascii():
        return _NO_MATCH
    return _job(op, password, record)


def run_job(job: Message) -> str | bool:
    """What a worker computes for one job made by :func:`make_job`."""
    if job["type"] == "hash":
        return hash_password(job["password"])
    return verify_password(job["password"], job["record"])


class InlineHasher:
    """A :class:`Hasher` that computes in the calling process, at submit.

    For tests of the pure core: it blocks, so it never serves a real loop.
    """

    def __init__(self) -> None:
        self._done: list[tuple[int, Result]] = []

    def submit(self, job: int, op: str, password: str, record: str | None = None) -> None:
        self._done.append((job, run_job(make_job(op, password, record))))

    def results(self) -> list[tuple[int, Result]]:
        done, self._done = self._done, []
        return done

    def cancel(self, job: int) -> None:
        self._done = [(number, result) for number, result in self._done if number != job]

    def workers(self) -> int:
        return 1

    def pending(self) -> int:
        return len(self._done)

    def close(self) -> None:
        self._done.clear()


def _pipe_capacity(fd: int) -> int:
    """Bytes the pipe holds before a write blocks: Linux says; POSIX promises
    at least PIPE_BUF."""
    get_size = getattr(fcntl, "F_GETPIPE_SZ", None)
    if get_size is not None:
        with contextlib.suppress(OSError):
            return int(fcntl.fcntl(fd, get_size))
    return select.PIPE_BUF


class _Child:
    """One worker process, its pipes and the jobs it holds, oldest first."""

    def __init__(self) -> None:
        # The directory holding the chatd package, as cwd: ``-m`` then finds
        # this same code even when the server runs from a source tree and has
        # changed directory (a daemon moves to /).
        home = Path(chatd.__file__).resolve().parent.parent
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "chatd.hashworker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0, cwd=home,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin = self.proc.stdin.fileno()
        self.stdout = self.proc.stdout.fileno()
        os.set_blocking(self.stdout, False)
        self.limit = max(1, _pipe_capacity(self.stdin) // JOB_MAX_BYTES)
        self.decoder = Decoder(JOB_MAX_BYTES)
        self.jobs: deque[int] = deque()
        self.broken = False  # a write failed: it is dead, its stdout will say so
        self.progress = time.monotonic()  # its last result, or its first job since
        self.raised = False  # out of idle-time scheduling (starved)

    def schedule(self, raised: bool) -> None:
        """Idle-time work, or ordinary at the lowest priority when starved."""
        if raised == self.raised:
            return
        self.raised = raised
        pid = self.proc.pid
        with contextlib.suppress(OSError, AttributeError):  # gone, or not Linux
            if raised:
                os.sched_setscheduler(pid, os.SCHED_OTHER, os.sched_param(0))
                os.setpriority(os.PRIO_PROCESS, pid, 19)
            else:
                os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0))

    def room(self) -> int:
        return 0 if self.broken else self.limit - len(self.jobs)

    def send(self, job: int, frame: bytes) -> None:
        """Write one job; cannot block, as the child holds fewer than ``limit``."""
        if not self.jobs:
            self.progress = time.monotonic()
        self.jobs.append(job)
        try:
            os.write(self.stdin, frame)
        except OSError:  # EPIPE: it died; the end of its stdout fails the job
            self.broken = True

    def read(self) -> list[Message] | None:
        """The results that have arrived; None when the child is gone (or spoke
        garbage, which is the same for its jobs)."""
        try:
            data = os.read(self.stdout, READ_SIZE)
        except BlockingIOError:
            return []
        except OSError:
            return None
        if not data:
            return None
        try:
            return self.decoder.feed(data)
        except ProtocolError:
            return None

    def stop(self) -> None:
        """Kill it and close the pipes; it is reaped by :meth:`reaped`."""
        self.proc.kill()
        self._close_pipes()

    def reaped(self) -> bool:
        return self.proc.poll() is not None

    def shut(self) -> None:
        """Close its stdin (it exits after its job), stop it, and reap it."""
        self._close_pipes()
        self.proc.terminate()
        self.proc.wait()

    def _close_pipes(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


class HashWorker:
    """A :class:`Hasher` whose hashes run in ``processes`` worker processes.

    Every method but :meth:`close` returns at once (a replaced worker costs one
    ``fork``/``exec``);
    the loop registers :meth:`fileno` for reading and calls :meth:`results`
    when it is readable.
    """

    def __init__(self, processes: int = 1) -> None:
        if processes < 1:
            raise ValueError("processes must be at least 1")
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._slots: list[_Child | None] = [None] * processes
        self._queue: deque[tuple[int, bytes]] = deque()
        self._failed: list[tuple[int, Result]] = []  # answered without a child
        self._dying: list[_Child] = []
        self._closed = False
        for slot in range(processes):
            self._start(slot)

    def fileno(self) -> int:
        """Readable when :meth:`results` has something to return."""
        return self._sel.fileno()

    def submit(self, job: int, op: str, password: str, record: str | None = None) -> None:
        if self._closed:
            raise ValueError("the hash worker is closed")
        self._queue.append((job, encode(make_job(op, password, record))))
        self._dispatch()

    def results(self) -> list[tuple[int, Result]]:
        out, self._failed = self._failed, []
        for key, _ in self._sel.select(0):
            child: _Child | None = key.data
            if child is None:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, READ_SIZE)
                continue
            messages = child.read()
            if messages is None:
                out += self._lost(child)
                continue
            out += [(child.jobs.popleft(), message.get("result")) for message in messages]
            if messages:
                child.progress = time.monotonic()
            if not child.jobs:
                child.schedule(raised=False)
        self._dying = [child for child in self._dying if not child.reaped()]
        self._dispatch()
        return out

    def cancel(self, job: int) -> None:
        self._queue = deque(item for item in self._queue if item[0] != job)

    def tick(self, now: float) -> None:
        """Raise a worker whose job has waited STARVED_S for a CPU (the loop
        calls this while jobs are pending, at least every STARVED_S / 2)."""
        for child in self._slots:
            if child is not None and child.jobs and now - child.progress >= STARVED_S:
                child.schedule(raised=True)

    def workers(self) -> int:
        return len(self._slots)

    def pending(self) -> int:
        held = sum(len(child.jobs) for child in self._slots if child is not None)
        return len(self._queue) + held + len(self._failed)

    def close(self) -> None:
        """Stop every worker and reap it (waits for them: call at shutdown)."""
        if self._closed:
            return
        self._closed = True
        for child in self._slots:
            if child is not None:
                child.shut()
        for child in self._dying:
            child.shut()
        self._slots = []
        self._dying = []
        self._queue.clear()
        self._sel.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _start(self, slot: int) -> None:
        try:
            child = _Child()
        except OSError as exc:
            log.error("cannot start a password hash worker: %s", exc)
            return
        self._sel.register(child.stdout, selectors.EVENT_READ, child)
        self._slots[slot] = child

    def _lost(self, child: _Child) -> list[tuple[int, Result]]:
        """A worker died: fail its jobs; its slot is refilled when needed."""
        log.error("password hash worker %d died with %d jobs", child.proc.pid, len(child.jobs))
        self._sel.unregister(child.stdout)
        self._slots[self._slots.index(child)] = None
        child.stop()
        self._dying.append(child)
        return [(job, None) for job in child.jobs]

    def _dispatch(self) -> None:
        """Send queued jobs to the workers with room, least loaded first."""
        if not self._queue:
            return
        children = self._live()
        if not children:  # no worker will start: answer instead of hanging
            self._failed += [(job, None) for job, _ in self._queue]
            self._queue.clear()
            self._wake()
            return
        while self._queue:
            child = max(children, key=_Child.room)
            if child.room() <= 0:
                return
            child.send(*self._queue.popleft())

    def _live(self) -> list[_Child]:
        """The running workers, starting one in each empty slot."""
        for slot, child in enumerate(self._slots):
            if child is None:
                self._start(slot)
        return [child for child in self._slots if child is not None]

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"!")


def main() -> int:
    """The worker: jobs from stdin, results to stdout, until stdin closes."""
    # The server decides when we stop; a Ctrl-C meant for it must not kill us first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (OSError, AttributeError):  # not Linux, or not allowed: the next best
        with contextlib.suppress(OSError):
            os.nice(NICENESS)
    decoder = Decoder(JOB_MAX_BYTES)
    out = sys.stdout.buffer
    try:
        while data := os.read(sys.stdin.fileno(), READ_SIZE):
            for job in decoder.feed(data):
                out.write(encode({"type": "done", "result": run_job(job)}))
                out.flush()  # each result as soon as it is known
    except BrokenPipeError:
        # The server is gone (killed mid-job): nobody wants the result.
        with contextlib.suppress(OSError):
            os.close(sys.stdout.fileno())  # no second error when Python flushes at exit
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
