"""FanOut in process: real connected socket pairs, the helper thread as the daemon runs it."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator

import pytest

from lanchatd.daemon.fanout import HELP_FROM, FanOut
from tests.support import wait_until

WAIT = 10.0
DATA = b"x" * 79 + b"\n"
FLAGS = socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL

two_cpus = pytest.mark.skipif(
    len(os.sched_getaffinity(0)) < 2, reason="the helper runs only with two CPUs or more"
)


@pytest.fixture
def pairs() -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    made = [socket.socketpair() for _ in range(HELP_FROM + 10)]
    yield made
    for near, far in made:
        near.close()
        far.close()


@pytest.fixture
def fan_out() -> Iterator[FanOut]:
    sender = FanOut()
    sender.start()
    yield sender
    sender.close()


def _fill(sock: socket.socket) -> None:
    """Send until ``sock`` takes no more."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    while True:
        try:
            sock.send(b"." * 4096, FLAGS)
        except BlockingIOError:
            return


def _drain(sock: socket.socket) -> int:
    """Read what ``sock`` holds without waiting; how many bytes that was."""
    total = 0
    while True:
        try:
            chunk = sock.recv(65536, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return total
        if not chunk:
            return total
        total += len(chunk)


@two_cpus
def test_while_one_thread_waits_on_a_socket_the_other_sends_to_the_rest(
    pairs: list[tuple[socket.socket, socket.socket]], fan_out: FanOut
) -> None:
    """A blocking send to a full socket holds one of the two threads; every other client is
    sent its line meanwhile, and once that socket is read the call returns with all sent."""
    stuck_near, stuck_far = pairs[0]
    _fill(stuck_near)
    result: list[list[tuple[int, int]]] = []
    caller = threading.Thread(
        target=lambda: result.append(fan_out.send([n for n, _ in pairs], len(pairs), DATA, 0)),
        daemon=True,
    )
    caller.start()
    try:
        others = [far for _, far in pairs[1:]]
        for far in others:
            far.settimeout(WAIT)
        assert [far.recv(len(DATA) * 2) for far in others] == [DATA] * len(others)
    finally:  # reading the full socket lets the blocked send finish
        wait_until(
            lambda: (_drain(stuck_far), not caller.is_alive())[1], WAIT, "the call to return"
        )
    assert result == [[]]


@two_cpus
def test_short_and_failed_sends_are_reported_by_index_with_the_helper(
    pairs: list[tuple[socket.socket, socket.socket]], fan_out: FanOut
) -> None:
    full_near, full_far = pairs[3]
    _fill(full_near)
    closed = {5, 40, len(pairs) - 1}
    for index in closed:
        pairs[index][1].close()
    short = fan_out.send([near for near, _ in pairs], len(pairs), DATA, FLAGS)
    assert sorted(short) == sorted([(3, 0), *((index, 0) for index in closed)])
    for index, (_, far) in enumerate(pairs):
        if index not in closed | {3}:
            assert far.recv(len(DATA) * 2) == DATA
    assert _drain(full_far) > 0


def test_after_close_the_calling_thread_sends_alone(
    pairs: list[tuple[socket.socket, socket.socket]],
) -> None:
    sender = FanOut()
    sender.start()
    assert sender.is_alive()
    sender.close()
    wait_until(lambda: not sender.is_alive() or len(os.sched_getaffinity(0)) < 2, WAIT)
    assert sender.send([near for near, _ in pairs], len(pairs), DATA, FLAGS) == []
    assert [far.recv(len(DATA) * 2) for _, far in pairs] == [DATA] * len(pairs)
