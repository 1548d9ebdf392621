"""lanchatctl, the installed entry point, against real daemons and real chat clients."""

from __future__ import annotations

import datetime as dt
import json
import queue
import signal
import socket
import subprocess
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

import lanchatd
from lanchatctl.cli import Duration, _duration, _size, cli
from lanchatd.daemon.admin import MAX_CONNECTIONS
from tests.support import LANCHATCTL, Daemon, lanchatctl, wait_until

COMMANDS = ("who", "kick", "broadcast", "stats", "ban", "unban", "bans", "watch", "reload")


def _error_line(result: subprocess.CompletedProcess[str]) -> str:
    """lanchatctl's failures are one line on stderr, nothing on stdout, never a traceback."""
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("lanchatctl: error: "), result.stderr
    return result.stderr


# who ----------------------------------------------------------------------------------------


def test_who_lists_clients_in_join_order(admin_daemon: Daemon, admin_clients: list) -> None:
    alice = admin_daemon.chat("alice")
    old = admin_daemon.chat("old timer", classic=True)
    admin_clients += [alice, old]
    admin_daemon.wait_event("client_joined", nick="old timer")
    bob = admin_daemon.chat("bob")
    admin_clients.append(bob)
    alice.send("one")
    alice.send("two")
    alice.expect_start("alice: two")

    result = admin_daemon.ctl("who", "--json")
    assert result.returncode == 0, result.stderr
    clients = json.loads(result.stdout)
    assert [c["nick"] for c in clients] == ["alice", "old timer", "bob"]
    by_nick = {c["nick"]: c for c in clients}
    assert by_nick["alice"]["host"] == "127.0.0.1"
    assert by_nick["alice"]["port"] == alice.sock.getsockname()[1]
    assert by_nick["alice"]["mode"] == "line"
    assert by_nick["old timer"]["mode"] == "classic"
    assert by_nick["alice"]["messages"] == 2
    assert by_nick["bob"]["messages"] == 0
    for client in clients:
        assert isinstance(client["port"], int)
        assert client["connected_at"].endswith("Z")
        moment = dt.datetime.fromisoformat(client["connected_at"].replace("Z", "+00:00"))
        assert abs((dt.datetime.now(dt.UTC) - moment).total_seconds()) < 60
        assert 0 <= client["idle_s"] < 60

    lines = [json.loads(line) for line in admin_daemon.ctl("who", "--nl").stdout.splitlines()]
    assert [c["nick"] for c in lines] == ["alice", "old timer", "bob"]

    table = admin_daemon.ctl("who").stdout.splitlines()
    assert table[0].split() == [
        "NICK",
        "ADDRESS",
        "PORT",
        "MODE",
        "CONNECTED",
        "SINCE",
        "IDLE",
        "MESSAGES",
    ]
    assert [row.split()[0] for row in table[1:]] == ["alice", "old", "bob"]
    assert table[2].startswith("old timer  127.0.0.1")
    assert table[1].split()[-1] == "2"


def test_who_aligns_wide_nicknames(admin_daemon: Daemon, admin_clients: list) -> None:
    admin_clients += [admin_daemon.chat("\U0001f431cat"), admin_daemon.chat("bob")]
    admin_daemon.wait_event("client_joined", nick="bob")
    table = admin_daemon.ctl("who").stdout.splitlines()
    assert [row.split()[0] for row in table] == ["NICK", "\U0001f431cat", "bob"]
    # On a terminal the cat takes two columns: "🐱cat" is as wide as the header's "NICK".
    assert table[1].index("127.0.0.1") == table[2].index("127.0.0.1") - 1
    assert table[0].index("ADDRESS") == table[2].index("127.0.0.1")


def test_who_with_nobody_online(admin_daemon: Daemon) -> None:
    assert admin_daemon.ctl("who").stdout == "No clients connected.\n"
    assert admin_daemon.ctl("who", "--json").stdout == "[]\n"


# kick ---------------------------------------------------------------------------------------


def test_kick_tells_the_user_and_everyone_else(admin_daemon: Daemon, admin_clients: list) -> None:
    alice = admin_daemon.chat("alice")
    bob = admin_daemon.chat("user1 pc")
    admin_clients += [alice, bob]
    result = admin_daemon.ctl("kick", "USER1 PC", "--reason", "spamming")
    assert result.returncode == 0, result.stderr
    port = bob.sock.getsockname()[1]
    assert result.stdout == f"Kicked user1 pc (127.0.0.1:{port}): spamming\n"
    assert bob.rest_until_closed() == ["*** Anda dikeluarkan oleh administrator: spamming"]
    assert alice.expect_start("*** ") == "*** user1 pc dikeluarkan oleh administrator: spamming"
    assert alice.line() == "user1 pc Keluar!"
    kicked = admin_daemon.wait_event("client_kicked", nick="user1 pc")
    assert (kicked["reason"], kicked["admin_uid"], kicked["host"]) == ("spamming", 0, "127.0.0.1")
    assert admin_daemon.wait_event("client_left", nick="user1 pc", reason="kicked")
    # The room carries on, and the kick is counted.
    alice.send("quiet now")
    assert alice.line() == "alice: quiet now"
    assert json.loads(admin_daemon.ctl("stats", "--json").stdout)["kicks"] == 1


def test_kick_in_english_and_without_a_reason(admin_daemons, admin_clients: list) -> None:
    server = admin_daemons("--lang", "en")
    alice = server.chat("alice")
    bob = server.chat("bob")
    admin_clients += [alice, bob]
    assert server.ctl("kick", "bob").returncode == 0
    assert bob.rest_until_closed() == ["*** You were kicked by an administrator: no reason given"]
    assert alice.expect_start("*** ") == "*** bob was kicked by an administrator: no reason given"
    assert alice.line() == "bob left!"


def test_kick_of_an_unknown_nick_names_it(admin_daemon: Daemon) -> None:
    result = admin_daemon.ctl("kick", "ghost")
    assert result.returncode == 1
    assert _error_line(result) == "lanchatctl: error: no such nickname: ghost\n"


# broadcast ----------------------------------------------------------------------------------


def test_broadcast_reaches_every_client_as_a_server_notice(
    admin_daemon: Daemon, admin_clients: list
) -> None:
    alice = admin_daemon.chat("alice")
    bob = admin_daemon.chat("bob")
    admin_clients += [alice, bob]
    result = admin_daemon.ctl("broadcast", "Server", "restarts", "at", "noon")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Notice sent to 2 clients.\n"
    for client in (alice, bob):
        assert client.expect_start("*** ") == "*** Pengumuman server: Server restarts at noon"
    notice = admin_daemon.wait_event("notice")
    assert (notice["text"], notice["admin_uid"], notice["recipients"]) == (
        "Server restarts at noon",
        0,
        2,
    )


@pytest.mark.parametrize("args", [(), ("   ",), ("", "")])
def test_broadcast_without_text_is_a_usage_error(admin_daemon: Daemon, args: tuple) -> None:
    result = admin_daemon.ctl("broadcast", *args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "TEXT" in result.stderr
    assert not admin_daemon.find("notice")


def test_commands_that_change_things_answer_in_json(
    admin_daemon: Daemon, admin_clients: list
) -> None:
    alice, bob = admin_daemon.chat("alice"), admin_daemon.chat("bob")
    admin_clients += [alice, bob]
    port = bob.sock.getsockname()[1]

    def answer(*args: str) -> dict:
        result = admin_daemon.ctl(*args, "--json")
        assert (result.returncode, result.stderr) == (0, ""), result.stderr
        return json.loads(result.stdout)

    assert answer("broadcast", "hello") == {"recipients": 2, "text": "hello"}
    assert answer("kick", "bob", "--reason", "rude") == {
        "nick": "bob",
        "host": "127.0.0.1",
        "port": port,
        "reason": "rude",
    }
    banned = answer("ban", "alice", "--reason", "flood")
    assert banned["disconnected"] == ["alice"]
    assert (banned["ban"]["address"], banned["ban"]["reason"]) == ("127.0.0.1", "flood")
    assert answer("unban", "127.0.0.1")["ban"]["address"] == "127.0.0.1"
    assert answer("reload") == {"changed": {}, "needs_restart": []}


# stats --------------------------------------------------------------------------------------


def test_stats_count_what_happened(admin_daemon: Daemon, admin_clients: list) -> None:
    alice = admin_daemon.chat("alice")
    bob = admin_daemon.chat("bob")
    admin_clients += [alice, bob]
    alice.send("hello")
    bob.expect_start("alice: hello")
    assert admin_daemon.ctl("kick", "bob").returncode == 0
    alice.expect_start("*** bob")
    stats = json.loads(admin_daemon.ctl("stats", "--json").stdout)
    assert stats["version"] == lanchatd.__version__
    assert stats["uptime_s"] >= 0
    assert (stats["clients"], stats["peak_clients"]) == (1, 2)
    assert (stats["messages_in"], stats["bytes_in"]) == (1, 5)
    # Out: joins (1 + 2), welcomes (2), the message (2), the kick lines (1 + 1), bob's leave (1).
    assert stats["messages_out"] == 10
    wait_until(
        lambda: json.loads(admin_daemon.ctl("stats", "--json").stdout)["bytes_out"] > 100,
        what="bytes out to be counted",
    )
    assert (stats["slow_consumer_drops"], stats["kicks"], stats["bans"]) == (0, 1, 0)
    assert stats["log_events_lost"] == 0
    text = admin_daemon.ctl("stats").stdout
    for label in ("version", "uptime", "clients", "messages in", "bytes out", "slow consumers"):
        assert label in text
    assert "log events lost         0" in text
    assert "1 now, 2 at most" in text


# watch --------------------------------------------------------------------------------------


def _start_watch(server: Daemon, *args: str) -> tuple[subprocess.Popen[str], queue.Queue]:
    process = subprocess.Popen(
        [str(LANCHATCTL), "--socket", str(server.admin_socket), "watch", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    wait_until(
        lambda: json.loads(server.ctl("stats", "--json").stdout)["watchers"] == 1,
        what="lanchatctl watch to subscribe",
    )
    return process, lines


def test_watch_shows_live_events_until_ctrl_c(admin_daemon: Daemon, admin_clients: list) -> None:
    process, lines = _start_watch(admin_daemon)
    try:
        assert process.stderr is not None
        started = f"watching lanchatd at {admin_daemon.admin_socket}; Ctrl-C to stop\n"
        assert process.stderr.readline() == started, "says at once that it is watching"
        alice = admin_daemon.chat("alice")
        bob = admin_daemon.chat("bob")
        admin_clients += [alice, bob]
        alice.send("hi \x1b[31mred")
        bob.expect_start("alice: hi")
        assert admin_daemon.ctl("kick", "bob", "--reason", "rude").returncode == 0
        assert admin_daemon.ctl("broadcast", "hello all").returncode == 0
        seen = [lines.get(timeout=10) for _ in range(6)]
        words = [line.split(None, 2)[1:] for line in seen]
        assert words == [
            ["join", "alice from 127.0.0.1:" + str(alice.sock.getsockname()[1]) + " (line)"],
            ["join", "bob from 127.0.0.1:" + str(bob.sock.getsockname()[1]) + " (line)"],
            ["message", "alice: hi ^[[31mred"],  # escapes never reach the terminal raw
            ["kick", "bob by uid 0: rude"],
            ["leave", "bob (kicked)"],
            ["notice", "by uid 0: hello all"],
        ]
        process.send_signal(signal.SIGINT)
        assert process.wait(10) == 0
        assert "Traceback" not in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)


def test_watch_json_and_the_end_of_the_daemon(admin_daemon: Daemon, admin_clients: list) -> None:
    process, lines = _start_watch(admin_daemon, "--json")
    try:
        alice = admin_daemon.chat("alice")
        admin_clients.append(alice)
        event = json.loads(lines.get(timeout=10))
        assert (event["type"], event["nick"], event["mode"]) == ("join", "alice", "line")
        assert admin_daemon.stop() == 0
        assert process.wait(10) == 3
        assert "lanchatd closed the connection" in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)


# reload -------------------------------------------------------------------------------------


def test_reload_applies_the_config_like_sighup(
    admin_daemons, admin_workdir: Path, admin_clients: list
) -> None:
    server = admin_daemons(config='[server]\nlang = "id"\n')
    alice = server.chat("alice")
    admin_clients.append(alice)
    (admin_workdir / "lanchatd.toml").write_text(
        '[server]\nlang = "en"\n[admin]\ngroup = "staff"\n'
    )
    result = server.ctl("reload")
    assert result.returncode == 0, result.stderr
    assert "lang: 'id' -> 'en'" in result.stdout
    assert "admin_group: changed, but takes effect only after a restart" in result.stderr
    assert server.wait_event("config_reloaded")["changed"] == {"lang": ["id", "en"]}
    bob = server.chat("bob")
    admin_clients.append(bob)
    assert alice.expect_start("bob ") == "bob joined!"

    (admin_workdir / "lanchatd.toml").write_text('[server]\nlang = "xx"\n')
    result = server.ctl("reload")
    assert result.returncode == 1
    assert "configuration not reloaded:" in _error_line(result)
    assert "lang" in result.stderr
    alice.send("still here")
    assert alice.expect_start("alice: ") == "alice: still here"


# Reaching the daemon ------------------------------------------------------------------------


def test_no_socket_is_exit_3_saying_where_it_looked(admin_workdir: Path) -> None:
    missing = admin_workdir / "nope.sock"
    result = lanchatctl("--socket", str(missing), "who")
    assert result.returncode == 3
    line = _error_line(result)
    assert str(missing) in line
    assert "systemctl status lanchatd" in line


def test_default_lookup_says_where_it_looked(admin_workdir: Path) -> None:
    """Without --socket: every default place is tried; the error names what it found."""
    result = lanchatctl("who", env={"XDG_RUNTIME_DIR": str(admin_workdir)})
    if result.returncode == 0:
        pytest.skip("a system lanchatd is running on this machine")
    assert result.returncode == 3
    line = _error_line(result)
    assert "systemctl status lanchatd" in line
    places = [Path("/run/lanchatd-admin.sock"), Path("/run/lanchatd/admin.sock")]
    stale = [place for place in places if place.exists()]
    if stale:  # left by a daemon killed on this machine: that is the one to mention
        assert f"nothing is listening on {stale[0]}" in line
    else:
        assert f"looked at {places[0]}, {places[1]};" in line


def test_a_stale_socket_is_exit_3(admin_workdir: Path) -> None:
    path = admin_workdir / "stale.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()
    result = lanchatctl("--socket", str(path), "stats")
    assert result.returncode == 3
    assert "nothing is listening" in _error_line(result)


def test_a_busy_daemon_is_exit_3(admin_daemon: Daemon, admin_clients: list) -> None:
    """Busy is "cannot reach the daemon now" (3), like a daemon that does not answer."""
    admin_clients += [admin_daemon.admin() for _ in range(MAX_CONNECTIONS)]
    result = admin_daemon.ctl("stats")
    assert result.returncode == 3
    assert _error_line(result) == (
        f"lanchatctl: error: lanchatd at {admin_daemon.admin_socket} is busy: "
        "too many admin connections; try again\n"
    )


def test_socket_from_the_environment_and_flag_precedence(admin_daemon: Daemon) -> None:
    env = {"LANCHATD_ADMIN_SOCKET": str(admin_daemon.admin_socket)}
    assert lanchatctl("who", "--json", env=env).stdout == "[]\n"
    bogus = {"LANCHATD_ADMIN_SOCKET": "/nonexistent/admin.sock"}
    result = lanchatctl("--socket", str(admin_daemon.admin_socket), "who", env=bogus)
    assert result.returncode == 0
    assert lanchatctl("who", env=bogus).returncode == 3


# Usage, help, version, completion -----------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("fly",),
        ("kick",),
        ("ban",),
        ("unban",),
        ("ban", "192.0.2.1", "--duration", "soon"),
        ("ban", "192.0.2.1", "--duration", "0s"),
        ("who", "--bogus"),
    ],
)
def test_usage_errors_are_exit_2(args: tuple[str, ...], admin_workdir: Path) -> None:
    result = lanchatctl("--socket", str(admin_workdir / "x.sock"), *args)
    assert result.returncode == 2, result
    assert "Usage: lanchatctl" in result.stderr
    assert "Traceback" not in result.stderr


def test_help_and_version_from_the_installed_command() -> None:
    result = lanchatctl("--help")
    assert result.returncode == 0
    for command in COMMANDS:
        assert command in result.stdout
    assert "Exit status: 0 success" in result.stdout
    assert "_LANCHATCTL_COMPLETE=bash_source lanchatctl" in result.stdout
    assert lanchatctl("--version").stdout == f"lanchatctl, version {lanchatd.__version__}\n"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    for flag in ("--help", "-h"):
        result = CliRunner().invoke(cli, [command, flag], prog_name="lanchatctl")
        assert result.exit_code == 0, result.output
        assert result.output.startswith(f"Usage: lanchatctl {command} ")


def test_shell_completion_offers_commands_and_online_nicks(
    admin_daemon: Daemon, admin_clients: list
) -> None:
    source = lanchatctl(env={"_LANCHATCTL_COMPLETE": "bash_source"})
    assert source.returncode == 0
    assert "_lanchatctl_completion" in source.stdout
    admin_clients += [admin_daemon.chat("alice"), admin_daemon.chat("albert")]

    def complete(*words: str) -> list[str]:
        env = {
            "_LANCHATCTL_COMPLETE": "bash_complete",
            "COMP_WORDS": " ".join(["lanchatctl", *words]),
            "COMP_CWORD": str(len(words)),
        }
        result = lanchatctl(env=env)
        assert result.returncode == 0, result.stderr
        return [line.split(",", 1)[1] for line in result.stdout.splitlines()]

    assert complete("ki") == ["kick"]
    assert complete("--socket", str(admin_daemon.admin_socket), "kick", "al") == [
        "alice",
        "albert",
    ]


def test_formatting_details() -> None:
    assert [_duration(s) for s in (0, 59, 61, 3600 + 120, 86400 * 2 + 3600)] == [
        "0s",
        "59s",
        "1m01s",
        "1h02m",
        "2d01h",
    ]
    assert [_size(n) for n in (5, 2048, 5 << 20)] == ["5 B", "2.0 KiB", "5.0 MiB"]
    duration = Duration()
    assert duration.convert("90", None, None) == 90
    assert duration.convert("1h30m", None, None) == 5400
    assert duration.convert("2d", None, None) == 172800
    assert duration.convert("1w", None, None) == 604800
