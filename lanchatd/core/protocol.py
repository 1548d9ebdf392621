"""The chat wire protocol, sans-IO: bytes in, events out; no sockets, no clocks.

The daemon, the ``lanchat`` client and the tests all drive these objects, so there is one
implementation of the handshake and the framing. See docs/protocol.md for the contract.

Handshake: the server sends ``NICK`` (4 bytes, no newline). A reply ending in a newline
selects line mode; a reply without one, once a short grace period has passed, selects classic
mode (the original tutorial client). The I/O layer owns the grace timer and calls
:meth:`ServerProtocol.grace_expired` when it fires.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from lanchatd.core.catalog import CATALOGUES, LANGUAGES
from lanchatd.core.framing import TOO_LONG, Framing, LineSplitter, split_classic

GREETING: Final = b"NICK"
#: Longest nickname reply buffered while waiting for its end (32 characters of 4 bytes each,
#: plus slack for whitespace and ``\r\n``); anything longer is refused as too long.
MAX_NICK_REPLY: Final = 256


@dataclass(frozen=True, slots=True)
class NickReply:
    """The client answered ``NICK``; ``raw`` is the undecoded reply, ``framing`` its style."""

    raw: bytes
    framing: Framing


@dataclass(frozen=True, slots=True)
class Message:
    """One complete inbound message (a chat line or a command), decoded."""

    text: str


@dataclass(frozen=True, slots=True)
class LineTooLong:
    """An inbound line exceeded the limit and was dropped."""

    limit: int


@dataclass(frozen=True, slots=True)
class InvalidUtf8:
    """An inbound line was not valid UTF-8 and was dropped."""


ServerEvent = NickReply | Message | LineTooLong | InvalidUtf8


class HandshakeState(enum.Enum):
    AWAIT_NICK = "await_nick"
    GRACE = "grace"
    OPEN = "open"


class ServerProtocol:
    """The server's side of one connection."""

    __slots__ = ("_chunks", "_splitter", "framing", "state")

    def __init__(self, max_line_bytes: int) -> None:
        self.state = HandshakeState.AWAIT_NICK
        self.framing: Framing | None = None
        self._splitter = LineSplitter(max_line_bytes)
        self._chunks: list[bytes] = []

    @property
    def max_line_bytes(self) -> int:
        return self._splitter.limit

    @max_line_bytes.setter
    def max_line_bytes(self, limit: int) -> None:
        self._splitter.limit = limit

    @property
    def awaiting_grace(self) -> bool:
        """True while a reply without newline is held: the caller should run the grace timer."""
        return self.state is HandshakeState.GRACE

    def receive_data(self, data: bytes) -> list[ServerEvent]:
        """Feed bytes from one read; return the events they complete, in order."""
        if self.state is HandshakeState.OPEN:
            if self.framing is Framing.LINE:
                return self._lines(data)
            return self._classic(data)
        self._chunks.append(data)
        joined = b"".join(self._chunks)
        newline = joined.find(b"\n")
        if newline >= 0:
            return self._open(NickReply(joined[:newline], Framing.LINE), joined[newline + 1 :])
        if len(joined) > MAX_NICK_REPLY:
            return self._open(NickReply(joined, Framing.CLASSIC), b"")
        self.state = HandshakeState.GRACE
        return []

    def grace_expired(self) -> list[ServerEvent]:
        """No newline followed the reply in time: this is a classic client."""
        if self.state is not HandshakeState.GRACE:
            return []
        first, *rest = self._chunks
        events = self._open(NickReply(first, Framing.CLASSIC), b"")
        for chunk in rest:
            events.extend(self._classic(chunk))
        return events

    def _open(self, reply: NickReply, rest: bytes) -> list[ServerEvent]:
        self.state = HandshakeState.OPEN
        self.framing = reply.framing
        self._chunks = []
        events: list[ServerEvent] = [reply]
        if rest:
            events.extend(self._lines(rest))
        return events

    def _lines(self, data: bytes) -> list[ServerEvent]:
        events: list[ServerEvent] = []
        for line in self._splitter.feed(data):
            events.append(_decode(line, self._splitter.limit))
        return events

    def _classic(self, chunk: bytes) -> list[ServerEvent]:
        limit = self._splitter.limit
        return [
            _decode(part if len(part) <= limit else TOO_LONG, limit)
            for part in split_classic(chunk)
        ]


def _decode(line: bytes | object, limit: int) -> ServerEvent:
    if line is TOO_LONG:
        return LineTooLong(limit)
    assert isinstance(line, bytes)
    try:
        return Message(line.decode())
    except UnicodeDecodeError:
        return InvalidUtf8()


@dataclass(frozen=True, slots=True)
class NickRequested:
    """The server asked for a nickname."""


@dataclass(frozen=True, slots=True)
class Line:
    """One line from the server, decoded (invalid bytes replaced, never raised)."""

    text: str


@dataclass(frozen=True, slots=True)
class ProtocolError:
    """The peer does not speak this protocol (it did not start with ``NICK``)."""

    received: bytes


ClientEvent = NickRequested | Line | ProtocolError


class ClientProtocol:
    """A line-mode client's side of one connection."""

    __slots__ = ("_greeted", "_pending", "_splitter")

    def __init__(self, max_line_bytes: int = 1 << 16) -> None:
        self._splitter = LineSplitter(max_line_bytes)
        self._greeted = False
        self._pending = b""

    def receive_data(self, data: bytes) -> list[ClientEvent]:
        """Feed bytes from the server; return the events they complete."""
        if not self._greeted:
            self._pending += data
            if len(self._pending) < len(GREETING):
                return [] if GREETING.startswith(self._pending) else [ProtocolError(self._pending)]
            if not self._pending.startswith(GREETING):
                return [ProtocolError(self._pending)]
            self._greeted = True
            data, self._pending = self._pending[len(GREETING) :], b""
            events: list[ClientEvent] = [NickRequested()]
        else:
            events = []
        for line in self._splitter.feed(data):
            if line is not TOO_LONG:
                assert isinstance(line, bytes)
                events.append(Line(line.decode(errors="replace")))
        return events

    @staticmethod
    def send_nick(nick: str) -> bytes:
        """Answer ``NICK`` in line mode."""
        return Framing.LINE.encode(nick)

    @staticmethod
    def send_message(text: str) -> bytes:
        """Encode one message; a newline inside would split it, so it becomes a space."""
        return Framing.LINE.encode(text.replace("\r", " ").replace("\n", " "))


class LineKind(enum.Enum):
    """What a line received from the server is, as far as the client can tell."""

    CHAT = "chat"  #: ``{nick}: {text}``
    ACTION = "action"  #: ``* {nick} {text}`` (``/me``)
    PRIVATE = "private"  #: ``*{sender}* {text}`` or the echo ``*-> {target}* {text}``
    NOTICE = "notice"  #: ``*** ...``: answers, errors, shutdown
    JOIN = "join"  #: ``{nick} Bergabung!`` / ``{nick} joined!``
    LEAVE = "leave"  #: ``{nick} Keluar!`` / ``{nick} left!``
    WELCOME = "welcome"  #: ``Terkoneksi dengan Server!`` / ``Connected to the server!``
    OTHER = "other"  #: none of the above (another server, a newer catalogue)


@dataclass(frozen=True, slots=True)
class ReceivedLine:
    """A received line split into its parts.

    ``nick`` is the speaker (chat), the other party (private) or who came or went (join,
    leave); empty otherwise. ``text`` is the rest: the message for chat and private lines,
    everything after ``* `` for actions (a nickname may hold spaces, so where it ends is not
    knowable), everything after ``*** `` for notices, the whole line otherwise.
    ``outgoing`` marks the echo of one's own ``/msg``.
    """

    kind: LineKind
    text: str
    nick: str = ""
    outgoing: bool = False


def _presence_suffixes(key: str) -> tuple[str, ...]:
    return tuple(CATALOGUES[lang][key].removeprefix("{nick}") for lang in LANGUAGES)


_JOIN_SUFFIXES: Final = _presence_suffixes("joined")
_LEAVE_SUFFIXES: Final = _presence_suffixes("left")
_WELCOMES: Final = frozenset(CATALOGUES[lang]["welcome"] for lang in LANGUAGES)


def classify_line(line: str) -> ReceivedLine:
    """Tell what a line from the server is (see "Telling lines apart" in docs/protocol.md).

    This relies on the daemon's guarantees: nicknames never contain ``:`` nor start with
    ``*``, so only the server can send a line starting with ``*``, and only chat lines
    carry a ``:`` straight after the first word(s).
    """
    if line.startswith("**"):
        return ReceivedLine(LineKind.NOTICE, line.removeprefix("***").removeprefix(" "))
    if line.startswith("* "):
        return ReceivedLine(LineKind.ACTION, line[2:])
    if line.startswith("*"):
        outgoing = line.startswith("*-> ")
        body = line[4:] if outgoing else line[1:]
        nick, star, text = body.partition("* ")
        if star and nick:
            return ReceivedLine(LineKind.PRIVATE, text, nick, outgoing)
        return ReceivedLine(LineKind.OTHER, line)
    nick, colon, text = line.partition(":")
    if colon and nick.strip():
        return ReceivedLine(LineKind.CHAT, text.removeprefix(" "), nick)
    if line in _WELCOMES:
        return ReceivedLine(LineKind.WELCOME, line)
    for suffixes, kind in ((_JOIN_SUFFIXES, LineKind.JOIN), (_LEAVE_SUFFIXES, LineKind.LEAVE)):
        for suffix in suffixes:
            if line.endswith(suffix) and len(line) > len(suffix):
                return ReceivedLine(kind, line, line.removesuffix(suffix))
    return ReceivedLine(LineKind.OTHER, line)
