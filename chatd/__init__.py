"""chatd: the single-threaded chat server."""

__version__ = "1.0.0"
