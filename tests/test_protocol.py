"""The sans-IO core: framing, handshake and both protocol sides, wired together in memory."""

from __future__ import annotations

import pytest

from lanchatd.core.framing import TOO_LONG, Framing, LineSplitter, split_classic
from lanchatd.core.protocol import (
    GREETING,
    MAX_NICK_REPLY,
    ClientConnection,
    InvalidUtf8,
    Line,
    LineTooLong,
    Message,
    Nick,
    NickReply,
    NickRequested,
    ProtocolError,
    ServerConnection,
)


def test_splitter_handles_crlf_and_partial_lines() -> None:
    splitter = LineSplitter(100)
    assert splitter.feed(b"one\r\ntw") == [b"one"]
    assert splitter.feed(b"o\nthree\r") == [b"two"]
    assert splitter.feed(b"\n") == [b"three"]
    assert splitter.buffered == 0


def test_splitter_refuses_long_line_once_and_recovers() -> None:
    splitter = LineSplitter(8)
    assert splitter.feed(b"12345678") == []
    assert splitter.feed(b"9") == [TOO_LONG]
    assert splitter.buffered == 0
    assert splitter.feed(b"still the long line") == []
    assert splitter.feed(b" end\nnext\n") == [b"next"]


def test_splitter_accepts_line_of_exactly_the_limit_with_crlf() -> None:
    splitter = LineSplitter(4)
    assert splitter.feed(b"abcd\r") == []
    assert splitter.feed(b"\nabcde\n") == [b"abcd", TOO_LONG]


def test_classic_read_is_one_message_but_newlines_still_split() -> None:
    assert split_classic(b"alice: hi") == [b"alice: hi"]
    assert split_classic(b"a\r\nb\n\n") == [b"a", b"b"]


def test_line_reply_selects_line_mode_and_keeps_following_lines() -> None:
    server = ServerConnection(4096)
    events = server.receive_data(b"alice\r\nhello\npartial")
    assert events == [NickReply(b"alice\r", Framing.LINE), Message("hello")]
    assert server.receive_data(b" line\n") == [Message("partial line")]


def test_reply_without_newline_waits_for_grace_then_is_classic() -> None:
    server = ServerConnection(4096)
    assert server.receive_data(b"alice") == []
    assert server.awaiting_grace
    assert server.receive_data(b"alice: early") == []
    assert server.grace_expired() == [NickReply(b"alice", Framing.CLASSIC), Message("alice: early")]
    assert server.framing is Framing.CLASSIC
    assert server.receive_data(b"alice: one read") == [Message("alice: one read")]


def test_reply_split_across_reads_is_still_line_mode() -> None:
    server = ServerConnection(4096)
    assert server.receive_data(b"ali") == []
    assert server.receive_data(b"ce\n") == [NickReply(b"alice", Framing.LINE)]
    assert server.grace_expired() == []


def test_oversized_reply_without_newline_ends_the_handshake() -> None:
    server = ServerConnection(4096)
    events = server.receive_data(b"x" * (MAX_NICK_REPLY + 1))
    assert events == [NickReply(b"x" * (MAX_NICK_REPLY + 1), Framing.CLASSIC)]


def test_bad_lines_become_error_events() -> None:
    server = ServerConnection(64)
    server.receive_data(b"bob\n")
    events = server.receive_data(b"\xff\xfe\n" + b"y" * 65 + b"\nok\n")
    assert events == [InvalidUtf8(), LineTooLong(64), Message("ok")]


def test_classic_long_read_is_refused() -> None:
    server = ServerConnection(64)
    server.receive_data(b"bob")
    server.grace_expired()
    assert server.receive_data(b"z" * 65) == [LineTooLong(64)]


def test_client_and_server_talk_in_memory() -> None:
    server = ServerConnection(4096)
    client = ClientConnection()
    assert client.receive_data(GREETING[:2]) == []
    assert client.receive_data(GREETING[2:]) == [NickRequested()]
    assert server.receive_data(client.send(Nick("José"))) == [
        NickReply("José".encode(), Framing.LINE)
    ]
    assert server.receive_data(client.send(Message("two\nlines"))) == [Message("two lines")]
    assert client.receive_data(Framing.LINE.encode("José Bergabung!")) == [Line("José Bergabung!")]


def test_client_reports_a_peer_that_is_not_lanchatd() -> None:
    assert ClientConnection().receive_data(b"SSH-2.0") == [ProtocolError(b"SSH-2.0")]
    assert ClientConnection().receive_data(b"HT") == [ProtocolError(b"HT")]


def test_client_replaces_invalid_bytes_instead_of_failing() -> None:
    client = ClientConnection()
    client.receive_data(GREETING)
    assert client.receive_data(b"a\xffb\n") == [Line("a\ufffdb")]


@pytest.mark.parametrize(
    ("framing", "expected"),
    [(Framing.LINE, b"hi\n"), (Framing.CLASSIC, b"hi"), (Framing.WEB, b"\x81\x02hi")],
)
def test_encoding_per_framing(framing: Framing, expected: bytes) -> None:
    assert framing.encode("hi") == expected


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
def test_web_frames_carry_their_length_as_rfc_6455_says(size: int) -> None:
    """Unmasked final text frames: 7-bit length, then 126 + 16 bits, then 127 + 64 bits."""
    data = Framing.WEB.encode("x" * size)
    header = {0: b"\x81\x00", 125: b"\x81\x7d", 126: b"\x81\x7e\x00\x7e"}.get(size)
    if size == 65535:
        header = b"\x81\x7e\xff\xff"
    if size == 65536:
        header = b"\x81\x7f" + (65536).to_bytes(8, "big")
    assert data == header + b"x" * size


def test_web_encodes_a_round_as_one_frame_per_line_made_safe() -> None:
    many = Framing.WEB.encode_safe_many(["a: hi", "b: \x1b[2J"])
    assert many == Framing.WEB.encode("a: hi") + Framing.WEB.encode("b: ^[[2J")
    assert Framing.WEB.encode_safe("b: \x1b[2J") == Framing.WEB.encode("b: ^[[2J")


def test_each_framing_cuts_received_bytes_its_own_way() -> None:
    line, classic = Framing.LINE.splitter(4), Framing.CLASSIC.splitter(4)
    assert line.feed(b"ab\ncd") == [b"ab"]
    assert line.feed(b"efg\n") == [TOO_LONG]
    assert classic.feed(b"ab\ncd") == [b"ab", b"cd"]
    assert classic.feed(b"efghi") == [TOO_LONG]
    assert classic.buffered == 0
