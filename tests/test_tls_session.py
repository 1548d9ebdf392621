"""The sans-IO TLS session: two sessions wired together in memory, no sockets."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from lanchatd.daemon.tls import TLS_HANDSHAKE_BYTE, TlsError, TlsSession, server_context
from tests.tls_support import make_certificate


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_certificate(tmp_path_factory.mktemp("tls"))


def client_context(cert: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(cert))
    return context


def connect(certificate: tuple[Path, Path]) -> tuple[TlsSession, TlsSession]:
    server = TlsSession(server_context(*certificate), server_side=True)
    client = TlsSession(client_context(certificate[0]), server_side=False, hostname="localhost")
    done_client, to_server = client.handshake_step(b"")
    assert to_server[0] == TLS_HANDSHAKE_BYTE
    done_server = False
    while not (done_client and done_server):
        done_server, to_client = server.handshake_step(to_server)
        done_client, to_server = client.handshake_step(to_client)
    if to_server:
        server.decrypt(to_server)
    return server, client


def test_round_trip_both_ways(certificate: tuple[Path, Path]) -> None:
    server, client = connect(certificate)
    assert server.decrypt(client.encrypt(b"NICK reply\n")) == b"NICK reply\n"
    records = server.encrypt(memoryview(b"x" * 100_000))
    received = b"".join(client.decrypt(records[i : i + 1000]) for i in range(0, len(records), 1000))
    assert received == b"x" * 100_000


def test_wrong_certificate_fails_cleanly(tmp_path: Path, certificate: tuple[Path, Path]) -> None:
    other = make_certificate(tmp_path, "other")
    server = TlsSession(server_context(*other), server_side=True)
    client = TlsSession(client_context(certificate[0]), server_side=False, hostname="localhost")
    _, hello = client.handshake_step(b"")
    _, reply = server.handshake_step(hello)
    with pytest.raises(TlsError):
        client.handshake_step(reply)


def test_plaintext_is_not_a_handshake(certificate: tuple[Path, Path]) -> None:
    server = TlsSession(server_context(*certificate), server_side=True)
    with pytest.raises(TlsError):
        server.handshake_step(b"alice\n")


def test_close_notify_is_seen_as_the_end(certificate: tuple[Path, Path]) -> None:
    server, client = connect(certificate)
    assert server.decrypt(client.encrypt(b"last\n")) == b"last\n"
    assert not server.peer_closed
    assert server.decrypt(client.close()) == b""
    assert server.peer_closed
