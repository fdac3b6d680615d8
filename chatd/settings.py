"""Server settings: each defined once, with its type, default and help.

The command line, the environment (``CHATD_<NAME>``) and a TOML config file are
all derived from :data:`SETTINGS`; precedence is flag > environment > config
file > default. A bad value is a :class:`SettingError` with a one-line message.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import unicodedata
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs

from chatd.web.origin import origin_text, parse_origin
from protocol import limits
from protocol.values import room_key, room_problem

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

ENV_PREFIX = "CHATD_"
CONFIG_ENV = "CHATD_CONFIG"  # the config file, when --config is not given
MEMORY_DB = ":memory:"  # --db value that keeps history in memory only
#: Longest control socket file name: a socket address holds 107 bytes, and a long
#: path is reached as ``/proc/self/fd/N/NAME``.
SOCKET_NAME_MAX = 80
#: The longest duration a setting or a command's wait may be (11.6 days).
MAX_SECONDS = 1_000_000


class SettingError(ValueError):
    """A setting has a bad value; the message names it and says why."""


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError("must be an integer") from None


def _non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise ValueError("must be at least 0")
    return value


def _positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("must be a number") from None
    if not 0 <= value < float("inf"):
        raise ValueError("must be a finite number >= 0")
    return value


def seconds(text: str) -> float:
    """A duration; bounded, because a wait of ages overflows ``select`` and the like."""
    value = _non_negative_float(text)
    if value > MAX_SECONDS:
        raise ValueError(f"must be at most {MAX_SECONDS} seconds")
    return value


def positive_seconds(text: str) -> float:
    """A duration > 0 (also the rule for the commands' own waits)."""
    value = seconds(text)
    if value == 0:
        raise ValueError("must be greater than 0")
    return value


def _port(zero_means: str) -> Callable[[str], int]:
    """A port parser; what 0 means differs by listener (so does its message)."""

    def parse(text: str) -> int:
        value = _int(text)
        if not 0 <= value <= 65535:
            raise ValueError(f"must be 0..65535 (0 {zero_means})")
        return value

    return parse


port_number = _port("picks a free port")
#: TLS and the web listener have fixed ports: 0 turns them off.
_tls_port = _port("turns TLS off")
_http_port = _port("turns the web listener off")


def _origins(items: Sequence[str]) -> tuple[str, ...]:
    """Origins written out in full (``http://chat.example:80``), each valid."""
    origins: list[str] = []
    for item in items:
        origin = parse_origin(item)
        if origin is None:
            raise ValueError(f"{item!r} is not an origin like https://chat.example:8443")
        origins.append(origin_text(origin))
    return tuple(origins)


def _origin_list(text: str) -> tuple[str, ...]:
    """``https://a.example, http://b.example:8080``: origins separated by commas."""
    return _origins([item.strip() for item in text.split(",") if item.strip()])


def _origin_array(value: list[Any]) -> tuple[str, ...]:
    if not all(isinstance(item, str) for item in value):
        raise ValueError("must be an array of strings")
    return _origins(value)


def _frame(text: str) -> int:
    value = _positive_int(text)
    if value > limits.CLIENT_MAX_FRAME:
        raise ValueError(f"must be at most {limits.CLIENT_MAX_FRAME}")
    return value


def _text(text: str) -> str:
    if not text:
        raise ValueError("must not be empty")
    return text


def _path(text: str) -> Path:
    """An absolute path, so a daemon (which changes to /) still finds it."""
    return Path(_text(text)).expanduser().absolute()


def _socket_path(text: str) -> Path:
    """A Unix socket's path. Its directory may be as deep as it likes (a long path is
    reached through ``/proc/self/fd``), but the name must fit in a socket address."""
    path = _path(text)
    if len(os.fsencode(path.name)) > SOCKET_NAME_MAX:
        raise ValueError(f"the socket's file name is longer than {SOCKET_NAME_MAX} bytes")
    return path


def _db(text: str) -> str:
    return text if text == MEMORY_DB else str(_path(text))


def _choice(*options: str) -> Callable[[str], str]:
    """A parser for a setting that is one of a few words."""
    listed = ", ".join(repr(option) for option in options[:-1]) + f" or {options[-1]!r}"

    def parse(text: str) -> str:
        if text not in options:
            raise ValueError(f"must be {listed}")
        return text

    return parse


def _bool(text: str) -> bool:
    word = text.lower()
    if word not in ("true", "false"):
        raise ValueError("must be true or false")
    return word == "true"


def _room_names(names: Sequence[str]) -> tuple[str, ...]:
    """Room names in their NFC form, each valid and none twice (by casefold).

    Only ordinary room names: a dm room belongs to two accounts, and nobody can
    be put in one by default.
    """
    rooms: list[str] = []
    seen: set[str] = set()
    for name in names:
        problem = room_problem(name)
        if problem is not None:
            raise ValueError(f"{name!r} is not a room name: {problem}")
        key = room_key(name)
        if key in seen:
            raise ValueError(f"{name!r} is named twice")
        seen.add(key)
        rooms.append(unicodedata.normalize("NFC", name))
    if not rooms:
        raise ValueError("must name at least one room")
    return tuple(rooms)


def _room_list(text: str) -> tuple[str, ...]:
    """``lobby, dev``: names separated by commas (no room name holds a comma or a space)."""
    return _room_names([name.strip() for name in text.split(",")])


def _room_array(value: list[Any]) -> tuple[str, ...]:
    """The TOML form of the room list: an array of strings."""
    if not all(isinstance(item, str) for item in value):
        raise ValueError("must be an array of strings")
    return _room_names(value)


@dataclass(frozen=True)
class RedisUrl:
    """Where the cluster's Redis listens: ``redis://HOST:PORT[/DB]``."""

    host: str
    port: int
    db: int

    def __str__(self) -> str:
        return f"redis://{self.host}:{self.port}/{self.db}"


def _redis_url(text: str) -> RedisUrl:
    parts = urllib.parse.urlsplit(text)
    if parts.scheme != "redis" or not parts.hostname:
        raise ValueError("must be redis://HOST:PORT[/DB]")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError("must be redis://HOST:PORT[/DB] (no user, password or query)")
    try:
        port = parts.port or 6379
    except ValueError:
        raise ValueError("the port must be a number from 1 to 65535") from None
    path = parts.path.strip("/")
    if path and not (path.isdigit() and int(path) < 16):
        raise ValueError("the database must be a number from 0 to 15")
    return RedisUrl(parts.hostname, port, int(path or 0))


def _log_level(text: str) -> str:
    level = text.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError("must be debug, info, warning, error or critical")
    return level


@dataclass(frozen=True)
class Setting:
    name: str
    parse: Callable[[str], Any]
    help: str
    metavar: str = ""
    #: A TOML type this setting also takes (besides the text ``parse`` reads), with
    #: its reader: a boolean for a switch, an array for a list. Other settings
    #: refuse such values, so ``port = true`` is an error, not port 1.
    toml: tuple[type, Callable[[Any], Any]] | None = None
    #: On the command line a bare switch meaning ``true`` (``--plain-port-off``).
    switch: bool = False


#: Every server setting. Defaults live on :class:`Settings`.
SETTINGS: tuple[Setting, ...] = (
    Setting("host", _text, "address to listen on", "ADDR"),
    Setting("port", port_number, "TCP port to listen on", "PORT"),
    Setting("data_dir", _path, "directory for the pid file, log, control socket and history",
            "DIR"),
    Setting("control", _socket_path, "control socket path (default DATA_DIR/control.sock)", "PATH"),
    Setting("db", _db, "history database (default DATA_DIR/history.sqlite3; ':memory:' keeps "
            "history in memory only)", "PATH"),
    Setting("sync", _choice("full", "normal"), "SQLite synchronous mode: full or normal", "MODE"),
    Setting("log_level", _log_level, "debug, info, warning or error", "LEVEL"),
    Setting("max_frame", _frame, "largest frame a client may send, in bytes", "BYTES"),
    Setting("max_text", _positive_int, "longest message text, in characters", "CHARS"),
    Setting("max_clients", _positive_int, "most logged-in sessions", "N"),
    Setting("max_outbuf", _positive_int, "unsent bytes per connection before slow_consumer",
            "BYTES"),
    Setting("rate", _non_negative_float, "requests per second per connection (0 = off)", "R"),
    Setting("burst", _positive_int, "token bucket size for --rate", "N"),
    Setting("heartbeat", positive_seconds, "seconds of silence before a ping", "S"),
    Setting("handshake_timeout", positive_seconds, "seconds allowed before hello", "S"),
    Setting("backlog", _non_negative_int, "messages sent after welcome", "N"),
    Setting("history", _positive_int, "public messages retained", "N"),
    Setting("password", _text, "password clients must give in hello (default: none)", "TEXT"),
    Setting("grace", seconds, "seconds to flush clients at shutdown", "S"),
    Setting("guests", _bool, "true: a name that is not an account may log in as a guest "
            "(with --password if one is set); false: accounts only", "true|false",
            toml=(bool, bool)),
    Setting("registration", _choice("closed", "open", "code"),
            "who may create an account at login: closed (only operators, with "
            "'chatd account add'), open (anyone), code (anyone who gives --join-code)",
            "closed|open|code"),
    Setting("join_code", _text, "the code that registering needs with --registration code",
            "TEXT"),
    Setting("room_creation", _choice("everyone", "accounts", "operators"),
            "who may create a room by joining it: everyone, accounts (not guests) or "
            "operators (only 'chatd room add')", "everyone|accounts|operators"),
    Setting("edit_window", seconds, "seconds after sending during which an author may edit "
            "a message (0 = no limit)", "S"),
    Setting("default_rooms", _room_list, "rooms a guest is put in at login and an account at "
            "its creation, separated by commas (in the config file also an array); "
            "created at start if missing", "NAME[,NAME...]", toml=(list, _room_array)),
    Setting("max_rooms", _positive_int, "most rooms one user may be a member of", "N"),
    Setting("hash_workers", _positive_int, "worker processes that hash and check passwords "
            "(off the event loop)", "N"),
    Setting("tls_port", _tls_port, "TCP port for TLS connections (0 = no TLS)", "PORT"),
    Setting("tls_cert", _path, "TLS certificate chain, PEM (default: a self-signed one "
            "created in DATA_DIR; SIGHUP reloads the files)", "FILE"),
    Setting("tls_key", _path, "private key of --tls-cert, PEM (default: in the "
            "certificate file)", "FILE"),
    Setting("http_port", _http_port, "TCP port of the web client and its WebSocket, "
            "HTTPS when TLS is on (0 = off)", "PORT"),
    Setting("allowed_origins", _origin_list, "origins besides the server's own whose pages "
            "may open its WebSocket, separated by commas (in the config file also an array)",
            "ORIGIN[,ORIGIN...]", toml=(list, _origin_array)),
    Setting("plain_port_off", _bool, "do not listen on the plain port (only TLS)",
            "true|false", toml=(bool, bool), switch=True),
    Setting("cluster", _redis_url, "cluster mode: share rooms, accounts and history with "
            "the other nodes through this Redis (redis://HOST:PORT[/DB]; default: none, "
            "a single server with its own --db)", "URL"),
)


@dataclass(frozen=True)
class Settings:
    """The server's resolved settings. Paths left as None derive from data_dir."""

    host: str = limits.DEFAULT_HOST
    port: int = limits.DEFAULT_PORT
    data_dir: Path = dataclasses.field(
        default_factory=lambda: Path(platformdirs.user_data_dir("chatd"))
    )
    control: Path | None = None
    db: str | None = None
    sync: str = "normal"
    log_level: str = "INFO"
    max_frame: int = limits.DEFAULT_MAX_FRAME
    max_text: int = limits.DEFAULT_MAX_TEXT
    max_clients: int = limits.DEFAULT_MAX_CLIENTS
    max_outbuf: int = limits.DEFAULT_MAX_OUTBUF
    rate: float = limits.DEFAULT_RATE
    burst: int = limits.DEFAULT_BURST
    heartbeat: float = limits.DEFAULT_HEARTBEAT
    handshake_timeout: float = limits.DEFAULT_HANDSHAKE_TIMEOUT
    backlog: int = limits.DEFAULT_BACKLOG
    history: int = limits.DEFAULT_HISTORY
    password: str | None = None
    grace: float = 5.0
    guests: bool = True
    registration: str = "closed"
    join_code: str | None = None
    room_creation: str = "everyone"
    edit_window: float = limits.DEFAULT_EDIT_WINDOW
    default_rooms: tuple[str, ...] = (limits.LOBBY,)
    max_rooms: int = limits.DEFAULT_MAX_ROOMS
    hash_workers: int = 1
    tls_port: int = limits.DEFAULT_TLS_PORT
    tls_cert: Path | None = None
    tls_key: Path | None = None
    plain_port_off: bool = False
    http_port: int = limits.DEFAULT_HTTP_PORT
    allowed_origins: tuple[str, ...] = ()
    cluster: RedisUrl | None = None

    @property
    def control_path(self) -> Path:
        return self.control if self.control is not None else self.data_dir / "control.sock"

    @property
    def db_path(self) -> str:
        return self.db if self.db is not None else str(self.data_dir / "history.sqlite3")

    @property
    def pid_path(self) -> Path:
        return self.data_dir / "chatd.pid"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "chatd.log"


def text_of(value: object) -> str:
    """A setting's value as its flag would spell it (for help texts and messages)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value)
    return str(value)


def _parse(setting: Setting, raw: object, origin: str) -> Any:
    # A TOML file gives typed values; only strings and numbers can be settings
    # (``true`` is not a port, a table is not a host), unless the setting takes
    # that type as such.
    read: Callable[[Any], Any] = setting.parse
    value: object = raw if isinstance(raw, str) else str(raw)
    if setting.toml is not None and isinstance(raw, setting.toml[0]):
        read, value = setting.toml[1], raw
    elif isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
        raise SettingError(f"{origin}: bad {setting.name}: {raw!r} is not a string or number")
    try:
        return read(value)
    except ValueError as exc:
        raise SettingError(f"{origin}: bad {setting.name} {value!r}: {exc}") from None


def _read_config(config_file: Path) -> dict[str, Any]:
    try:
        with open(config_file, "rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise SettingError(
            f"cannot read config file {config_file}: {exc.strerror or exc}"
        ) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingError(f"config file {config_file} is not valid TOML: {exc}") from None


def resolve(
    flags: Mapping[str, object],
    environ: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> Settings:
    """Settings from flags (None = not given), environment and a TOML file.

    The config file is ``config_file``, else the one named by ``$CHATD_CONFIG``,
    else none. It is a flat table of setting names (``max_clients = 500``);
    dashes and underscores are both accepted. Unknown keys are an error, so a
    typo does not silently leave a limit at its default. An empty environment
    variable counts as unset.
    """
    env = os.environ if environ is None else environ
    if config_file is None and env.get(CONFIG_ENV):
        config_file = Path(env[CONFIG_ENV])
    values: dict[str, Any] = {}
    by_name = {s.name: s for s in SETTINGS}
    if config_file is not None:
        for key, raw in _read_config(config_file).items():
            name = key.replace("-", "_")
            if name not in by_name:
                raise SettingError(f"config file {config_file}: unknown setting {key!r}")
            values[name] = _parse(by_name[name], raw, f"config file {config_file}")
    for setting in SETTINGS:
        env_name = ENV_PREFIX + setting.name.upper()
        raw_env = env.get(env_name)
        if raw_env:
            values[setting.name] = _parse(setting, raw_env, env_name)
        raw_flag = flags.get(setting.name)
        if raw_flag is not None:
            values[setting.name] = _parse(setting, raw_flag, flag_of(setting.name))
    settings = Settings(**values)
    if settings.plain_port_off and not settings.tls_port:
        raise SettingError("--plain-port-off needs TLS: a --tls-port other than 0")
    if settings.tls_key is not None and settings.tls_cert is None:
        raise SettingError("--tls-key needs --tls-cert (the self-signed pair has its own key)")
    if settings.registration == "code" and settings.join_code is None:
        raise SettingError(
            "registration 'code' needs a join code: give --join-code "
            f"(or {ENV_PREFIX}JOIN_CODE, or join_code in the config file)"
        )
    return settings


def flag_of(name: str) -> str:
    """The command-line flag of a setting: ``max_clients`` -> ``--max-clients``."""
    return "--" + name.replace("_", "-")
