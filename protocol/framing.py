"""Frames: a 4-byte big-endian length, then one strict UTF-8 JSON object.

Sans-I/O in the h11 manner: :func:`encode` turns a message into bytes and a
:class:`Decoder` turns bytes, in chunks of any size, back into messages. Nothing
here touches a socket, so the framing is fuzzed directly by hypothesis.

This is the one module that knows the header's layout: code that builds frames
from payloads it encoded itself uses :func:`frame`, and code that must find
frame boundaries without decoding (an out-buffer's partly sent head, a load
generator counting deliveries) uses :func:`frame_end` and :func:`whole_frames`.

The decoder never trusts a length field (mosquitto's rule): a zero or oversize
length is rejected from the 4 header bytes alone, before any payload is held.
"""

from __future__ import annotations

import json
import math
import re
import struct
from typing import Any

from protocol.errors import ProtocolError
from protocol.limits import HEADER_SIZE, MAX_DEPTH

Message = dict[str, Any]
Bytes = bytes | bytearray | memoryview

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
    return frame(encode_payload(message))


def frame(payload: bytes) -> bytes:
    """One complete frame around an already encoded ``payload``."""
    return _header.pack(len(payload)) + payload


def frame_end(buf: Bytes, pos: int = 0) -> int:
    """Where the frame whose header starts at ``pos`` ends (the header must
    be there whole; the length is not checked: the peer wrote it, or we did)."""
    length: int = _header.unpack_from(buf, pos)[0]
    return pos + HEADER_SIZE + length


def whole_frames(buf: Bytes, pos: int, stop: int) -> tuple[int, int]:
    """How many whole frames ``buf[pos:stop]`` starts with, and where they end.

    One loop over the headers only, so counting the frames of a read costs
    little next to the read; the bytes from the returned offset to ``stop``
    are the start of a frame not yet complete (possibly a partial header).
    """
    unpack = _header.unpack_from
    count = 0
    while stop - pos >= HEADER_SIZE:
        end = pos + HEADER_SIZE + unpack(buf, pos)[0]
        if end > stop:
            break
        pos = end
        count += 1
    return count, pos


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


# Two JSON readers that differ only in how they read integers. Checking every
# integer in Python costs more than the rest of a typical payload, yet only a
# literal of more than 308 digits can overflow a double; so the plain C integer
# reader is used unless such a digit run occurs anywhere in the text.
_json_strict = json.JSONDecoder(
    parse_float=_parse_float, parse_int=_parse_int, parse_constant=_reject_constant
)
_json_fast = json.JSONDecoder(parse_float=_parse_float, parse_constant=_reject_constant)
_LONG_DIGITS = re.compile(f"[0-9]{{{_MAX_DOUBLE_DIGITS + 1}}}")
_JSON_SPACE = " \t\n\r"  # RFC 8259 white space; str.isspace() is wider


def _parse_json(text: str) -> Any:
    """One JSON value filling ``text``; ValueError/OverflowError if there is none."""
    reader = _json_fast
    if len(text) > _MAX_DOUBLE_DIGITS and _LONG_DIGITS.search(text):
        reader = _json_strict
    start = len(text) - len(text.lstrip(_JSON_SPACE)) if text[0] in _JSON_SPACE else 0
    value, end = reader.raw_decode(text, start)
    # The value's last character is not white space, so only white space follows
    # it exactly when stripping the right end stops there.
    if end != len(text) and len(text.rstrip(_JSON_SPACE)) != end:
        raise ValueError(f"extra data after the JSON value at offset {end}")
    return value


_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_INNERMOST = re.compile(r"\[\]|\{\}")


def _too_deep(text: str) -> bool:
    """Whether the JSON ``text`` nests containers more than MAX_DEPTH levels.

    Counted on the text, not on the parsed value: there a repeated member name
    has replaced the earlier value, and a deep one would go unseen (contract
    §1 limits the payload). Strings are removed (their brackets are text), then
    each round peels every innermost ``[]``/``{}`` pair, one level a round.
    """
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    for _ in range(MAX_DEPTH):
        if not brackets:
            return False
        brackets = _INNERMOST.sub("", brackets)
    return bool(brackets)


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
    if not text:
        raise ProtocolError("bad_frame", "payload is empty")
    if text[0] == "\ufeff":
        raise ProtocolError("bad_frame", "payload starts with a byte order mark")
    try:
        value = _parse_json(text)
    except RecursionError:
        raise ProtocolError("bad_frame", f"JSON nested deeper than {MAX_DEPTH} levels") from None
    except (ValueError, OverflowError) as exc:
        raise ProtocolError("bad_frame", f"payload is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ProtocolError("bad_frame", "payload is not a JSON object")
    if not isinstance(value.get("type"), str):
        raise ProtocolError("bad_frame", "payload has no string member 'type'")
    # Cheap guard first: fewer than MAX_DEPTH openers cannot nest too deep.
    if text.count("{") + text.count("[") > MAX_DEPTH and _too_deep(text):
        raise ProtocolError("bad_frame", f"JSON nested deeper than {MAX_DEPTH} levels")
    return value


class Decoder:
    """Incremental frame decoder: ``feed`` bytes, get back complete messages.

    Cost is O(bytes fed) however the stream is chunked: complete frames are
    parsed straight out of the buffer, consumed bytes leave it with one front
    deletion per call (O(1) for a ``bytearray``), and while a known frame is
    still incomplete a ``feed`` only appends and compares one length, so a peer
    dribbling a frame one byte at a time costs a few hundred nanoseconds a byte.
    Without ``limit`` the buffer never holds more than one incomplete frame,
    at most ``max_frame + 3`` bytes; with ``limit`` the complete frames not yet
    returned stay buffered too, and the caller decides when to read more.

    ``max_frame`` may be changed between calls (a server raises it at login);
    each header is checked against the value in force when its fourth byte is
    examined. After an error the decoder is dead: every later ``feed`` raises
    the same code again (with an empty ``decoded``) and it buffers nothing.
    """

    __slots__ = ("_buf", "_error", "_need", "max_frame")

    def __init__(self, max_frame: int) -> None:
        if max_frame < 1:
            raise ValueError("max_frame must be at least 1")
        self.max_frame = max_frame
        self._buf = bytearray()
        # Bytes the buffer must hold before parsing can make progress: a header,
        # or the whole of a frame whose header has been checked.
        self._need = HEADER_SIZE
        self._error: ProtocolError | None = None

    @property
    def pending(self) -> int:
        """Bytes buffered: an incomplete frame and frames not yet returned."""
        return len(self._buf)

    def feed(
        self, data: bytes | bytearray | memoryview = b"", limit: int | None = None
    ) -> list[Message]:
        """Add ``data`` and return up to ``limit`` complete messages, in order.

        On a bad frame this raises :class:`ProtocolError` (``frame_too_large``
        or ``bad_frame``) carrying in ``.decoded`` the messages completed before
        it in this call, which the caller should still handle.
        """
        if self._error is not None:
            raise ProtocolError(self._error.code, self._error.message)
        buf = self._buf
        buf += data
        size = len(buf)
        if size < self._need:  # the fast path for a frame still arriving
            return []
        out: list[Message] = []
        pos = 0
        need = HEADER_SIZE
        max_frame = self.max_frame
        try:
            while limit is None or len(out) < limit:
                if size - pos < HEADER_SIZE:
                    break
                (length,) = _header.unpack_from(buf, pos)
                if length == 0 or length > max_frame:
                    raise ProtocolError(
                        "frame_too_large",
                        f"frame length {length} is outside 1..{max_frame}",
                    )
                end = pos + HEADER_SIZE + length
                if end > size:
                    need = end - pos
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
        self._need = need
        return out
