"""The one table of error codes, and the exception that carries one.

Every rule that can fail maps to exactly one code here; server and clients both
import the fatal flag from this table instead of deciding it themselves.
"""

from __future__ import annotations

from typing import Any

#: code -> fatal flag (contract §6). Fatal errors are the server's last frame.
ERRORS: dict[str, bool] = {
    "bad_frame": True,
    "frame_too_large": True,
    "not_logged_in": True,
    "unsupported_proto": True,
    "bad_name": True,
    "name_taken": True,
    "auth_failed": True,
    "server_full": True,
    "timeout": True,
    "slow_consumer": True,
    "already_logged_in": False,
    "unknown_type": False,
    "bad_request": False,
    "empty_message": False,
    "text_too_long": False,
    "bad_text": False,
    "no_such_user": False,
    "rate_limited": False,
    "unavailable": False,
    # Version 2 (§17).
    "bad_room": False,
    "no_such_room": False,
    "not_member": False,
    "not_allowed": False,
    "no_such_message": False,
    "registration_closed": True,
    "account_exists": True,
    "weak_password": True,  # at login; after it (a password change) it is not
}


class ProtocolError(Exception):
    """A violation of the wire contract, named by one code of :data:`ERRORS`.

    ``ref`` is the offending request's ``id`` (when it had a valid one);
    ``decoded`` holds the messages a :class:`~protocol.framing.Decoder` had
    completed in the same ``feed`` call before it met the bad frame, so a server
    can still act on them before it sends the fatal error.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        ref: str | None = None,
        retry_after_ms: int | None = None,
        fatal: bool | None = None,
    ) -> None:
        if code not in ERRORS:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.ref = ref
        self.retry_after_ms = retry_after_ms
        self._fatal = fatal
        self.decoded: list[dict[str, Any]] = []

    @property
    def fatal(self) -> bool:
        """The table's flag, unless the raiser said otherwise (``weak_password``
        is fatal at login only; on the control socket nothing but framing is)."""
        return ERRORS[self.code] if self._fatal is None else self._fatal

    def to_message(self) -> dict[str, Any]:
        """The ``error`` frame (as a message dict) that reports this error."""
        out: dict[str, Any] = {
            "type": "error",
            "code": self.code,
            "message": self.message,
            "fatal": self.fatal,
        }
        if self.ref is not None:
            out["ref"] = self.ref
        if self.retry_after_ms is not None:
            out["retry_after_ms"] = self.retry_after_ms
        return out
