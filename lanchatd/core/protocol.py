"""The chat wire protocol, sans-IO and symmetric: bytes in, events out, events in, bytes out.

Each side is one object, as in h11: :class:`ServerConnection` and :class:`ClientConnection`
both take what was read with ``receive_data(bytes)`` (``b""`` is the end of the stream, an
:class:`EndOfStream` event) and turn the events they mean to say into bytes with
``send(event)``. The daemon, the ``lanchat`` client and the tests all drive these objects,
so there is one implementation of the handshake and the framing. A new framing (WebSocket)
or new events (message ids) join here. See docs/protocol.md for the contract.

Handshake: the server sends ``NICK`` (4 bytes, no newline). A reply ending in a newline
selects line mode; a reply without one, once a short grace period has passed, selects classic
mode (the original tutorial client). The I/O layer owns the grace timer and calls
:meth:`ServerConnection.grace_expired` when it fires.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from lanchatd.core.framing import TOO_LONG, Framing, LineSplitter, Splitter
from lanchatd.core.lines import REMOVALS, refusal_key
from lanchatd.core.tags import (
    CapRequest,
    MessageId,
    Tags,
    cap_line,
    event_tags,
    format_tags,
    is_cap,
    parse_cap,
    split_tags,
)

GREETING: Final = b"NICK"
#: Longest nickname reply buffered while waiting for its end (32 characters of 4 bytes each,
#: plus slack for whitespace and ``\r\n``); anything longer is refused as too long.
MAX_NICK_REPLY: Final = 256


class LocalProtocolError(RuntimeError):
    """Our own code asked a connection for something its state does not allow (a bug)."""


# Events in both directions ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NickRequested:
    """The server asks for a nickname (``NICK``)."""


@dataclass(frozen=True, slots=True)
class Nick:
    """The client's answer to ``NICK`` (sent in line mode)."""

    nick: str


@dataclass(frozen=True, slots=True)
class OfferIds:
    """The client asks for message ids (``/cap ids``), resuming after ``after`` if given;
    sent right before :class:`Nick`."""

    after: MessageId | None = None


@dataclass(frozen=True, slots=True)
class Message:
    """One complete message from a client (a chat line or a command), decoded."""

    text: str


@dataclass(frozen=True, slots=True)
class Line:
    """One line from the server, decoded (invalid bytes replaced, never raised).

    On a connection that negotiated ids, the line's tags: ``id`` on room events, the
    server's ``time`` (RFC 3339), ``history`` on replayed entries, ``missed`` on the one line
    that says a resume came too late.
    """

    text: str
    id: MessageId | None = None
    time: str | None = None
    history: bool = False
    missed: int | None = None

    @classmethod
    def tagged(cls, raw: str) -> Line:
        """The line ``raw`` as received on a tagged connection (tags it cannot read ignored)."""
        tags, text = split_tags(raw)
        return cls(text, _tag_id(tags), tags.get("time"), "history" in tags, _tag_count(tags))


def _tag_id(tags: Tags) -> MessageId | None:
    value = tags.get("id")
    try:
        return None if value is None else MessageId.parse(value)
    except ValueError:
        return None


def _tag_count(tags: Tags) -> int | None:
    value = tags.get("missed")
    return int(value) if value is not None and value.isascii() and value.isdigit() else None


@dataclass(frozen=True, slots=True)
class EndOfStream:
    """The peer closed its side: nothing more will arrive."""


# Events only the server receives --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NickReply:
    """The client answered ``NICK``; ``raw`` is the undecoded reply, ``framing`` its style."""

    raw: bytes
    framing: Framing


@dataclass(frozen=True, slots=True)
class LineTooLong:
    """An inbound line exceeded the limit and was dropped."""

    limit: int


@dataclass(frozen=True, slots=True)
class InvalidUtf8:
    """An inbound line was not valid UTF-8 and was dropped."""


# Events only the client receives --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Refusal:
    """The server did not let us in; ``key`` is the catalogue key (None if unknown)."""

    text: str
    key: str | None


@dataclass(frozen=True, slots=True)
class Removal:
    """An administrator put us out (kick, ban): a line to show, and not to come back."""

    text: str
    key: str


@dataclass(frozen=True, slots=True)
class ProtocolError:
    """The peer does not speak this protocol (it did not start with ``NICK``)."""

    received: bytes


ServerEvent = CapRequest | NickReply | Message | LineTooLong | InvalidUtf8 | EndOfStream
ClientEvent = NickRequested | Line | Refusal | Removal | ProtocolError | EndOfStream


class HandshakeState(enum.Enum):
    """The server side's state."""

    AWAIT_NICK = "await_nick"
    GRACE = "grace"
    OPEN = "open"
    CLOSED = "closed"


class ServerConnection:
    """The server's side of one connection."""

    __slots__ = ("_chunks", "_splitter", "framing", "state", "tagged")

    def __init__(self, max_line_bytes: int, framing: Framing | None = None) -> None:
        """``framing`` is given for a transport that frames messages itself (WebSocket): the
        greeting and any refusal go out in it, and the reply (a line) opens it."""
        self.state = HandshakeState.AWAIT_NICK
        self.framing = framing
        #: The client's first line was ``/cap`` (a WebSocket always is): every line it is sent
        #: carries tags.
        self.tagged = framing is Framing.WEB
        #: Lines until a classic reply is seen; then the framing's own splitter.
        self._splitter: Splitter = LineSplitter(max_line_bytes)
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

    def send(self, event: NickRequested | Line, at: float = 0.0) -> bytes:
        """The bytes that say ``event`` to this client.

        Lines are made safe to show, in the connection's framing; before the client has
        chosen one (a refusal during the handshake) in line mode. A connection that
        negotiated ids tags each line with ``at``, the server's time (the caller's clock).
        """
        if isinstance(event, NickRequested):
            return GREETING if self.framing is None else self.framing.encode(GREETING.decode())
        tags = format_tags(event_tags(None, at)) if self.tagged else ""
        return (self.framing or Framing.LINE).encode_safe(event.text, tags)

    def receive_data(self, data: bytes) -> list[ServerEvent]:
        """Feed bytes from one read (``b""`` at the end); return the events they complete."""
        if self.state is HandshakeState.CLOSED:
            return []
        if not data:
            self.state = HandshakeState.CLOSED
            self._chunks = []
            return [EndOfStream()]
        if self.state is HandshakeState.OPEN:
            return self._messages(data)
        self._chunks.append(data)
        events: list[ServerEvent] = []
        while True:
            joined = b"".join(self._chunks)
            newline = joined.find(b"\n")
            if newline < 0:
                break
            line, rest = joined[:newline], joined[newline + 1 :]
            if not is_cap(line.decode(errors="replace")):
                framing = self.framing or Framing.LINE
                return [*events, *self._open(NickReply(line, framing), rest)]
            cap = parse_cap(line.decode(errors="replace"))
            events.append(cap)
            self.tagged = self.tagged or cap.ids
            self._chunks = [rest] if rest else []
        if len(joined) > MAX_NICK_REPLY:
            framing = self.framing or (Framing.LINE if self.tagged else Framing.CLASSIC)
            return [*events, *self._open(NickReply(joined, framing), b"")]
        # After /cap the nickname is a line, never classic: no grace timer for it.
        grace = joined and not self.tagged
        self.state = HandshakeState.GRACE if grace else HandshakeState.AWAIT_NICK
        return events

    def grace_expired(self) -> list[ServerEvent]:
        """No newline followed the reply in time: this is a classic client."""
        if self.state is not HandshakeState.GRACE:
            return []
        first, *rest = self._chunks
        events = self._open(NickReply(first, Framing.CLASSIC), b"")
        for chunk in rest:
            events.extend(self._messages(chunk))
        return events

    def _open(self, reply: NickReply, rest: bytes) -> list[ServerEvent]:
        self.state = HandshakeState.OPEN
        self.framing = reply.framing
        self._chunks = []
        if reply.framing is not Framing.LINE:  # the line splitter holds what followed a line
            self._splitter = reply.framing.splitter(self._splitter.limit)
        events: list[ServerEvent] = [reply]
        if rest:
            events.extend(self._messages(rest))
        return events

    def _messages(self, data: bytes) -> list[ServerEvent]:
        """Decode what the splitter cuts out (inline: this runs for every message)."""
        events: list[ServerEvent] = []
        append = events.append
        for message in self._splitter.feed(data):
            if isinstance(message, bytes):
                try:
                    append(Message(message.decode()))
                except UnicodeDecodeError:
                    append(InvalidUtf8())
            else:
                append(LineTooLong(self._splitter.limit))
        return events


class ClientState(enum.Enum):
    """The client side's state."""

    AWAIT_GREETING = "await_greeting"
    GREETED = "greeted"  #: ``NICK`` arrived, not answered yet
    JOINING = "joining"  #: answered; the next line lets us in or refuses
    OPEN = "open"
    REFUSED = "refused"  #: refused; the server closes next
    CLOSED = "closed"
    ERROR = "error"  #: the peer is not a lanchat server


class ClientConnection:
    """A line-mode client's side of one connection.

    After answering ``NICK`` the first line decides: a server line (``*``) is a
    :class:`Refusal`, anything else (our own join) means we are in. Once in, a line that
    removes us (kick, ban) is a :class:`Removal`, told apart by catalogue key.
    """

    __slots__ = ("_pending", "_splitter", "state", "tagged")

    def __init__(self, max_line_bytes: int = 1 << 16) -> None:
        self._splitter = LineSplitter(max_line_bytes)
        self.state = ClientState.AWAIT_GREETING
        self._pending = b""
        #: We sent ``/cap ids``: every line from the server carries tags.
        self.tagged = False

    def send(self, event: OfferIds | Nick | Message) -> bytes:
        """The bytes that say ``event``; a newline inside a message would split it, so it
        becomes a space."""
        if isinstance(event, OfferIds):
            if self.state is not ClientState.GREETED or self.tagged:
                raise LocalProtocolError(f"cannot offer ids in state {self.state.value}")
            self.tagged = True
            return Framing.LINE.encode(cap_line(event.after))
        if isinstance(event, Nick):
            if self.state is not ClientState.GREETED:
                raise LocalProtocolError(f"cannot answer NICK in state {self.state.value}")
            self.state = ClientState.JOINING
            return Framing.LINE.encode(event.nick)
        return Framing.LINE.encode(event.text.replace("\r", " ").replace("\n", " "))

    def receive_data(self, data: bytes) -> list[ClientEvent]:
        """Feed bytes from the server (``b""`` at the end); return the events they complete."""
        state = self.state
        if state is ClientState.CLOSED or state is ClientState.ERROR:
            return []
        if not data:
            self.state = ClientState.CLOSED
            return [EndOfStream()]
        events: list[ClientEvent] = []
        if state is ClientState.AWAIT_GREETING:
            self._pending += data
            if len(self._pending) < len(GREETING) and GREETING.startswith(self._pending):
                return []
            if not self._pending.startswith(GREETING):
                self.state = ClientState.ERROR
                return [ProtocolError(self._pending)]
            self.state = ClientState.GREETED
            data, self._pending = self._pending[len(GREETING) :], b""
            events.append(NickRequested())
        for line in self._splitter.feed(data):
            if line is not TOO_LONG:
                assert isinstance(line, bytes)
                text = line.decode(errors="replace")
                event = self._line(Line.tagged(text) if self.tagged else Line(text))
                if event is not None:
                    events.append(event)
        return events

    def _line(self, line: Line) -> Line | Refusal | Removal | None:
        state, text = self.state, line.text
        if state is ClientState.JOINING:
            if text.startswith("*"):
                self.state = ClientState.REFUSED
                return Refusal(text, refusal_key(text))
            self.state = ClientState.OPEN
        elif state is ClientState.REFUSED:
            return None
        elif state is ClientState.OPEN and text.startswith("*"):
            key = refusal_key(text)
            if key in REMOVALS:
                assert key is not None
                return Removal(text, key)
        return line
