"""The web client's files, read once at start and served from memory.

No build step: the files under ``static/`` (HTML, CSS, JavaScript modules)
ship as package data and go out as they are. Names carry no content hash, so
every response says ``no-cache`` with an ``ETag``: a browser revalidates
(a ``304`` costs a few bytes) and never runs a stale client after an upgrade.
The Content-Security-Policy allows nothing from elsewhere: scripts, styles
and images from this origin only, no inline code, and connections only back
to this origin (the WebSocket included).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

INDEX = "index.html"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".webmanifest": "application/manifest+json",
}

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; "
       "frame-ancestors 'none'")

#: Headers of every response from the web listener.
SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("Content-Security-Policy", CSP),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
)


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


def load_assets() -> dict[str, Asset]:
    """Every file of the package's ``static`` folder by its URL path (``/`` is
    the index). Read at start: serving never touches the disk."""
    assets: dict[str, Asset] = {}
    for item in resources.files(__package__).joinpath("static").iterdir():
        suffix = "." + item.name.rsplit(".", 1)[-1]
        if not item.is_file() or suffix not in CONTENT_TYPES:
            continue
        body = item.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        asset = Asset(body, CONTENT_TYPES[suffix], etag)
        assets["/" + item.name] = asset
        if item.name == INDEX:
            assets["/"] = asset
    return assets
