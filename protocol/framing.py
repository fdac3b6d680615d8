"""Frames: a 4-byte big-endian length, then one strict UTF-8 JSON object.

Sans-I/O in the h11 manner: :func:`encode` turns a message into bytes and a
:class:`Decoder` turns bytes, in chunks of any size, back into messages. Nothing
here touches a socket, so the framing is fuzzed directly by hypothesis.

The decoder never trusts a length field (mosquitto's rule): a zero or oversize
length is rejected from the 4 header bytes alone, before any payload is held.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

from protocol.errors import ProtocolError
from protocol.limits import HEADER_SIZE, MAX_DEPTH

Message = dict[str, Any]

_header = struct.Struct(">I")

_MAX_DOUBLE_DIGITS = 308  # an integer with more digits may overflow a double

_encode_compact = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), allow_nan=False
).encode
_encode_ascii = json.JSONEncoder(
    ensure_ascii=True, separators=(",", ":"), allow_nan=False
).encode


def encode_payload(message: Message) -> bytes:
    """The UTF-8 JSON payload of one message (no header).

    Strings holding a lone surrogate (only possible in values echoed back, such
    as a ``ping``'s ``t``) cannot be UTF-8 encoded raw; those payloads fall back
    to ``\\uXXXX`` escapes, which any JSON reader turns into the same value.
    """
    text = _encode_compact(message)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _encode_ascii(message).encode("ascii")


def encode(message: Message) -> bytes:
    """One complete frame for ``message``."""
    payload = encode_payload(message)
    return _header.pack(len(payload)) + payload


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError("number outside the double range")
    return value


def _parse_int(text: str) -> int:
    value = int(text)
    if len(text) > _MAX_DOUBLE_DIGITS:
        float(value)  # OverflowError beyond the double range
    return value


_decode_json = json.JSONDecoder(
    parse_float=_parse_float, parse_int=_parse_int, parse_constant=_reject_constant
).decode


def _too_deep(value: Any) -> bool:
    """Whether ``value`` nests containers more than MAX_DEPTH levels."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        children = item.values() if isinstance(item, dict) else item
        for child in children:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
    return False


def decode_payload(payload: bytes | bytearray) -> Message:
    """Check one payload strictly against contract §1 and return the object.

    Raises :class:`ProtocolError` ``bad_frame`` for anything that is not a
    BOM-less, strictly UTF-8 JSON object with a string ``type``, nests deeper
    than 32 levels, or holds NaN, Infinity or a number beyond a double.
    """
    try:
        text = payload.decode("utf-8")  # strict: no encoded surrogates, no overlongs
    except UnicodeDecodeError:
        raise ProtocolError("bad_frame", "payload is not valid UTF-8") from None
    if text.startswith("\ufeff"):
        raise ProtocolError("bad_frame", "payload starts with a byte order mark")
    try:
        value = _decode_json(text)
    except RecursionError:
        raise ProtocolError("bad_frame", f"JSON nested deeper than {MAX_DEPTH} levels") from None
    except (ValueError, OverflowError) as exc:
        raise ProtocolError("bad_frame", f"payload is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ProtocolError("bad_frame", "payload is not a JSON object")
    if not isinstance(value.get("type"), str):
        raise ProtocolError("bad_frame", "payload has no string member 'type'")
    # Cheap guard first: fewer than MAX_DEPTH openers cannot nest too deep.
    if text.count("{") + text.count("[") > MAX_DEPTH and _too_deep(value):
        raise ProtocolError("bad_frame", f"JSON nested deeper than {MAX_DEPTH} levels")
    return value


class Decoder:
    """Incremental frame decoder: ``feed`` bytes, get back complete messages.

    Cost is O(bytes fed) however the stream is chunked: complete frames are
    parsed straight out of the buffer, and consumed bytes leave it with one
    front deletion per call (O(1) for a ``bytearray``). The buffer holds at most
    one incomplete frame of ``max_frame + 4`` bytes, plus any complete frames
    left over when the caller asks for fewer messages with ``limit``.

    ``max_frame`` may be changed between calls (a server raises it at login).
    After an error the decoder is dead: every later ``feed`` raises it again.
    """

    __slots__ = ("_buf", "_error", "max_frame")

    def __init__(self, max_frame: int) -> None:
        if max_frame < 1:
            raise ValueError("max_frame must be at least 1")
        self.max_frame = max_frame
        self._buf = bytearray()
        self._error: ProtocolError | None = None

    @property
    def pending(self) -> int:
        """Bytes buffered: an incomplete frame and frames not yet returned."""
        return len(self._buf)

    def feed(self, data: bytes = b"", limit: int | None = None) -> list[Message]:
        """Add ``data`` and return up to ``limit`` complete messages, in order.

        On a bad frame this raises :class:`ProtocolError` (``frame_too_large``
        or ``bad_frame``) carrying in ``.decoded`` the messages completed before
        it in this call, which the caller should still handle.
        """
        if self._error is not None:
            raise self._error
        buf = self._buf
        if data:
            buf += data
        size = len(buf)
        out: list[Message] = []
        pos = 0
        max_frame = self.max_frame
        try:
            while size - pos >= HEADER_SIZE and (limit is None or len(out) < limit):
                (length,) = _header.unpack_from(buf, pos)
                if length == 0 or length > max_frame:
                    raise ProtocolError(
                        "frame_too_large",
                        f"frame length {length} is outside 1..{max_frame}",
                    )
                end = pos + HEADER_SIZE + length
                if end > size:
                    break
                out.append(decode_payload(buf[pos + HEADER_SIZE : end]))
                pos = end
        except ProtocolError as exc:
            exc.decoded = out
            self._error = exc
            self._buf = bytearray()
            raise
        if pos:
            del buf[:pos]
        return out
