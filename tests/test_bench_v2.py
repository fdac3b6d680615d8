"""``chatd bench`` workloads of protocol version 2, and release comparison, at toy sizes.

Never asserts speed (the machine is shared); it asserts that each workload
ran the set-up it was asked for, measured something and reported it.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.test_bench_smoke import run_bench

_TINY = ("--runs", "1", "--duration", "0.5", "--warmup", "0.2", "--json")


def test_rooms_fill_every_room_and_count_deliveries() -> None:
    code, out, err = run_bench("rooms", "--rooms-clients", "42", "--room-size", "4",
                            "--rooms-senders", "3", "--rooms-procs", "2", *_TINY, timeout=60)
    assert code == 0, err
    assert "rooms:" in err and "42 clients in 11 rooms of 4, 3 senders" in err, err
    med = json.loads(out)["results"]["rooms"]["median"]
    assert med["deliveries_per_s"] > 0
    assert med["per_server_cpu_s"] is None or med["per_server_cpu_s"] > 0
    assert med["threads"] == 1
    assert med["enter_all_s"] > 0


def test_storm_times_the_room_both_ways_and_the_logins() -> None:
    code, out, err = run_bench("storm", "--clients", "6", "--senders", "2", "--rate", "1000",
                            "--storm-rate", "4", *_TINY, timeout=90)
    assert code == 0, err
    assert "storm: room p99 with / without:" in err, err
    storm = json.loads(out)["results"]["storm"]
    without, with_ = storm["without"]["median"], storm["with"]["median"]
    for med in (without, with_):
        assert med["samples"] > 0
        assert 0 <= med["p50_ms"] <= med["p99_ms"] <= med["max_ms"]
    assert "login_samples" not in without
    assert with_["logins_started_per_s"] > 0
    assert with_["login_samples"] > 0
    assert 0 < with_["login_p50_ms"] <= with_["login_p99_ms"] <= with_["login_max_ms"]
    assert storm["p99_ratio"] == with_["p99_ms"] / without["p99_ms"]


def test_compare_tree_runs_both_servers_interleaved() -> None:
    tree = Path(__file__).resolve().parents[1]  # this tree again: the comparison's plumbing
    code, out, err = run_bench("fanout", "--clients", "4", "--senders", "2", "--compare-tree",
                            str(tree), *_TINY, timeout=60)
    assert code == 0, err
    part = json.loads(out)["results"]["fanout"]
    other = f":memory: @ {tree}"
    assert set(part) == {":memory:", other}
    assert part[other]["median"]["deliveries_per_s"] > 0
    ratios = part[other]["ratio_to_:memory:"]
    assert set(ratios) == {"deliveries_per_s", "per_server_cpu_s"}
    assert f"fan-out [{other}] / [:memory:]:" in err


def test_ws_runs_the_fanout_over_websocket_interleaved() -> None:
    code, out, err = run_bench("fanout", "--clients", "4", "--senders", "2", "--ws", *_TINY,
                               timeout=60)
    assert code == 0, err
    part = json.loads(out)["results"]["fanout"]
    assert set(part) == {":memory:", ":memory: ws"}
    assert part[":memory: ws"]["median"]["deliveries_per_s"] > 0
    assert part[":memory: ws"]["median"]["threads"] == 1
    assert set(part[":memory: ws"]["ratio_to_:memory:"]) == {"deliveries_per_s",
                                                             "per_server_cpu_s"}
    assert "fan-out [:memory: ws] / [:memory:]:" in err
