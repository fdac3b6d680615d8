"""Origin rules of the WebSocket upgrade (contract §21) and the web settings."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatd.settings import SettingError, resolve
from chatd.web.origin import OriginRule, parse_origin
from chatd.web.websocket import close_code


def test_origins_compare_scheme_host_and_port_with_defaults_implied() -> None:
    assert parse_origin("http://Chat.Example") == ("http", "chat.example", 80)
    assert parse_origin("https://chat.example:443") == ("https", "chat.example", 443)
    assert parse_origin("http://[::1]:8080") == ("http", "::1", 8080)
    for bad in ("null", "ftp://x", "http://x/path", "http://u@x", "http://x:99999", "", "x"):
        assert parse_origin(bad) is None, bad


@given(st.sampled_from(["http", "https"]), st.from_regex(r"[a-z][a-z0-9-]{0,20}\.example",
                                                       fullmatch=True))
def test_the_default_port_is_the_same_origin_written_or_not(scheme: str, host: str) -> None:
    port = 80 if scheme == "http" else 443
    assert parse_origin(f"{scheme}://{host}") == parse_origin(f"{scheme}://{host.upper()}:{port}")


def test_own_origin_comes_from_the_listener_scheme_and_host_header() -> None:
    rule = OriginRule("http", ["https://app.example"])
    assert rule.allows(None, "chat.example:8080")  # not a browser page
    assert rule.allows("http://chat.example:8080", "chat.example:8080")
    assert rule.allows("http://chat.example", "chat.example:80")
    assert rule.allows("https://app.example:443", "chat.example:8080")
    assert not rule.allows("https://chat.example:8080", "chat.example:8080")  # other scheme
    assert not rule.allows("http://chat.example:8081", "chat.example:8080")
    assert not rule.allows("http://evil.example", "chat.example:8080")
    assert not rule.allows("null", "chat.example:8080")
    assert not rule.allows("http://chat.example:8080", None)
    assert OriginRule("https").allows("https://chat.example", "chat.example")


def test_web_settings_parse_and_refuse_bad_values() -> None:
    settings = resolve({"http_port": "0", "allowed_origins": "https://a.example, http://b:81"},
                       environ={})
    assert settings.http_port == 0
    assert settings.allowed_origins == ("https://a.example:443", "http://b:81")
    assert resolve({}, environ={}).http_port == 8080
    with pytest.raises(SettingError, match="allowed_origins"):
        resolve({"allowed_origins": "https://a.example/path"}, environ={})
    with pytest.raises(SettingError, match="http_port"):
        resolve({"http_port": "70000"}, environ={})


def test_close_code_follows_the_last_frame() -> None:
    assert close_code(b'{"type":"bye","reason":"quit"}') == 1000
    assert close_code(b'{"type":"error","code":"frame_too_large","fatal":true}') == 1009
    assert close_code(b'{"type":"error","code":"bad_frame","fatal":true}') == 1008
    assert close_code(b'{"type":"error","code":"bad_text","fatal":false}') == 1000
    assert close_code(b"") == 1000
