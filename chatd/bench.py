"""``chatd bench``: load the server from separate processes and print its figures.

Five parts, each selectable (``fanout``, ``latency``, ``idle``, ``rooms``,
``storm`` or ``all``):

- **fan-out**: a room of ``--clients`` (default 100), ``--senders`` of them
  sending ``--size``-character texts as fast as the server takes them, each
  with at most ``--window`` messages unacknowledged (its own ``msg`` echo is the
  acknowledgement). A delivery is one ``msg`` frame received by one client.
  Reports deliveries/s, deliveries per server CPU-second and the server's
  thread count.
- **latency**: the same room at a fixed ``--rate`` of deliveries per second;
  senders put the CLOCK_MONOTONIC send time into each text, and the senders
  plus every ``--probe-every``-th client compute receive time minus send time
  (the other clients are read in batches every few ms: they load the server
  the same, but the generators' CPU goes to the timed reads). Reports
  p50/p99/max over all timed deliveries.
- **idle**: ``--idle-connections`` (default 10,000) logged-in clients that only
  read; reports server RSS growth per connection and the connect-all time.
- **rooms** (protocol version 2): ``--rooms-clients`` (default 10,000) clients
  in rooms of ``--room-size`` (10), one sender in each of ``--rooms-senders``
  (100) rooms spread over all, sending as in the fan-out. Reports
  deliveries/s and deliveries per server CPU-second.
- **storm**: latency runs of the one room, interleaved without and with a
  login storm of ``--storm-rate`` (50) account logins/s, each paying the real
  password hash (version 2 accounts, made on the control socket first).
  Reports the room's latency both ways and the logins' latency.

``--tls`` runs the fan-out and latency parts also with every client on the
server's TLS port, interleaved with the plain runs, and prints the ratio.
``--ws`` runs the fan-out also with every client on the server's WebSocket
(``/ws`` on its web port, see :mod:`chatd.bench_ws`), the same way.

``--nodes N[,N...]`` runs the fan-out over a cluster of N nodes sharing one
``redis-server``, each count interleaved (see :mod:`chatd.bench_cluster`).

``--compare-tree DIR`` runs the fan-out and latency parts also against the
server of another source tree (an older release checked out with ``git
worktree add``), interleaved with this one, and prints the ratio of the medians.

By default every run starts its own ``python -m chatd run --port 0 --rate 0``
with ``--db :memory:`` (``--db store`` for the SQLite store in a temporary data
directory; ``--db`` twice compares two set-ups side by side, runs interleaved).
With ``--port`` it loads a running server instead (CPU/RSS figures then need
``--server-pid``). On a machine with two or more CPUs the server is pinned to
the first allowed CPU and the load generators to the others, so the server's
figures are one core's worth and the generators never steal its CPU.

Every figure comes with the CPU the server and the generators used in the
window and the time they spent runnable but waiting for a CPU (``/proc``
schedstat): on a shared machine that wait is other jobs' interference, and it
is what inflates latency there. ``--realtime`` (root) runs everything at
SCHED_RR priority 1 to measure the server without that interference.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import platform
import signal
import socket
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, TypeVar

from chatd.bench_load import IdleSpec, RoomSpec, idle_worker, raise_nofile, room_worker
from chatd.bench_rooms import RoomsSpec, rooms_worker
from chatd.bench_server import BenchError, Server, start_server
from chatd.bench_storm import GRACE, StormSpec, create_accounts, storm_worker
from chatd.bench_wire import STAMP_DIGITS
from chatd.cli import OneLineParser
from chatd.settings import port_number, positive_seconds, seconds

PARTS = ("fanout", "latency", "idle", "rooms", "storm")
TARGET_DELIVERIES = 1_000_000  # per second, 100-client room
TARGET_IDLE_KIB = 8.0  # server RSS per idle connection
TARGET_P99_MS = 20.0  # at 100,000 deliveries/s

_SETUP_TIMEOUT = 300.0
_Result = dict[str, Any]
_T = TypeVar("_T")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="chatd bench",
        description="Load a chatd server from separate processes and print its figures.",
    )
    parser.add_argument("part", nargs="?", default="all", choices=(*PARTS, "all"),
                        help="what to measure (default: all)")
    target = parser.add_argument_group("server")
    target.add_argument("--host", default="127.0.0.1", help="server to load with --port")
    target.add_argument("--port", type=_argtype(port_number), default=0,
                        help="load a running server (default: start one per run)")
    target.add_argument("--server-pid", type=int, default=None,
                        help="pid of the --port server, for CPU, RSS and thread figures")
    target.add_argument("--db", action="append", default=None, metavar="PATH|store",
                        help="history for the started server: ':memory:' (default), 'store' "
                        "(SQLite in its data directory) or a path; give it twice to compare")
    target.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                        help="extra argument for 'chatd run' (repeatable; use --server-arg=--x)")
    target.add_argument("--no-pin", action="store_true",
                        help="do not pin the server and the generators to separate CPUs")
    target.add_argument("--realtime", action="store_true",
                        help="run the server and the generators at real-time priority "
                        "(SCHED_RR 1; needs root): shields the figures from other jobs on a "
                        "shared machine, whose CPU slices otherwise delay every wake-up")
    room = parser.add_argument_group("fan-out and latency")
    room.add_argument("--clients", type=_positive, default=100, help="clients in the room")
    room.add_argument("--senders", type=_positive, default=10, help="clients that send")
    room.add_argument("--size", type=_positive, default=64, help="text length in characters")
    room.add_argument("--window", type=_positive, default=64,
                      help="fan-out: most unacknowledged messages per sender")
    room.add_argument("--rate", type=_positive, default=100_000,
                      help="latency: fixed load in deliveries/s")
    room.add_argument("--probe-every", type=_positive, default=10,
                      help="latency: time every Nth client besides the senders (1 = all)")
    room.add_argument("--duration", type=_argtype(positive_seconds), default=5.0,
                      help="measured seconds per run")
    room.add_argument("--warmup", type=_argtype(seconds), default=1.0,
                      help="seconds before measuring")
    room.add_argument("--procs", type=_positive, default=2,
                      help="generator processes for the room")
    target.add_argument("--tls", action="store_true",
                        help="fanout, latency: also run with the clients on TLS, interleaved")
    target.add_argument("--ws", action="store_true",
                        help="fanout: also run with the clients on WebSocket, interleaved")
    target.add_argument("--compare-tree", type=Path, default=None, metavar="DIR",
                        help="fanout, latency: also run the server from the source tree DIR "
                        "(e.g. an older release's git worktree), interleaved; print the ratio")
    rooms = parser.add_argument_group("rooms (version 2)")
    rooms.add_argument("--rooms-clients", type=_positive, default=10_000,
                       help="clients, each in one room")
    rooms.add_argument("--room-size", type=_positive, default=10, help="clients per room")
    rooms.add_argument("--rooms-senders", type=_positive, default=100,
                       help="rooms with a sender (one each), spread over all rooms")
    rooms.add_argument("--rooms-procs", type=_positive, default=4,
                       help="generator processes for the rooms")
    storm = parser.add_argument_group("login storm (version 2)")
    storm.add_argument("--storm-rate", type=_positive, default=50,
                       help="account logins per second during the storm's latency runs")
    idle = parser.add_argument_group("idle connections")
    idle.add_argument("--idle-connections", type=_positive, default=10_000)
    idle.add_argument("--idle-procs", type=_positive, default=4,
                      help="generator processes opening the idle connections")
    idle.add_argument("--login-window", type=_positive, default=50,
                      help="most logins in flight per idle or rooms generator process")
    from chatd.bench_cluster import add_arguments as cluster_arguments

    cluster_arguments(parser)  # --nodes
    parser.add_argument("--runs", type=_positive, default=3, help="runs per part; median shown")
    parser.add_argument("--json", action="store_true",
                        help="print the results as JSON on stdout (the lines go to stderr)")
    return parser


def _argtype(parse: Callable[[str], _T]) -> Callable[[str], _T]:
    """A settings parser as an argparse type: its reason becomes the usage error."""

    def convert(text: str) -> _T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None

    return convert


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


# --- set-up ----------------------------------------------------------------------------


@dataclass
class Bench:
    args: argparse.Namespace
    say: Callable[[str], None]
    server_cpus: set[int] | None = None
    results: dict[str, Any] = field(default_factory=dict)
    runs_started: int = 0

    @property
    def own_server(self) -> bool:
        return not self.args.port

    @contextmanager
    def server(
        self, db: str, max_clients: int, extra: Sequence[str] = (), tree: Path | None = None
    ) -> Iterator[Server]:
        """A fresh server (or the --port one); ``extra`` and ``tree`` only apply to a fresh one."""
        if not self.own_server:
            yield Server(self.args.host, self.args.port, self.args.server_pid)
            return
        flags = ["--max-clients", str(max_clients), *extra, *self.args.server_arg]
        server = start_server(db, flags, self.server_cpus, tree)
        try:
            yield server
        except BenchError as exc:
            tail = server.log_tail()
            raise BenchError(f"{exc} [server log: {tail or 'empty'}]") from None
        finally:
            server.stop()

    def names(self, kind: str, count: int) -> list[str]:
        """Login names unique to this run, also on a long-running --port server."""
        self.runs_started += 1
        prefix = f"b{os.getpid() % 100000}r{self.runs_started}{kind}"
        return [f"{prefix}{i}" for i in range(count)]


def _pin(bench: Bench) -> str:
    """Pin the server to one CPU and this process (and so the workers) to the rest."""
    allowed = sorted(os.sched_getaffinity(0))
    if bench.args.no_pin or not bench.own_server or len(allowed) < 2:
        return "not pinned"
    bench.server_cpus = {allowed[0]}
    os.sched_setaffinity(0, set(allowed[1:]))
    rest = ",".join(map(str, allowed[1:]))
    return f"server pinned to CPU {allowed[0]}, load generators to CPU {rest}"


def machine(pinning: str) -> dict[str, Any]:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "scheduling": "SCHED_RR 1" if os.sched_getscheduler(0) == os.SCHED_RR else "normal",
        "load_average": os.getloadavg()[0],
        "cpu_model": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "pinning": pinning,
    }


class Workers:
    """Generator processes, each steered through its own pipe."""

    def __init__(self, target: Callable[..., None], specs: Sequence[object]) -> None:
        context = multiprocessing.get_context("fork")
        self.pipes: list[Connection] = []
        self.procs: list[BaseProcess] = []
        for spec in specs:
            ours, theirs = context.Pipe()
            proc = context.Process(target=target, args=(theirs, spec), daemon=True)
            proc.start()
            theirs.close()
            self.pipes.append(ours)
            self.procs.append(proc)

    def send(self, message: tuple[str, Any]) -> None:
        for pipe in self.pipes:
            pipe.send(message)

    def gather(self, kind: str, timeout: float = _SETUP_TIMEOUT) -> list[Any]:
        deadline = time.monotonic() + timeout
        out = []
        for pipe in self.pipes:
            if not pipe.poll(max(0.0, deadline - time.monotonic())):
                raise BenchError(f"load generator timed out (waiting for {kind})")
            try:
                got, value = pipe.recv()
            except EOFError:
                raise BenchError(f"a load generator died (waiting for {kind})") from None
            if got == "error":
                raise BenchError(f"load generator: {value}")
            out.append(value)
        return out

    def close(self) -> None:
        """Close the pipes first: a worker waiting for an order then sees EOF and ends."""
        for pipe in self.pipes:
            pipe.close()
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join()


@contextmanager
def workers(target: Callable[..., None], specs: Sequence[object]) -> Iterator[Workers]:
    group = Workers(target, specs)
    try:
        yield group
    finally:
        group.close()


def _sleep_until(t_ns: int) -> None:
    delay = (t_ns - time.monotonic_ns()) / 1e9
    if delay > 0:
        time.sleep(delay)


# --- the room ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    """What a run's server is: its history, and the source tree of its code."""

    db: str
    tree: Path | None = None
    tls: bool = False  # the clients connect to the TLS port
    ws: bool = False  # the clients connect to the WebSocket on the web port

    @property
    def label(self) -> str:
        label = self.db if self.tree is None else f"{self.db} @ {self.tree}"
        return label + (" tls" if self.tls else "") + (" ws" if self.ws else "")


def _free_port() -> int:
    """A port for the server's TLS or web listener (0 means "none", not "any port")."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _window(
    bench: Bench, server: Server, group: Workers, also: Sequence[Workers] = ()
) -> tuple[list[Any], _Result]:
    """Barrier, go, and the server's figures over the measured window.

    ``group`` holds the clients that count deliveries; ``also`` are workers
    that get the same times (the storm) and report on their own.
    """
    args = bench.args
    group.send(("sync", None))
    group.gather("synced")
    t_start = time.monotonic_ns() + 100_000_000
    t_m0 = t_start + int(args.warmup * 1e9)
    t_m1 = t_m0 + int(args.duration * 1e9)
    for each in (group, *also):
        each.send(("go", (t_start, t_m0, t_m1)))
    _sleep_until(t_m0)
    cpu0, wait0, wall0 = server.cpu_seconds(), server.run_delay(), time.monotonic()
    helpers0 = server.helpers_cpu_seconds()
    _sleep_until((t_m0 + t_m1) // 2)
    threads = server.threads()
    _sleep_until(t_m1)
    cpu1, wait1, wall1 = server.cpu_seconds(), server.run_delay(), time.monotonic()
    helpers1 = server.helpers_cpu_seconds()
    results = group.gather("done", timeout=args.duration + args.warmup + 60)
    deliveries = sum(r["deliveries"] for r in results)
    result: _Result = {
        "deliveries_per_s": deliveries / args.duration,
        "generator_cpu": sum(r["cpu"] for r in results) / args.duration,
        "generator_waited": sum(r["waited"] for r in results) / args.duration,
        "threads": threads,
    }
    if cpu0 is not None and cpu1 is not None:
        used = cpu1 - cpu0
        result["server_cpu"] = used / (wall1 - wall0)
        result["per_server_cpu_s"] = deliveries / used if used > 0 else None
    if wait0 is not None and wait1 is not None:
        result["server_waited"] = (wait1 - wait0) / (wall1 - wall0)
    if helpers0 is not None and helpers1 is not None:
        result["hash_workers_cpu"] = (helpers1 - helpers0) / (wall1 - wall0)
    return results, result


def _quantiles(samples_us: list[int], prefix: str = "") -> _Result:
    """p50, p99 and max (ms) of latency samples in µs."""
    samples = sorted(samples_us)
    out: _Result = {prefix + "samples": len(samples)}
    for key, q in (("p50_ms", 0.50), ("p99_ms", 0.99)):
        out[prefix + key] = samples[int(q * (len(samples) - 1))] / 1000 if samples else None
    out[prefix + "max_ms"] = samples[-1] / 1000 if samples else None
    return out


STORM_ROOM = "storm"


def room_run(bench: Bench, mode: str, setup: Setup, storm_rate: float = 0.0) -> _Result:
    """One fan-out or latency run: log in, barrier, go, count; figures of the window.

    With ``storm_rate`` accounts log in at that rate throughout (a latency run
    of the storm part; its runs without a storm use the same server flags).
    """
    args = bench.args
    names = bench.names("c", args.clients)
    senders = min(args.senders, args.clients)
    procs = min(args.procs, args.clients)
    per_sender = args.rate / (senders * args.clients)
    extra = ["--default-rooms", STORM_ROOM] if mode == "storm" else []
    tls_port = _free_port() if setup.tls else 0
    web_port = _free_port() if setup.ws else 0
    if (setup.tls or setup.ws) and not bench.own_server:
        raise BenchError("--tls and --ws need a server started by the bench (no --port)")
    if setup.tree is None:  # an older tree's server may not know the flag
        extra += ["--tls-port", str(tls_port)]  # 0: the plain runs' server has no TLS
    if web_port:
        extra += ["--http-port", str(web_port)]
    logins = math.ceil(storm_rate * (args.warmup + args.duration + 1))
    accounts = bench.names("a", logins) if logins else []
    with bench.server(setup.db, max(args.clients + 10, 10_000), extra, setup.tree) as server:
        if accounts:
            if server.control is None:
                raise BenchError("the storm needs a server started by the bench (no --port)")
            create_accounts(server.control, accounts)
        specs = [
            RoomSpec(
                host=server.host, port=tls_port or web_port or server.port, tls=setup.tls,
                ws=setup.ws,
                names=names[w::procs],
                senders=[i if i < senders else -1 for i in range(w, args.clients, procs)],
                probes=[i % args.probe_every == 0 for i in range(w, args.clients, procs)],
                total_senders=senders, mode="fanout" if mode == "fanout" else "latency",
                size=args.size, window=args.window, per_sender_rate=per_sender,
            )
            for w in range(procs)
        ]
        storm_specs = [StormSpec(server.host, server.port, accounts, storm_rate)] if logins else []
        with workers(room_worker, specs) as group, workers(storm_worker, storm_specs) as storm:
            group.gather("ready")
            storm.gather("ready")
            results, result = _window(bench, server, group, [storm])
            storms = storm.gather("done", timeout=GRACE + 60)
    result["db"] = setup.label
    if mode != "fanout":
        samples = [s for r in results for s in r["samples"]]
        if not samples:
            raise BenchError("no message was delivered during the latency window")
        result["target"] = args.rate
        result.update(_quantiles(samples))
    for report in storms:
        result["logins_started_per_s"] = report["started"] / args.duration
        result["logins_answered_per_s"] = report["answered_in_window"] / args.duration
        result["logins_unfinished"] = report["unfinished"]
        result["logins_refused"] = sum(report["refused"].values())
        result["logins_refused_by_code"] = report["refused"]
        result.update(_quantiles(list(report["samples"]), "login_"))
    return result


def _n(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.0f}%"


def _load(r: _Result) -> str:
    """CPU used, and time spent waiting for a CPU (other processes' interference)."""
    return (f"server CPU {_share(r.get('server_cpu'))} + waited {_share(r.get('server_waited'))}"
            f", generators {_share(r['generator_cpu'])} + waited "
            f"{_share(r['generator_waited'])}; server threads {_n(r['threads'])}")


def _fanout_line(r: _Result) -> str:
    return (f"{_n(r['deliveries_per_s'])} deliveries/s, {_n(r.get('per_server_cpu_s'))} per "
            f"server CPU-second ({_load(r)})")


def _latency_line(r: _Result) -> str:
    return (f"p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, max {r['max_ms']:.1f} ms "
            f"at {_n(r['deliveries_per_s'])} deliveries/s ({_n(r['samples'])} samples; "
            f"{_load(r)})")


def _median(runs: list[_Result], keys: Sequence[str]) -> _Result:
    """Each figure's own median over the runs (the lower one for counts)."""
    out: _Result = {}
    for key in keys:
        values = [r[key] for r in runs if r.get(key) is not None]
        if not values:
            out[key] = None
        elif isinstance(values[0], int):
            out[key] = statistics.median_low(values)
        else:
            out[key] = statistics.median(values)
    return out


_ROOM_KEYS = ["deliveries_per_s", "per_server_cpu_s", "server_cpu", "server_waited",
              "generator_cpu", "generator_waited", "threads"]
_LATENCY_KEYS = ["p50_ms", "p99_ms", "max_ms", "samples"]


def bench_room(bench: Bench, mode: str) -> None:
    args = bench.args
    dbs: list[str] = args.db or [":memory:"]
    if mode == "latency" and args.size < STAMP_DIGITS:
        raise BenchError(f"--size must be at least {STAMP_DIGITS} for the latency test")
    setups = [Setup(db) for db in dbs]
    if args.compare_tree is not None:
        setups += [Setup(db, args.compare_tree) for db in dbs]
    if args.tls:
        setups += [Setup(db, tls=True) for db in dbs]
    if args.ws and mode == "fanout":
        setups += [Setup(db, ws=True) for db in dbs]
    runs: dict[Setup, list[_Result]] = {setup: [] for setup in setups}
    label = "fan-out" if mode == "fanout" else "latency"
    line = _fanout_line if mode == "fanout" else _latency_line
    for number in range(1, args.runs + 1):
        for setup in setups:  # interleaved, so a noisy moment hits every set-up alike
            result = room_run(bench, mode, setup)
            runs[setup].append(result)
            where = f" [db {setup.label}]" if len(setups) > 1 or setup.db != ":memory:" else ""
            bench.say(f"  {label} run {number}/{args.runs}{where}: {line(result)}")
    keys = _ROOM_KEYS + (_LATENCY_KEYS if mode == "latency" else [])
    part: dict[str, Any] = {}
    senders = min(args.senders, args.clients)
    for setup in setups:
        med = _median(runs[setup], keys)
        med["db"] = setup.label
        part[setup.label] = {"runs": runs[setup], "median": med}
        about = (f"{args.clients} clients, {senders} senders, {args.size} B, --db "
                 f"{setup.label}, median of {args.runs}")
        if mode == "fanout":
            bench.say(f"fan-out: {_fanout_line(med)} [{about}, window {args.window}] "
                      f"(target >= {TARGET_DELIVERIES:,}/s)")
        else:
            bench.say(f"latency: {_latency_line(med)} [{about}, fixed load "
                      f"{args.rate:,}/s] (target p99 < {TARGET_P99_MS:g} ms)")
    base = part[setups[0].label]["median"]
    ratio_keys = ("deliveries_per_s", "per_server_cpu_s") if mode == "fanout" else ("p99_ms",)
    for setup in setups[1:]:
        med = part[setup.label]["median"]
        ratios = {key: _ratio(med[key], base[key]) for key in ratio_keys}
        part[setup.label]["ratio_to_" + setups[0].label] = ratios
        shown = ", ".join(f"{key} {_r(value)}" for key, value in ratios.items())
        bench.say(f"{label} [{setup.label}] / [{setups[0].label}]: {shown}")
    bench.results[mode] = part


def _ratio(value: float | None, base: float | None) -> float | None:
    return None if value is None or not base else value / base


def _r(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


# --- rooms (version 2) -------------------------------------------------------------------


def rooms_run(bench: Bench) -> _Result:
    """Clients in rooms of ``--room-size``, one sender in each of ``--rooms-senders`` rooms."""
    args = bench.args
    count, size = args.rooms_clients, args.room_size
    rooms = math.ceil(count / size)
    senders = min(args.rooms_senders, rooms)
    names = bench.names("m", count)
    room_names = bench.names("room", rooms)
    quiet = bench.names("q", 1)[0]  # guests are put in it at login, and leave it
    sender_rooms = {k * rooms // senders for k in range(senders)}
    room_of = [room_names[i // size] for i in range(count)]
    is_sender = [i % size == 0 and i // size in sender_rooms for i in range(count)]
    procs = min(args.rooms_procs, count)
    db = (args.db or [":memory:"])[0]
    with bench.server(db, count + 100, ["--default-rooms", quiet]) as server:
        specs = [
            RoomsSpec(host=server.host, port=server.port, names=names[w::procs],
                      rooms=room_of[w::procs], senders=is_sender[w::procs], size=args.size,
                      window=args.window, login_window=args.login_window)
            for w in range(procs)
        ]
        t0 = time.monotonic()
        with workers(rooms_worker, specs) as group:
            group.gather("ready")
            entered = time.monotonic() - t0
            _, result = _window(bench, server, group)
    result.update(db=db, clients=count, rooms=rooms, senders=senders, enter_all_s=entered)
    return result


def bench_rooms(bench: Bench) -> None:
    args = bench.args
    runs = []
    for number in range(1, args.runs + 1):
        result = rooms_run(bench)
        runs.append(result)
        bench.say(f"  rooms run {number}/{args.runs}: {_fanout_line(result)}; all clients "
                  f"in their rooms after {result['enter_all_s']:.1f} s")
    med = _median(runs, [*_ROOM_KEYS, "enter_all_s"])
    first = runs[0]
    bench.say(f"rooms: {_fanout_line(med)} [{first['clients']:,} clients in {first['rooms']:,} "
              f"rooms of {args.room_size}, {first['senders']} senders (one each in rooms spread "
              f"over all), {args.size} B, window {args.window}, --db {first['db']}, median of "
              f"{args.runs}]; all clients in their rooms after {med['enter_all_s']:.1f} s")
    bench.results["rooms"] = {"runs": runs, "median": med}


# --- login storm (version 2) --------------------------------------------------------------


def _storm_line(r: _Result) -> str:
    def ms(key: str) -> str:
        return "n/a" if r.get(key) is None else f"{r[key]:.0f}"

    codes = r.get("logins_refused_by_code") or {}
    refused = f"{r['logins_refused']}" + (f" ({json.dumps(codes)})" if codes else "")

    return (f"{r['logins_started_per_s']:.0f} logins/s started, {r['logins_answered_per_s']:.1f}"
            f"/s welcomed in the window; login p50 {ms('login_p50_ms')} ms, p99 "
            f"{ms('login_p99_ms')} ms, max {ms('login_max_ms')} ms; "
            f"{r['logins_unfinished']} unanswered {GRACE:g} s after, {refused} refused; "
            f"hash workers CPU {_share(r.get('hash_workers_cpu'))}")


def bench_storm(bench: Bench) -> None:
    """Latency runs without and with the storm, interleaved; the room's p99 ratio."""
    args = bench.args
    if args.size < STAMP_DIGITS:
        raise BenchError(f"--size must be at least {STAMP_DIGITS} for the latency test")
    setup = Setup((args.db or [":memory:"])[0])
    rates = (0.0, float(args.storm_rate))
    runs: dict[float, list[_Result]] = {rate: [] for rate in rates}
    for number in range(1, args.runs + 1):
        for rate in rates:
            result = room_run(bench, "storm", setup, rate)
            runs[rate].append(result)
            storm = f"; storm: {_storm_line(result)}" if rate else ""
            bench.say(f"  storm run {number}/{args.runs} [{rate:g} logins/s]: "
                      f"{_latency_line(result)}{storm}")
    login_keys = ["logins_started_per_s", "logins_answered_per_s", "logins_unfinished",
                  "logins_refused",
                  "login_p50_ms", "login_p99_ms", "login_max_ms", "login_samples",
                  "hash_workers_cpu"]
    quiet = _median(runs[0.0], _ROOM_KEYS + _LATENCY_KEYS)
    stormy = _median(runs[rates[1]], _ROOM_KEYS + _LATENCY_KEYS + login_keys)
    about = (f"{args.clients} clients, {args.senders} senders, fixed load {args.rate:,}/s, "
             f"--db {setup.db}, median of {args.runs}")
    bench.say(f"storm: without: {_latency_line(quiet)} [{about}]")
    bench.say(f"storm: with {args.storm_rate} logins/s: {_latency_line(stormy)}; "
              f"{_storm_line(stormy)}")
    ratio = _ratio(stormy["p99_ms"], quiet["p99_ms"])
    bench.say(f"storm: room p99 with / without: {_r(ratio)} (target < 2)")
    bench.results["storm"] = {"without": {"runs": runs[0.0], "median": quiet},
                              "with": {"runs": runs[rates[1]], "median": stormy},
                              "p99_ratio": ratio}


# --- idle connections ----------------------------------------------------------------------


def idle_run(bench: Bench) -> _Result:
    args = bench.args
    count = args.idle_connections
    names = bench.names("i", count)
    procs = min(args.idle_procs, count)
    db = (args.db or [":memory:"])[0]
    with bench.server(db, count + 100) as server:
        rss0 = server.rss_kib()
        specs = [IdleSpec(server.host, server.port, names[w::procs], args.login_window)
                 for w in range(procs)]
        with workers(idle_worker, specs) as group:
            group.gather("ready")
            t_start = time.monotonic_ns() + 200_000_000
            cpu0, wait0 = server.cpu_seconds(), server.run_delay()
            group.send(("go", t_start))
            reports = group.gather("connected")
            cpu1, wait1 = server.cpu_seconds(), server.run_delay()
            connected = max(t for t, _ in reports)
            group.send(("barrier", None))
            settled = max(group.gather("settled"))
            rss1 = server.rss_kib()
            threads = server.threads()
            if bench.own_server:
                server.stop()  # before the clients go: no leave storm
            group.send(("close", None))
    result: _Result = {
        "connections": count,
        "connect_all_s": (connected - t_start) / 1e9,
        "settled_s": (settled - t_start) / 1e9,
        "connect_server_cpu_s": None if cpu0 is None or cpu1 is None else cpu1 - cpu0,
        "connect_generator_cpu_s": sum(cpu for _, cpu in reports),
        "connect_server_waited_s": None if wait0 is None or wait1 is None else wait1 - wait0,
        "rss_before_kib": rss0,
        "rss_after_kib": rss1,
        "threads": threads,
        "kib_per_connection": None,
    }
    if rss0 is not None and rss1 is not None:
        result["kib_per_connection"] = (rss1 - rss0) / count
    return result


def _s(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds:.1f} s"


def _idle_line(r: _Result) -> str:
    per = r["kib_per_connection"]
    rss = "RSS n/a" if per is None else (
        f"{per:.2f} KiB server RSS each ({_n(r['rss_before_kib'])} -> "
        f"{_n(r['rss_after_kib'])} KiB)")
    return (f"{r['connections']:,} connections: {rss}; connect-all {r['connect_all_s']:.2f} s "
            f"(CPU: server {_s(r['connect_server_cpu_s'])} + waited "
            f"{_s(r['connect_server_waited_s'])}, generators "
            f"{_s(r['connect_generator_cpu_s'])}), all joins delivered {r['settled_s']:.2f} s; "
            f"server threads {_n(r['threads'])}")


def bench_idle(bench: Bench) -> None:
    args = bench.args
    runs = []
    for number in range(1, args.runs + 1):
        result = idle_run(bench)
        runs.append(result)
        bench.say(f"  idle run {number}/{args.runs}: {_idle_line(result)}")
    med = _median(runs, ["kib_per_connection", "connect_all_s", "settled_s",
                         "connect_server_cpu_s", "connect_server_waited_s",
                         "connect_generator_cpu_s", "rss_before_kib",
                         "rss_after_kib", "threads"])
    med["connections"] = args.idle_connections
    procs = min(args.idle_procs, args.idle_connections)
    bench.say(f"idle: {_idle_line(med)} [median of {args.runs}; {procs} processes logging in "
              f"one after another, {args.login_window} logins in flight each] "
              f"(target < {TARGET_IDLE_KIB:g} KiB)")
    bench.results["idle"] = {"runs": runs, "median": med}


def main(argv: Sequence[str] | None = None) -> int:
    from chatd import bench_cluster

    parser = build_parser()
    args = parser.parse_args(argv)
    bench_cluster.check_args(parser, args)
    out = sys.stderr if args.json else sys.stdout

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    bench = Bench(args, say)
    # SIGTERM unwinds like Ctrl-C, so the server and generators are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    raise_nofile()
    if args.realtime:
        try:  # inherited by the generators and the server started from here
            os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(1))
        except OSError as exc:
            print(f"chatd bench: cannot use --realtime: {exc.strerror}", file=sys.stderr)
            return 1
    info = machine(_pin(bench) if args.nodes is None else bench_cluster.pinning(bench))
    say(f"machine: {info['cpus']} CPUs ({info['cpu_model']}), Python {info['python']}, "
        f"Linux {info['kernel']}; {info['pinning']}; {info['scheduling']} scheduling; load average "
        f"{info['load_average']:.1f}")
    parts = PARTS if args.part == "all" else (args.part,)
    try:
        for part in parts:
            if args.nodes is not None:
                bench_cluster.bench_cluster(bench)
            elif part == "idle":
                bench_idle(bench)
            elif part == "rooms":
                bench_rooms(bench)
            elif part == "storm":
                bench_storm(bench)
            else:
                bench_room(bench, part)
    except BenchError as exc:
        print(f"chatd bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    if args.json:
        print(json.dumps({"machine": info, "args": vars(args), "results": bench.results},
                         indent=2, default=str))  # str: the --compare-tree path
    return 0


if __name__ == "__main__":
    sys.exit(main())
