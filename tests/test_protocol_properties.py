"""Property tests: hostile bytes, arbitrary splits, both framings — the core never breaks."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from lanchatd.core.framing import TOO_LONG, Framing, LineSplitter
from lanchatd.core.lines import REMOVALS
from lanchatd.core.protocol import (
    GREETING,
    MAX_NICK_REPLY,
    ClientConnection,
    EndOfStream,
    InvalidUtf8,
    Line,
    LineTooLong,
    Message,
    Nick,
    NickReply,
    Refusal,
    Removal,
    ServerConnection,
)

LIMIT = 64
#: Any text a peer can really send: no surrogates (not encodable), no line terminators.
LINE_TEXT = st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n")


def splits(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the given offsets (sorted, deduplicated), as a peer's reads might be."""
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, start = [], 0
    for point in [*points, len(data)]:
        pieces.append(data[start:point])
        start = point
    return [p for p in pieces if p]


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=2000), st.lists(st.integers(min_value=0), max_size=20))
def test_splitter_never_raises_and_stays_bounded(data: bytes, cuts: list[int]) -> None:
    splitter = LineSplitter(LIMIT)
    for piece in splits(data, cuts):
        for line in splitter.feed(piece):
            assert line is TOO_LONG or (isinstance(line, bytes) and len(line) <= LIMIT)
        assert splitter.buffered <= LIMIT + 1


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.text(alphabet=LINE_TEXT, max_size=20)),
    st.lists(st.integers(min_value=0), max_size=20),
)
def test_valid_lines_round_trip_exactly_whatever_the_splits(
    texts: list[str], cuts: list[int]
) -> None:
    wire = b"".join(Framing.LINE.encode(t) for t in texts)
    splitter = LineSplitter(1 << 20)
    out: list[bytes] = []
    for piece in splits(wire, cuts):
        out.extend(splitter.feed(piece))  # type: ignore[arg-type]
    assert [line.decode() for line in out] == texts


@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=600), min_size=1, max_size=12), st.booleans())
def test_server_protocol_never_raises_on_hostile_reads(reads: list[bytes], grace: bool) -> None:
    server = ServerConnection(LIMIT)
    events = []
    for index, chunk in enumerate(reads):
        events.extend(server.receive_data(chunk))
        if grace and index == 0:
            events.extend(server.grace_expired())
    assert server._splitter.buffered <= LIMIT + 1
    assert sum(1 for chunk in server._chunks for _ in chunk) <= MAX_NICK_REPLY
    for event in events:
        assert isinstance(event, NickReply | Message | LineTooLong | InvalidUtf8)
        if isinstance(event, Message):
            assert "\n" not in event.text
            assert len(event.text.encode()) <= LIMIT


@settings(max_examples=200, deadline=None)
@given(
    st.text(alphabet=LINE_TEXT, min_size=1, max_size=32),
    st.lists(st.text(alphabet=LINE_TEXT, max_size=30)),
    st.lists(st.integers(min_value=0), max_size=10),
)
def test_line_client_messages_reach_the_server_intact(
    nick: str, texts: list[str], cuts: list[int]
) -> None:
    server = ServerConnection(4096)
    client = ClientConnection()
    client.receive_data(GREETING)
    wire = client.send(Nick(nick)) + b"".join(client.send(Message(t)) for t in texts)
    events = []
    for piece in splits(wire, cuts):
        events.extend(server.receive_data(piece))
    assert events[0] == NickReply(nick.encode(), Framing.LINE)
    assert events[1:] == [Message(t) for t in texts]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000), st.lists(st.integers(min_value=0), max_size=20))
def test_client_protocol_never_raises(data: bytes, cuts: list[int]) -> None:
    client = ClientConnection(max_line_bytes=LIMIT)
    for piece in splits(b"NICK" + data, cuts):
        client.receive_data(piece)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000), st.lists(st.integers(min_value=0), max_size=20))
def test_client_after_answering_never_raises_and_is_refused_at_most_once(
    data: bytes, cuts: list[int]
) -> None:
    client = ClientConnection(max_line_bytes=LIMIT)
    client.receive_data(GREETING)
    client.send(Nick("alice"))
    events = []
    for piece in splits(data, cuts):
        events.extend(client.receive_data(piece))
    events.extend(client.receive_data(b""))
    assert events[-1] == EndOfStream()
    refusals = [i for i, e in enumerate(events) if isinstance(e, Refusal)]
    assert refusals in ([], [0])
    if refusals:
        assert events[1:] == [EndOfStream()]
    for event in events[:-1]:
        assert isinstance(event, Line | Refusal | Removal)
        assert len(event.text.encode()) <= 3 * LIMIT  # U+FFFD may stand for one byte
        assert not isinstance(event, Removal) or event.key in REMOVALS


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)),
    st.sampled_from(list(Framing)),
)
def test_a_batch_is_encoded_as_its_lines_one_by_one(texts: list[str], framing: Framing) -> None:
    assert framing.encode_safe_many(texts) == b"".join(map(framing.encode_safe, texts))


def test_a_batch_of_ascii_and_of_unsafe_lines_is_encoded_exactly() -> None:
    texts = ["a: hi", "a: \x1b[2J", "a: caf\u00e9 \u202e"]
    assert Framing.LINE.encode_safe_many(texts[:1]) == b"a: hi\n"
    assert Framing.LINE.encode_safe_many(texts) == (b"a: hi\na: ^[[2J\na: caf\xc3\xa9 <U+202E>\n")
    assert Framing.CLASSIC.encode_safe_many(texts) == b"a: hia: ^[[2Ja: cafe <U+202E>"
