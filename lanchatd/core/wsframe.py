"""WebSocket frames the server sends (RFC 6455 section 5.2), sans-IO.

Server-to-client frames are never masked, so one encoded frame can be sent to every browser:
the WEB framing's journal holds these bytes once per broadcast. Parsing what browsers send
(masked, possibly fragmented) is wsproto's job in the daemon; building frames lives here
alone, for chat lines, pongs and close frames alike.
"""

from __future__ import annotations

import enum
import struct
from typing import Final

#: Longest close reason: a control frame's payload is at most 125 bytes, two are the code.
MAX_CLOSE_REASON: Final = 123


class Opcode(enum.IntEnum):
    TEXT = 0x1
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


def frame(opcode: Opcode, payload: bytes) -> bytes:
    """One final, unmasked frame carrying ``payload``."""
    length = len(payload)
    first = 0x80 | opcode
    if length < 126:
        return bytes((first, length)) + payload
    if length < 1 << 16:
        return struct.pack("!BBH", first, 126, length) + payload
    return struct.pack("!BBQ", first, 127, length) + payload


def text_frame(payload: bytes) -> bytes:
    """A text frame; ``payload`` must be UTF-8 (callers encode sanitised text)."""
    return frame(Opcode.TEXT, payload)


def close_frame(code: int, reason: str) -> bytes:
    """A close frame with ``code`` and ``reason`` (cut to fit, never mid-character)."""
    data = reason.encode()[:MAX_CLOSE_REASON].decode(errors="ignore").encode()
    return frame(Opcode.CLOSE, struct.pack("!H", code) + data)
