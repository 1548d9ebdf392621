"""The accept path under siege (issue 10): connections that never answer ``NICK`` have their
own pool, so they cannot lock out people who want to join, and refusals are logged as a
summary per address, not a line each."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import pytest
import structlog
from structlog.testing import capture_logs

from lanchatd.daemon.refusals import RefusalLog
from tests.support import WAIT, LineClient, wait_until

SHED = b"NICK*** Terlalu banyak koneksi yang sedang memilih nickname; coba lagi\n"


def _silent(port: int, source: str) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), WAIT, source_address=(source, 0))


@pytest.mark.parametrize("handshakes", [1024, 256])
def test_silent_connections_cannot_lock_anyone_out(
    start_daemon, clients: list, figures: Callable[[str], None], handshakes: int
) -> None:
    daemon = start_daemon(config=f"[server]\nmax_handshakes = {handshakes}\n")
    # 64 addresses x 16 (the per-address limit) = 1024 = max_clients, none answering NICK.
    silent = [_silent(daemon.port, f"127.0.0.{10 + a}") for a in range(64) for _ in range(16)]
    clients += silent
    wait_until(lambda: len(daemon.find("client_connected")) == len(silent), 60, "all accepted")
    started = time.monotonic()
    newcomer = LineClient(daemon.port, "newcomer", source="127.0.0.200")
    clients.append(newcomer)
    assert newcomer.line() == "newcomer Bergabung!"
    joined = time.monotonic() - started
    figures(
        f"join beside 1024 silent connections from 64 addresses, max_handshakes "
        f"{handshakes}: {joined * 1000:.0f} ms"
    )
    assert joined < 1.0
    # The pool was full: the oldest made room and were told why.
    oldest = silent[0]
    oldest.settimeout(WAIT)
    received = b""
    while chunk := oldest.recv(4096):
        received += chunk
    assert received == SHED
    daemon.wait_event("client_joined", nick="newcomer")  # logged after every shed
    shed = 1025 - handshakes
    assert len(daemon.find("client_refused", host="127.0.0.10")) == 1, f"one line, not {shed}"


def test_refusals_from_one_address_are_logged_once(start_daemon, clients: list) -> None:
    server = start_daemon(config="[limits]\nper_address = 1\n")
    clients.append(LineClient(server.port, "alice", source="127.0.0.7"))
    for _ in range(50):
        with _silent(server.port, "127.0.0.7") as extra:
            extra.settimeout(WAIT)
            assert extra.recv(4096).startswith(b"*** Terlalu banyak koneksi dari alamat Anda")
    bob = LineClient(server.port, "bob")  # logs after the refusals: the log has caught up
    clients.append(bob)
    server.wait_event("client_joined", nick="bob")
    refused = server.find("client_refused")
    assert [(e["host"], e["reason"]) for e in refused] == [("127.0.0.7", "per_address")]


def test_refusal_summary_per_address_and_interval() -> None:
    refusals = RefusalLog(structlog.get_logger(), interval=10.0)
    with capture_logs() as logs:
        refusals.refused("10.0.0.1", 1000, "server_full", now=0.0)
        for second in range(1, 5):
            refusals.refused("10.0.0.1", 1000 + second, "per_address", now=float(second))
        refusals.refused("10.0.0.2", 2000, "banned", now=5.0)
        assert refusals.flush(now=6.0) == 4.0
        assert refusals.flush(now=10.0) == 5.0
        assert refusals.flush(now=15.0) is None
        refusals.refused("10.0.0.1", 1010, "server_full", now=16.0)
    assert [(e["event"], e["host"], e.get("count"), e.get("reasons")) for e in logs] == [
        ("client_refused", "10.0.0.1", None, None),
        ("client_refused", "10.0.0.2", None, None),
        ("clients_refused", "10.0.0.1", 4, {"per_address": 4}),
        ("client_refused", "10.0.0.1", None, None),
    ]
