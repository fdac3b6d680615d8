"""The password, kept only in the system keyring (never in the settings file).

``keyring`` is optional: without it, or without a working backend, nothing is
stored and the login window does not offer to. Keyring calls can talk to a
secret service over D-Bus, so they happen only in the login window, on a
click or once when it opens, never in the chat window's loop.
"""

from __future__ import annotations

import importlib
from typing import Any

SERVICE = "chatgui"


def _keyring() -> Any | None:
    try:
        module = importlib.import_module("keyring")
        backend = module.get_keyring()
    except Exception:  # missing module, broken backend configuration
        return None
    priority = getattr(backend, "priority", 0)
    return module if priority and priority > 0 else None


def available() -> bool:
    return _keyring() is not None


def account_key(name: str, host: str, port: int) -> str:
    return f"{name.casefold()}@{host}:{port}"


def load(key: str) -> str | None:
    module = _keyring()
    if module is None:
        return None
    try:
        value = module.get_password(SERVICE, key)
    except Exception:  # a locked or vanished keyring is as good as none
        return None
    return value if isinstance(value, str) else None


def save(key: str, password: str | None) -> bool:
    """Store (or, with None, forget) the password; False if there is no keyring."""
    module = _keyring()
    if module is None:
        return False
    try:
        if password is None:
            module.delete_password(SERVICE, key)
        else:
            module.set_password(SERVICE, key, password)
    except Exception:
        return False
    return True
