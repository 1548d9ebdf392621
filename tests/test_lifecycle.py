"""The daemon as a process: configuration, signals, ports, and a real netcat user."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.support import BIN, ISOLATED, WAIT, Daemon, LineClient, free_port, join, wait_until


def run_lanchatd(*args: str, state: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run lanchatd to its end, with a state directory of its own unless ``state`` is given."""
    with tempfile.TemporaryDirectory(prefix="lanchatd-state-") as own:
        return subprocess.run(
            [
                str(BIN / "lanchatd"),
                "--host",
                "127.0.0.1",
                *ISOLATED,
                *("--log-format", "json"),
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=WAIT,
            check=False,
            env={**os.environ, "STATE_DIRECTORY": str(state or own)},
        )


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[server]\ncolour = 1\n", "[server] colour: unknown key"),
        ("[chat]\nport = 1\n", "[chat]: unknown section; sections: server, limits, admin"),
        ("port = 1\n", "port: a key outside any section; it belongs under [server]"),
        ("colour = 1\n", "colour: a key outside any section; keys go under a section: [server]"),
        ('[server]\nport = "5001"\n', "[server] port: expected an integer, got str '5001'"),
        ("[server]\nport = 70000\n", "[server] port: must be between 0 and 65535, got 70000"),
        ("[limits]\nrate = -1\n", "[limits] rate: must be between 0 and 1000000, got -1"),
        ("[limits]\nkeepalive = nan\n", "[limits] keepalive: expected a finite number, got nan"),
        ("[limits]\nrate = inf\n", "[limits] rate: expected a finite number, got inf"),
        ('[log]\nlevel = "loud"\n', "[log] level: must be one of debug, info, warning, error"),
        ('[server]\nlang = "fr"\n', "[server] lang: must be one of id, en, got str 'fr'"),
        ("[log]\nmessage_text = 1\n", "[log] message_text: expected true or false, got int 1"),
        ("[server\n", "invalid TOML: Expected ']' at the end of a table declaration (at line 1"),
    ],
)
def test_bad_config_is_one_line_exit_2_before_listening(
    tmp_path: Path, toml: str, message: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    port = free_port()
    result = run_lanchatd("--config", str(path), "--port", str(port))
    assert result.returncode == 2
    assert result.stderr.startswith(f"lanchatd: error: {path}: {message}")
    assert result.stderr.count("\n") == 1
    assert "server_started" not in result.stderr


def test_latin1_config_is_one_line_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_bytes('[server]\nlang = "id"\n# caf\xe9\n'.encode("latin-1"))
    result = run_lanchatd("--config", str(path), "--port", "0")
    assert result.returncode == 2
    assert result.stderr == (
        f"lanchatd: error: {path}: line 3: byte 0xe9 is not UTF-8; save the file as UTF-8\n"
    )


def test_a_second_daemon_on_the_same_state_directory_exits_2(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = Daemon(env={"STATE_DIRECTORY": str(state)})
    try:
        result = run_lanchatd("--port", "0", state=state)
        assert result.returncode == 2
        assert result.stderr == (
            f"lanchatd: error: state directory {state} is in use by another lanchatd "
            f"(pid {first.process.pid}); give each daemon its own STATE_DIRECTORY\n"
        )
    finally:
        assert first.stop() == 0
    # The lock dies with its holder, even after kill -9: the next daemon starts.
    second = Daemon(env={"STATE_DIRECTORY": str(state)})
    second.process.kill()
    second.process.wait(WAIT)
    third = Daemon(env={"STATE_DIRECTORY": str(state)})
    assert third.stop() == 0


def test_missing_config_file(tmp_path: Path) -> None:
    result = run_lanchatd("--config", str(tmp_path / "nope.toml"))
    assert result.returncode == 2
    assert (
        result.stderr
        == f"lanchatd: error: {tmp_path / 'nope.toml'}: cannot read: No such file or directory\n"
    )


def test_flags_override_file_which_overrides_defaults(start_daemon, clients: list) -> None:
    server = start_daemon("--lang", "en", config='[server]\nlang = "id"\nmax_clients = 1\n')
    alice = LineClient(server.port, "alice")
    clients.append(alice)
    assert alice.lines(2) == ["alice joined!", "Connected to the server!"]
    extra = LineClient.__new__(LineClient)
    extra.sock = socket.create_connection(("127.0.0.1", server.port), timeout=WAIT)
    extra._buffer = b""
    clients.append(extra)
    assert extra.closed() == b"*** Server full (1 clients); try again later\n"


def test_port_in_use_is_one_line_and_nonzero() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = run_lanchatd("--port", str(port))
    assert result.returncode == 1
    assert (
        result.stderr
        == f"lanchatd: error: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    )


def test_unprivileged_port_error_has_no_traceback() -> None:
    result = run_lanchatd("--host", "192.0.2.1")  # an address this machine does not have
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("lanchatd: error: cannot listen on 192.0.2.1:5001: ")


def test_sigterm_tells_clients_and_exits_zero(daemon: Daemon, clients: list) -> None:
    alice = join(daemon.port, "alice")
    bob = join(daemon.port, "bob")
    half = LineClient(daemon.port)  # still in the handshake
    clients += [alice, bob, half]
    alice.line()
    started = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert alice.closed() == b"*** Server dimatikan\n"
    assert bob.closed() == b"*** Server dimatikan\n"
    assert half.closed() == b""
    assert daemon.stop() == 0
    assert time.monotonic() - started < 5
    assert daemon.find("server_stopping")
    assert {e["nick"] for e in daemon.find("client_left", reason="shutdown")} == {"alice", "bob"}


def test_sigint_also_stops_cleanly(daemon: Daemon) -> None:
    daemon.signal(signal.SIGINT)
    assert daemon.stop() == 0


def test_restart_on_same_port_right_after_stop(start_daemon, clients: list) -> None:
    first = start_daemon()
    port = first.port
    alice = join(port, "alice")
    alice.send("hello")
    alice.line()
    first.signal(signal.SIGTERM)
    alice.closed()
    alice.close()
    assert first.stop() == 0
    second = start_daemon("--port", str(port))  # connections in TIME_WAIT: needs SO_REUSEADDR
    clients.append(join(second.port, "again"))


def test_sighup_applies_changes_live_and_keeps_clients(tmp_path: Path, clients: list) -> None:
    path = tmp_path / "lanchatd.toml"
    path.write_text('[server]\nlang = "id"\n[log]\nmessage_text = true\n')
    server = Daemon(config=path)
    try:
        alice = join(server.port, "alice")
        clients.append(alice)
        path.write_text(
            '[server]\nlang = "en"\n[admin]\ngroup = "staff"\n[log]\nmessage_text = false\n'
        )
        server.signal(signal.SIGHUP)
        reloaded = server.wait_event("config_reloaded")
        assert reloaded["changed"] == {"lang": ["id", "en"], "log_message_text": [True, False]}
        assert server.wait_event("config_needs_restart")["keys"] == ["admin_group"]
        bob = LineClient(server.port, "bob")
        clients.append(bob)
        assert bob.lines(2) == ["bob joined!", "Connected to the server!"]
        assert alice.line() == "bob joined!", "alice stayed connected"
        alice.send("secret")
        assert alice.line() == "alice: secret"
        logged = server.wait_event("message", nick="alice")
        assert "text" not in logged
        assert logged["bytes"] == 6

        path.write_text("[server]\nlang = 5\n")
        server.signal(signal.SIGHUP)
        failed = server.wait_event("config_reload_failed")
        assert failed["error"].endswith("[server] lang: must be one of id, en, got int 5")
        alice.send("still up")
        assert alice.line() == "alice: still up"

        path.write_bytes('[server]\nlang = "id"\n# caf\xe9\n'.encode("latin-1"))
        server.signal(signal.SIGHUP)
        failed = server.wait_event(
            "config_reload_failed",
            error=f"{path}: line 3: byte 0xe9 is not UTF-8; save the file as UTF-8",
        )
        alice.send("after latin-1")
        assert alice.line() == "alice: after latin-1", "lang stayed en, alice stayed connected"
        carol = LineClient(server.port, "carol")
        clients.append(carol)
        assert carol.lines(2) == ["carol joined!", "Connected to the server!"]
        assert len(server.find("config_reloaded")) == 1
    finally:
        assert server.stop() == 0


@pytest.mark.skipif(shutil.which("nc") is None, reason="netcat-openbsd is not installed")
def test_netcat_user_chats_with_tutorial_style_client(daemon: Daemon, clients: list) -> None:
    nc = subprocess.Popen(
        ["nc", "127.0.0.1", str(daemon.port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    try:
        assert nc.stdin is not None
        assert nc.stdout is not None
        nc.stdin.write("netcat\n")
        nc.stdin.flush()
        wait_until(lambda: daemon.find("client_joined", nick="netcat"), what="netcat joined")
        tutorial = socket.create_connection(("127.0.0.1", daemon.port), timeout=WAIT)
        clients.append(tutorial)
        assert tutorial.recv(1024) == b"NICK"
        tutorial.send(b"tutor")
        daemon.wait_event("client_joined", nick="tutor")
        tutorial.send(b"tutor: hello netcat")
        lines = [nc.stdout.readline() for _ in range(4)]
        nc.stdin.write("hello tutor\n")
        nc.stdin.flush()
        lines.append(nc.stdout.readline())
        assert lines == [
            "NICKnetcat Bergabung!\n",
            "Terkoneksi dengan Server!\n",
            "tutor Bergabung!\n",
            "tutor: hello netcat\n",
            "netcat: hello tutor\n",
        ]
        heard = b""
        while not heard.endswith(b"netcat: hello tutor"):
            heard += tutorial.recv(1024)
        assert (
            heard
            == b"tutor Bergabung!Terkoneksi dengan Server!tutor: hello netcatnetcat: hello tutor"
        )
    finally:
        nc.kill()
        nc.wait(WAIT)
