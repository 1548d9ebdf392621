"""The web port's sans-socket parts: frames in (websocket.py), frames out (core/wsframe.py),
the Host check (site.py). Against wsproto's own client, byte for byte."""

from __future__ import annotations

import string

from hypothesis import given
from hypothesis import strategies as st
from wsproto.frame_protocol import FrameProtocol, Opcode

from lanchatd.core import wsframe
from lanchatd.core.framing import TOO_LONG, Framing
from lanchatd.daemon.web.site import valid_host
from lanchatd.daemon.web.websocket import WebSocket

BROWSER = FrameProtocol(client=True, extensions=[])


def feed_in_pieces(web: WebSocket, data: bytes, cuts: list[int]) -> bytes:
    out, start = b"", 0
    for cut in [*sorted(c % (len(data) + 1) for c in cuts), len(data)]:
        out += web.receive(data[start:cut])
        start = max(start, cut)
    return out


@given(st.lists(st.text(max_size=300), max_size=8), st.lists(st.integers(0, 10_000), max_size=6))
def test_messages_become_one_line_each_however_they_are_cut(
    texts: list[str], cuts: list[int]
) -> None:
    data = b"".join(BROWSER.send_data(text.replace("\n", " ")) for text in texts)
    lines = feed_in_pieces(WebSocket(4096), data, cuts)
    assert lines == b"".join(text.replace("\n", " ").encode() + b"\n" for text in texts)


def test_a_fragmented_message_is_one_line() -> None:
    data = BROWSER.send_data("hel", fin=False) + BROWSER.send_data("lo", fin=True)
    assert WebSocket(100).receive(data) == b"hello\n"


def test_a_long_message_is_cut_just_past_the_limit_so_the_splitter_refuses_it() -> None:
    web = WebSocket(10)
    line = web.receive(BROWSER.send_data("x" * 5000))
    assert line == b"x" * 11 + b"\n"
    assert Framing.WEB.splitter(10).feed(line) == [TOO_LONG]
    assert web.receive(BROWSER.send_data("short")) == b"short\n"


def test_ping_is_owed_a_pong_and_close_ends_the_stream() -> None:
    web = WebSocket(100)
    assert web.receive(BROWSER.ping(b"p1") + BROWSER.send_data("hi")) == b"hi\n"
    assert web.take_replies() == wsframe.frame(wsframe.Opcode.PONG, b"p1")
    assert web.take_replies() == b""
    assert web.receive(BROWSER.close(1000, "bye") + BROWSER.send_data("late")) == b""
    assert web.closed


@given(st.binary(max_size=2000), st.lists(st.integers(0, 3000), max_size=5))
def test_any_bytes_never_raise_and_never_make_a_long_line(data: bytes, cuts: list[int]) -> None:
    web = WebSocket(64)
    for line in feed_in_pieces(web, data, cuts).split(b"\n"):
        assert len(line) <= 65


def test_unmasked_frames_from_a_client_break_the_protocol() -> None:
    web = WebSocket(100)
    assert web.receive(FrameProtocol(client=False, extensions=[]).send_data("x")) == b""
    assert web.closed


def test_server_frames_read_back_with_wsproto() -> None:
    reader = FrameProtocol(client=True, extensions=[])
    reader.receive_bytes(
        Framing.WEB.encode_safe("a: \x1b[31mred ☕") + wsframe.close_frame(4001, "k")
    )
    frames = list(reader.received_frames())
    assert (frames[0].opcode, frames[0].payload) == (Opcode.TEXT, "a: ^[[31mred ☕")
    assert (frames[1].opcode, frames[1].payload) == (Opcode.CLOSE, (4001, "k"))


def test_a_close_reason_is_cut_whole_characters_to_fit() -> None:
    frame = wsframe.close_frame(1000, "é" * 100)
    assert len(frame) == 2 + 2 + 122  # 61 two-byte characters: 123 bytes would split one


@given(st.binary(max_size=300))
def test_a_valid_host_is_only_ever_a_host_and_port(value: bytes) -> None:
    host = valid_host(value)
    if host is not None:
        assert set(host) <= set(string.ascii_letters + string.digits + ".-:[]")
        assert host.encode() == value


def test_hosts_people_type() -> None:
    for good in ("192.168.1.2:8080", "chat.lan", "[fd00::2]:8080", "localhost", "[::1]"):
        assert valid_host(good.encode()) == good
    for bad in ("a b", "<x>", "x:0", "x:65536", "[::g]", "-a.lan", "a..b", "", "a/b", "é.lan"):
        assert valid_host(bad.encode()) is None
