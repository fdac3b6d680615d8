"""``chatd bench`` end to end at toy sizes: it runs and prints every figure.

Never asserts speed (the machine is shared); it asserts that each part ran,
measured something and reported it in both the lines and the JSON.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys


def run_bench(*args: str, timeout: float) -> tuple[int, str, str]:
    """Run ``python -m chatd.bench ARGS`` in its own process group, so that a
    timeout also ends the server and the load generators it started."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "chatd.bench", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return proc.returncode, out, err


def test_bench_all_prints_the_figures() -> None:
    code, out, err = run_bench(
        "all", "--runs", "1", "--clients", "10", "--senders", "2", "--duration", "1",
        "--warmup", "0.3", "--rate", "2000", "--idle-connections", "200", "--idle-procs", "2",
        "--rooms-clients", "20", "--rooms-senders", "2", "--storm-rate", "2",
        "--json", timeout=120,
    )
    assert code == 0, err
    for head in ("machine:", "fan-out:", "latency:", "idle:", "rooms:", "storm:"):
        assert head in err, err
    results = json.loads(out)["results"]
    fanout = results["fanout"][":memory:"]["median"]
    assert fanout["deliveries_per_s"] > 0
    assert fanout["threads"] == 1
    latency = results["latency"][":memory:"]["median"]
    assert latency["samples"] > 0
    assert 0 <= latency["p50_ms"] <= latency["p99_ms"] <= latency["max_ms"]
    idle = results["idle"]["median"]
    assert idle["connections"] == 200
    assert idle["kib_per_connection"] is not None
    assert idle["connect_all_s"] > 0


def test_bench_rejects_bad_flags() -> None:
    for flag, bad in (("--clients", "0"), ("--duration", "nan"), ("--warmup", "-1"),
                      ("--port", "99999")):
        code, _, err = run_bench("fanout", flag, bad, timeout=30)
        assert code == 2
        assert err.startswith(f"chatd bench: argument {flag}") and err.count("\n") == 1, err
