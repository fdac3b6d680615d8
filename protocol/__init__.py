"""The chat wire protocol, sans-I/O: bytes in, messages out, no sockets.

See ``docs/protocol.md`` and the contract it implements.
"""

#: The release of the whole distribution (server and clients), kept here, in
#: the one package every part imports, so that clients need not import chatd.
__version__ = "2.0.0"

from protocol.errors import ERRORS, ProtocolError
from protocol.framing import Decoder, Message, decode_payload, encode, encode_payload
from protocol.messages import CHAT_REQUESTS, CONTROL_REQUESTS, SERVER_EVENTS, validate
from protocol.values import clean_text, is_valid_id, name_key, name_problem, normalize_name

__all__ = [
    "CHAT_REQUESTS",
    "CONTROL_REQUESTS",
    "ERRORS",
    "SERVER_EVENTS",
    "Decoder",
    "Message",
    "ProtocolError",
    "clean_text",
    "decode_payload",
    "encode",
    "encode_payload",
    "is_valid_id",
    "name_key",
    "name_problem",
    "normalize_name",
    "validate",
]
