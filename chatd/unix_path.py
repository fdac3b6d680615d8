"""AF_UNIX addresses for paths of any length: one rule for server and clients.

``sun_path`` holds 108 bytes; deep data directories (and pytest's tmp paths)
are longer. Such a path is reached through ``/proc/self/fd`` of an open
descriptor of its directory, open only while the address is used.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

UNIX_PATH_MAX = 100  # bytes of a path used as it is; sun_path is 108


@contextlib.contextmanager
def unix_address(path: Path) -> Iterator[str]:
    """An address for bind or connect that reaches ``path``."""
    text = os.fspath(path)
    if len(os.fsencode(text)) <= UNIX_PATH_MAX:
        yield text
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)
