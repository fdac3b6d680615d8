"""Settings: precedence flag > environment > config file > default, and bad values."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from chatd.settings import (
    MAX_SECONDS,
    SETTINGS,
    SOCKET_NAME_MAX,
    SettingError,
    Settings,
    resolve,
    text_of,
)
from protocol import limits


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "chatd.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_are_the_contract_defaults() -> None:
    settings = resolve({}, environ={})
    assert settings.port == limits.DEFAULT_PORT
    assert settings.host == limits.DEFAULT_HOST
    assert settings.max_frame == limits.DEFAULT_MAX_FRAME
    assert settings.max_clients == limits.DEFAULT_MAX_CLIENTS
    assert settings.rate == limits.DEFAULT_RATE
    assert settings.grace == 5.0
    assert settings.password is None
    assert settings.data_dir.is_absolute()
    assert settings.control_path == settings.data_dir / "control.sock"
    assert settings.pid_path.parent == settings.data_dir
    assert settings.log_path.parent == settings.data_dir


def test_version_2_defaults_are_the_contract_defaults() -> None:
    settings = resolve({}, environ={})
    assert settings.guests is True
    assert settings.registration == "closed"
    assert settings.join_code is None
    assert settings.room_creation == "everyone"
    assert settings.edit_window == 900.0
    assert settings.default_rooms == ("lobby",)
    assert settings.max_rooms == 1000
    assert settings.hash_workers == 1


def test_every_setting_is_a_field_and_its_default_parses_back() -> None:
    fields = {f.name for f in dataclasses.fields(Settings)}
    assert {s.name for s in SETTINGS} == fields
    defaults = Settings()
    for setting in SETTINGS:
        value = getattr(defaults, setting.name)
        if value is not None:
            assert setting.parse(text_of(value)) == value, setting.name


@pytest.mark.parametrize(
    ("flag", "env", "config", "expected"),
    [
        (None, None, None, limits.DEFAULT_MAX_CLIENTS),
        (None, None, "30", 30),
        (None, "20", "30", 20),
        ("10", "20", "30", 10),
        ("10", None, None, 10),
        ("10", None, "30", 10),
    ],
)
def test_precedence_flag_env_config_default(
    tmp_path: Path, flag: str | None, env: str | None, config: str | None, expected: int
) -> None:
    environ = {} if env is None else {"CHATD_MAX_CLIENTS": env}
    config_file = None if config is None else _config(tmp_path, f"max_clients = {config}\n")
    settings = resolve({"max_clients": flag}, environ=environ, config_file=config_file)
    assert settings.max_clients == expected


def test_config_file_from_environment_and_flag_wins(tmp_path: Path) -> None:
    from_env = _config(tmp_path, "port = 7001\n")
    assert resolve({}, environ={"CHATD_CONFIG": str(from_env)}).port == 7001
    other = tmp_path / "other.toml"
    other.write_text("port = 7002\n", encoding="utf-8")
    settings = resolve({}, environ={"CHATD_CONFIG": str(from_env)}, config_file=other)
    assert settings.port == 7002


def test_config_keys_take_dashes_or_underscores(tmp_path: Path) -> None:
    config = _config(tmp_path, 'max-text = 100\nhandshake_timeout = 2.5\nsync = "full"\n')
    settings = resolve({}, environ={}, config_file=config)
    assert (settings.max_text, settings.handshake_timeout, settings.sync) == (100, 2.5, "full")


def test_empty_environment_variable_counts_as_unset() -> None:
    assert resolve({}, environ={"CHATD_PORT": ""}).port == limits.DEFAULT_PORT


def test_paths_become_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = resolve({"data_dir": "data", "db": "h.sqlite3", "control": "c.sock"}, environ={})
    assert settings.data_dir == tmp_path / "data"
    assert settings.db_path == str(tmp_path / "h.sqlite3")
    assert settings.control_path == tmp_path / "c.sock"
    assert resolve({"db": ":memory:"}, environ={}).db_path == ":memory:"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve({"data_dir": "~/d"}, environ={}).data_dir == tmp_path / "d"


def test_limits_themselves_are_accepted() -> None:
    """The bounds are inclusive, and only the socket's name is bounded, not its directory."""
    deep = "/tmp/" + "d" * 200 + "/" + "c" * SOCKET_NAME_MAX
    settings = resolve({"grace": str(MAX_SECONDS), "heartbeat": str(MAX_SECONDS),
                        "control": deep}, environ={})
    assert settings.grace == settings.heartbeat == MAX_SECONDS
    assert settings.control_path == Path(deep)


def test_log_level_is_case_insensitive() -> None:
    assert resolve({"log_level": "debug"}, environ={}).log_level == "DEBUG"


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("port", "abc"),
        ("port", "65536"),
        ("port", "-1"),
        ("host", ""),
        ("max_frame", "0"),
        ("max_frame", str(limits.CLIENT_MAX_FRAME + 1)),
        ("max_text", "1.5"),
        ("max_clients", "0"),
        ("max_outbuf", "lots"),
        ("rate", "-1"),
        ("rate", "nan"),
        ("rate", "inf"),
        ("burst", "0"),
        ("heartbeat", "0"),
        ("handshake_timeout", "-3"),
        ("backlog", "-1"),
        ("history", "0"),
        ("password", ""),
        ("grace", "soon"),
        ("grace", "1e300"),  # a wait that long overflows select()
        ("heartbeat", str(MAX_SECONDS + 1)),
        ("control", "/tmp/" + "c" * (SOCKET_NAME_MAX + 1)),
        ("sync", "off"),
        ("log_level", "chatty"),
        ("data_dir", ""),
        ("guests", "yes"),
        ("guests", "1"),
        ("registration", "Open"),
        ("registration", "invite"),
        ("join_code", ""),
        ("room_creation", "nobody"),
        ("edit_window", "-1"),
        ("edit_window", str(MAX_SECONDS + 1)),
        ("default_rooms", ""),
        ("default_rooms", "lobby,"),
        ("default_rooms", "@alice@bob"),  # a dm room is nobody's default
        ("default_rooms", "two words"),
        ("default_rooms", "x" * 33),
        ("default_rooms", "lobby,dev,LOBBY"),
        ("max_rooms", "0"),
        ("hash_workers", "0"),
        ("hash_workers", "two"),
    ],
)
def test_bad_value_is_a_one_line_error_naming_the_setting(name: str, bad: str) -> None:
    with pytest.raises(SettingError) as info:
        resolve({name: bad}, environ={})
    message = str(info.value)
    assert "\n" not in message
    assert name in message and "--" + name.replace("_", "-") in message
    if bad:  # an empty environment variable means "unset"
        with pytest.raises(SettingError, match="CHATD_" + name.upper()):
            resolve({}, environ={"CHATD_" + name.upper(): bad})


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("max_clients = 0\n", "bad max_clients"),
        ("max_clinets = 5\n", "unknown setting 'max_clinets'"),
        ("port = \n", "not valid TOML"),
        ("port = true\n", "not a string or number"),
        ("host = [1, 2]\n", "not a string or number"),
        ("[server]\nport = 1\n", "unknown setting 'server'"),
        ("port = 7000.0\n", "must be an integer"),
        ("max_rooms = true\n", "not a string or number"),  # booleans only for guests
        ("guests = 1\n", "must be true or false"),
        ("guests = [true]\n", "not a string or number"),
        ("default_rooms = [\"lobby\", 3]\n", "must be an array of strings"),
        ("default_rooms = []\n", "must name at least one room"),
        ("default_rooms = [\"dev\", \"DEV\"]\n", "'DEV' is named twice"),
        ("default_rooms = [\"a,b\"]\n", "is not a room name"),
    ],
)
def test_bad_config_file_is_a_one_line_error(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(SettingError) as info:
        resolve({}, environ={}, config_file=_config(tmp_path, text))
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_or_undecodable_config_file(tmp_path: Path) -> None:
    with pytest.raises(SettingError, match="cannot read config file"):
        resolve({}, environ={}, config_file=tmp_path / "absent.toml")
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"port = \xff\n")
    with pytest.raises(SettingError, match="not valid TOML"):
        resolve({}, environ={}, config_file=binary)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), ("false", False), ("TRUE", True), ("False", False)],
)
def test_guests_flag_takes_true_or_false(text: str, expected: bool) -> None:
    assert resolve({"guests": text}, environ={}).guests is expected
    assert resolve({}, environ={"CHATD_GUESTS": text}).guests is expected


@pytest.mark.parametrize(("toml", "expected"), [("true", True), ("false", False),
                                                ('"false"', False)])
def test_guests_in_toml_is_a_real_boolean_or_its_word(
    tmp_path: Path, toml: str, expected: bool
) -> None:
    settings = resolve({}, environ={}, config_file=_config(tmp_path, f"guests = {toml}\n"))
    assert settings.guests is expected


def test_choices_edit_window_and_counts() -> None:
    settings = resolve({"registration": "open", "room_creation": "operators",
                        "edit_window": "0", "max_rooms": "1", "hash_workers": "4"}, environ={})
    assert (settings.registration, settings.room_creation) == ("open", "operators")
    assert (settings.edit_window, settings.max_rooms, settings.hash_workers) == (0.0, 1, 4)


def test_default_rooms_from_a_flag_env_or_toml(tmp_path: Path) -> None:
    assert resolve({"default_rooms": "lobby, Dev,server"}, environ={}).default_rooms == (
        "lobby", "Dev", "server")  # 'server' is reserved for users only
    env = {"CHATD_DEFAULT_ROOMS": "general"}
    assert resolve({}, environ=env).default_rooms == ("general",)
    config = _config(tmp_path, 'default-rooms = ["lobby", "Café"]\n')
    assert resolve({}, environ={}, config_file=config).default_rooms == ("lobby", "Café")
    assert resolve({}, environ={}, config_file=_config(tmp_path, 'default_rooms = "a,b"\n')
                   ).default_rooms == ("a", "b")


def test_default_rooms_are_kept_in_nfc_and_compared_by_casefold() -> None:
    decomposed = "Cafe\u0301"
    assert resolve({"default_rooms": decomposed}, environ={}).default_rooms == ("Caf\u00e9",)
    with pytest.raises(SettingError, match="named twice"):
        resolve({"default_rooms": f"caf\u00e9,{decomposed.upper()}"}, environ={})
    with pytest.raises(SettingError, match="named twice"):
        resolve({"default_rooms": "Stra\u00dfe,STRASSE"}, environ={})  # casefold, not lower


def test_registration_code_needs_a_join_code(tmp_path: Path) -> None:
    with pytest.raises(SettingError) as info:
        resolve({"registration": "code"}, environ={})
    assert "--join-code" in str(info.value) and "\n" not in str(info.value)
    settings = resolve({"registration": "code"}, environ={"CHATD_JOIN_CODE": "s3cret"})
    assert (settings.registration, settings.join_code) == ("code", "s3cret")
    config = _config(tmp_path, 'registration = "code"\njoin_code = "x y"\n')
    assert resolve({}, environ={}, config_file=config).join_code == "x y"
    # A join code without code registration is kept (and unused): no error.
    assert resolve({"join_code": "spare"}, environ={}).registration == "closed"



def test_cluster_takes_a_redis_url() -> None:
    assert resolve({}, environ={}).cluster is None
    url = resolve({"cluster": "redis://10.0.0.5:6380/3"}, environ={}).cluster
    assert url is not None and (url.host, url.port, url.db) == ("10.0.0.5", 6380, 3)
    assert str(resolve({}, environ={"CHATD_CLUSTER": "redis://redis"}).cluster) == (
        "redis://redis:6379/0")


@pytest.mark.parametrize(("text", "why"), [
    ("127.0.0.1:6379", "redis://HOST:PORT"),
    ("http://127.0.0.1:6379", "redis://HOST:PORT"),
    ("redis://user:secret@127.0.0.1:6379", "no user, password"),
    ("redis://127.0.0.1:99999", "port"),
    ("redis://127.0.0.1:6379/16", "database"),
    ("redis://127.0.0.1:6379/x", "database"),
])
def test_a_bad_cluster_url_is_refused_with_why(text: str, why: str) -> None:
    with pytest.raises(SettingError, match=f"--cluster.*{why}"):
        resolve({"cluster": text}, environ={})
