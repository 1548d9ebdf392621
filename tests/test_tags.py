"""The tag format and the ``/cap ids`` negotiation in the sans-IO core (core/tags.py,
core/protocol.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from lanchatd.core.framing import Framing
from lanchatd.core.protocol import (
    ClientConnection,
    Line,
    Message,
    Nick,
    NickReply,
    OfferIds,
    ServerConnection,
)
from lanchatd.core.tags import (
    CapRequest,
    MessageId,
    event_tags,
    format_tags,
    format_time,
    parse_cap,
    parse_time,
    split_tags,
)

keys = st.from_regex(r"[a-z0-9-]+", fullmatch=True)
values = st.text(st.characters(blacklist_characters=";= \\\n\r"), max_size=20)
texts = st.text(st.characters(blacklist_characters="\n\r"), max_size=40)


@given(st.dictionaries(keys, st.none() | values, min_size=1, max_size=5), texts)
def test_tags_round_trip(tags: dict[str, str | None], text: str) -> None:
    assert split_tags(format_tags(tags) + text) == (tags, text)


@given(
    st.integers(0, 2**48), st.integers(0, 2**20), st.floats(0, 4e9, allow_nan=False), st.booleans()
)
def test_event_tags_round_trip_through_a_line(ms: int, seq: int, at: float, history: bool) -> None:
    line = Line.tagged(format_tags(event_tags(MessageId(ms, seq), at, history=history)) + "a: b")
    assert (line.id, line.history, line.text) == (MessageId(ms, seq), history, "a: b")
    assert line.time == format_time(at)
    moment = parse_time(line.time)
    assert moment is not None
    assert abs(moment.timestamp() - at) < 0.001


def test_time_is_rfc3339_utc_with_milliseconds() -> None:
    assert format_time(1764900000.1234) == "2025-12-05T02:00:00.123Z"


def test_an_untagged_or_malformed_line_is_read_without_raising() -> None:
    assert split_tags("alice: @x") == ({}, "alice: @x")
    assert Line.tagged("@id=nonsense;time;=x;missed=-1 hi") == Line("hi", None, None)


def test_cap_lines() -> None:
    assert parse_cap("/cap ids") == CapRequest(True)
    assert parse_cap("/cap ids after=5-1 later") == CapRequest(True, MessageId(5, 1))
    assert parse_cap("/cap ids after=5") == CapRequest(True, None, "5")
    assert parse_cap("/cap other") == CapRequest(False)


def test_negotiation_between_the_two_sides() -> None:
    server, client = ServerConnection(1024), ClientConnection()
    client.receive_data(b"NICK")
    wire = client.send(OfferIds(MessageId(7, 2))) + client.send(Nick("alice"))
    assert wire == b"/cap ids after=7-2\nalice\n"
    events = server.receive_data(wire[:5]) + server.receive_data(wire[5:] + b"hi\n")
    assert events == [
        CapRequest(True, MessageId(7, 2)),
        NickReply(b"alice", Framing.LINE),
        Message("hi"),
    ]
    assert server.tagged
    assert server.send(Line("*** x"), 0.0) == b"@time=1970-01-01T00:00:00.000Z *** x\n"
    (joined,) = client.receive_data(b"@id=1-0;time=1970-01-01T00:00:00.000Z alice joined!\n")
    assert joined == Line("alice joined!", MessageId(1, 0), "1970-01-01T00:00:00.000Z")


def test_after_cap_the_nickname_never_counts_as_classic() -> None:
    server = ServerConnection(1024)
    assert server.receive_data(b"/cap ids\nbob") == [CapRequest(True)]
    assert not server.awaiting_grace
    assert server.receive_data(b"\n") == [NickReply(b"bob", Framing.LINE)]


def test_a_cap_line_cut_across_reads_ends_the_grace_it_started() -> None:
    server = ServerConnection(1024)
    assert server.receive_data(b"/ca") == []
    assert server.awaiting_grace
    assert server.receive_data(b"p ids\n") == [CapRequest(True)]
    assert not server.awaiting_grace
    assert server.grace_expired() == []
    assert server.receive_data(b"ann\n") == [NickReply(b"ann", Framing.LINE)]
