"""Byte framing for the chat wire: where one message ends and the next begins.

Two byte-stream framings exist because the original tutorial client never sends a newline:
it writes one message per ``send`` and reads one message per ``recv``. Everyone else (netcat,
telnet, our own client) speaks newline-terminated lines. A framing owns both directions: how a
message is encoded (:meth:`Framing.encode_safe`) and how received bytes are cut into messages
(:meth:`Framing.splitter`). The third, WEB, sends each line as one WebSocket text frame
(lanchatd.core.wsframe); what browsers send reaches the splitter as lines, one per frame,
once the daemon's WebSocket layer has taken the frames apart.
"""

from __future__ import annotations

import enum
from typing import Final

from lanchatd.core.text import sanitize, to_ascii
from lanchatd.core.wsframe import text_frame


class Framing(enum.Enum):
    """How messages are delimited on one connection."""

    LINE = "line"
    CLASSIC = "classic"
    WEB = "web"

    def encode(self, text: str) -> bytes:
        """Encode one outbound message in this framing, as it is."""
        data = text.encode()
        if self is Framing.WEB:
            return text_frame(data)
        return data + b"\n" if self is Framing.LINE else data

    def encode_safe(self, text: str, tags: str = "") -> bytes:
        """Encode a line the server sends, made safe to show first (lanchatd.core.text).

        Every line the server sends may hold text someone else wrote. Classic mode is ASCII
        only: the original tutorial client decodes what it receives as ASCII and drops the
        connection on any other byte. ``tags`` (lanchatd.core.tags, the server's own) go in
        front of the text, inside the line's frame; classic connections are never tagged.
        """
        if self is Framing.LINE:
            return (tags + sanitize(text)).encode() + b"\n"
        if self is Framing.WEB:
            return text_frame((tags + sanitize(text)).encode())
        return to_ascii(text).encode("ascii")

    def encode_safe_many(self, texts: list[str]) -> bytes:
        """``encode_safe`` of each line, joined: lines of printable ASCII (the common case,
        which sanitising leaves as they are) are encoded in one call, not one per line."""
        joined = "".join(texts)
        if not texts:
            return b""
        if not (joined.isascii() and joined.isprintable()):
            return b"".join(map(self.encode_safe, texts))
        if self is Framing.LINE:
            return ("\n".join(texts) + "\n").encode()
        if self is Framing.WEB:
            return b"".join([text_frame(text.encode()) for text in texts])
        return joined.encode()

    def splitter(self, limit: int) -> Splitter:
        """A fresh splitter of received bytes into this framing's messages."""
        return ClassicSplitter(limit) if self is Framing.CLASSIC else LineSplitter(limit)


class _TooLong:
    """Marks a line that exceeded the limit; its bytes were discarded."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "TOO_LONG"


TOO_LONG: Final = _TooLong()


class LineSplitter:
    """Splits a byte stream into lines, never buffering more than one line's worth.

    ``\\r\\n`` is accepted as well as ``\\n``; a trailing ``\\r`` is stripped. A line longer
    than ``limit`` yields one ``TOO_LONG`` item and its bytes are dropped up to the next
    newline, so one oversized line costs the sender that line and nothing more.
    """

    __slots__ = ("_buffer", "_discarding", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buffer = b""
        self._discarding = False

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete line (at most ``limit`` plus a pending ``\\r``)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes | _TooLong]:
        """Add received bytes; return the complete lines (or ``TOO_LONG`` markers) in order."""
        if self._buffer:
            data = self._buffer + data
        *lines, rest = data.split(b"\n")
        out: list[bytes | _TooLong] = []
        limit = self.limit
        for line in lines:
            if self._discarding:
                self._discarding = False
                continue
            text = line.removesuffix(b"\r")
            out.append(text if len(text) <= limit else TOO_LONG)
        if self._discarding:
            rest = b""
        elif len(rest) > limit + 1 or (len(rest) == limit + 1 and not rest.endswith(b"\r")):
            out.append(TOO_LONG)
            self._discarding = True
            rest = b""
        self._buffer = rest
        return out


class ClassicSplitter:
    """Splits classic-mode reads into messages (:func:`split_classic`), each at most ``limit``
    bytes; nothing is held between reads."""

    __slots__ = ("limit",)

    buffered: Final = 0

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def feed(self, data: bytes) -> list[bytes | _TooLong]:
        """One read's messages (or ``TOO_LONG`` markers), in order."""
        limit = self.limit
        return [part if len(part) <= limit else TOO_LONG for part in split_classic(data)]


Splitter = LineSplitter | ClassicSplitter


def split_classic(chunk: bytes) -> list[bytes]:
    """Split one classic-mode read into messages.

    A classic read is one message; newlines inside it (a client that mixes the styles) still
    separate messages, and empty pieces are dropped.
    """
    return [part.removesuffix(b"\r") for part in chunk.split(b"\n") if part.strip(b"\r")]
