"""The admin socket file: mode, group, stale sockets, never stealing a live daemon's, removal,
and a socket passed in by socket activation."""

from __future__ import annotations

import shutil
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from tests.admin_helpers import outsider_group
from tests.support import ISOLATED, LANCHATD, Daemon, free_port, lanchatctl, wait_until


def _one_error_line(server: Daemon) -> str:
    lines = [line for line in server.stderr if line.strip()]
    assert "Traceback" not in "".join(lines)
    errors = [line for line in lines if line.startswith("lanchatd: error:")]
    assert len(errors) == 1, lines
    return errors[0]


def test_socket_is_0660_with_the_admin_group(admin_daemons) -> None:
    group = outsider_group()
    server = admin_daemons(config=f'[admin]\ngroup = "{group.gr_name}"\n')
    info = server.admin_socket.lstat()
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o660
    assert info.st_gid == group.gr_gid
    assert server.find("admin_listening", socket=str(server.admin_socket), group=group.gr_name)
    # No temporary name is left behind next to it (state is the locked state directory).
    assert sorted(p.name for p in server.admin_socket.parent.iterdir()) == [
        "admin.sock",
        "lanchatd.toml",
        "state",
    ]


def test_missing_group_is_logged_and_the_socket_stays_private(admin_daemons) -> None:
    server = admin_daemons(config='[admin]\ngroup = "no-such-group-lanchat"\n')
    assert stat.S_IMODE(server.admin_socket.lstat().st_mode) == 0o660
    assert server.find("admin_group_missing", group="no-such-group-lanchat")
    assert server.ctl("stats").returncode == 0


def test_stale_socket_of_a_dead_daemon_is_replaced(admin_daemons, admin_workdir: Path) -> None:
    path = admin_workdir / "admin.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))  # the file stays; nothing listens on it any more
    dead.close()
    assert stat.S_ISSOCK(path.lstat().st_mode)
    server = admin_daemons()
    assert server.find("admin_socket_stale_removed", path=str(path))
    assert server.ctl("stats").returncode == 0


def test_a_live_daemons_socket_is_never_taken(admin_daemons, admin_workdir: Path) -> None:
    first = admin_daemons()
    before = first.admin_socket.lstat().st_ino
    second = admin_daemons(state_dir=admin_workdir / "state-2", wait=False)
    assert second.wait_exit() == 1
    line = _one_error_line(second)
    assert (
        f"another lanchatd (pid {first.process.pid}) is already running with admin socket "
        f"{first.admin_socket}"
    ) in line
    assert first.admin_socket.lstat().st_ino == before
    result = first.ctl("stats", "--json")
    assert result.returncode == 0, result.stderr


def test_a_path_that_is_not_a_socket_is_left_alone(admin_daemons, admin_workdir: Path) -> None:
    precious = admin_workdir / "admin.sock"
    precious.write_text("not a socket\n")
    server = admin_daemons(wait=False)
    assert server.wait_exit() == 1
    assert "exists and is not a socket" in _one_error_line(server)
    assert precious.read_text() == "not a socket\n"


def test_too_long_a_path_is_a_clear_error(admin_daemons, admin_workdir: Path) -> None:
    server = admin_daemons(admin_socket=admin_workdir / ("x" * 120), wait=False)
    assert server.wait_exit() == 1
    assert "too long" in _one_error_line(server)


def test_socket_is_removed_on_a_clean_stop(admin_daemons) -> None:
    server = admin_daemons()
    assert server.admin_socket.exists()
    assert server.stop() == 0
    assert not server.admin_socket.exists()


def test_a_socket_passed_in_by_socket_activation_is_used(admin_workdir: Path) -> None:
    activate = shutil.which("systemd-socket-activate")
    if activate is None:
        pytest.skip("systemd-socket-activate not installed (Debian package systemd)")
    port = free_port()
    passed = admin_workdir / "passed.sock"
    own = admin_workdir / "own.sock"
    process = subprocess.Popen(
        [
            activate,
            "-l",
            f"127.0.0.1:{port}",
            "-l",
            str(passed),
            "--fdname=chat:admin",
            f"--setenv=STATE_DIRECTORY={admin_workdir / 'state'}",
            str(LANCHATD),
            *ISOLATED,
            "--log-format",
            "json",
            "--admin-socket",
            str(own),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(passed.exists, what="systemd-socket-activate to listen")
        # The first connection starts the daemon, which then answers on the passed socket.
        result = lanchatctl("--socket", str(passed), "stats", "--json")
        assert result.returncode == 0, result.stderr
        assert '"clients": 0' in result.stdout
        assert not own.exists()
        process.terminate()
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
    # The passed socket belongs to whoever created it (systemd's RemoveOnStop=), not us.
    assert passed.exists()
