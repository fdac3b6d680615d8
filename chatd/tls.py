"""TLS for chat connections (contract §20): the transport and the certificate.

:class:`TLSTransport` runs TLS inside the one-threaded loop the way asyncio's
``sslproto`` does: an ``ssl.SSLObject`` between two ``ssl.MemoryBIO``s, with the
ciphertext moved by the socket transport it wraps. Nothing blocks: a handshake
is a few turns of ``recv``/``send`` like any other bytes, so a peer that stalls
its handshake holds only its slot until the loop's ``handshake_timeout`` timer
closes it.

The selector sees the socket, never the ``SSLObject``: plaintext left inside it
would wait for the peer's next bytes. So :meth:`TLSTransport.recv` decrypts
everything it fed in, and feeds in only as much ciphertext as decrypts into the
loop's buffer (plaintext is never longer than its ciphertext; OpenSSL may hold
one partial record of earlier ciphertext besides, hence :data:`RECORD_MAX`).

:class:`ServerCertificate` is the server's certificate: the operator's files,
or a self-signed one created at the first start in the data directory and
reused afterwards, so the fingerprint clients pin stays the same.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import ipaddress
import logging
import os
import re
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from chatd.errors import StartupError
from chatd.transport import Chunk, Transport

log = logging.getLogger("chatd.tls")

#: Largest TLS record on the wire: 16 KiB of plaintext plus the most any cipher
#: adds (RFC 8446 §5.2 allows 256 bytes of expansion, TLS 1.2 up to 2048).
RECORD_MAX = 16384 + 2048 + 5
SELF_SIGNED_CERT = "tls-cert.pem"  # in the data directory
SELF_SIGNED_KEY = "tls-key.pem"
SELF_SIGNED_DAYS = 3650  # clients pin the fingerprint, so expiry only gets in the way
_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


class TLSTransport:
    """TLS (server side) over another transport; see the module docstring.

    ``pending`` is ciphertext the kernel has not taken yet: new application
    bytes are encrypted only once it is gone, so a connection that does not
    read holds at most one turn's worth here and its output keeps counting
    toward ``max_outbuf`` in the connection's own out-buffer.
    """

    __slots__ = ("handshaking", "incoming", "outgoing", "peer_done", "pending", "raw",
                 "shut", "tls")

    def __init__(self, raw: Transport, context: ssl.SSLContext) -> None:
        self.raw = raw
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_side=True)
        self.pending: Chunk = b""
        self.handshaking = True
        self.shut = False  # our close_notify is queued: end the socket's side once out
        self.peer_done = False  # the peer's close_notify came

    def fileno(self) -> int:
        return self.raw.fileno()

    def recv(self, buf: memoryview) -> Chunk | None:
        if self.peer_done:
            return None
        room = len(buf) - self.incoming.pending - RECORD_MAX
        if room <= 0:  # cannot happen with the loop's buffer; never hold plaintext back
            raise ValueError(f"a TLS read buffer must hold more than {RECORD_MAX} bytes")
        data = self.raw.recv(buf[:room])
        if not data:
            return data
        self.incoming.write(data)
        if self.handshaking:
            try:
                self.tls.do_handshake()
            except ssl.SSLWantReadError:
                return b""
            self.handshaking = False
        return self._decrypt(buf)

    def _decrypt(self, buf: memoryview) -> Chunk | None:
        """Every whole record fed in so far, as plaintext in ``buf``."""
        got = 0
        try:
            while got < len(buf):
                # With a buffer, read() returns a count (typeshed says bytes).
                count = cast(int, self.tls.read(len(buf) - got, buf[got:]))
                if not count:  # close_notify: the peer's orderly end
                    self.peer_done = True
                    break
                got += count
        except ssl.SSLWantReadError:
            pass
        if self.peer_done and not got:
            return None
        return buf[:got]  # an end with bytes before it: None at the next recv

    def send(self, buffers: Sequence[Chunk]) -> int:
        taken = 0
        if not self.pending and not self.handshaking and not self.shut:
            for chunk in buffers:
                self.tls.write(chunk)  # a memory BIO takes it all
                taken += len(chunk)
        if not self.pending:
            self.pending = self.outgoing.read()
        if self.pending:
            count = self.raw.send((self.pending,))
            self.pending = memoryview(self.pending)[count:] if count < len(self.pending) else b""
        if self.shut and not self.wants_write:
            self.raw.shutdown_write()
        return taken

    @property
    def wants_write(self) -> bool:
        return bool(self.pending) or self.outgoing.pending > 0

    def shutdown_write(self) -> None:
        """Queue close_notify; the socket's side ends once everything is out."""
        if self.shut:
            return
        self.shut = True
        if not self.handshaking:
            with contextlib.suppress(ssl.SSLWantReadError):  # no close_notify back yet
                self.tls.unwrap()
        self.send(())

    def close(self) -> None:
        self.raw.close()


def fingerprint(der: bytes) -> str:
    """Contract §20: SHA-256 of the certificate (DER) as 64 lowercase hex digits."""
    return hashlib.sha256(der).hexdigest()


@dataclass(frozen=True)
class ServerCertificate:
    """A loaded certificate: the context new connections use, and its fingerprint."""

    context: ssl.SSLContext
    fingerprint: str
    cert_path: Path

    @classmethod
    def load(cls, cert: Path | None, key: Path | None, data_dir: Path,
             host: str) -> ServerCertificate:
        """The operator's files, else the self-signed pair in ``data_dir``
        (created now if missing). A bad or missing file is a StartupError
        naming it; SIGHUP calls this again (see chatd.loop)."""
        if cert is None:
            cert = data_dir / SELF_SIGNED_CERT
            key = data_dir / SELF_SIGNED_KEY
            if not cert.exists():
                create_self_signed(cert, key, host)
        try:
            pem = cert.read_bytes()
        except OSError as exc:
            raise StartupError(f"cannot read TLS certificate {cert}: {exc.strerror}") from None
        first = _PEM_CERT.search(pem)
        if first is None:
            raise StartupError(f"TLS certificate {cert} holds no PEM certificate")
        der = ssl.PEM_cert_to_DER_cert(first.group().decode("ascii"))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.options |= ssl.OP_NO_RENEGOTIATION  # no handshakes after the first
        try:
            context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise StartupError(
                f"cannot use TLS certificate {cert} with key {key or cert}: {exc}"
            ) from None
        return cls(context, fingerprint(der), cert)


def create_self_signed(cert: Path, key: Path | None, host: str) -> None:
    """An EC P-256 key and a self-signed certificate for ``localhost``, this
    machine's name and ``host``; the key file is private (mode 0600).

    The key is written first and the certificate last: a start that dies
    between them finds no certificate and makes a new pair.
    """
    assert key is not None
    # Only the first start of a server without files needs this (slow) import.
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    for name in {socket.gethostname(), host} - {"", "localhost"}:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            names.append(x509.DNSName(name))
    for loopback in ("127.0.0.1", "::1"):
        address = ipaddress.ip_address(loopback)
        if x509.IPAddress(address) not in names:
            names.append(x509.IPAddress(address))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "chatd")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=SELF_SIGNED_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    key_pem = private.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    try:
        _write_private(key, key_pem)
        _write_private(cert, certificate.public_bytes(serialization.Encoding.PEM), mode=0o644)
    except OSError as exc:
        raise StartupError(f"cannot create a TLS certificate in {cert.parent}: "
                           f"{exc.strerror}") from None
    log.info("created a self-signed TLS certificate %s", cert)


def _write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write through a temporary file and rename: never a half-written file."""
    temporary = path.with_name(path.name + ".tmp")
    with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
