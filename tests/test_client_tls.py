"""``lanchat --tls`` against the real daemon serving TLS with a throwaway certificate.

Both front ends (a script's pipe, a person's terminal), certificate checks and their
failures, a TLS client at a plain port and a plain client at a TLS port, and reconnection
over TLS. Every failure must be one line, a non-zero exit, and no traceback.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pexpect
import pytest

from lanchatd.client.link import TLS_CLOSE_TIMEOUT, Connection, Endpoint, join, tls_context
from tests.client_helpers import (
    CLIENT,
    WAIT,
    Clients,
    client_env,
    joined,
    quit_client,
    run_client,
    screen_text,
    spawn_client,
)
from tests.support import Daemon
from tests.support import join as join_line
from tests.tls_support import make_certificate

pytestmark = pytest.mark.timeout(90)

UNTRUSTED = "TLS certificate verification failed: self-signed certificate"
NOT_TLS = "the server does not speak TLS (try without --tls)"
TLS_HINT = "*** Port ini memakai TLS; sambungkan dengan: lanchat --tls"
NICK = ("--nick", "ci")
INSECURE = (
    "lanchat: warning: --insecure: the connection is encrypted but the server is not "
    "authenticated (its certificate is not checked)"
)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1, and its key."""
    return make_certificate(tmp_path_factory.mktemp("client-tls"))


@pytest.fixture
def cert(certificate: tuple[Path, Path]) -> str:
    return str(certificate[0])


def tls_args(certificate: tuple[Path, Path]) -> tuple[str, ...]:
    return ("--tls-cert", str(certificate[0]), "--tls-key", str(certificate[1]))


@pytest.fixture
def tls_daemon(certificate: tuple[Path, Path]) -> Iterator[Daemon]:
    with Daemon(*tls_args(certificate)) as running:
        yield running


@pytest.fixture
def plain_daemon(daemon: Daemon) -> Daemon:
    return daemon


def one_line_failure(mode: str, port: int, *args: str, host: str = "127.0.0.1") -> str:
    """Run a client that must fail: its only output is one line; exit 1, no traceback."""
    if mode == "pipe":
        result = run_client(port, "--nick", "ci", *args, stdin="hello\n", host=host)
        assert result.returncode == 1, result
        assert result.stdout == ""
        lines = result.stderr.splitlines()
    else:
        child = spawn_client(port, "--nick", "alice", *args, host=host)
        try:
            child.expect(pexpect.EOF)
        finally:
            child.close(force=True)
        assert child.exitstatus == 1, screen_text(child)
        lines = [line for line in screen_text(child).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    return lines[0]


# Working over TLS -------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_pipe_over_tls_posts_and_exits_zero(tls_daemon: Daemon, cert: str, host: str) -> None:
    # The certificate names both: an IP address SAN and a DNS name are each checked.
    bob = join_line(tls_daemon.port, "bob", cafile=cert)
    try:
        args = ("--tls", "--cafile", cert, "--nick", "ci")
        result = run_client(tls_daemon.port, *args, stdin="build ok\n", host=host)
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        assert result.stdout.splitlines()[:3] == [
            "ci Bergabung!",
            "Terkoneksi dengan Server!",
            "ci: build ok",
        ]
        bob.expect("ci: build ok")
        bob.expect("ci Keluar!")
    finally:
        bob.close()
    # A TLS stream cannot be half-closed, so the client says /quit at the end of its input
    # instead: it leaves at once, not after the server has been kept waiting.
    left = [line for line in tls_daemon.stderr if '"client_left"' in line and '"ci"' in line]
    assert len(left) == 1
    assert '"reason": "quit"' in left[0], left


def test_many_lines_over_tls_all_arrive_in_order(tls_daemon: Daemon, cert: str) -> None:
    lines = [f"line {number} " + "x" * 300 for number in range(45)]  # past the flood burst
    bob = join_line(tls_daemon.port, "bob", cafile=cert)
    try:
        result = run_client(
            tls_daemon.port, "--tls", "--cafile", cert, "--nick", "ci", stdin="\n".join(lines)
        )
        assert result.returncode == 0, result.stderr
        seen = bob.expect("ci Keluar!")
    finally:
        bob.close()
    assert [line for line in seen if line.startswith("ci: ")] == [f"ci: {x}" for x in lines]


def test_lanchat_tls_from_the_environment(tls_daemon: Daemon, cert: str) -> None:
    result = run_client(
        tls_daemon.port, "--cafile", cert, "--nick", "ci", stdin="hi\n", env={"LANCHAT_TLS": "1"}
    )
    assert result.returncode == 0, result.stderr
    assert "ci: hi" in result.stdout.splitlines()


def test_two_people_chat_over_tls(tls_daemon: Daemon, cert: str, terminals: Clients) -> None:
    bob = terminals.user(tls_daemon.port, "bob", cert)
    alice = terminals.spawn(tls_daemon.port, "--tls", "--cafile", cert, "--nick", "alice")
    alice.expect(r"connected to 127\.0\.0\.1:\d+ as alice \(TLSv1\.[23]\)")
    joined(alice)
    bob.expect("alice Bergabung!")
    alice.sendline("hello over tls")
    bob.expect("alice: hello over tls")
    alice.expect_exact("alice: hello over tls")
    bob.send("rahasia")
    alice.expect_exact("bob: rahasia")
    alice.sendline("/quit")
    alice.expect(pexpect.EOF)
    alice.close()
    assert alice.exitstatus == 0
    bob.expect("alice Keluar!")
    assert "Traceback" not in screen_text(alice)


def test_insecure_connects_and_warns_once(
    tls_daemon: Daemon, terminals: Clients, cert: str
) -> None:
    result = run_client(tls_daemon.port, "--tls", "--insecure", "--nick", "ci", stdin="hi\n")
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [INSECURE]
    assert "ci: hi" in result.stdout.splitlines()
    alice = terminals.spawn(tls_daemon.port, "--tls", "--insecure", "--nick", "alice")
    alice.expect_exact("encrypted but the server is not authenticated")
    alice.expect_exact("as alice (TLSv1.")
    alice.expect_exact("server NOT verified)")
    joined(alice)
    assert quit_client(alice) == 0
    assert screen_text(alice).count("--insecure") == 1


def test_closing_a_tls_connection_is_bounded(tls_daemon: Daemon, cert: str) -> None:
    """The daemon never answers a TLS close_notify, and asyncio waits 30 s for that answer
    by default; the client's own goodbye must not."""

    async def scenario() -> float:
        endpoint = Endpoint("127.0.0.1", tls_daemon.port, tls_context(cert))
        conn = await join(endpoint, "alice")
        assert isinstance(conn, Connection)
        assert conn.tls_version in {"TLSv1.2", "TLSv1.3"}
        started = time.monotonic()
        await conn.close()
        return time.monotonic() - started

    assert asyncio.run(scenario()) < TLS_CLOSE_TIMEOUT + 3


# Failing cleanly ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["pipe", "terminal"])
def test_untrusted_certificate_is_one_line(tls_daemon: Daemon, mode: str) -> None:
    line = one_line_failure(mode, tls_daemon.port, "--tls")
    assert line.startswith(f"lanchat: error: cannot connect to 127.0.0.1:{tls_daemon.port}: ")
    assert UNTRUSTED in line
    assert "pass it with --cafile" in line
    joins = [entry for entry in tls_daemon.stderr if '"client_joined"' in entry]
    assert joins == []


def test_certificate_for_another_name_is_one_line(tmp_path: Path) -> None:
    elsewhere = make_certificate(tmp_path, "elsewhere")  # valid for elsewhere and 127.0.0.1
    with Daemon(*tls_args(elsewhere)) as daemon:
        line = one_line_failure(
            "pipe", daemon.port, "--tls", "--cafile", str(elsewhere[0]), host="localhost"
        )
    assert "Hostname mismatch, certificate is not valid for 'localhost'" in line
    assert "a name or address the certificate was issued for" in line


@pytest.mark.parametrize("mode", ["pipe", "terminal"])
def test_tls_client_at_a_plain_port_is_one_line(plain_daemon: Daemon, mode: str) -> None:
    line = one_line_failure(mode, plain_daemon.port, "--tls")
    assert line == f"lanchat: error: cannot connect to 127.0.0.1:{plain_daemon.port}: {NOT_TLS}"


@pytest.mark.parametrize("mode", ["pipe", "terminal"])
def test_plain_client_at_a_tls_port_shows_the_servers_hint(tls_daemon: Daemon, mode: str) -> None:
    line = one_line_failure(mode, tls_daemon.port)
    assert line == (
        f"lanchat: error: 127.0.0.1:{tls_daemon.port} only takes TLS connections: {TLS_HINT}"
    )


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (("--cafile", "CERT"), "--cafile only applies with --tls"),
        (("--insecure",), "--insecure only applies with --tls"),
        (("--tls", "--cafile", "CERT", "--insecure"), "cannot be used together"),
        (("--tls", "--cafile", "KEY"), "no PEM certificate in"),
        (("--tls", "--cafile", "/nonexistent/ca.pem"), "does not exist"),
    ],
)
def test_option_mistakes_are_usage_errors(
    certificate: tuple[Path, Path], args: tuple[str, ...], complaint: str
) -> None:
    files = {"CERT": str(certificate[0]), "KEY": str(certificate[1])}
    args = tuple(files.get(arg, arg) for arg in args)
    result = run_client(1, "--nick", "ci", *args, stdin="hello\n")
    assert result.returncode == 2
    assert complaint in result.stderr
    assert "Traceback" not in result.stderr


# Reconnecting ------------------------------------------------------------------------------


def test_reconnects_over_tls_across_a_daemon_restart(
    tls_daemon: Daemon, cert: str, terminals: Clients
) -> None:
    alice = terminals.spawn(tls_daemon.port, "--tls", "--cafile", cert, "--nick", "alice")
    joined(alice)
    tls_daemon.stop()
    alice.expect_exact("*** Server dimatikan")
    alice.expect_exact("lost; reconnecting")
    alice.sendline("typed while away")
    alice.expect_exact("will be sent after reconnecting: typed while away")
    tls_daemon.start()  # the same port and the same certificate
    alice.expect_exact("reconnected to", timeout=30)
    alice.expect_exact("alice Bergabung!")
    alice.expect_exact("alice: typed while away")  # the server's echo: it was delivered
    bob = terminals.user(tls_daemon.port, "bob", cert)
    alice.expect_exact("bob Bergabung!")
    alice.sendline("back again")
    bob.expect("alice: back again")
    assert quit_client(alice) == 0
    # Both runs of the daemon took TLS only, and no attempt came in plaintext.
    assert not [line for line in tls_daemon.stderr if '"tls_failed"' in line]


def test_pipe_keeps_posting_over_tls_across_a_daemon_restart(tls_daemon: Daemon, cert: str) -> None:
    client = subprocess.Popen(
        [*CLIENT, "127.0.0.1", "--port", str(tls_daemon.port), "--tls", "--cafile", cert, *NICK],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=client_env(),
    )
    assert client.stdin is not None
    assert client.stderr is not None
    try:
        bob = join_line(tls_daemon.port, "bob", cafile=cert)
        client.stdin.write("before\n")
        client.stdin.flush()
        bob.expect("ci: before")
        bob.close()
        tls_daemon.stop()
        tls_daemon.start()
        carol = join_line(tls_daemon.port, "carol", cafile=cert)
        try:
            client.stdin.write("after\n")
            client.stdin.close()
            carol.expect("ci: after", timeout=30)
            assert client.wait(WAIT * 2) == 0
        finally:
            carol.close()
    finally:
        if client.poll() is None:
            client.kill()
            client.wait(WAIT)
    messages = client.stderr.read()
    assert "lost; reconnecting" in messages
    assert "reconnected" in messages
    assert "Traceback" not in messages


@pytest.mark.parametrize(
    ("client_tls", "expected"),
    [
        (True, NOT_TLS),  # the server came back without TLS
        (False, f"only takes TLS connections: {TLS_HINT}"),  # ... or with it
    ],
)
def test_a_server_back_in_the_other_mode_ends_the_retrying(
    certificate: tuple[Path, Path],
    terminals: Clients,
    start_daemon: Callable[..., Daemon],
    client_tls: bool,
    expected: str,
) -> None:
    """Retrying cannot cure a TLS mismatch: say why once and stop, not retry forever."""
    mode = tls_args(certificate) if client_tls else ()
    first = start_daemon(*mode)
    args = ("--tls", "--cafile", str(certificate[0])) if client_tls else ()
    alice = terminals.spawn(first.port, *args, "--nick", "alice")
    joined(alice)
    first.stop()
    alice.expect_exact("lost; reconnecting")
    other_mode = () if client_tls else tls_args(certificate)
    start_daemon("--port", str(first.port), *other_mode)
    started = time.monotonic()
    alice.expect_exact(expected, timeout=30)
    alice.expect_exact("not reconnecting")
    alice.expect(pexpect.EOF)
    alice.close()
    assert alice.exitstatus == 1
    assert time.monotonic() - started < 25
    assert "Traceback" not in screen_text(alice)
    assert screen_text(alice).count(expected) == 1
