"""The sd_notify sender, and the example systemd unit that relies on it."""

from __future__ import annotations

import configparser
import logging
import os
import shlex
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatd.notify import SystemdNotifier, chain, from_environment, socket_address

UNIT_FILE = Path(__file__).resolve().parent.parent / "docs" / "chatd.service"


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify.sock")
    sock.bind(path)
    sock.settimeout(5)
    yield sock, path
    sock.close()


def test_sends_each_state_as_one_datagram(receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    notify = from_environment({"NOTIFY_SOCKET": path})
    assert notify is not None
    notify("READY=1\nSTATUS=listening")
    notify("STOPPING=1")
    assert sock.recv(4096) == b"READY=1\nSTATUS=listening"
    assert sock.recv(4096) == b"STOPPING=1"
    notify.close()


def test_abstract_namespace_address() -> None:
    assert socket_address("@chatd/notify") == b"\0chatd/notify"
    assert socket_address("/run/x.sock") == "/run/x.sock"
    name = f"chatd-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(5)
    try:
        notifier = SystemdNotifier("@" + name)
        notifier("READY=1")
        assert sock.recv(4096) == b"READY=1"
        notifier.close()
    finally:
        sock.close()


def test_no_socket_means_no_notifier() -> None:
    assert from_environment({}) is None
    assert from_environment({"NOTIFY_SOCKET": ""}) is None


def test_never_blocks_and_warns_once(
    receiver: tuple[socket.socket, str], caplog: pytest.LogCaptureFixture
) -> None:
    """A manager that does not read fills its queue; the sender drops, never waits."""
    _, path = receiver
    notifier = SystemdNotifier(path)
    with caplog.at_level(logging.WARNING, logger="chatd.notify"):
        for _ in range(10_000):  # far beyond any datagram queue (max_dgram_qlen)
            notifier("STATUS=" + "x" * 1000)
    warnings = [r for r in caplog.records if "cannot notify" in r.getMessage()]
    assert len(warnings) == 1
    notifier.close()


def test_missing_socket_is_not_an_error(tmp_path: Path) -> None:
    notifier = SystemdNotifier(str(tmp_path / "absent.sock"))
    notifier("READY=1")  # logged, not raised
    notifier.close()


def test_chain_passes_each_state_to_all() -> None:
    seen: list[tuple[str, str]] = []
    assert chain(None, None) is None
    one = chain(None, lambda s: seen.append(("a", s)))
    assert one is not None
    one("X=1")
    both = chain(lambda s: seen.append(("a", s)), None, lambda s: seen.append(("b", s)))
    assert both is not None
    both("READY=1")
    assert seen == [("a", "X=1"), ("a", "READY=1"), ("b", "READY=1")]


def test_unit_file_runs_chatd_in_the_foreground_as_type_notify() -> None:
    unit = configparser.ConfigParser(interpolation=None, strict=True)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(UNIT_FILE.read_text(encoding="utf-8"))
    assert set(unit.sections()) == {"Unit", "Service", "Install"}
    service = unit["Service"]
    assert service["Type"] == "notify"
    command = shlex.split(service["ExecStart"])
    assert Path(command[0]).is_absolute()  # systemd wants an absolute path
    assert Path(command[0]).name == "chatd"
    assert command[1] == "run"  # foreground: `start` would daemonise away from systemd
    assert service.get("KillSignal", "SIGTERM") == "SIGTERM"
    # Stopping must outlast chatd's own grace period (5 s) with room to spare.
    assert int(service["TimeoutStopSec"]) > 5
    assert unit["Install"]["WantedBy"] == "multi-user.target"
