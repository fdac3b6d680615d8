"""``chatd bench`` end to end at toy sizes: it runs and prints every figure.

Never asserts speed (the machine is shared); it asserts that each part ran,
measured something and reported it in both the lines and the JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("chatd.loop")


def test_bench_all_prints_the_figures() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "chatd.bench", "all", "--runs", "1", "--clients", "10",
         "--senders", "2", "--duration", "1", "--warmup", "0.3", "--rate", "2000",
         "--idle-connections", "200", "--idle-procs", "2", "--json"],
        check=False, capture_output=True, text=True, timeout=90,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr
    for head in ("machine:", "fan-out:", "latency:", "idle:"):
        assert head in lines, lines
    results = json.loads(proc.stdout)["results"]
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
    proc = subprocess.run(
        [sys.executable, "-m", "chatd.bench", "fanout", "--clients", "0"],
        check=False, capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 2
    assert "--clients" in proc.stderr
