"""The clients over TLS (contract §20) against a real ``chatd``: pinning at
first use, refusing a changed certificate, CA verification, the pin store, and
the terminal client's flags."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from chatclient import pins
from chatclient.events import Event, Failed, LoggedIn, MessageAdded
from chatclient.net import Connection, TLSOptions
from chatclient.session import ClientSession
from chatd.tls import create_self_signed
from tests.client_support import has, pump
from tests.tls_support import running_tls_server

CLI_TIMEOUT = 30.0


def test_pin_store_keeps_one_pin_per_server(tmp_path: Path) -> None:
    store = pins.PinStore(tmp_path / "conf" / pins.PINS_FILE)
    assert store.get("example.org", 65433) is None
    store.pin("example.org", 65433, "AB:" * 31 + "AB")
    store.pin("::1", 65433, "cd" * 32)
    assert store.get("example.org", 65433) == "ab" * 32
    assert store.get("example.org", 65432) is None  # another port, another server
    assert store.get("::1", 65433) == "cd" * 32
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    store.forget("example.org", 65433)
    assert store.get("example.org", 65433) is None and store.get("::1", 65433) == "cd" * 32
    with pytest.raises(ValueError):
        pins.normalize("12" * 31)


def _session_events(host: str, port: int, tls: TLSOptions, name: str) -> tuple[
        Connection, list[Event]]:
    conn = Connection(ClientSession(name), host, port, tls)
    return conn, pump(conn, lambda seen: any(isinstance(e, (LoggedIn, Failed)) for e in seen))


def test_first_use_refuses_until_pinned_then_chats(tmp_path: Path) -> None:
    with running_tls_server(tmp_path) as tls:
        host = tls.server.host
        conn, events = _session_events(host, tls.port, TLSOptions(), "first")
        failed = next(e for e in events if isinstance(e, Failed))
        assert pins.grouped(tls.fingerprint) in failed.detail
        assert conn.refused is not None and conn.refused.offered == tls.fingerprint
        assert pins.fetch_fingerprint(host, tls.port) == tls.fingerprint
        # The person trusted it: the pin lets the next session in.
        session = ClientSession("second")
        conn = Connection(session, host, tls.port, TLSOptions(fingerprint=tls.fingerprint))
        pump(conn, has(LoggedIn))
        assert conn.refused is None
        session.say("lobby", "x" * 4000)  # bigger than one TLS record
        added = next(e for e in pump(conn, has(MessageAdded)) if isinstance(e, MessageAdded))
        assert added.msg.text == "x" * 4000
        conn.close_and_wait()


def test_a_changed_certificate_is_refused_naming_both(tmp_path: Path) -> None:
    pinned = "0f" * 32
    with running_tls_server(tmp_path) as tls:
        conn, events = _session_events(tls.server.host, tls.port,
                                       TLSOptions(fingerprint=pinned), "pinned")
        assert not any(isinstance(e, LoggedIn) for e in events)
        failed = next(e for e in events if isinstance(e, Failed))
        assert "CHANGED" in failed.detail
        assert pins.grouped(pinned) in failed.detail
        assert pins.grouped(tls.fingerprint) in failed.detail
        assert conn.refused is not None and conn.refused.pinned == pinned
        status = tls.server.request({"type": "status"})
        assert status["users"] == []  # no hello ever went out


def test_ca_verification(tmp_path: Path) -> None:
    with running_tls_server(tmp_path) as tls:
        own = tls.server.data_dir / "tls-cert.pem"  # self-signed: its own CA
        _, events = _session_events(tls.server.host, tls.port, TLSOptions(ca=own), "ca")
        assert any(isinstance(e, LoggedIn) for e in events), events
        other = tmp_path / "other.pem"
        create_self_signed(other, tmp_path / "other-key.pem", "127.0.0.1")
        _, events = _session_events(tls.server.host, tls.port, TLSOptions(ca=other), "ca2")
        failed = next(e for e in events if isinstance(e, Failed))
        assert "certificate verify failed" in failed.detail


def _chat(port: int, config: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """The terminal client in a pipe, with no controlling terminal to ask on."""
    env = {**os.environ, "XDG_CONFIG_HOME": str(config)}
    return subprocess.run(
        [sys.executable, "-m", "chatterm", "--host", "127.0.0.1", "--port", str(port),
         "--plain", *args], check=False, input=stdin, capture_output=True, text=True, env=env,
        timeout=CLI_TIMEOUT, start_new_session=True)


def test_terminal_client_pins_with_fingerprint_and_refuses_changes(tmp_path: Path) -> None:
    config = tmp_path / "config"
    with running_tls_server(tmp_path) as tls:
        unknown = _chat(tls.port, config, "--tls", "--name", "nopin", stdin="hi\n")
        assert unknown.returncode == 1
        assert f"--fingerprint {tls.fingerprint}" in unknown.stderr  # how to pin it
        store = pins.PinStore(config / "chat" / pins.PINS_FILE)
        assert store.get("127.0.0.1", tls.port) is None
        given = _chat(tls.port, config, "--fingerprint", tls.fingerprint, "--name", "pin",
                      stdin="over tls\n")
        assert given.returncode == 0, given.stderr
        assert store.get("127.0.0.1", tls.port) == tls.fingerprint
        again = _chat(tls.port, config, "--tls", "--name", "pinned", stdin="pinned works\n")
        assert again.returncode == 0, again.stderr  # the stored pin is used
        store.pin("127.0.0.1", tls.port, "ab" * 32)  # as if the certificate changed
        changed = _chat(tls.port, config, "--tls", "--name", "changed", stdin="no\n")
        assert changed.returncode == 1
        assert "CHANGED" in changed.stderr and pins.grouped("ab" * 32) in changed.stderr
        assert pins.grouped(tls.fingerprint) in changed.stderr
        lobby = tls.server.request({"type": "status"})
    assert lobby["msgs_in"] == 2  # "over tls" and "pinned works", nothing from the refused
