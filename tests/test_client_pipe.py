"""The client in pipes and scripts, against the real daemon."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest

from tests.client_helpers import CLIENT, WAIT, Relay, client_env, run_client
from tests.support import Daemon, LineClient, free_port, join, wait_until

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def bob(daemon: Daemon) -> Iterator[LineClient]:
    user = join(daemon.port, "bob")
    try:
        yield user
    finally:
        user.close()


def start_client(port: int, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CLIENT, "127.0.0.1", "--port", str(port), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=client_env(),
    )


def read_lines(stream: IO[str]) -> tuple[list[str], threading.Thread]:
    """Collect the lines of ``stream`` as they come, in a thread (join it when done)."""
    lines: list[str] = []

    def read() -> None:
        for line in iter(stream.readline, ""):
            lines.append(line)

    reader = threading.Thread(target=read)
    reader.start()
    return lines, reader


def test_echo_into_lanchat_posts_and_exits_zero(daemon: Daemon, bob: LineClient) -> None:
    result = run_client(daemon.port, "--nick", "ci", stdin=b"build finished\n")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.splitlines()[:3] == [
        "ci Bergabung!",
        "Terkoneksi dengan Server!",
        "ci: build finished",
    ]
    bob.expect("ci Bergabung!")
    bob.expect("ci: build finished")
    bob.expect("ci Keluar!")


@pytest.mark.parametrize("address", ["127.0.0.1:{port}", "[::1]:{port}", "::1", "[::1]"])
def test_host_may_carry_the_port_and_be_ipv6(address: str) -> None:
    with Daemon("--host", "::") as daemon:
        bob = join(daemon.port, "bob")
        try:
            host = address.format(port=daemon.port)
            port = [] if "{port}" in address else ["--port", str(daemon.port)]
            result = subprocess.run(
                [*CLIENT, host, *port, "--nick", "ci"],
                input="over ipv6 or not\n",
                capture_output=True,
                text=True,
                env=client_env(),
                timeout=60,
                check=False,
            )
            assert (result.returncode, result.stderr) == (0, "")
            bob.expect("ci: over ipv6 or not")
        finally:
            bob.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["127.0.0.1:99999"], "'127.0.0.1:99999': the port must be a number from 1 to 65535"),
        (["[::1"], "'[::1' is not an address like [::1] or [::1]:5001"),
        (["127.0.0.1:5001", "--port", "5002"], "two ports: 5001 in HOST and 5002 from --port"),
    ],
)
def test_a_bad_address_is_a_usage_error(args: list[str], message: str) -> None:
    result = subprocess.run(
        [*CLIENT, *args, "--nick", "ci"],
        capture_output=True,
        text=True,
        env=client_env(),
        timeout=WAIT,
        check=False,
    )
    assert result.returncode == 2
    assert message in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr


def test_nick_is_trimmed_as_the_server_trims_it(daemon: Daemon, bob: LineClient) -> None:
    result = run_client(daemon.port, "--nick", "  ci bot ", stdin=b"ready\n")
    assert result.returncode == 0, result.stderr
    bob.expect("ci bot: ready")


def test_every_line_arrives_in_order_despite_flood_control(daemon: Daemon, bob: LineClient) -> None:
    # 45 lines: more than the daemon's burst of 20, so it slows this sender down; the last
    # line has no newline. Exit 0 must still mean every one of them was delivered.
    lines = [f"line {number}" for number in range(45)]
    result = run_client(daemon.port, "--nick", "ci", stdin="\n".join(lines).encode())
    assert result.returncode == 0, result.stderr
    seen = bob.expect("ci Keluar!")
    assert [line for line in seen if line.startswith("ci: ")] == [f"ci: {x}" for x in lines]


def test_received_lines_go_to_stdout_sanitised(daemon: Daemon, bob: LineClient) -> None:
    client = start_client(daemon.port, "--nick", "ci")
    assert client.stdin is not None
    client.stdin.write("first\n")
    client.stdin.flush()
    bob.expect("ci: first")
    bob.send("\x1b[2Jcleared? \x9b no")
    bob.send("/me checks")
    bob.expect("* bob checks")
    client.stdin.write("last\n")
    client.stdin.close()
    assert client.wait(WAIT * 2) == 0
    assert client.stdout is not None
    assert client.stderr is not None
    out = client.stdout.read()
    assert "bob: ^[[2Jcleared? <U+009B> no\n* bob checks\nci: last\n" in out
    assert "\x1b" not in out
    assert client.stderr.read() == ""


def test_keeps_posting_across_a_daemon_restart(daemon: Daemon, bob: LineClient) -> None:
    client = start_client(daemon.port, "--nick", "ci")
    assert client.stdin is not None
    assert client.stderr is not None
    client.stdin.write("before\n")
    client.stdin.flush()
    bob.expect("ci: before")
    daemon.stop()
    daemon.start()  # the same port
    carol = join(daemon.port, "carol")
    try:
        client.stdin.write("after\n")
        client.stdin.close()
        carol.expect("ci: after", timeout=30)
        assert client.wait(WAIT * 2) == 0
    finally:
        carol.close()
    messages = client.stderr.read()
    assert "lost; reconnecting" in messages
    assert "reconnected" in messages
    assert "Traceback" not in messages


def test_quit_in_input_leaves_early(daemon: Daemon, bob: LineClient) -> None:
    result = run_client(daemon.port, "--nick", "ci", stdin=b"one\n/quit\ntwo\n")
    assert result.returncode == 0, result.stderr
    seen = bob.expect("ci Keluar!")
    assert "ci: one" in seen
    assert "ci: two" not in seen


def test_taken_nickname_fails_with_the_servers_reason(daemon: Daemon, bob: LineClient) -> None:
    result = run_client(daemon.port, "--nick", "Bob", stdin=b"hello\n")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "lanchat: error: the server refused the nickname 'Bob': "
        "*** Nickname ditolak: Bob sudah dipakai"
    ]
    assert result.stdout == ""


def test_connection_refused_is_one_line_and_fails() -> None:
    port = free_port()
    result = run_client(port, "--nick", "ci", stdin=b"hello\n")
    assert result.returncode == 1
    assert (
        result.stderr == f"lanchat: error: cannot connect to 127.0.0.1:{port}: Connection refused\n"
    )
    assert result.stdout == ""


def test_nick_is_required_without_a_terminal() -> None:
    result = run_client(free_port(), stdin=b"hello\n")
    assert result.returncode == 2
    assert "--nick is required" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_newline_in_the_nick_is_refused_before_connecting() -> None:
    result = run_client(free_port(), "--nick", "ci\nhello")
    assert result.returncode == 2
    assert "control characters" in result.stderr


def test_a_nick_that_reads_as_a_command_is_refused_before_connecting() -> None:
    result = run_client(free_port(), "--nick", "/capfoo")
    assert result.returncode == 2
    assert "a nickname cannot start with '/' (it would read as a command)" in result.stderr
    assert "Connection refused" not in result.stderr


def test_closed_stdout_does_not_stop_the_post(daemon: Daemon, bob: LineClient) -> None:
    client = subprocess.Popen(
        [*CLIENT, "127.0.0.1", "--port", str(daemon.port), "--nick", "ci"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=client_env(),
    )
    assert client.stdin is not None
    assert client.stdout is not None
    client.stdout.close()  # like `lanchat ... | head -0`
    client.stdin.write("still posted\n")
    client.stdin.close()
    bob.expect("ci: still posted")
    assert client.wait(WAIT * 2) == 0
    assert client.stderr is not None
    assert client.stderr.read() == ""


def test_version_and_help() -> None:
    script = Path(sys.executable).with_name("lanchat")
    command = [str(script)] if script.exists() else CLIENT
    version = subprocess.run([*command, "--version"], capture_output=True, text=True, check=False)
    assert version.returncode == 0
    assert version.stdout.startswith("lanchat, version ")
    usage = subprocess.run([*command, "--help"], capture_output=True, text=True, check=False)
    assert usage.returncode == 0
    assert "lanchat [OPTIONS] [HOST]" in usage.stdout
    assert "--nick" in usage.stdout
    assert "--port" in usage.stdout


def test_after_a_daemon_restart_lanchat_shows_exactly_the_200_it_missed_as_history(
    start_daemon: Callable[..., Daemon],
) -> None:
    daemon = start_daemon(config="[limits]\nrate = 0\n")
    bob = join(daemon.port, "bob")
    client = start_client(daemon.port, "--nick", "ci")
    assert client.stdin is not None
    assert client.stdout is not None
    shown, reader = read_lines(client.stdout)
    try:
        bob.expect("ci Bergabung!")
        bob.send("before")
        wait_until(lambda: "bob: before\n" in shown, what="the line before the restart")
        os.kill(client.pid, signal.SIGSTOP)  # kept out while the room talks, without a race
        try:
            daemon.stop()
            daemon.start()  # the same port and state directory
            talker = join(daemon.port, "dan")
            talker.send_bytes("".join(f"m{n}\n" for n in range(200)).encode())
            talker.expect("dan: m199", timeout=WAIT)
        finally:
            os.kill(client.pid, signal.SIGCONT)
        talker.expect_start("ci Bergabung!", timeout=30)  # lanchat is back
        talker.send("live")
        wait_until(lambda: "dan: live\n" in shown, timeout=WAIT, what="the live line")
        client.stdin.close()
        assert client.wait(WAIT) == 0
    finally:
        client.kill()
        reader.join(WAIT)
    after = shown[shown.index("bob: before\n") + 1 :]
    history = [line for line in after if " history] " in line]
    assert [line.split("] ", 1)[1] for line in history] == [
        "dan Bergabung!\n",
        *(f"dan: m{n}\n" for n in range(200)),
    ]
    assert after.count("--- end of history; live from here ---\n") == 1
    end = after.index("--- end of history; live from here ---\n")
    assert after.index(history[-1]) < end < after.index("dan: live\n")
    assert not [line for line in after if "dan: m" in line and line not in history]


def test_after_a_cut_lines_the_server_had_are_not_sent_again_and_the_rest_are_once(
    daemon: Daemon, bob: LineClient
) -> None:
    """The connection is cut with two lines processed by the server but not yet echoed back
    (their echoes held in the relay) and two never delivered (held on the way in). The
    resume replay shows the first two, so only the last two are sent again: every line
    reaches the room exactly once, the same text twice included."""
    relay = Relay(daemon.port)
    client = start_client(relay.port, "--nick", "ci")
    assert client.stdin is not None
    assert client.stdout is not None
    assert client.stderr is not None
    shown, reader = read_lines(client.stdout)
    room: list[str] = []

    def until(wanted: str) -> None:
        room.extend([*bob.expect(wanted, timeout=WAIT * 2), wanted])

    try:
        until("ci Bergabung!")
        wait_until(lambda: "Terkoneksi dengan Server!\n" in shown, what="lanchat's welcome")
        relay.hold_to_client()
        client.stdin.write("ci: one\nsame\n")  # the server strips an own prefix
        client.stdin.flush()
        until("ci: same")
        relay.hold_to_server()
        client.stdin.write("same\ntwo\n")
        client.stdin.flush()
        wait_until(lambda: relay.held_from_client() == b"same\ntwo\n", what="the held lines")
        relay.cut()
        until("ci: two")
        client.stdin.close()
        until("ci Keluar!")  # lanchat confirmed everything and left
        assert client.wait(WAIT * 2) == 0
    finally:
        client.kill()
        relay.close()
        reader.join(WAIT)
    assert [line for line in room if line.startswith("ci: ")] == [
        "ci: one",
        "ci: same",
        "ci: same",
        "ci: two",
    ]
    notes = client.stderr.read()
    assert "reconnected" in notes
    assert "sent again 2 messages whose delivery was not confirmed" in notes
    history = [line.split("] ", 1)[1] for line in shown if " history] " in line]
    assert history == ["ci: one\n", "ci: same\n", "ci Keluar!\n"]
