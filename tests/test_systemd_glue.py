"""lanchatd.daemon.systemd against the real protocols.

A real AF_UNIX datagram socket stands in for systemd's notify socket and receives the real
datagrams; `systemd-socket-activate` (from the systemd package) passes real listening sockets to
a real child process, which then serves real connections on them.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lanchatd.daemon.systemd import Notifier, listen_fds
from tests.support import free_port

REPO = Path(__file__).resolve().parents[1]
LISTEN_VARS = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: AF_UNIX paths are limited to 107 bytes."""
    with tempfile.TemporaryDirectory(prefix="lanchat-sd-") as name:
        yield Path(name)


@pytest.fixture
def notify_socket(short_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """Listen where NOTIFY_SOCKET points, as systemd does for a Type=notify service."""
    path = short_dir / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        monkeypatch.delenv("WATCHDOG_USEC", raising=False)
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
        yield sock


def receive(sock: socket.socket) -> dict[str, str]:
    """One datagram, parsed as sd_notify(3) assignments (one per line)."""
    data = sock.recv(65536).decode("utf-8")
    return dict(line.split("=", 1) for line in data.split("\n"))


def test_ready_carries_status(notify_socket: socket.socket) -> None:
    notifier = Notifier()
    assert notifier.enabled
    notifier.ready("listening on 0.0.0.0:5001")
    assert receive(notify_socket) == {"READY": "1", "STATUS": "listening on 0.0.0.0:5001"}


def test_status_cannot_inject_assignments(notify_socket: socket.socket) -> None:
    Notifier().status("alice\nWATCHDOG=trigger")
    assert receive(notify_socket) == {"STATUS": "alice WATCHDOG=trigger"}


def test_status_is_utf8_beyond_latin1(notify_socket: socket.socket) -> None:
    Notifier().status("3 clients: José, 李")
    assert notify_socket.recv(65536) == "STATUS=3 clients: José, 李".encode()


def test_reloading_carries_monotonic_clock(notify_socket: socket.socket) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    Notifier().reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    message = receive(notify_socket)
    assert message["RELOADING"] == "1"
    assert before <= int(message["MONOTONIC_USEC"]) <= after
    assert set(message) == {"RELOADING", "MONOTONIC_USEC"}


def test_stopping(notify_socket: socket.socket) -> None:
    Notifier().stopping()
    assert receive(notify_socket) == {"STOPPING": "1"}


def test_watchdog_pings_when_enabled(
    notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "10000000")
    notifier = Notifier()
    assert notifier.watchdog_interval == 5.0
    notifier.watchdog()
    assert receive(notify_socket) == {"WATCHDOG": "1"}


def test_watchdog_silent_when_disabled(notify_socket: socket.socket) -> None:
    notifier = Notifier()
    assert notifier.watchdog_interval is None
    notifier.watchdog()
    notifier.status("after the ping")
    # Datagrams keep their order: the first one to arrive is the status, so no ping was sent.
    assert receive(notify_socket) == {"STATUS": "after the ping"}


@pytest.mark.parametrize(
    ("usec", "pid", "interval"),
    [
        (None, None, None),
        ("6000000", None, 3.0),
        ("6000000", "self", 3.0),
        ("6000000", "parent", None),
        ("0", None, None),
        ("soon", None, None),
    ],
)
def test_watchdog_interval(
    monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None, interval: float | None
) -> None:
    pids = {None: None, "self": str(os.getpid()), "parent": str(os.getppid())}
    for name, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pids[pid])):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert Notifier().watchdog_interval == interval


def test_abstract_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"lanchat-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        Notifier().status("abstract")
        assert receive(sock) == {"STATUS": "abstract"}


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_outside_systemd_opens_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "10000000")
    before = open_fds()
    notifier = Notifier()
    assert not notifier.enabled
    notifier.ready("up")
    notifier.status("1 client")
    notifier.reloading()
    notifier.watchdog()
    notifier.stopping()
    assert open_fds() == before


def test_vanished_notify_socket_is_harmless(
    short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(short_dir / "gone"))
    notifier = Notifier()
    notifier.ready("up")
    notifier.stopping()


@pytest.fixture
def clean_listen_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in LISTEN_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_no_activation(clean_listen_env: pytest.MonkeyPatch) -> None:
    assert listen_fds() == {}


def test_activation_meant_for_another_process(clean_listen_env: pytest.MonkeyPatch) -> None:
    clean_listen_env.setenv("LISTEN_PID", str(os.getppid()))
    clean_listen_env.setenv("LISTEN_FDS", "2")
    clean_listen_env.setenv("LISTEN_FDNAMES", "chat:admin")
    assert listen_fds() == {}
    assert not set(LISTEN_VARS) & set(os.environ)


@pytest.mark.parametrize(
    ("fds", "names"), [("two", "chat:admin"), ("-1", ""), ("2", "chat"), ("1", "chat:admin")]
)
def test_malformed_activation(clean_listen_env: pytest.MonkeyPatch, fds: str, names: str) -> None:
    # Every case is rejected before a descriptor is touched (3 and 4 belong to pytest here).
    clean_listen_env.setenv("LISTEN_PID", str(os.getpid()))
    clean_listen_env.setenv("LISTEN_FDS", fds)
    clean_listen_env.setenv("LISTEN_FDNAMES", names)
    with pytest.raises(ValueError, match="malformed socket activation"):
        listen_fds()
    assert not set(LISTEN_VARS) & set(os.environ)


# The child reports what listen_fds() gave it, then serves one connection on every socket,
# answering with the socket's name.
CHILD = """
import json, os, sys
from lanchatd.daemon.systemd import listen_fds

groups = listen_fds()
report = {
    name: [
        {
            "family": s.family.name,
            "type": s.type.name,
            "address": s.getsockname(),
            "inheritable": s.get_inheritable(),
            "blocking": s.getblocking(),
        }
        for s in socks
    ]
    for name, socks in groups.items()
}
left = [v for v in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES") if v in os.environ]
print(json.dumps({"sockets": report, "env_left": left}), flush=True)
for name, socks in groups.items():
    for s in socks:
        s.settimeout(10)
        conn, _ = s.accept()
        conn.sendall(name.encode())
        conn.close()
"""


def wait_for_path(path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            pytest.fail(f"{path} did not appear within {timeout} s")
        time.sleep(0.02)


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(4096):
        chunks.append(chunk)
    return b"".join(chunks)


@pytest.fixture
def socket_activate() -> str:
    path = shutil.which("systemd-socket-activate")
    if path is None:
        pytest.skip("systemd-socket-activate not installed (Debian package systemd)")
    return path


@pytest.fixture
def activated(socket_activate: str, short_dir: Path) -> tuple[int, Path, list[str]]:
    """Command line running CHILD under systemd-socket-activate with a TCP and a Unix socket."""
    port = free_port()
    admin = short_dir / "admin.sock"
    return port, admin, [socket_activate, "-l", f"127.0.0.1:{port}", "-l", str(admin)]


def run_activated(argv: list[str], trigger: Path) -> tuple[subprocess.Popen[str], socket.socket]:
    """Start the activator, then connect to the Unix socket, which makes it exec the child."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [*argv, sys.executable, "-c", CHILD],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        wait_for_path(trigger, timeout=5)
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(10)
        conn.connect(str(trigger))
    except BaseException:
        proc.kill()
        proc.wait(timeout=5)
        raise
    return proc, conn


def test_socket_activation_with_names(activated: tuple[int, Path, list[str]]) -> None:
    port, admin, argv = activated
    proc, admin_conn = run_activated([*argv, "--fdname=chat:admin"], admin)
    try:
        assert proc.stdout is not None
        report = json.loads(proc.stdout.readline())
        with socket.create_connection(("127.0.0.1", port), timeout=10) as chat_conn:
            assert read_all(chat_conn) == b"chat"
        assert read_all(admin_conn) == b"admin"
        assert proc.wait(timeout=10) == 0
    finally:
        admin_conn.close()
        proc.kill()
        proc.wait(timeout=5)
    assert report["env_left"] == []
    chat, admin_socket = report["sockets"]["chat"], report["sockets"]["admin"]
    assert set(report["sockets"]) == {"chat", "admin"}
    assert chat == [
        {
            "family": "AF_INET",
            "type": "SOCK_STREAM",
            "address": ["127.0.0.1", port],
            "inheritable": False,
            "blocking": True,
        }
    ]
    assert admin_socket == [
        {
            "family": "AF_UNIX",
            "type": "SOCK_STREAM",
            "address": str(admin),
            "inheritable": False,
            "blocking": True,
        }
    ]


def test_socket_activation_without_names(activated: tuple[int, Path, list[str]]) -> None:
    port, admin, argv = activated
    proc, admin_conn = run_activated(argv, admin)
    try:
        assert proc.stdout is not None
        report = json.loads(proc.stdout.readline())
        # Both are "unknown"; the child serves them in descriptor order, TCP first.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as chat_conn:
            assert read_all(chat_conn) == b"unknown"
        assert read_all(admin_conn) == b"unknown"
        assert proc.wait(timeout=10) == 0
    finally:
        admin_conn.close()
        proc.kill()
        proc.wait(timeout=5)
    assert [s["family"] for s in report["sockets"]["unknown"]] == ["AF_INET", "AF_UNIX"]
