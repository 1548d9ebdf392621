"""The chat port over TLS: real handshakes on real sockets, and clean failures both ways."""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest

from lanchatd.daemon.tls import TlsSession
from tests.support import BIN, ISOLATED, WAIT, Daemon, LineClient, join
from tests.tls_support import make_certificate


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def tls_daemon(certificate: tuple[Path, Path]):
    cert, key = certificate
    server = Daemon("--tls-cert", str(cert), "--tls-key", str(key))
    yield server
    server.kill()


def test_chat_over_tls(tls_daemon: Daemon, certificate, clients: list) -> None:
    alice = join(tls_daemon.port, "alice", cafile=certificate[0], server_hostname="localhost")
    bob = join(tls_daemon.port, "bob", cafile=certificate[0], server_hostname="localhost")
    clients += [alice, bob]
    assert alice.line() == "bob Bergabung!"
    bob.send("rahasia")
    assert alice.line() == "bob: rahasia"
    assert bob.line() == "bob: rahasia"
    bob.send("/quit")
    assert alice.line() == "bob Keluar!"
    assert bob.closed() == b"bob Keluar!\n"


def test_bulk_traffic_over_tls_arrives_whole_and_in_order(
    certificate: tuple[Path, Path], tmp_path: Path, clients: list
) -> None:
    config = tmp_path / "lanchatd.toml"
    config.write_text(
        "[server]\nsend_buffer_bytes = 16777216\n[limits]\nrate = 0\n"  # 3 MB never overflows
        f'[tls]\ncert = "{certificate[0]}"\nkey = "{certificate[1]}"\n'
    )
    server = Daemon(config=config)
    try:
        sender = join(server.port, "sender", cafile=certificate[0], server_hostname="localhost")
        reader = join(server.port, "reader", cafile=certificate[0], server_hostname="localhost")
        clients += [sender, reader]
        sender.line()
        payload = "z" * 2000
        count = 1500  # 3 MB: many records, partial sends, the cipher backlog path
        got: list[str] = []
        thread = threading.Thread(target=lambda: got.extend(reader.lines(count, timeout=60)))
        thread.start()
        for i in range(count):
            sender.send(f"{i} {payload}")
        thread.join(60)
        assert got == [f"sender: {i} {payload}" for i in range(count)]
    finally:
        server.kill()


def test_plaintext_client_on_tls_port_is_told(tls_daemon: Daemon, clients: list) -> None:
    plain = socket.create_connection(("127.0.0.1", tls_daemon.port), timeout=WAIT)
    clients.append(plain)
    data = b""
    while chunk := plain.recv(1024):
        data += chunk
    assert data == b"*** Port ini memakai TLS; sambungkan dengan: lanchat --tls\n"
    assert "plaintext" in tls_daemon.wait_event("tls_failed")["error"]


def test_tls_client_on_plain_port_fails_cleanly(daemon: Daemon, certificate, clients: list) -> None:
    context = ssl.create_default_context(cafile=str(certificate[0]))
    raw = socket.create_connection(("127.0.0.1", daemon.port), timeout=WAIT)
    with pytest.raises(ssl.SSLError):
        context.wrap_socket(raw, server_hostname="localhost")
    raw.close()
    assert daemon.wait_event("nick_rejected", reason="tls_on_plain_port")
    clients.append(join(daemon.port, "still-fine"))


def test_untrusted_certificate_is_refused_by_the_client(tls_daemon: Daemon, tmp_path: Path) -> None:
    other, _ = make_certificate(tmp_path, "other")
    with pytest.raises(ssl.SSLCertVerificationError):
        LineClient(tls_daemon.port, cafile=other, server_hostname="localhost")
    assert tls_daemon.wait_event("tls_failed")


def test_reload_reads_a_renewed_certificate(
    certificate: tuple[Path, Path], tmp_path: Path, clients: list
) -> None:
    cert, key = tmp_path / "live.crt", tmp_path / "live.key"
    cert.write_bytes(certificate[0].read_bytes())
    key.write_bytes(certificate[1].read_bytes())
    server = Daemon("--tls-cert", str(cert), "--tls-key", str(key))
    try:
        (tmp_path / "new").mkdir()
        renewed = make_certificate(tmp_path / "new")
        cert.write_bytes(renewed[0].read_bytes())
        key.write_bytes(renewed[1].read_bytes())
        server.signal(signal.SIGHUP)
        server.wait_event("config_reloaded")
        clients.append(join(server.port, "renewed", cafile=renewed[0], server_hostname="localhost"))
        with pytest.raises(ssl.SSLCertVerificationError):
            LineClient(server.port, cafile=certificate[0], server_hostname="localhost")
    finally:
        server.kill()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tls-cert", "/nonexistent.crt", "--tls-key", "/nonexistent.key"], "cannot read"),
        (["--tls-cert", "/nonexistent.crt"], "command line: [tls] cert and key must be given"),
    ],
)
def test_bad_tls_settings_are_one_line_exit_2(args: list[str], message: str) -> None:
    result = subprocess.run(
        [str(BIN / "lanchatd"), "--host", "127.0.0.1", "--port", "0", *ISOLATED, *args],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("lanchatd: error: ")
    assert message in result.stderr
    assert result.stderr.count("\n") == 1


def test_tls_close_notify_ends_the_session_at_once(tls_daemon: Daemon, certificate, clients):
    alice = join(tls_daemon.port, "alice", cafile=certificate[0], server_hostname="localhost")
    clients.append(alice)
    context = ssl.create_default_context(cafile=str(certificate[0]))
    bob = TlsSession(context, server_side=False, hostname="localhost")
    raw = socket.create_connection(("127.0.0.1", tls_daemon.port), timeout=WAIT)
    clients.append(raw)
    finished, hello = bob.handshake_step(b"")
    raw.sendall(hello)
    while not finished:
        finished, reply = bob.handshake_step(raw.recv(65536))
        raw.sendall(reply)
    raw.sendall(bob.encrypt(b"bob\n"))
    assert alice.line() == "bob Bergabung!"
    raw.sendall(bob.close())  # close_notify, and the socket stays open
    assert alice.line() == "bob Keluar!"
    assert tls_daemon.wait_event("client_left", nick="bob")["reason"] == "disconnect"
    received = b""
    while data := raw.recv(65536):
        received += bob.decrypt(data)
    assert received.endswith(b"bob Keluar!\n"), "the lines it was owed, then the end"
    assert bob.peer_closed, "the daemon answered with its own close_notify"
