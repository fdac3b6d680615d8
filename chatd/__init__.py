"""chatd: the single-threaded chat server."""

from protocol import __version__

__all__ = ["__version__"]
