"""How events reach the daemon's log: all of them, in order, promptly, and never at chat's cost.

The log is written by one writer thread (lanchatd/daemon/logs.py); these tests hold the real daemon
to what that promises: every message event is logged, in each sender's order, also when SIGTERM
comes right after a burst; what was logged is on the stream without a shutdown (so kill -9
loses at most what was logged in the last moments); and a log stream whose reader is gone
costs no chat line and no connection, only a count in ``lanchatctl stats``.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import (
    BIN,
    ISOLATED,
    WAIT,
    Daemon,
    LineClient,
    free_port,
    join,
    lanchatctl,
    wait_until,
)

NO_FLOOD_CONTROL = "[limits]\nrate = 0\n"


def _burst(sender: LineClient, nick: str, count: int) -> list[str]:
    texts = [f"{nick} line {number:04d}" for number in range(count)]
    sender.send_bytes("".join(f"{text}\n" for text in texts).encode())
    return texts


def _logged_texts(server: Daemon, nick: str) -> list[str]:
    return [event["text"] for event in server.find("message", nick=nick)]


def test_every_message_event_is_logged_in_order_when_sigterm_follows_a_burst(
    start_daemon, clients: list
) -> None:
    server = start_daemon(config=NO_FLOOD_CONTROL)
    reader, alice, bob = join(server.port, "reader"), join(server.port, "alice"), None
    clients += [reader, alice]
    bob = join(server.port, "bob")
    clients.append(bob)
    sent = {"alice": _burst(alice, "alice", 1000), "bob": _burst(bob, "bob", 1000)}
    wanted = {f"{nick}: {text}" for nick, texts in sent.items() for text in texts}
    while wanted:
        wanted.discard(reader.line())
    server.signal(signal.SIGTERM)  # at once: nothing has had time to drain on its own
    assert server.stop() == 0
    for nick, texts in sent.items():
        assert _logged_texts(server, nick) == texts
    assert server.find("server_stopped")


def test_logged_events_reach_the_stream_promptly_so_kill_9_loses_none_of_them(
    start_daemon, clients: list, figures
) -> None:
    server = start_daemon(config=NO_FLOOD_CONTROL)
    reader, alice = join(server.port, "reader"), join(server.port, "alice")
    clients += [reader, alice]
    texts = _burst(alice, "alice", 500)
    assert reader.expect(f"alice: {texts[-1]}")[-1] == f"alice: {texts[-2]}"
    # Promptly means without a shutdown to flush it: the writer writes as soon as it runs.
    # The bound is loose for a busy machine; the writer normally needs a few milliseconds.
    delivered = time.monotonic()
    wait_until(lambda: len(_logged_texts(server, "alice")) == 500, timeout=1.0, what="the log")
    delay_ms = (time.monotonic() - delivered) * 1000
    server.process.kill()
    server.process.wait(WAIT)
    server.kill()
    assert _logged_texts(server, "alice") == texts
    figures(
        f"log: 500 message events on the log pipe {delay_ms:.0f} ms (polled every 10 ms) after "
        "the last was delivered; all 500 there after kill -9"
    )


class _ReadEnd:
    """The test's end of the daemon's log pipe; closed once, whoever closes it first."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.open = True

    def close(self) -> None:
        if self.open:
            self.open = False
            os.close(self.fd)

    def drain(self, into: list[bytes]) -> None:
        """Read into ``into`` as it comes, until the daemon closes its end."""
        into.extend(iter(lambda: os.read(self.fd, 1 << 16), b""))


@contextlib.contextmanager
def _logging_to_a_pipe(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, _ReadEnd]]:
    """lanchatd whose stderr is a pipe the test holds: (process, chat port, pipe's read end).

    Its own launcher, since the shared one reads the log pipe itself, to the end. The test
    may close the read end; it is closed here otherwise.
    """
    config = tmp_path / "lanchatd.toml"
    config.write_text(NO_FLOOD_CONTROL)
    log_r, log_w = os.pipe()
    process = subprocess.Popen(
        [
            *(str(BIN / "lanchatd"), "--host", "127.0.0.1", "--port", "0", *ISOLATED),
            "--log-format",
            *("json", "--admin-socket", str(tmp_path / "admin.sock"), "--config", str(config)),
            *("--history-on-join", "0"),  # as tests.support.Daemon: live lines only
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=log_w,
        env={**os.environ, "STATE_DIRECTORY": str(tmp_path / "state")},
    )
    os.close(log_w)
    read_end = _ReadEnd(log_r)
    try:
        yield process, _port_from(log_r), read_end
    finally:
        read_end.close()
        process.kill()
        process.wait(WAIT)


def _log_events_lost(tmp_path: Path) -> int:
    result = lanchatctl("--socket", str(tmp_path / "admin.sock"), "stats", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["log_events_lost"]


def test_chat_goes_on_when_the_log_pipe_loses_its_reader(tmp_path: Path, clients: list) -> None:
    """``lanchatd 2>&1 | tee log`` and tee dies: everyone keeps chatting, newcomers join."""
    with _logging_to_a_pipe(tmp_path) as (process, port, log_r):
        alice, bob = join(port, "alice"), join(port, "bob")
        clients += [alice, bob]
        assert alice.line() == "bob Bergabung!"
        log_r.close()
        for number in range(50):
            alice.send(f"after {number}")
        assert bob.lines(50) == [f"alice: after {number}" for number in range(50)]
        bob.send("still here")
        assert alice.expect("bob: still here") == [f"alice: after {n}" for n in range(50)]
        carol = join(port, "carol")
        clients.append(carol)
        carol.send("hello")
        assert alice.expect("carol: hello") == ["carol Bergabung!"]
        assert bob.expect("carol: hello")[-1] == "carol Bergabung!"
        wait_until(lambda: _log_events_lost(tmp_path) >= 52, what="the lost events counted")
        process.send_signal(signal.SIGTERM)
        assert process.wait(WAIT) == 0


def test_chat_goes_on_when_the_log_reader_stops_reading(tmp_path: Path, clients: list) -> None:
    """A reader that stays but reads nothing (a stopped pager): the pipe and the writer's
    queue fill, then the log gives way, not the chat."""
    with _logging_to_a_pipe(tmp_path) as (process, port, log_r):
        alice, bob = join(port, "alice"), join(port, "bob")
        clients += [alice, bob]
        assert alice.line() == "bob Bergabung!"
        texts = _burst(alice, "alice", 25_000)  # more than the pipe and the queue hold
        for text in texts:
            assert bob.line() == f"alice: {text}"
        assert _log_events_lost(tmp_path) > 0
        # Read again: the log catches up and takes new events, the daemon stops cleanly.
        drained: list[bytes] = []
        drain = threading.Thread(target=log_r.drain, args=(drained,))
        drain.start()
        # Past the pipe's 64 KiB, the writer itself has written again: it is not stuck now.
        wait_until(lambda: sum(map(len, drained)) > 1 << 17, what="the log to flow again")
        clients.append(join(port, "dave"))
        wait_until(lambda: b'"nick": "dave"' in b"".join(drained), what="dave in the log")
        process.send_signal(signal.SIGTERM)
        assert process.wait(WAIT) == 0
        drain.join(WAIT)
        assert b'"event": "server_stopped"' in b"".join(drained)


def _port_from(log: int) -> int:
    """Read the daemon's log until server_started; return its port."""
    buffered = b""
    while True:
        ready, _, _ = select.select([log], [], [], WAIT)
        assert ready, f"no server_started; log: {buffered!r}"
        chunk = os.read(log, 65536)
        assert chunk, f"lanchatd exited; log: {buffered!r}"
        buffered += chunk
        for line in buffered.splitlines():
            event = json.loads(line) if line.startswith(b"{") else {}
            if event.get("event") == "server_started":
                return int(event["port"])


@pytest.mark.parametrize(("no_color", "escapes"), [("", True), ("1", False)])
def test_console_logs_on_a_terminal_honour_no_color(
    tmp_path: Path, no_color: str, escapes: bool
) -> None:
    """On a TTY the log is for people: coloured, unless NO_COLOR says otherwise."""
    pid, terminal = pty.fork()
    if pid == 0:  # the child: lanchatd with the pty as its stderr
        env = {**os.environ, "NO_COLOR": no_color, "STATE_DIRECTORY": str(tmp_path)}
        argv = [str(BIN / "lanchatd"), "--host", "127.0.0.1", "--port", "0", *ISOLATED]
        argv += ["--admin-socket", str(tmp_path / "admin.sock")]
        os.execve(argv[0], argv, env)
    shown = b""
    try:
        while b"server_started" not in shown:
            ready, _, _ = select.select([terminal], [], [], WAIT)
            assert ready, f"no server_started on the terminal: {shown!r}"
            shown += os.read(terminal, 65536)
        os.kill(pid, signal.SIGTERM)
        while b"server_stopped" not in shown:
            ready, _, _ = select.select([terminal], [], [], WAIT)
            assert ready, f"no server_stopped on the terminal: {shown!r}"
            shown += os.read(terminal, 65536)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(terminal)
    assert not shown.lstrip().startswith(b"{"), "console format, not JSON"
    assert (b"\x1b[" in shown) is escapes


def test_the_log_level_is_configurable_and_reloadable(tmp_path: Path, clients: list) -> None:
    config = tmp_path / "lanchatd.toml"
    config.write_text('[log]\nlevel = "info"\n')
    server = Daemon(config=config)
    try:
        alice = join(server.port, "alice")
        clients.append(alice)
        for level, text in (("warning", "quiet"), ("info", "loud")):
            config.write_text(f'[log]\nlevel = "{level}"\n')
            assert server.ctl("reload").returncode == 0
            alice.send(text)
            assert alice.line() == f"alice: {text}"
        assert server.wait_event("message", nick="alice")["text"] == "loud"
    finally:
        assert server.stop() == 0
    assert _logged_texts(server, "alice") == ["loud"]
    reloads = [event["changed"] for event in server.find("config_reloaded")]
    assert reloads == [{"log_level": ["warning", "info"]}], "the first was below warning"


def test_a_daemon_started_with_stderr_closed_serves_and_logs_into_no_socket(
    tmp_path: Path, clients: list
) -> None:
    """``lanchatd 2>&-``: descriptor 2 must not become a client's socket, or the log would be
    written to that client."""
    port = free_port()
    process = subprocess.Popen(
        [
            *("sh", "-c", 'exec "$0" "$@" 2>&-', str(BIN / "lanchatd"), "--host", "127.0.0.1"),
            *("--port", str(port), "--admin-socket", str(tmp_path / "admin.sock")),
            *ISOLATED,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "STATE_DIRECTORY": str(tmp_path / "state")},
    )
    try:
        alice = wait_until(lambda: _connect(port, "alice"), what="lanchatd to listen")
        clients.append(alice)
        assert alice.lines(2) == ["alice Bergabung!", "Terkoneksi dengan Server!"]
        bob = join(port, "bob")
        clients.append(bob)
        bob.send("hi")
        assert alice.lines(2) == ["bob Bergabung!", "bob: hi"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(WAIT) == 0
        assert alice.closed() == b"*** Server dimatikan\n"
    finally:
        process.kill()
        process.wait(WAIT)


def _connect(port: int, nick: str) -> LineClient | None:
    try:
        return LineClient(port, nick)
    except ConnectionRefusedError:
        return None
