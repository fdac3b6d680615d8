"""The login form's checks, without a window: what the user typed, in words."""

from __future__ import annotations

import pytest

from chatgui.login import check


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
    found = check(name, host, port)
    if problem is None:
        assert found is None
    else:
        assert found is not None and found.startswith(problem)
