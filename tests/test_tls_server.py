"""TLS on the server (contract §20) with a real ``chatd``: the certificate and
its fingerprint, the same frames as on the plain port, stalled handshakes, many
TLS sessions at once, and SIGHUP reloading the operator's files."""

from __future__ import annotations

import hashlib
import os
import resource
import selectors
import signal
import socket
import ssl
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chatd.tls import SELF_SIGNED_KEY, create_self_signed, fingerprint
from protocol import Decoder, encode
from tests.support import ConnectionClosed, running_server
from tests.tls_support import client_context, running_tls_server, tls_socket

DEADLINE = 10.0


def _peer_fingerprint(sock: ssl.SSLSocket) -> str:
    der = sock.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def _wait(predicate: object, what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"not in time: {what}")
        time.sleep(0.02)  # polling a condition with a deadline, not synchronisation


def test_self_signed_certificate_is_made_once_and_reported(tmp_path: Path) -> None:
    with running_tls_server(tmp_path) as tls:
        status = tls.server.request({"type": "status"})
        with tls.client() as client:
            offered = _peer_fingerprint(client.sock)  # type: ignore[arg-type]
        key_mode = (tls.server.data_dir / SELF_SIGNED_KEY).stat().st_mode
    assert status["tls_fingerprint"] == tls.fingerprint == offered
    assert stat.S_IMODE(key_mode) == 0o600
    with running_tls_server(tmp_path) as again:  # same data directory: same certificate
        assert again.fingerprint == tls.fingerprint


def test_tls_and_plain_sessions_share_the_room(tmp_path: Path) -> None:
    with running_tls_server(tmp_path) as tls, tls.login("secure") as secure, \
            tls.server.login("plain") as plain:
        secure.expect("join", name="plain")
        long_text = "x" * 3999 + "é"  # more than one TLS record's worth with its frame
        secure.send({"type": "say", "text": long_text})
        assert plain.drain_until(lambda m: m["type"] == "msg")[-1]["text"] == long_text
        plain.send({"type": "say", "text": "hello over tcp"})
        got = secure.drain_until(lambda m: m["type"] == "msg" and m["from"] == "plain")
        assert got[-1]["text"] == "hello over tcp"
        for index in range(60):  # a burst: many records in one read on both sides
            secure.send({"type": "say", "text": f"burst {index}"})
        seen = secure.drain_until(lambda m: m.get("text") == "burst 59")
        assert [m["text"] for m in seen if m["type"] == "msg"][-60:] == [
            f"burst {i}" for i in range(60)]
        with tls.login("late") as late:  # a backlog of 50 over TLS
            backlog = late.barrier()
            assert len([m for m in backlog if m["type"] == "msg"]) == 50
        secure.send({"type": "bye"})
        assert secure.wait_closed()[-1]["type"] == "bye"


def test_stalled_handshakes_are_closed_and_cost_nobody_else(tmp_path: Path) -> None:
    with running_tls_server(tmp_path, "--handshake-timeout", "1.5") as tls:
        host = tls.server.host
        silent = socket.create_connection((host, tls.port), timeout=DEADLINE)
        partial = socket.create_connection((host, tls.port), timeout=DEADLINE)
        # The first bytes of a ClientHello, then nothing: the server waits for more.
        partial.sendall(bytes.fromhex("160301020001") + b"\x00" * 40)
        opened = time.monotonic()
        with tls.login("meanwhile") as client:  # not delayed by the two stalled ones
            client.send({"type": "say", "text": "still served"})
            client.drain_until(lambda m: m["type"] == "msg" and m["text"] == "still served")
            for stalled in (silent, partial):
                stalled.settimeout(DEADLINE)
                assert stalled.recv(4096) == b""  # closed, without a byte of a frame
            closed = time.monotonic() - opened
            client.barrier()  # and the session is still there
        status = tls.server.request({"type": "status"})
        silent.close()
        partial.close()
    assert closed >= 1.0  # not before handshake_timeout (what is checked is order, not speed)
    assert status["handshakes"] == 0


def test_a_thousand_tls_sessions_at_once(tmp_path: Path) -> None:
    count = 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < count + 200:
        pytest.skip(f"needs {count + 200} file descriptors, the limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, count + 200)), hard))
    socks: list[ssl.SSLSocket] = []
    try:
        with running_tls_server(tmp_path, "--backlog", "0") as tls:
            context = client_context()
            sel = selectors.DefaultSelector()
            decoders: dict[int, Decoder] = {}
            for index in range(count):
                raw = socket.create_connection((tls.server.host, tls.port), timeout=DEADLINE)
                sock = context.wrap_socket(raw)
                sock.sendall(encode({"type": "hello", "proto": 1, "name": f"t{index}"}))
                socks.append(sock)
            for index, sock in enumerate(socks):
                sock.setblocking(False)
                decoders[index] = Decoder(1 << 24)
                sel.register(sock, selectors.EVENT_READ, index)
            welcomed: set[int] = set()
            heard: set[int] = set()

            def pump() -> bool:
                """Read every session that has bytes; False, for ``pump() or ...``."""
                for key, _ in sel.select(0.5):
                    index = key.data
                    sock = socks[index]
                    while True:  # until the SSLSocket holds nothing more
                        try:
                            data = sock.recv(1 << 16)
                        except ssl.SSLWantReadError:
                            break
                        assert data, f"session {index} was closed"
                        for message in decoders[index].feed(data):
                            if message["type"] == "welcome":
                                welcomed.add(index)
                            elif message["type"] == "msg" and message["text"] == "to all":
                                heard.add(index)
                        if not sock.pending():
                            break
                return False

            _wait(lambda: pump() or len(welcomed) == count, "every welcome", 60.0)
            status = tls.server.request({"type": "status"})
            assert status["clients"] == count and len(status["users"]) == count
            with tls.server.login("speaker") as speaker:
                speaker.send({"type": "say", "text": "to all"})
                _wait(lambda: pump() or len(heard) == count, "the message at every session",
                      60.0)
            sel.close()
    finally:
        for sock in socks:
            sock.close()


def test_sighup_reloads_the_operators_files(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    create_self_signed(cert, key, "127.0.0.1")
    first = fingerprint(ssl.PEM_cert_to_DER_cert(cert.read_text()))
    with running_tls_server(tmp_path, "--tls-cert", str(cert), "--tls-key", str(key)) as tls:
        assert tls.fingerprint == first
        held = tls.login("before")  # an open connection keeps its session
        create_self_signed(cert, key, "127.0.0.1")
        second = fingerprint(ssl.PEM_cert_to_DER_cert(cert.read_text()))
        assert second != first
        os.kill(tls.server.pid, signal.SIGHUP)
        _wait(lambda: tls.server.request({"type": "status"})["tls_fingerprint"] == second,
              "the reloaded fingerprint in status")
        with tls_socket(tls.server.host, tls.port) as sock:
            assert _peer_fingerprint(sock) == second
        held.barrier()
        key.write_text("not a key\n")  # a bad file: logged, the certificate in use stays
        os.kill(tls.server.pid, signal.SIGHUP)
        _wait(lambda: any("keeping the TLS certificate" in line for line in tls.server.lines),
              "the refusal in the log")
        with tls_socket(tls.server.host, tls.port) as sock:
            assert _peer_fingerprint(sock) == second
        held.close()


def test_plain_port_off_leaves_only_tls(tmp_path: Path) -> None:
    with running_tls_server(tmp_path, "--plain-port-off") as tls:
        assert tls.server.port == tls.port  # the one port it listens on
        with tls.login("only") as client:
            client.barrier()
        # Plain bytes on the TLS port: no session.
        with pytest.raises(ConnectionClosed), tls.server.client() as plain:
            plain.send({"type": "hello", "proto": 1, "name": "x"})
            plain.recv()


def test_plain_port_off_needs_tls(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "chatd", "run", "--tls-port", "0", "--plain-port-off",
         "--data-dir", str(tmp_path)],
        check=False, capture_output=True, text=True, timeout=DEADLINE)
    assert result.returncode == 2
    assert "--plain-port-off needs TLS" in result.stderr


def test_no_tls_port_means_no_tls(tmp_path: Path) -> None:
    with running_server(tmp_path, "--tls-port", "0") as server:
        assert "tls_fingerprint" not in server.request({"type": "status"})
        assert not (server.data_dir / SELF_SIGNED_KEY).exists()
