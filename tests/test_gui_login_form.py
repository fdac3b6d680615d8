"""The login form's checks, without a window: what the user typed, in words."""

from __future__ import annotations

import pytest

from chatgui.login import Form, check


@pytest.mark.parametrize(("name", "host", "port", "problem"), [
    ("alice", "127.0.0.1", "65432", None),
    ("alice", "localhost", " 7000 ", None),
    ("bad name!", "127.0.0.1", "65432", "Name:"),
    ("alice", "  ", "65432", "Server:"),
    ("alice", "127.0.0.1", "", "Port:"),
    ("alice", "127.0.0.1", "0", "Port:"),
    ("alice", "127.0.0.1", "65536", "Port:"),
    ("alice", "127.0.0.1", "²", "Port:"),  # a digit to str.isdigit, not to int()
    ("alice", "127.0.0.1", "٦٥٤", "Port:"),  # decimal, but not what people mean by a port
])
def test_form_check(name, host, port, problem):
    found = check(Form(name, host, port, mode="guest"))
    if problem is None:
        assert found is None
    else:
        assert found is not None and found.startswith(problem)


@pytest.mark.parametrize(("mode", "password", "problem"), [
    ("account", "", "Password:"),  # an account needs its password
    ("account", "x", None),  # its rules are the server's to check
    ("guest", "", None),
    ("register", "short", "Password:"),  # 8..256 code points (§11)
    ("register", "correct horse", None),
])
def test_form_check_passwords(mode, password, problem):
    found = check(Form("alice", "127.0.0.1", "65432", mode=mode, password=password))
    assert (found or "").startswith(problem or "") and (found is None) == (problem is None)
