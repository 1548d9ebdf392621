"""Churn: thousands of connects and disconnects, with traffic, leave nothing behind."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tests.support import WAIT, Daemon, LineClient, join, wait_until


def resources(pid: int) -> tuple[int, int]:
    """Open file descriptors and threads of a process, from /proc."""
    fds = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    status = Path(f"/proc/{pid}/status").read_text()
    threads = int(status.split("Threads:")[1].split()[0])
    return fds, threads


def churn_once(port: int, index: int) -> str:
    """One short-lived client; the way it ends varies with ``index``."""
    style = ("join_quit", "join_close", "handshake_close", "reset_mid_line", "silent_close")[
        index % 5
    ]
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    try:
        if style == "silent_close":
            return style
        sock.recv(4)
        if style == "handshake_close":
            sock.sendall(b"hal")
            return style
        sock.sendall(f"churn{index}\n".encode())
        if style == "join_quit":
            sock.sendall(b"bye\n/quit\n")
            while sock.recv(65536):
                pass
        elif style == "reset_mid_line":
            sock.sendall(b"half a li")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            sock.sendall(b"hello\n")
        return style
    finally:
        sock.close()


def test_churn_with_traffic_returns_to_baseline(
    start_daemon: Callable[..., Daemon], clients: list, figures: Callable[[str], None]
) -> None:
    # Four churners from one address outrun the per-address limit: that limit has its own test.
    server = start_daemon(config="[limits]\nrate = 0\nper_address = 0\n")
    pid = server.process.pid
    sender = join(server.port, "sender")
    watchers = [join(server.port, f"watch{i}") for i in range(2)]
    clients += [sender, *watchers]
    for client in [sender, watchers[0]]:
        client.expect("watch1 Bergabung!")
    before = resources(pid)

    count, done = 3000, threading.Event()

    def send_steadily() -> None:
        for i in range(count):
            sender.send(f"tick {i}")
            if i % 50 == 49:
                time.sleep(0.01)
        done.set()

    heard: dict[str, list[str]] = {}

    def listen(client: LineClient, name: str) -> None:
        lines = heard.setdefault(name, [])
        while not lines or lines[-1] != f"sender: tick {count - 1}":
            lines.append(client.line(timeout=30))

    threads = [threading.Thread(target=send_steadily)] + [
        threading.Thread(target=listen, args=(c, n))
        for c, n in [(sender, "sender"), (watchers[0], "w0"), (watchers[1], "w1")]
    ]
    for thread in threads:
        thread.start()

    cycles, started = 2000, time.monotonic()
    styles: dict[str, int] = {}
    lock = threading.Lock()

    def churn(offset: int) -> None:
        for index in range(offset, cycles, 4):
            style = churn_once(server.port, index)
            with lock:
                styles[style] = styles.get(style, 0) + 1

    churners = [threading.Thread(target=churn, args=(k,)) for k in range(4)]
    for thread in churners:
        thread.start()
    for thread in churners + threads:
        thread.join(60)
    churn_seconds = time.monotonic() - started
    assert done.is_set()

    after = wait_until(lambda: resources(pid) == before and resources(pid), what="baseline")
    for name, lines in heard.items():
        ticks = [line for line in lines if line.startswith("sender: ")]
        assert ticks == [f"sender: tick {i}" for i in range(count)], name
    assert sum(styles.values()) == cycles
    assert server.find("client_refused") == []
    joined = len(server.find("client_joined"))
    figures(
        f"churn: {cycles} connections ({styles}) in {churn_seconds:.1f}s alongside {count} "
        f"messages to 3 steady clients; {joined} joins logged; fds/threads before "
        f"{before[0]}/{before[1]}, after {after[0]}/{after[1]}"
    )
