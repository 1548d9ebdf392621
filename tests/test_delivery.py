"""The delivery thread in process: real TCP connections on 127.0.0.1, no daemon subprocess."""

from __future__ import annotations

import os
import socket
import struct
import threading
from collections.abc import Iterator

import pytest
import structlog

from lanchatd.core.framing import Framing
from lanchatd.daemon.delivery import TRIM_BYTES, TRIM_SEGMENTS, Delivery
from lanchatd.daemon.fanout import HELP_FROM
from lanchatd.daemon.peer import Peer
from lanchatd.daemon.reader import configure_socket
from tests.support import wait_until

WAIT = 10.0
#: Lines of 1000 bytes that a stalled client is sent: more than its kernel buffers hold.
LINES = 1000
#: Clients in the large-room test: each framing's half is enough to wake the fan-out helper.
ROOM = 2 * HELP_FROM + 20


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


class Harness:
    """A started ``Delivery`` and the far ends of the clients attached to it."""

    def __init__(self, send_buffer_bytes: int = 65536, *, start: bool = True) -> None:
        self.lock = threading.Lock()
        self.slow: list[Peer] = []
        self.slow_seen = threading.Event()
        self.failed: list[Peer] = []
        self.delivery = Delivery(
            self.lock, send_buffer_bytes, on_slow=self._on_slow, on_error=self._on_error
        )
        if start:
            self.delivery.start()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.far_ends: list[socket.socket] = []
        self.attached: list[Peer] = []

    def _on_slow(self, peer: Peer) -> None:
        self.slow.append(peer)
        self.slow_seen.set()

    def _on_error(self, peer: Peer) -> None:
        self.failed.append(peer)
        peer.shutdown()

    def attach(self, framing: Framing, receive_buffer: int = 0) -> tuple[Peer, socket.socket]:
        far = socket.socket()
        if receive_buffer:
            far.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        far.connect(self._listener.getsockname())
        far.settimeout(WAIT)
        self.far_ends.append(far)
        sock, (host, port) = self._listener.accept()
        configure_socket(sock, keepalive=0)
        peer = Peer(sock, host, port, structlog.get_logger())
        peer.framing = framing
        with self.lock:
            self.delivery.attach_locked(peer)
        self.attached.append(peer)
        peer.release()  # the reader's reference: here nobody reads
        return peer, far

    def detach(self, peer: Peer, *, graceful: bool) -> None:
        with self.lock:
            self.delivery.detach_locked(peer, graceful=graceful)
        self.attached.remove(peer)

    def stop(self) -> None:
        """Detach everyone still attached (as the room does at shutdown), then stop."""
        with self.lock:
            for peer in self.attached:
                self.delivery.detach_locked(peer, graceful=False)
            self.delivery.stop_locked()
        self.delivery.join(WAIT)
        assert not self.delivery.is_alive()
        self._listener.close()
        for far in self.far_ends:
            far.close()


@pytest.fixture
def harness() -> Iterator[Harness]:
    harness = Harness()
    yield harness
    harness.stop()


def receive(far: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = far.recv(size - len(data))
        assert chunk, f"closed after {data!r}"
        data += chunk
    return data


def test_a_stopped_delivery_thread_leaves_no_file_descriptor_open() -> None:
    before = _open_fds()
    lock = threading.Lock()
    delivery = Delivery(lock, 65536, on_slow=Peer.shutdown, on_error=Peer.shutdown)
    delivery.start()
    with lock:
        delivery.stop_locked()
    delivery.join(5.0)
    assert not delivery.is_alive()
    assert _open_fds() == before


def test_each_client_gets_broadcasts_and_its_unicasts_in_one_order_in_its_framing(
    harness: Harness,
) -> None:
    delivery, lock = harness.delivery, harness.lock
    alice, alice_far = harness.attach(Framing.LINE)
    with lock:
        delivery.broadcast_locked("alice joined")
        delivery.unicast_locked(alice, "welcome")
    bob, bob_far = harness.attach(Framing.CLASSIC)
    with lock:
        delivery.broadcast_locked("bob joined")
        delivery.unicast_locked(bob, "welcome")
        delivery.broadcast_locked("alice: hi")
    harness.detach(bob, graceful=True)
    with lock:
        delivery.broadcast_locked("bob left")
    expected_alice = b"alice joined\nwelcome\nbob joined\nalice: hi\nbob left\n"
    assert receive(alice_far, len(expected_alice)) == expected_alice
    expected_bob = b"bob joinedwelcomealice: hi"
    assert receive(bob_far, len(expected_bob)) == expected_bob
    assert bob_far.recv(100) == b""  # detached: nothing after its final position
    harness.detach(alice, graceful=False)
    assert alice_far.recv(100) == b""
    assert delivery.bytes_out == len(expected_alice) + len(expected_bob)
    assert delivery.lines_out == 5 + 3


def test_a_batch_reaches_each_framing_as_its_lines_would_one_by_one(harness: Harness) -> None:
    delivery, lock = harness.delivery, harness.lock
    alice, alice_far = harness.attach(Framing.LINE)
    _, bob_far = harness.attach(Framing.CLASSIC)
    with lock:
        delivery.broadcast_many_locked("bob: ", ["hi", "\x1b[2J caf\u00e9"])
        delivery.unicast_locked(alice, "welcome")
        delivery.broadcast_many_locked("alice: ", ["yo"])
    delivery.deliver_now()
    expected_alice = b"bob: hi\nbob: ^[[2J caf\xc3\xa9\nwelcome\nalice: yo\n"
    assert receive(alice_far, len(expected_alice)) == expected_alice
    expected_bob = b"bob: hibob: ^[[2J cafealice: yo"
    assert receive(bob_far, len(expected_bob)) == expected_bob
    assert delivery.lines_out == 3 * 2 + 1


def test_a_batch_is_sent_by_the_thread_that_queued_it() -> None:
    """``deliver_now`` runs the round itself: here no delivery thread runs yet."""
    harness = Harness(start=False)
    try:
        _, far = harness.attach(Framing.LINE)
        with harness.lock:
            harness.delivery.broadcast_many_locked("bob: ", ["hi", "there"])
        harness.delivery.deliver_now()
        expected = b"bob: hi\nbob: there\n"
        assert receive(far, len(expected)) == expected
    finally:
        harness.delivery.start()
        harness.stop()


def test_a_batch_queued_during_another_threads_round_is_sent_by_the_delivery_thread(
    harness: Harness,
) -> None:
    delivery = harness.delivery
    _, far = harness.attach(Framing.LINE)
    with harness.lock:
        delivery.broadcast_locked("first")
    assert receive(far, 6) == b"first\n"  # the delivery thread is idle again
    with delivery._round_lock:  # a round under way in another thread, sealed before this
        with harness.lock:
            delivery.broadcast_many_locked("bob: ", ["late"])
        delivery.deliver_now()
    expected = b"bob: late\n"
    assert receive(far, len(expected)) == expected


def test_a_segment_sealed_without_its_fan_out_still_reaches_the_ready_clients(
    harness: Harness,
) -> None:
    """As after a round that failed between sealing and sending: the next round sends each
    ready client everything from its cursor, not only the newest segment."""
    delivery = harness.delivery
    _, far = harness.attach(Framing.LINE)
    with harness.lock:
        delivery.broadcast_locked("first")
    assert receive(far, 6) == b"first\n"  # ready now, and the delivery thread idle
    with delivery._round_lock, harness.lock:
        journal = delivery.journals[Framing.LINE, False]
        journal.append(b"sealed, never sent\n")
        journal.seal()
    with harness.lock:
        delivery.broadcast_many_locked("bob: ", ["next"])
    delivery.deliver_now()
    expected = b"sealed, never sent\nbob: next\n"
    assert receive(far, len(expected)) == expected


def test_batches_from_many_threads_at_once_reach_everyone_in_one_order(harness: Harness) -> None:
    """Threads queueing and sending at once: a round another thread runs hands the batch to
    the next round, so each client gets every line, all in the same order."""
    senders, batches = 8, 200
    fars = [harness.attach(Framing.LINE)[1] for _ in range(3)]
    delivery, lock = harness.delivery, harness.lock

    def send(sender: int) -> None:
        for batch in range(batches):
            with lock:
                delivery.broadcast_many_locked(f"{sender}: ", [f"{batch:03}a", f"{batch:03}b"])
            delivery.deliver_now()

    threads = [threading.Thread(target=send, args=(sender,)) for sender in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    size = sum(len(f"{sender}: 000a\n") * 2 * batches for sender in range(senders))
    received = [receive(far, size).decode().splitlines() for far in fars]
    assert received[0] == received[1] == received[2]
    for sender in range(senders):
        mine = [line for line in received[0] if line.startswith(f"{sender}: ")]
        expected = [f"{sender}: {batch:03}{half}" for batch in range(batches) for half in "ab"]
        assert mine == expected


def test_a_client_that_does_not_read_is_dropped_and_was_sent_what_the_kernel_took() -> None:
    harness = Harness(send_buffer_bytes=10_000)
    try:
        stalled, far = harness.attach(Framing.LINE, receive_buffer=4096)
        with harness.lock:
            for index in range(LINES):
                harness.delivery.broadcast_locked(f"{index:04} " + "x" * 995)
        assert harness.slow_seen.wait(WAIT)
        assert harness.slow == [stalled]
        received = b""
        while chunk := far.recv(65536):
            received += chunk
        assert len(received) == harness.delivery.bytes_out
        assert (
            received
            == b"".join(f"{i:04} ".encode() + b"x" * 995 + b"\n" for i in range(LINES))[
                : len(received)
            ]
        )
    finally:
        harness.stop()


def test_the_journal_forgets_what_every_client_was_sent(harness: Harness) -> None:
    _, far = harness.attach(Framing.LINE)
    journal = harness.delivery.journals[Framing.LINE, False]
    for _ in range(TRIM_BYTES // 1000 + 100):
        with harness.lock:
            harness.delivery.broadcast_locked("y" * 999)
        assert receive(far, 1000) == b"y" * 999 + b"\n"

    def trimmed() -> bool:
        segments = list(journal.segments)
        return bool(segments) and (
            segments[0][0] > 0
            and len(segments) < TRIM_SEGMENTS
            and journal.sealed_end - segments[0][0] < TRIM_BYTES
        )

    wait_until(trimmed, what="the journal trimmed to what is unsent or below the thresholds")


def test_a_large_room_keeps_each_order_through_a_drop_a_reset_and_a_departure() -> None:
    """One stalled reader (dropped), one that resets its connection (an error on send) and one
    that leaves: the others get every byte of their own stream in order, and bytes_out is
    exactly what arrived."""
    harness = Harness(send_buffer_bytes=10_000)
    try:
        clients = [
            harness.attach(Framing.LINE if index % 2 else Framing.CLASSIC) for index in range(ROOM)
        ]
        stalled, stalled_far = harness.attach(Framing.LINE, receive_buffer=4096)
        stalled.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        reset, reset_far = clients.pop()
        reset_far.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        reset_far.close()
        leaving, leaving_far = clients.pop(1)
        received = {peer: b"" for peer, _ in clients}
        expected = {}
        with harness.lock:
            harness.delivery.broadcast_locked("first")
            for index, (peer, _) in enumerate([*clients, (leaving, leaving_far)]):
                harness.delivery.unicast_locked(peer, f"hello {index}")
                end = b"\n" if peer.framing is Framing.LINE else b""
                expected[peer] = b"first" + end + f"hello {index}".encode() + end
        harness.detach(leaving, graceful=True)
        for index in range(LINES):
            if harness.slow_seen.is_set():
                break
            line = f"{index:04} " + "x" * 994
            with harness.lock:
                harness.delivery.broadcast_locked(line)
            for peer, far in clients:
                end = b"\n" if peer.framing is Framing.LINE else b""
                expected[peer] += line.encode() + end
                received[peer] += receive(far, len(expected[peer]) - len(received[peer]))
        assert harness.slow_seen.wait(WAIT)
        assert (harness.slow, harness.failed) == ([stalled], [reset])
        assert received == {peer: expected[peer] for peer, _ in clients}
        assert receive(leaving_far, len(expected[leaving])) == expected[leaving]
        assert leaving_far.recv(100) == b""
        stalled_received = b""
        while chunk := stalled_far.recv(65536):
            stalled_received += chunk
        assert stalled_received.startswith(b"first\n0000 ")
        assert harness.delivery.bytes_out == (
            sum(map(len, received.values())) + len(expected[leaving]) + len(stalled_received)
        )
    finally:
        harness.stop()
