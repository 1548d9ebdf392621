"""A round shared by the delivery thread and its helper, in process: no sockets."""

from __future__ import annotations

import os
import threading

import pytest

from lanchatd.core.framing import Framing
from lanchatd.daemon.journal import Journal, Outbox
from lanchatd.daemon.senders import Senders

WAIT = 10.0
two_cpus = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one CPU: no helper")


class Wire:
    """Takes every byte and notes which thread sent it; ``fail`` makes it raise instead, and
    ``meet`` makes it wait until another send reaches the same barrier."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.threads: set[int] = set()
        self.fail: BaseException | None = None
        self.meet: threading.Barrier | None = None

    def send(self, data: memoryview, _flags: int) -> int:
        if self.meet is not None:
            self.meet.wait(WAIT)
        if self.fail is not None:
            raise self.fail
        self.threads.add(threading.get_ident())
        self.received += data
        return len(data)


def room(clients: int) -> tuple[Journal, list[Wire], list[Outbox]]:
    journal = Journal(Framing.LINE)
    journal.append(b"hi\n")
    journal.seal()
    wires = [Wire() for _ in range(clients)]
    return journal, wires, [Outbox(journal, 0, wire.send) for wire in wires]


def helper_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "delivery-helper"]


@two_cpus
def test_a_large_round_is_sent_by_two_threads_and_the_outcomes_keep_their_order() -> None:
    before = helper_threads()
    senders = Senders(0, split_min=4)
    try:
        _, wires, outboxes = room(8)
        # The first two sends wait for each other: the round only gets past them on two threads.
        wires[0].meet = wires[1].meet = threading.Barrier(2)
        wires[5].fail = ConnectionResetError()
        outcomes, sent = senders.flush(outboxes)
        assert outcomes[:5] == [True] * 5
        assert isinstance(outcomes[5], ConnectionResetError)
        assert outcomes[6:] == [True, True]
        assert sent == 7 * 3
        assert [bytes(w.received) for w in wires] == [b"hi\n"] * 5 + [b""] + [b"hi\n"] * 2
        assert len(set().union(*(w.threads for w in wires))) == 2
        assert all(len(w.threads) == 1 for w in wires if w.received)
    finally:
        senders.close()
    assert helper_threads() == before


def test_a_small_round_stays_on_the_calling_thread() -> None:
    senders = Senders(0, split_min=4)
    try:
        _, wires, outboxes = room(3)
        assert senders.flush(outboxes) == ([True] * 3, 9)
        assert all(w.threads == {threading.get_ident()} for w in wires)
    finally:
        senders.close()


@two_cpus
def test_a_failure_on_either_thread_is_raised_by_flush_and_the_next_round_works() -> None:
    senders = Senders(0, split_min=2)
    try:
        journal, wires, outboxes = room(2)
        wires[0].meet = wires[1].meet = threading.Barrier(2)
        wires[1].fail = RuntimeError("a bug")  # not a socket error: flush_one lets it through
        with pytest.raises(RuntimeError, match="a bug"):
            senders.flush(outboxes)
        wires[0].meet = wires[1].meet = wires[1].fail = None
        journal.append(b"again\n")
        journal.seal()
        assert senders.flush(outboxes) == ([True, True], 6 + 9)
        assert [bytes(w.received) for w in wires] == [b"hi\nagain\n", b"hi\nagain\n"]
    finally:
        senders.close()
