"""How long one delivery round takes over N clients, three ways.

Run ``python -m benchmarks.roundbench`` (``--help`` for the sizes). At N = 1000 in latency
mode each round carries one line, so the round's length is how much later the last client
gets it than the first: chatbench's p99 at N = 1000 is mostly this. The three rounds:
``Outbox.flush`` per client (the daemon's path for clients owed more than the newest
segment), a bare ``send`` per socket from one thread (what the tutorial's server does; it
separates Python's share from the kernel's), and ``FanOut.send`` (how the daemon sends the
newest segment to everyone else: in a large room the calling thread and a helper take the
sockets from one iterator). Real loopback TCP connections (TCP_NODELAY, as the daemon sets),
read by a separate process with epoll as the benchmark's generator reads them. Prints one
JSON object.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import select
import socket
import statistics
import time
from collections.abc import Callable
from multiprocessing.synchronize import Event

from lanchatd.core.framing import Framing
from lanchatd.daemon.fanout import FanOut
from lanchatd.daemon.journal import Journal, Outbox

FLAGS = socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL
LINE = b"x" * 79 + b"\n"
#: Rounds come this far apart, as at chatbench's 50 msg/s.
PAUSE = 0.02
READY_TIMEOUT = 30.0


def _read_all(port: int, clients: int, ready: Event) -> None:
    """The reading side: connect ``clients`` sockets and read whatever arrives until EOF."""
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(clients)]
    poller = select.epoll()
    by_fd = {}
    for sock in socks:
        sock.setblocking(False)
        poller.register(sock.fileno(), select.EPOLLIN)
        by_fd[sock.fileno()] = sock
    ready.set()
    buffer = bytearray(65536)
    while by_fd:
        for fd, _ in poller.poll(READY_TIMEOUT):
            try:
                if by_fd[fd].recv_into(buffer) == 0:
                    poller.unregister(fd)
                    del by_fd[fd]
            except BlockingIOError:
                pass


def _summary(seconds: list[float], clients: int) -> dict[str, float]:
    ordered = sorted(seconds)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)

    median = statistics.median(ordered)
    return {
        "p50_ms": at(0.5),
        "p90_ms": at(0.9),
        "p99_ms": at(0.99),
        "max_ms": round(ordered[-1] * 1000, 3),
        "us_per_client": round(median / clients * 1e6, 3),
    }


def measure(clients: int, rounds: int) -> dict[str, object]:
    """Take turns: a round of ``Outbox.flush``, of bare sends and of ``FanOut.send``,
    ``rounds`` each."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=clients)
    ready = multiprocessing.Event()
    reader = multiprocessing.Process(
        target=_read_all, args=(listener.getsockname()[1], clients, ready)
    )
    reader.start()
    conns = []
    fan_out = FanOut()
    fan_out.start()
    try:
        for _ in range(clients):
            conn, _ = listener.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conns.append(conn)
        if not ready.wait(READY_TIMEOUT):
            raise TimeoutError("the reading process did not connect")
        journal = Journal(Framing.CLASSIC)
        outboxes = [Outbox(journal, 0, conn.send) for conn in conns]
        sends: list[Callable[[bytes, int], int]] = [conn.send for conn in conns]
        flushed: list[float] = []
        bare: list[float] = []
        fanned: list[float] = []
        for _ in range(rounds):
            journal.append(LINE)
            journal.seal()
            start = time.perf_counter()
            for outbox in outboxes:
                outbox.flush(FLAGS)
            flushed.append(time.perf_counter() - start)
            journal.trim(journal.sealed_end)
            time.sleep(PAUSE)
            start = time.perf_counter()
            for send in sends:
                send(LINE, FLAGS)
            bare.append(time.perf_counter() - start)
            time.sleep(PAUSE)
            start = time.perf_counter()
            fan_out.send(conns, clients, LINE, FLAGS)
            fanned.append(time.perf_counter() - start)
            time.sleep(PAUSE)
    finally:
        fan_out.close()
        for conn in conns:
            conn.close()
        listener.close()
        reader.join(READY_TIMEOUT)
        if reader.is_alive():
            reader.kill()
    return {
        "clients": clients,
        "rounds": rounds,
        "outbox_flush": _summary(flushed, clients),
        "bare_send": _summary(bare, clients),
        "fan_out": _summary(fanned, clients),
    }


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.roundbench")
    parser.add_argument("--clients", type=int, default=1000, help="sockets per round [1000]")
    parser.add_argument("--rounds", type=int, default=200, help="rounds of each kind [200]")
    options = parser.parse_args(argv)
    figures = measure(options.clients, options.rounds)
    print(json.dumps(figures, indent=1))
    return figures


if __name__ == "__main__":
    main()
