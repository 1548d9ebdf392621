"""The reader thread against hostile and careless clients (issue 10): flood control reads
more slowly instead of queueing, and whatever a client sent, its slot, nickname and memory
are released within a second of it going, being kicked or being banned.

Real daemon, real sockets; every wait has a deadline.
"""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from lanchatd.daemon.reader import KERNEL_BUFFER
from tests.support import Daemon, LineClient, join, lanchatctl
from tests.test_faults import daemon_send_buffer
from tests.web_helpers import WebClient, web_join

#: How soon a departed client's slot and nickname must be free again.
RELEASE = 1.0
#: Flood control tight enough that a test's burst is still being paced when it acts.
SLOW = "[limits]\nrate = 2\nburst = 2\nper_address = 2\n"


def _gone_within(server: Daemon, nick: str, since: float) -> float:
    """Seconds from ``since`` until ``nick`` left, as the daemon logged it."""
    server.wait_event("client_left", timeout=RELEASE + 2, nick=nick)
    return time.monotonic() - since


def _rejoin(server: Daemon, nick: str, clients: list, since: float, source: str = "") -> str:
    """Join as ``nick`` again within RELEASE of ``since`` (from the same address by default);
    return how long after ``since`` that succeeded, as a figure.

    The slot is released just after the leave is logged, so a refusal is retried until then.
    """
    while True:
        try:
            client = LineClient(server.port, nick, source=source)
        except AssertionError:  # turned away with a line where NICK should be
            assert time.monotonic() - since < RELEASE, "slot not released in time"
            time.sleep(0.02)
            continue
        clients.append(client)
        assert client.line() == f"{nick} Bergabung!"
        return f"{(time.monotonic() - since) * 1000:.0f} ms"


def _flooded(
    start_daemon,
    clients: list,
    lines: int,
    config: str = SLOW,
    watcher_source: str = "",
    *,
    page: bool = False,
) -> tuple[Daemon, LineClient, LineClient | WebClient]:
    """A daemon, a watcher and a client that sent ``lines`` lines at once and is now paused
    (with ``page``, a web page that sent them as frames)."""
    server = start_daemon(config=config)
    watcher = LineClient(server.port, "watcher", source=watcher_source)
    watcher.expect("Terkoneksi dengan Server!")  # joined before the flooder
    clients.append(watcher)
    if page:
        flooder: LineClient | WebClient = web_join(server.web_port, "flooder")
        clients.append(flooder.sock)
        for i in range(lines):
            flooder.send(f"flood {i}")
    else:
        flooder = join(server.port, "flooder")
        clients.append(flooder)
        flooder.send_bytes(b"".join(b"flood %d\n" % i for i in range(lines)))
    watcher.expect("flooder Bergabung!")
    server.wait_event("flood_throttled", nick="flooder")
    return server, watcher, flooder


def test_blank_lines_cost_nothing_and_a_ghost_leaves_at_once(
    start_daemon, clients, figures
) -> None:
    server = start_daemon(config="[limits]\nrate = 10\nburst = 20\nper_address = 2\n")
    watcher = join(server.port, "watcher")
    ghost = join(server.port, "ghost")
    clients += [watcher, ghost]
    watcher.expect("ghost Bergabung!")
    ghost.send_bytes(b"\n" * 65536 + b"\r\n \n" * 1000 + b"still me\n")
    assert ghost.expect("ghost: still me", timeout=RELEASE) == []
    ghost.send_bytes(b"\n" * 65536)
    closed = time.monotonic()
    ghost.close()
    assert _gone_within(server, "ghost", closed) < RELEASE
    assert server.find("flood_throttled") == []
    figures(
        "ghost (64 KiB of newlines, then close): slot and nick free again after "
        + _rejoin(server, "ghost", clients, closed)
    )
    assert watcher.expect("ghost Bergabung!") == ["ghost: still me", "ghost Keluar!"]


@pytest.mark.parametrize("page", [False, True], ids=["line", "page"])
def test_paused_flooder_that_disconnects_frees_its_slot(
    start_daemon, clients, figures, page: bool
) -> None:
    server, watcher, flooder = _flooded(start_daemon, clients, 400, page=page)
    closed = time.monotonic()
    flooder.sock.close()
    assert _gone_within(server, "flooder", closed) < RELEASE
    back = _page_back_within if page else _rejoin
    figures(
        f"paused flooder{' page' if page else ''} that disconnects: slot free again after "
        + back(server, "flooder", clients, closed)
    )
    seen = watcher.expect("flooder Bergabung!")
    assert seen[:2] == ["flooder: flood 0", "flooder: flood 1"]
    assert seen[-1] == "flooder Keluar!"
    assert len(seen) < 10, "the paused backlog went with the client"


def test_paused_flooder_that_is_kicked_frees_its_slot(start_daemon, clients, figures) -> None:
    server, _, flooder = _flooded(start_daemon, clients, 400)
    kicked = time.monotonic()
    result = lanchatctl("--socket", server.admin_socket, "kick", "flooder", "--reason", "spam")
    assert result.returncode == 0, result.stderr
    assert _gone_within(server, "flooder", kicked) < RELEASE
    figures(
        "paused flooder kicked: slot free again after "
        + _rejoin(server, "flooder", clients, kicked)
    )
    flooder.expect("*** Anda dikeluarkan oleh administrator: spam")


def test_paused_flooder_that_is_banned_frees_its_slot(start_daemon, clients, figures) -> None:
    # The watcher is not banned with the flooder: another address.
    config = "[server]\nmax_clients = 2\n" + SLOW
    server, _, _ = _flooded(start_daemon, clients, 400, config, watcher_source="127.0.0.2")
    banned = time.monotonic()
    ctl = ("--socket", server.admin_socket)
    result = lanchatctl(*ctl, "ban", "flooder", "--duration", "1h", "--reason", "spam")
    assert result.returncode == 0, result.stderr
    assert _gone_within(server, "flooder", banned) < RELEASE
    server.wait_event("client_left", nick="flooder", reason="banned")
    # max_clients = 2 and the watcher holds one: the flooder's place must be free again.
    figures(
        "paused flooder banned: its place free again after "
        + _rejoin(server, "flooder", clients, banned, source="127.0.0.3")
    )


def _page_back_within(server: Daemon, nick: str, clients: list, since: float) -> str:
    """A page joins as ``nick`` again within RELEASE of ``since``; how long that took.

    As in ``_rejoin``, a refusal (the slot or the nickname not yet free) is retried until then.
    """
    while True:
        try:
            page = WebClient(server.web_port, nick)
            clients.append(page.sock)
            joined = page.text() == f"{nick} Bergabung!"
        except (AssertionError, ConnectionError):  # turned away where NICK or the join was due
            joined = False
        if joined:
            return f"{(time.monotonic() - since) * 1000:.0f} ms"
        assert time.monotonic() - since < RELEASE, "the page's nickname was not free in time"
        time.sleep(0.02)


def test_a_page_ghost_leaves_at_once(start_daemon, clients, figures) -> None:
    """Issue 10's ghost through the web port: empty frames cost nothing, and a page that
    sent a burst of them and closed is gone at once."""
    server = start_daemon(config="[limits]\nrate = 10\nburst = 20\nper_address = 2\n")
    watcher = join(server.port, "watcher")
    clients.append(watcher)
    page = web_join(server.web_port, "ghost")
    clients.append(page.sock)
    watcher.expect("ghost Bergabung!")
    empty = b"\x81\x80\0\0\0\0"  # a masked text frame with nothing in it
    page.sock.sendall(empty * 10_000)
    page.send("still me")
    assert watcher.expect("ghost: still me", timeout=RELEASE) == []
    page.sock.sendall(empty * 10_000)
    closed = time.monotonic()
    page.sock.close()
    assert _gone_within(server, "ghost", closed) < RELEASE
    assert server.find("flood_throttled") == []
    figures(
        "page ghost (10,000 empty frames, 60 KB, then close): nickname free again after "
        + _page_back_within(server, "ghost", clients, closed)
    )


def test_paused_flooder_loses_nothing_while_connected(start_daemon, clients) -> None:
    server = start_daemon(config="[limits]\nrate = 400\nburst = 5\n")
    watcher = join(server.port, "watcher")
    clients.append(watcher)
    padding = "x" * 40
    count = 600  # about 30 KB: many parse slices, paced over about 1.5 s
    flooder = join(server.port, "flooder")
    clients.append(flooder)
    watcher.expect("flooder Bergabung!")
    flooder.send_bytes(b"".join(f"{i} {padding}\n".encode() for i in range(count)))
    got = [watcher.line() for _ in range(count)]
    assert got == [f"flooder: {i} {padding}" for i in range(count)]


def test_reload_to_rate_zero_releases_a_paused_flooder(start_daemon, clients, tmp_path) -> None:
    config = "[limits]\nrate = 0.5\nburst = 1\n"
    server, watcher, flooder = _flooded(start_daemon, clients, 30, config)
    assert watcher.line() == "flooder: flood 0"
    config: Path = tmp_path / "lanchatd-0.toml"
    config.write_text("[limits]\nrate = 0\nburst = 1\n")
    server.signal(signal.SIGHUP)
    server.wait_event("config_reloaded")
    reloaded = time.monotonic()
    got = [watcher.line(timeout=RELEASE + 1) for _ in range(29)]
    assert got == [f"flooder: flood {i}" for i in range(1, 30)]
    assert time.monotonic() - reloaded < RELEASE
    flooder.close()


def test_nickname_typed_a_byte_at_a_time_is_one_nickname(daemon: Daemon, clients: list) -> None:
    """Slower than the classic-mode grace period per byte, but every byte restarts it."""
    client = LineClient(daemon.port)
    clients.append(client)
    for byte in b"steve\n":
        client.send_bytes(bytes([byte]))
        time.sleep(0.1)  # the pace under test: one byte per 100 ms
    assert client.lines(2) == ["steve Bergabung!", "Terkoneksi dengan Server!"]
    assert daemon.wait_event("client_joined", nick="steve")["mode"] == "line"


def test_kernel_send_buffer_of_a_client_that_never_reads_is_bounded(
    start_daemon, clients: list, figures: Callable[[str], None]
) -> None:
    """Kernel autotuning would let the daemon's socket to such a client grow to 4 MiB."""
    server = start_daemon(config="[server]\nsend_buffer_bytes = 8388608\n[limits]\nrate = 0\n")
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    clients.append(stalled)
    stalled.connect(("127.0.0.1", server.port))
    stalled.sendall(b"stalled\n")
    server.wait_event("client_joined", nick="stalled")
    talker = join(server.port, "talker")
    clients.append(talker)
    line = "y" * 999
    largest = 0
    for _ in range(20):  # 2 MB in all: far more than the bound
        talker.send_bytes(f"{line}\n".encode() * 100)
        assert talker.lines(100) == [f"talker: {line}"] * 100  # paced by its own echo
        largest = max(largest, daemon_send_buffer(server.port, stalled.getsockname()[1]))
    figures(f"kernel send buffer to a client that never reads: at most {largest} B")
    assert 0 < largest <= 2 * KERNEL_BUFFER
    assert server.find("client_left", nick="stalled") == [], "within send_buffer_bytes"
