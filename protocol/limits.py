"""Numbers fixed by the wire contract, and the contract's default settings.

Server settings (``chatd``) take their defaults from here, and clients use the
same constants, so a limit is written down exactly once.
"""

from __future__ import annotations

PROTO_VERSION = 1  # Part I; a version 2 session is Part II
PROTO_V2 = 2
PROTO_VERSIONS = (PROTO_VERSION, PROTO_V2)
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 65432
DEFAULT_TLS_PORT = 65433  # contract §20
DEFAULT_HTTP_PORT = 8080  # contract §21: the web client and its WebSocket

HEADER_SIZE = 4  # bytes of big-endian length before each payload
LOGIN_MAX_FRAME = 4096  # a client's frames before it is logged in
CLIENT_MAX_FRAME = 16 * 1024 * 1024  # what a client accepts from the server
MAX_DEPTH = 32  # JSON nesting levels; the top-level object is level 1
MAX_INT = 2**53 - 1  # an integer member takes 0..MAX_INT

NAME_MAX_CHARS = 32
RESERVED_NAME = "server"  # by casefold; an announcement's ``from``
ID_MAX_CHARS = 64
HISTORY_LIMIT_DEFAULT = 50
HISTORY_LIMIT_MAX = 200

# Contract §7 defaults.
DEFAULT_MAX_FRAME = 65536
DEFAULT_MAX_TEXT = 4000
DEFAULT_MAX_CLIENTS = 10000
DEFAULT_MAX_OUTBUF = 1024 * 1024
DEFAULT_RATE = 20.0
DEFAULT_BURST = 100
DEFAULT_HEARTBEAT = 30.0
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
DEFAULT_BACKLOG = 50
DEFAULT_HISTORY = 10000

# Version 2 (contract §11, §12, §14, §19).
LOBBY = "lobby"  # the room every server has; version 1 sessions live in it
TOPIC_MAX_CHARS = 300
QUERY_MAX_CHARS = 200
SEARCH_LIMIT_DEFAULT = 20
SEARCH_LIMIT_MAX = 100
PASSWORD_MIN_CHARS = 8
PASSWORD_MAX_CHARS = 256
DEFAULT_MAX_ROOMS = 1000
DEFAULT_EDIT_WINDOW = 900.0
GUESS_FAILURES = 5  # failed password checks per name and address ...
GUESS_WINDOW_S = 60.0  # ... within this long lock further attempts out
TYPING_EVERY_S = 3.0  # clients send typing at most this often ...
TYPING_SHOW_S = 6.0  # ... and show it this long
