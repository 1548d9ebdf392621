"""Coverage-guided fuzzing of the wire decoder (atheris / libFuzzer).

Drives the sans-IO core exactly as the daemon and the client do, on arbitrary bytes cut into
arbitrary reads, and checks the same invariants as tests/test_protocol_properties.py, plus a
reference model of each decoder:

- nothing but the expected events ever comes out, and no exception escapes;
- buffers never grow past their limits (a line's worth; a nickname reply's worth);
- how the bytes are cut into reads changes nothing in line mode (the events equal those of a
  plain model computed on the whole stream), and classic mode treats each read as messages;
- valid input from a well-behaved peer (our client, the original tutorial client, the server
  towards a client) round-trips exactly.

Run for a fixed time (install with ``pip install -e '.[fuzz]'``)::

    .venv/bin/python fuzz/fuzz_protocol.py -max_total_time=60

Any libFuzzer flag works (``-runs=N``, ``-artifact_prefix=DIR/``, a corpus directory).
A failing input is written as ``crash-<sha1>``; replay it with
``.venv/bin/python fuzz/fuzz_protocol.py crash-<sha1>``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

with atheris.instrument_imports(include=["lanchatd"]):
    from lanchatd.core.framing import TOO_LONG, Framing, LineSplitter, split_classic
    from lanchatd.core.lines import ReceivedLine, classify_line
    from lanchatd.core.nicknames import MAX_NICK_CHARS, NickError, parse_nick
    from lanchatd.core.protocol import (
        GREETING,
        MAX_NICK_REPLY,
        ClientConnection,
        ClientState,
        HandshakeState,
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
    from lanchatd.core.tags import CapRequest, is_cap, parse_cap

MAX_CUTS = 24


# Inputs -------------------------------------------------------------------------------------


def take_cuts(fdp: atheris.FuzzedDataProvider) -> list[int]:
    return [fdp.ConsumeIntInRange(0, 1 << 16) for _ in range(fdp.ConsumeIntInRange(0, MAX_CUTS))]


def cut(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` as a peer's successive reads: cut at the given offsets, no empty read."""
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, start = [], 0
    for point in [*points, len(data)]:
        pieces.append(data[start:point])
        start = point
    return [piece for piece in pieces if piece]


def take_text(fdp: atheris.FuzzedDataProvider, most: int) -> str:
    return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, most))


# Reference models: the contract, written plainly, on the whole stream -------------------------


def reference_lines(stream: bytes, limit: int) -> list[bytes | object]:
    """What a LineSplitter must yield for ``stream``, however it was cut."""
    *lines, tail = stream.split(b"\n")
    out: list[bytes | object] = []
    for line in lines:
        text = line[:-1] if line.endswith(b"\r") else line
        out.append(text if len(text) <= limit else TOO_LONG)
    # An unfinished line is reported as soon as it cannot fit any more (a trailing \r may
    # still turn out to be part of \r\n).
    if len(tail) > limit + 1 or (len(tail) == limit + 1 and not tail.endswith(b"\r")):
        out.append(TOO_LONG)
    return out


def reference_decode(item: bytes | object, limit: int) -> object:
    if item is TOO_LONG:
        return LineTooLong(limit)
    assert isinstance(item, bytes)
    try:
        return Message(item.decode())
    except UnicodeDecodeError:
        return InvalidUtf8()


def reference_classic(chunk: bytes, limit: int) -> list[object]:
    parts = [p[:-1] if p.endswith(b"\r") else p for p in chunk.split(b"\n")]
    return [
        reference_decode(p if len(p) <= limit else TOO_LONG, limit) for p in parts if p.strip(b"\r")
    ]


def reference_server(reads: list[bytes], grace_after: set[int], limit: int) -> list[object]:
    """The events a server connection must produce for these reads and grace expiries."""
    held: list[bytes] = []
    framing: Framing | None = None
    nick = b""
    line_stream = b""
    classic_reads: list[bytes] = []
    caps: list[object] = []  # /cap lines before the nickname (core/tags.py)
    tagged = False
    for index, chunk in enumerate(reads):
        if framing is None:
            held.append(chunk)
            joined = b"".join(held)
            newline = joined.find(b"\n")
            while newline >= 0 and is_cap(joined[:newline].decode(errors="replace")):
                cap = parse_cap(joined[:newline].decode(errors="replace"))
                caps.append(cap)
                tagged = tagged or cap.ids
                joined = joined[newline + 1 :]
                held = [joined] if joined else []
                newline = joined.find(b"\n")
            if newline >= 0:
                framing, nick, line_stream = Framing.LINE, joined[:newline], joined[newline + 1 :]
            elif len(joined) > MAX_NICK_REPLY:
                framing, nick = (Framing.LINE if tagged else Framing.CLASSIC), joined
        elif framing is Framing.LINE:
            line_stream += chunk
        else:
            classic_reads.append(chunk)
        if index in grace_after and framing is None and held and not tagged:
            framing, nick = Framing.CLASSIC, held[0]
            classic_reads.extend(held[1:])
    if framing is None:
        return caps
    events: list[object] = [*caps, NickReply(nick, framing)]
    if framing is Framing.LINE:
        events += [reference_decode(item, limit) for item in reference_lines(line_stream, limit)]
    else:
        for chunk in classic_reads:
            events += reference_classic(chunk, limit)
    return events


# Targets ------------------------------------------------------------------------------------


def fuzz_splitter(fdp: atheris.FuzzedDataProvider, limit: int) -> None:
    cuts = take_cuts(fdp)
    stream = fdp.ConsumeBytes(fdp.remaining_bytes())
    splitter = LineSplitter(limit)
    out: list[bytes | object] = []
    for piece in cut(stream, cuts):
        for item in splitter.feed(piece):
            assert item is TOO_LONG or (
                isinstance(item, bytes) and len(item) <= limit and b"\n" not in item
            ), item
            out.append(item)
        assert splitter.buffered <= limit + 1, (splitter.buffered, limit)
    assert out == reference_lines(stream, limit), (out, stream)
    # Split-invariance: one read of the whole stream yields the same.
    assert LineSplitter(limit).feed(stream) == out


def check_nick(raw: bytes) -> None:
    """What the daemon does next with a nickname reply: accept it or refuse it, nothing else."""
    try:
        nick = parse_nick(raw)
    except NickError as error:
        refused = error.key
    else:
        refused = ""
    if refused:
        assert refused.startswith("nick_"), refused
        return
    assert 1 <= len(nick) <= MAX_NICK_CHARS
    assert nick == nick.strip()
    assert nick.isprintable()
    assert ":" not in nick
    assert "*" not in nick
    assert not nick.startswith("-")


def fuzz_server(fdp: atheris.FuzzedDataProvider, limit: int) -> None:
    grace_bits = fdp.ConsumeIntInRange(0, (1 << MAX_CUTS) - 1)
    cuts = take_cuts(fdp)
    stream = fdp.ConsumeBytes(fdp.remaining_bytes())
    reads = cut(stream, cuts)
    grace_after = {i for i in range(len(reads)) if grace_bits >> i & 1}
    server = ServerConnection(limit)
    events: list[object] = []
    for index, chunk in enumerate(reads):
        events += server.receive_data(chunk)
        if index in grace_after:
            was_waiting = server.awaiting_grace
            expired = server.grace_expired()
            assert bool(expired) == was_waiting
            events += expired
        # Bounded: at most one nickname reply is held, at most one line is buffered.
        held = sum(len(c) for c in server._chunks)
        assert held <= MAX_NICK_REPLY, held
        assert server._splitter.buffered <= limit + 1
        assert (server.framing is None) == (server.state is not HandshakeState.OPEN)
        assert server.awaiting_grace == (server.state is HandshakeState.GRACE)
    replies = [e for e in events if isinstance(e, NickReply)]
    assert len(replies) <= 1
    caps = 0
    while caps < len(events) and isinstance(events[caps], CapRequest):
        caps += 1
    opened = events[caps:]
    if opened:
        assert isinstance(opened[0], NickReply)
        check_nick(opened[0].raw)
    for event in opened[1:]:
        assert isinstance(event, Message | LineTooLong | InvalidUtf8), event
        if isinstance(event, Message):
            assert "\n" not in event.text
            assert len(event.text.encode()) <= limit
        elif isinstance(event, LineTooLong):
            assert event.limit == limit
    assert events == reference_server(reads, grace_after, limit), (events, reads, grace_after)


def fuzz_round_trip(fdp: atheris.FuzzedDataProvider, limit: int) -> None:
    classic = fdp.ConsumeBool()
    nick = take_text(fdp, 40).replace("\n", "").replace("\r", "")
    texts = [take_text(fdp, 2 * limit) for _ in range(fdp.ConsumeIntInRange(0, 8))]
    cuts = take_cuts(fdp)
    server = ServerConnection(limit)
    events: list[object] = []
    if classic:
        # The original tutorial client: the bare nickname, then one message per send.
        nick = nick[: MAX_NICK_REPLY // 4] or "x"
        texts = [t.replace("\n", " ").replace("\r", " ") for t in texts]
        texts = [t for t in texts if t]
        events += server.receive_data(nick.encode())
        events += server.grace_expired()
        for text in texts:
            events += server.receive_data(text.encode())
        sent = texts
    else:
        # Our own client (and netcat): a nickname line, then message lines, cut anyhow. A
        # first line that is a /cap line is never a nickname (docs/protocol.md).
        nick = "x" + nick if is_cap(nick) else nick
        client = ClientConnection()
        client.receive_data(GREETING)
        wire = client.send(Nick(nick))
        wire += b"".join(client.send(Message(t)) for t in texts)
        for piece in cut(wire, cuts):
            events += server.receive_data(piece)
        sent = [t.replace("\r", " ").replace("\n", " ") for t in texts]
    framing = Framing.CLASSIC if classic else Framing.LINE
    expected: list[object] = [NickReply(nick.encode(), framing)]
    expected += [Message(t) if len(t.encode()) <= limit else LineTooLong(limit) for t in sent]
    assert events == expected, (events, expected)


def fuzz_client(fdp: atheris.FuzzedDataProvider, limit: int) -> None:
    greet = fdp.ConsumeBool()
    cuts = take_cuts(fdp)
    body = fdp.ConsumeBytes(fdp.remaining_bytes())
    stream = GREETING + body if greet else body
    client = ClientConnection(limit)
    events: list[object] = []
    for piece in cut(stream, cuts):
        new = client.receive_data(piece)
        events += new
        assert client._splitter.buffered <= limit + 1
        if any(isinstance(e, ProtocolError) for e in new):
            break  # the real client gives up on a peer that does not speak the protocol
        if client.state is ClientState.AWAIT_GREETING:
            assert GREETING.startswith(client._pending)
    errors = [e for e in events if isinstance(e, ProtocolError)]
    if stream.startswith(GREETING):
        assert not errors
        assert events[0] == NickRequested()
        expected = [
            Line(item.decode(errors="replace"))
            for item in reference_lines(body, limit)
            if item is not TOO_LONG
        ]
        assert events[1:] == expected, (events, expected)
        for event in events[1:]:
            assert isinstance(classify_line(event.text), ReceivedLine)
    elif stream and not GREETING.startswith(stream[: len(GREETING)]):
        assert len(errors) == 1
        assert events == errors
    else:
        assert not events  # nothing yet, or only the start of a greeting


def fuzz_client_round_trip(fdp: atheris.FuzzedDataProvider, limit: int) -> None:
    """Lines the server sends reach a line-mode client exactly, however they are cut."""
    texts = [take_text(fdp, limit) for _ in range(fdp.ConsumeIntInRange(0, 8))]
    texts = [t.replace("\n", " ").replace("\r", " ") for t in texts]
    cuts = take_cuts(fdp)
    wire = GREETING + b"".join(Framing.LINE.encode(t) for t in texts)
    client = ClientConnection(limit)
    events: list[object] = []
    for piece in cut(wire, cuts):
        events += client.receive_data(piece)
    assert events == [NickRequested()] + [Line(t) for t in texts if len(t.encode()) <= limit]
    # The classic split of one read never raises and never yields an empty message.
    assert all(part.strip(b"\r") for part in split_classic(wire))


TARGETS = (fuzz_splitter, fuzz_server, fuzz_round_trip, fuzz_client, fuzz_client_round_trip)


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    target = TARGETS[fdp.ConsumeIntInRange(0, len(TARGETS) - 1)]
    limit = fdp.ConsumeIntInRange(1, 300)
    target(fdp, limit)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
