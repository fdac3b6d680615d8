"""``chatd bench fanout --nodes N`` (cluster mode, issue 12) at toy sizes.

The bench starts its own ``redis-server`` (a free loopback port, a temporary
directory, append-only with ``appendfsync always``) and its own nodes, so the
test needs only the binary that ``tests.cluster_support`` uses. Never asserts
speed (the machine is shared); it asserts that the run used both nodes and
Redis and reported every figure, in the lines and in the JSON.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.cluster_support import REDIS_BINARY
from tests.test_bench_smoke import run_bench

_TINY = ("--clients", "6", "--senders", "2", "--procs", "1", "--probe-rate", "200",
         "--runs", "1", "--duration", "0.5", "--warmup", "0.2", "--json")


def test_two_nodes_report_deliveries_cpu_and_cross_node_latency() -> None:
    if not Path(REDIS_BINARY).exists():
        pytest.skip(f"needs {REDIS_BINARY} (scripts/system-packages installs it)")
    code, out, err = run_bench("fanout", "--nodes", "2", *_TINY, timeout=90)
    assert code == 0, err
    assert "cluster run 1/1 [2 nodes]:" in err, err
    assert "cluster fan-out: 6 clients in lobby" in err, err
    assert "cluster [2 nodes]: Redis appendfsync always; node 0:" in err, err
    if len(os.sched_getaffinity(0)) < 4:
        assert "not scale-out throughput" in err, err
    med = json.loads(out)["results"]["cluster"]["2 nodes"]["median"]
    assert med["nodes"] == 2 and med["fsync"] == "always"
    assert med["deliveries_per_s"] > 0
    assert len(med["node_cpu_s"]) == 2
    assert all(rate > 0 for rate in med["node_deliveries_per_s"]), med  # both nodes delivered
    assert all(cpu is not None and cpu > 0 for cpu in med["node_cpu_s"]), med
    assert med["per_node_cpu_s"] > 0
    assert med["redis_cpu_s"] is not None and med["redis_cpu_s"] >= 0
    for phase in ("idle", "loaded"):
        for where in ("same", "cross"):
            assert med[f"{phase}_{where}_samples"] > 0, (phase, where, med)
            p50, p99, top = (med[f"{phase}_{where}_{q}_ms"] for q in ("p50", "p99", "max"))
            assert 0 <= p50 <= p99 <= top, (phase, where, med)


def test_nodes_flags_are_checked() -> None:
    for args, flag in ((("fanout", "--nodes", "0"), "argument --nodes"),
                       (("fanout", "--nodes", "1,x"), "argument --nodes"),
                       (("fanout", "--nodes", "2,2"), "argument --nodes"),
                       (("rooms", "--nodes", "2"), "--nodes runs the fan-out only"),
                       (("fanout", "--nodes", "2", "--port", "7000"), "does not take --port"),
                       (("fanout", "--nodes", "2", "--db", "store"), "does not take --db"),
                       (("fanout", "--redis-fsync", "everysec"), "only applies with --nodes")):
        code, _, err = run_bench(*args, timeout=30)
        assert code == 2, (args, err)
        assert err.startswith("chatd bench: ") and flag in err and err.count("\n") == 1, err
