"""Pinned TLS certificates (contract §20): one SHA-256 fingerprint per server.

A client that does not verify the server against trusted CAs pins the
certificate's fingerprint instead: given to it, or shown to the person at first
use and kept here once they trust it. A different certificate on a pinned
server is refused (:func:`check`), never silently accepted: the person must
pin the new fingerprint on purpose.

The store is one small JSON file in the user's config directory, keyed by
``host:port`` (the TLS port: a server's plain port carries no certificate).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import ssl
from pathlib import Path

import platformdirs

PINS_FILE = "tls-pins.json"
_FINGERPRINT = re.compile(r"[0-9a-f]{64}")


class CertificateRefused(Exception):
    """The server's certificate is not the one pinned, or nothing is pinned yet.

    ``offered`` is the server's fingerprint (for a first-use question),
    ``pinned`` the one expected, if any.
    """

    def __init__(self, message: str, offered: str, pinned: str | None) -> None:
        super().__init__(message)
        self.offered = offered
        self.pinned = pinned


def fingerprint(der: bytes) -> str:
    """SHA-256 of a certificate (DER) as 64 lowercase hex digits, as ``chatd status`` shows it."""
    return hashlib.sha256(der).hexdigest()


def normalize(text: str) -> str:
    """A fingerprint as a person may type it (``AB:CD:...``, spaces) -> 64 hex digits.

    Raises ValueError for anything else.
    """
    digits = re.sub(r"[\s:]", "", text).lower()
    if not _FINGERPRINT.fullmatch(digits):
        raise ValueError("a SHA-256 fingerprint is 64 hex digits")
    return digits


def grouped(value: str) -> str:
    """64 hex digits in groups of four, easier to compare by eye."""
    return " ".join(value[i:i + 4] for i in range(0, len(value), 4))


def pinning_context() -> ssl.SSLContext:
    """A client context whose whole check is the pin (:func:`check`, after the
    handshake): a self-signed certificate has no CA to verify it against."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def fetch_fingerprint(host: str, port: int, timeout: float = 5.0) -> str:
    """The fingerprint a server offers, to show at first use (blocking, bounded
    by ``timeout``: for a command line before its loop starts, or a GUI's
    worker; :class:`chatclient.net.Connection` never blocks). OSError if the
    handshake fails."""
    with socket.create_connection((host, port), timeout=timeout) as raw, \
            pinning_context().wrap_socket(raw, server_hostname=host) as sock:
        return fingerprint(sock.getpeercert(binary_form=True) or b"")


def server_key(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check(der: bytes, pinned: str | None, server: str) -> str:
    """The certificate's fingerprint if it is the pinned one; else CertificateRefused."""
    offered = fingerprint(der)
    if pinned is None:
        raise CertificateRefused(
            f"the TLS certificate of {server} is not trusted yet: its SHA-256 fingerprint "
            f"is {grouped(offered)}", offered, None)
    if offered != pinned:
        raise CertificateRefused(
            f"WARNING: the TLS certificate of {server} has CHANGED. Pinned SHA-256 "
            f"{grouped(pinned)}, but the server offered {grouped(offered)}. Someone may be "
            "intercepting the connection; refusing it. If the operator replaced the "
            "certificate, compare with 'chatd status' and pin the new fingerprint.",
            offered, pinned)
    return offered


class PinStore:
    """The pinned fingerprints, read at each call (another client may have
    added one) and written whole through a temporary file."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or Path(platformdirs.user_config_dir("chat")) / PINS_FILE

    def _read(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise OSError(f"cannot read the pinned certificates in {self.path}: {exc}") from None
        pins = data.get("pins") if isinstance(data, dict) else None
        if not isinstance(pins, dict):
            return {}
        return {k: v for k, v in pins.items()
                if isinstance(k, str) and isinstance(v, str) and _FINGERPRINT.fullmatch(v)}

    def get(self, host: str, port: int) -> str | None:
        return self._read().get(server_key(host, port))

    def pin(self, host: str, port: int, value: str) -> None:
        """Trust ``value`` (64 hex digits) for this server from now on."""
        pins = self._read()
        pins[server_key(host, port)] = normalize(value)
        self._write(pins)

    def forget(self, host: str, port: int) -> None:
        pins = self._read()
        if pins.pop(server_key(host, port), None) is not None:
            self._write(pins)

    def _write(self, pins: dict[str, str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        text = json.dumps({"version": 1, "pins": pins}, indent=1, sort_keys=True) + "\n"
        with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w",
                  encoding="utf-8") as out:
            out.write(text)
        os.replace(temporary, self.path)
