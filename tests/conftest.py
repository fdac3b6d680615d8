"""Shared test setup: hypothesis profiles, and no fixed listener ports.

``ci`` (the default) is derandomised, so a red run is reproducible and every
run tests the same cases, with enough examples to mean something while the
protocol property suite stays well under 30 s on two busy cores. ``dev``
(random, fewer) is for quick local edits; ``HYPOTHESIS_PROFILE=deep`` runs a
hundred times more examples for long local or nightly runs; there the
property tests are exempt from the per-test timeout (which would otherwise cut
them off at 120 s), while every other test keeps it.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

# Servers the tests start listen on the ports they are given (--port 0): the
# fixed default ports of TLS (65433) and the web client (8080) would clash
# between servers running at once. Tests of those listeners give their flags,
# which beat the environment.
os.environ.setdefault("CHATD_TLS_PORT", "0")
os.environ.setdefault("CHATD_HTTP_PORT", "0")
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.register_profile(
    "deep", max_examples=20_000, deadline=None, suppress_health_check=list(HealthCheck)
)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
settings.load_profile(PROFILE)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if PROFILE != "deep":
        return
    for item in items:
        if getattr(getattr(item, "obj", None), "is_hypothesis_test", False):
            item.add_marker(pytest.mark.timeout(0))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """In CI nothing may be skipped: the set-up installs what the tests need
    (scripts/system-packages), so a skip there means a broken set-up, and it
    fails instead of passing quietly."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where everything must run: {report.longrepr}"
