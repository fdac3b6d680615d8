"""Origins as RFC 6454 compares them, for the upgrade's ``Origin`` check (contract §21).

A browser names the page that opens a WebSocket in ``Origin``; the server
accepts its own origin (the listener's scheme with the request's ``Host``) and
the operator's ``allowed_origins``, and refuses every other one, so a page
elsewhere cannot use a visitor's browser to talk to the server. A request
without ``Origin`` is not from a browser page and is let through.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}

#: scheme, host (lower case, IPv6 without brackets), port (the default filled in).
Origin = tuple[str, str, int]


def parse_origin(text: str) -> Origin | None:
    """``scheme://host[:port]`` as a comparable triple; None for anything else
    (``null``, another scheme, a path, user info)."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname
    if (scheme not in DEFAULT_PORTS or not host or parts.path not in ("", "/")
            or parts.query or parts.fragment or parts.username is not None):
        return None
    return scheme, host.lower(), DEFAULT_PORTS[scheme] if port is None else port


def origin_text(origin: Origin) -> str:
    """The origin written out, default port included (for messages and settings)."""
    scheme, host, port = origin
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"


class OriginRule:
    """Which pages may open a WebSocket on a listener of one scheme."""

    __slots__ = ("allowed", "scheme")

    def __init__(self, scheme: str, allowed: Iterable[str] = ()) -> None:
        self.scheme = scheme
        parsed = [parse_origin(text) for text in allowed]
        self.allowed = frozenset(origin for origin in parsed if origin is not None)

    def allows(self, origin: str | None, host: str | None) -> bool:
        """Whether an upgrade with this ``Origin`` (None: absent) and ``Host`` may go on."""
        if origin is None:
            return True
        page = parse_origin(origin)
        if page is None:
            return False
        own = parse_origin(f"{self.scheme}://{host}") if host else None
        return page == own or page in self.allowed
