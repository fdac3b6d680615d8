"""Server settings: each defined once, with its type, default and help.

The command line, the environment (``CHATD_<NAME>``) and a TOML config file are
all derived from :data:`SETTINGS`; precedence is flag > environment > config
file > default. A bad value is a :class:`SettingError` with a one-line message.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs

from protocol import limits

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

ENV_PREFIX = "CHATD_"


class SettingError(ValueError):
    """A setting has a bad value; the message names it and says why."""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise ValueError("must be a finite number >= 0")
    return value


def _positive_float(text: str) -> float:
    value = _non_negative_float(text)
    if value == 0:
        raise ValueError("must be greater than 0")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError("must be 0..65535 (0 picks a free port)")
    return value


def _frame(text: str) -> int:
    value = _positive_int(text)
    if value > limits.CLIENT_MAX_FRAME:
        raise ValueError(f"must be at most {limits.CLIENT_MAX_FRAME}")
    return value


def _sync(text: str) -> str:
    if text not in ("full", "normal"):
        raise ValueError("must be 'full' or 'normal'")
    return text


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


#: Every server setting. Defaults live on :class:`Settings`.
SETTINGS: tuple[Setting, ...] = (
    Setting("host", str, "address to listen on", "ADDR"),
    Setting("port", _port, "TCP port to listen on", "PORT"),
    Setting("data_dir", Path, "directory for the pid file, log, control socket and history",
            "DIR"),
    Setting("control", Path, "control socket path (default DATA_DIR/control.sock)", "PATH"),
    Setting("db", str, "history database (default DATA_DIR/history.sqlite3; ':memory:' keeps "
            "history in memory only)", "PATH"),
    Setting("sync", _sync, "SQLite synchronous mode: full or normal", "MODE"),
    Setting("log_level", _log_level, "debug, info, warning or error", "LEVEL"),
    Setting("max_frame", _frame, "largest frame a client may send, in bytes", "BYTES"),
    Setting("max_text", _positive_int, "longest message text, in characters", "CHARS"),
    Setting("max_clients", _positive_int, "most logged-in sessions", "N"),
    Setting("max_outbuf", _positive_int, "unsent bytes per connection before slow_consumer",
            "BYTES"),
    Setting("rate", _non_negative_float, "requests per second per connection (0 = off)", "R"),
    Setting("burst", _positive_int, "token bucket size for --rate", "N"),
    Setting("heartbeat", _positive_float, "seconds of silence before a ping", "S"),
    Setting("handshake_timeout", _positive_float, "seconds allowed before hello", "S"),
    Setting("backlog", lambda t: max(0, int(t)), "messages sent after welcome", "N"),
    Setting("history", _positive_int, "public messages retained", "N"),
    Setting("password", str, "password clients must give in hello (default: none)", "TEXT"),
    Setting("grace", _non_negative_float, "seconds to flush clients at shutdown", "S"),
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


def _parse(setting: Setting, raw: object, origin: str) -> Any:
    text = raw if isinstance(raw, str) else str(raw)
    if isinstance(raw, bool):
        raise SettingError(f"{origin}: {setting.name} must not be a boolean")
    try:
        return setting.parse(text)
    except (ValueError, TypeError) as exc:
        raise SettingError(f"{origin}: bad {setting.name} {text!r}: {exc}") from None


def resolve(
    flags: Mapping[str, object],
    environ: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> Settings:
    """Settings from flags (None = not given), environment and a TOML file.

    The config file is a flat table of setting names (``max_clients = 500``);
    dashes and underscores are both accepted. Unknown keys are an error, so a
    typo does not silently leave a limit at its default.
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    by_name = {s.name: s for s in SETTINGS}
    if config_file is not None:
        try:
            with open(config_file, "rb") as handle:
                table = tomllib.load(handle)
        except OSError as exc:
            raise SettingError(f"cannot read config file {config_file}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingError(f"config file {config_file} is not valid TOML: {exc}") from None
        for key, raw in table.items():
            name = key.replace("-", "_")
            if name not in by_name:
                raise SettingError(f"config file {config_file}: unknown setting {key!r}")
            values[name] = _parse(by_name[name], raw, f"config file {config_file}")
    for setting in SETTINGS:
        raw_env = env.get(ENV_PREFIX + setting.name.upper())
        if raw_env is not None and raw_env != "":
            values[setting.name] = _parse(setting, raw_env, ENV_PREFIX + setting.name.upper())
        raw_flag = flags.get(setting.name)
        if raw_flag is not None:
            values[setting.name] = _parse(
                setting, raw_flag, "--" + setting.name.replace("_", "-")
            )
    return Settings(**values)
