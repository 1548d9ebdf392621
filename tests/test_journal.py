"""The journal and the outbox in process, byte by byte: no sockets, no threads.

``Wire`` stands in for a non-blocking socket: it takes at most ``budget`` more bytes and
raises ``BlockingIOError`` when it takes none, as ``socket.send(..., MSG_DONTWAIT)`` does; a
short send means it is full, so the outbox stops there until the next round.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lanchatd.core.framing import Framing
from lanchatd.daemon.journal import TLS_CHUNK, Journal, Outbox
from tests.test_tls_session import connect
from tests.tls_support import make_certificate


class Wire:
    def __init__(self, budget: int = 1 << 30) -> None:
        self.budget = budget
        self.received = bytearray()
        self.calls = 0

    def send(self, data: memoryview, _flags: int) -> int:
        self.calls += 1
        taken = min(len(data), self.budget)
        if not taken:
            raise BlockingIOError
        self.received += data[:taken]
        self.budget -= taken
        return taken


def journal_with(*broadcasts: bytes) -> Journal:
    journal = Journal(Framing.LINE)
    for data in broadcasts:
        journal.append(data)
    journal.seal()
    return journal


def test_journal_positions_are_absolute_and_sealing_makes_one_segment() -> None:
    journal = Journal(Framing.LINE)
    journal.append(b"ab\n")
    journal.append(b"cde\n")
    assert (journal.end, journal.sealed_end) == (7, 0)
    assert journal.seal() is True
    assert journal.seal() is False
    journal.append(b"f\n")
    assert (journal.end, journal.sealed_end) == (9, 7)
    journal.seal()
    assert list(journal.segments) == [(0, b"ab\ncde\n"), (7, b"f\n")]
    assert [journal.segment_at(pos)[0] for pos in range(9)] == [0] * 7 + [7] * 2


def test_trim_forgets_only_segments_wholly_before_the_lowest_cursor() -> None:
    journal = Journal(Framing.LINE)
    for data in (b"one\n", b"two\n", b"three\n"):
        journal.append(data)
        journal.seal()
    journal.trim(7)
    assert list(journal.segments) == [(4, b"two\n"), (8, b"three\n")]
    journal.trim(8)
    assert list(journal.segments) == [(8, b"three\n")]
    with pytest.raises(LookupError):
        journal.segment_at(7)
    journal.trim(14)
    assert not journal.segments


def test_a_socket_taking_one_byte_at_a_time_gets_every_byte_in_order() -> None:
    journal = journal_with(b"alice joined\n", b"bob: hi\n")
    outbox = Outbox(journal, 0, (wire := Wire(budget=0)).send)
    outbox.add_unicast(13, memoryview(b"welcome\n"))  # after "alice joined\n"
    expected = b"alice joined\nwelcome\nbob: hi\n"
    for sent in range(1, len(expected) + 1):
        assert outbox.flush(0) is False
        assert bytes(wire.received) == expected[: sent - 1]
        assert outbox.backlog == len(expected) - (sent - 1)
        wire.budget = 1
    assert outbox.flush(0) is True
    assert bytes(wire.received) == expected
    assert outbox.backlog == 0
    assert (outbox.cursor, outbox.unicast_bytes, len(outbox.unicast)) == (journal.end, 0, 0)


def test_a_unicast_keeps_its_place_inside_a_segment() -> None:
    """Queued between two broadcasts that were sealed together, it is sent between them."""
    journal = Journal(Framing.LINE)
    outbox = Outbox(journal, journal.end, (wire := Wire()).send)
    journal.append(b"first\n")
    outbox.add_unicast(journal.end, memoryview(b"just you\n"))
    journal.append(b"second\n")
    outbox.add_unicast(journal.end, memoryview(b"you again\n"))
    journal.seal()
    assert outbox.flush(0) is True
    assert bytes(wire.received) == b"first\njust you\nsecond\nyou again\n"


def test_a_client_attached_later_gets_only_what_came_after() -> None:
    journal = journal_with(b"before\n")
    outbox = Outbox(journal, journal.end, (wire := Wire()).send)
    journal.append(b"after\n")
    assert outbox.flush(0) is True
    assert wire.received == b""  # appended but not sealed: not sent yet
    journal.seal()
    assert outbox.flush(0) is True
    assert wire.received == b"after\n"


def test_a_departing_client_gets_what_was_queued_before_it_left_and_no_more() -> None:
    journal = journal_with(b"one\n")
    outbox = Outbox(journal, 0, (wire := Wire(budget=2)).send)
    outbox.final_pos = journal.end
    journal.append(b"two\n")
    journal.seal()
    assert outbox.flush(0) is False
    wire.budget = 100
    assert outbox.flush(0) is True
    assert wire.received == b"one\n"


def test_a_full_socket_costs_one_call_and_keeps_everything_owed() -> None:
    journal = journal_with(b"x" * 10)
    outbox = Outbox(journal, 0, (wire := Wire(budget=4)).send)
    outbox.add_unicast(10, memoryview(b"yy"))
    assert outbox.flush(0) is False
    assert (outbox.cursor, outbox.backlog, wire.calls) == (4, 8, 1)
    wire.budget = 7
    assert outbox.flush(0) is False
    assert (outbox.cursor, outbox.unicast_bytes, bytes(outbox.unicast[0][1])) == (10, 1, b"y")
    wire.budget = 1
    assert outbox.flush(0) is True
    assert wire.received == b"x" * 10 + b"yy"


def test_a_short_send_of_the_newest_segment_leaves_the_rest_for_the_next_round() -> None:
    journal = journal_with(b"one\n")
    outbox = Outbox(journal, 0, (wire := Wire()).send)
    assert outbox.flush(0) is True
    journal.append(b"two\n")
    journal.append(b"three\n")
    journal.seal()
    wire.budget = 5
    assert outbox.flush(0) is False  # a short send: the rest waits for the next round
    assert (outbox.cursor, wire.calls) == (9, 2)
    wire.budget = 100
    assert outbox.flush(0) is True
    assert (bytes(wire.received), outbox.backlog, wire.calls) == (b"one\ntwo\nthree\n", 0, 3)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_certificate(tmp_path_factory.mktemp("tls"))


def test_tls_encrypts_one_chunk_at_a_time_and_delivers_every_byte(
    certificate: tuple[Path, Path],
) -> None:
    server, client = connect(certificate)
    plaintext = bytes(range(256)) * 1000  # 256000 bytes: four chunks
    journal = journal_with(plaintext)
    outbox = Outbox(journal, 0, (wire := Wire(budget=0)).send, server)
    outbox.add_unicast(journal.end, memoryview(b"bye\n"))
    assert outbox.flush(0) is False
    assert outbox.cursor == TLS_CHUNK  # one chunk encrypted, its records all waiting
    assert TLS_CHUNK < len(outbox.cipher) < TLS_CHUNK + 1024
    assert outbox.backlog == len(plaintext) - TLS_CHUNK + 4 + len(outbox.cipher)
    decrypted = b""
    while not outbox.flush(0):
        decrypted += client.decrypt(bytes(wire.received))
        wire.received.clear()
        wire.budget = 5000
    decrypted += client.decrypt(bytes(wire.received))
    assert decrypted == plaintext + b"bye\n"
    assert outbox.backlog == 0
