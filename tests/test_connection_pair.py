"""Both protocol sides wired together in memory, as h11's tests/helpers.py does: no sockets.

What one side sends is exactly what the other receives, so these tests show the handshake,
attribution, refusals, removals and the end of the stream from both ends at once.
"""

from __future__ import annotations

import pytest

from lanchatd.core.catalog import CATALOGUES, LANGUAGES, Catalog
from lanchatd.core.framing import Framing
from lanchatd.core.lines import (
    REFUSALS,
    REMOVALS,
    LineKind,
    ReceivedLine,
    chat_prefix,
    classify_line,
    own_words,
    refusal_key,
)
from lanchatd.core.protocol import (
    ClientConnection,
    ClientEvent,
    ClientState,
    EndOfStream,
    HandshakeState,
    Line,
    LocalProtocolError,
    Message,
    Nick,
    NickReply,
    NickRequested,
    ProtocolError,
    Refusal,
    Removal,
    ServerConnection,
    ServerEvent,
)

#: A value for every field any catalogue template has.
FIELDS = {
    "nick": "bob",
    "limit": 32,
    "seconds": 30,
    "reason": "spam",
    "until": "2030-01-01 00:00",
    "rate": 2.0,
    "burst": 5,
    "count": 2,
    "time": "09:15",
    "line": "bob: hi",
    "nicks": "alice, bob",
    "command": "/x",
    "example": "bob",
    "text": "hi",
    "sender": "bob",
    "target": "bob",
}


class ConnectionPair:
    """A server and a client connection; each ``to_*`` call carries bytes one way."""

    def __init__(self, max_line_bytes: int = 4096) -> None:
        self.server = ServerConnection(max_line_bytes)
        self.client = ClientConnection()

    def to_client(self, *events: NickRequested | Line) -> list[ClientEvent]:
        return self.client.receive_data(b"".join(self.server.send(e) for e in events))

    def to_server(self, *events: Nick | Message) -> list[ServerEvent]:
        return self.server.receive_data(b"".join(self.client.send(e) for e in events))

    def server_closes(self) -> list[ClientEvent]:
        return self.client.receive_data(b"")

    def client_closes(self) -> list[ServerEvent]:
        return self.server.receive_data(b"")

    def join(self, nick: str, say: Catalog) -> None:
        """The whole handshake, ending with the server's join line and welcome."""
        assert self.to_client(NickRequested()) == [NickRequested()]
        assert self.to_server(Nick(nick)) == [NickReply(nick.encode(), Framing.LINE)]
        welcome = (Line(say("joined", nick=nick)), Line(say("welcome")))
        assert self.to_client(*welcome) == list(welcome)


def test_handshake_opens_both_sides() -> None:
    pair = ConnectionPair()
    assert pair.client.state is ClientState.AWAIT_GREETING
    pair.join("alice", Catalog("id"))
    assert pair.server.state is HandshakeState.OPEN
    assert pair.server.framing is Framing.LINE
    assert pair.client.state is ClientState.OPEN


def test_attribution_round_trip_strips_the_senders_own_prefix_once() -> None:
    pair = ConnectionPair()
    pair.join("alice", Catalog("en"))
    typed = [Message("alice: hi"), Message("hi again"), Message("alice: alice: twice")]
    received = pair.to_server(*typed)
    words = [own_words("alice", event.text) for event in received if isinstance(event, Message)]
    assert words == ["hi", "hi again", "alice: twice"]
    echoed = pair.to_client(*(Line(chat_prefix("alice") + text) for text in words))
    assert [classify_line(e.text) for e in echoed if isinstance(e, Line)] == [
        ReceivedLine(LineKind.CHAT, "hi", "alice"),
        ReceivedLine(LineKind.CHAT, "hi again", "alice"),
        ReceivedLine(LineKind.CHAT, "alice: twice", "alice"),
    ]


@pytest.mark.parametrize("lang", LANGUAGES)
def test_refused_nickname_is_a_refusal_event_with_its_key(lang: str) -> None:
    say = Catalog(lang)
    pair = ConnectionPair()
    pair.to_client(NickRequested())
    pair.to_server(Nick("alice"))
    refusal = say("nick_taken", nick="alice")
    assert pair.to_client(Line(refusal), Line("anything after")) == [Refusal(refusal, "nick_taken")]
    assert pair.client.state is ClientState.REFUSED
    assert pair.server_closes() == [EndOfStream()]
    assert pair.client.state is ClientState.CLOSED
    assert pair.to_client(Line("late")) == []


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("key", sorted(REMOVALS))
def test_kick_or_ban_once_in_is_a_removal_event(lang: str, key: str) -> None:
    say = Catalog(lang)
    pair = ConnectionPair()
    pair.join("alice", say)
    text = say(key, **FIELDS)
    quoted = chat_prefix("bob") + text  # bob typing the same words is only chat
    notice = say("notice", text=text)  # nor is an administrator quoting them
    assert pair.to_client(Line(quoted), Line(notice), Line(text)) == [
        Line(quoted),
        Line(notice),
        Removal(text, key),
    ]


def test_every_refusal_and_removal_is_told_apart_by_key_in_every_language() -> None:
    for lang in LANGUAGES:
        for key in REFUSALS | REMOVALS:
            line = CATALOGUES[lang][key].format(**FIELDS)
            assert refusal_key(line) == key, (lang, key, line)
    for lang in LANGUAGES:
        for key in CATALOGUES[lang].keys() - REFUSALS - REMOVALS:
            line = CATALOGUES[lang][key].format(**FIELDS)
            assert refusal_key(line) is None, (lang, key, line)


def test_end_of_stream_is_an_event_and_the_last_one() -> None:
    pair = ConnectionPair()
    pair.join("alice", Catalog("en"))
    assert pair.to_server(Message("bye")) == [Message("bye")]
    assert pair.client_closes() == [EndOfStream()]
    assert pair.server.state is HandshakeState.CLOSED
    assert pair.to_server(Message("ghost")) == []
    assert pair.server_closes() == [EndOfStream()]
    assert pair.server_closes() == []


def test_end_of_stream_during_the_handshake_drops_a_held_reply() -> None:
    server = ServerConnection(4096)
    assert server.receive_data(b"alice") == []
    assert server.awaiting_grace
    assert server.receive_data(b"") == [EndOfStream()]
    assert server.grace_expired() == []


def test_a_peer_that_is_not_lanchatd_moves_the_client_to_its_error_state() -> None:
    client = ClientConnection()
    full = Framing.LINE.encode(Catalog("en")("server_full", limit=1))
    assert client.receive_data(full) == [ProtocolError(full)]
    assert client.state is ClientState.ERROR
    assert client.receive_data(b"NICK") == []


def test_answering_a_nick_nobody_asked_for_is_our_bug() -> None:
    client = ClientConnection()
    with pytest.raises(LocalProtocolError):
        client.send(Nick("alice"))
    client.receive_data(b"NICK")
    client.send(Nick("alice"))
    with pytest.raises(LocalProtocolError):
        client.send(Nick("alice"))


def test_server_lines_follow_the_framing_and_are_made_safe() -> None:
    server = ServerConnection(4096)
    assert server.send(NickRequested()) == b"NICK"
    assert server.send(Line("*** bad\x1b[2J")) == b"*** bad^[[2J\n"  # refused before a framing
    server.receive_data(b"tut")
    server.grace_expired()
    assert server.send(Line("José ☕")) == b"Jose ?"
