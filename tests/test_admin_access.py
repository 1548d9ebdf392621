"""Who may use the admin socket, tried with a real unprivileged user (nobody).

lanchatctl runs as nobody from a venv built on Debian's /usr/bin/python3 (see
admin_helpers.OtherUser: pyenv's python lives under /root and cannot run as anyone else).
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import socket
import stat
import threading
from pathlib import Path

import pytest

from tests.admin_helpers import OtherUser, outsider_group
from tests.support import WAIT, Daemon, lanchatctl


@pytest.fixture
def group_daemon(admin_daemons) -> tuple[Daemon, grp.struct_group]:
    """A root daemon whose admin group is one that nobody is not in."""
    group = outsider_group()
    return admin_daemons(config=f'[admin]\ngroup = "{group.gr_name}"\n'), group


def _as(user: OtherUser, server: Daemon, *args: str, groups: list[int] | None = None):
    return lanchatctl(
        "--socket",
        str(server.admin_socket),
        *args,
        command=user.command("lanchatctl", groups=groups),
        env=user.env(),
        clean_env=True,
    )


def test_an_outsider_is_stopped_by_the_socket_mode(
    admin_other_user: OtherUser, group_daemon: tuple[Daemon, grp.struct_group]
) -> None:
    server, group = group_daemon
    result = _as(admin_other_user, server, "who")
    assert result.returncode == 4, result
    assert result.stdout == ""
    assert result.stderr.startswith(
        f"lanchatctl: error: permission denied on {server.admin_socket}"
    )
    assert f"join the group '{group.gr_name}'" in result.stderr
    assert result.stderr.count("\n") == 1


def test_an_outsider_is_refused_by_the_daemon_itself(
    admin_other_user: OtherUser, group_daemon: tuple[Daemon, grp.struct_group]
) -> None:
    server, group = group_daemon
    server.admin_socket.chmod(0o666)  # a socket someone opened up: the daemon still checks
    result = _as(admin_other_user, server, "kick", "anyone")
    assert result.returncode == 4, result
    nobody = pwd.getpwnam("nobody").pw_uid
    assert f"uid {nobody} may not administer lanchatd" in result.stderr
    assert f"join the group '{group.gr_name}'" in result.stderr
    assert result.stderr.count("\n") == 1
    assert server.wait_event("admin_refused", admin_uid=nobody)
    assert not server.find("client_kicked")


def test_a_member_of_the_admin_group_is_served(
    admin_other_user: OtherUser,
    group_daemon: tuple[Daemon, grp.struct_group],
    admin_clients: list,
) -> None:
    server, group = group_daemon
    alice = server.chat("alice")
    bob = server.chat("bob")
    admin_clients += [alice, bob]
    result = _as(admin_other_user, server, "who", "--json", groups=[group.gr_gid])
    assert result.returncode == 0, result.stderr
    assert [c["nick"] for c in json.loads(result.stdout)] == ["alice", "bob"]
    result = _as(admin_other_user, server, "kick", "bob", "--reason", "x", groups=[group.gr_gid])
    assert result.returncode == 0, result.stderr
    nobody = pwd.getpwnam("nobody").pw_uid
    assert server.wait_event("client_kicked", nick="bob")["admin_uid"] == nobody


def test_a_users_own_daemon_serves_that_user_and_root(
    admin_other_user: OtherUser, admin_workdir: Path, admin_clients: list
) -> None:
    """lanchatd run by nobody: its default socket, its own uid allowed, bans saved as nobody."""
    nobody = pwd.getpwnam("nobody")
    state = admin_workdir / "state"
    state.mkdir()
    os.chown(state, nobody.pw_uid, nobody.pw_gid)
    runtime = Path(f"/tmp/lanchatd-{nobody.pw_uid}")
    existed = runtime.exists()
    server = Daemon(
        workdir=admin_workdir,
        command=admin_other_user.command("lanchatd"),
        clean_env=True,
        env=admin_other_user.env(),
        admin_socket=runtime / "admin.sock",
        admin_flag=False,
        state_dir=state,
    )
    try:
        assert server.find("admin_listening", socket=str(runtime / "admin.sock"))
        info = runtime.lstat()
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (nobody.pw_uid, 0o700)
        assert stat.S_IMODE((runtime / "admin.sock").lstat().st_mode) == 0o660
        alice = server.chat("alice")
        admin_clients.append(alice)
        # nobody finds its own daemon without being told where (after the system places).
        own = lanchatctl(
            "who",
            "--json",
            command=admin_other_user.command("lanchatctl"),
            env=admin_other_user.env(),
            clean_env=True,
        )
        if own.returncode == 4 and "/run/" in own.stderr:
            pytest.skip(f"a system lanchatd on this machine is found first: {own.stderr}")
        assert own.returncode == 0, own.stderr
        assert [c["nick"] for c in json.loads(own.stdout)] == ["alice"]
        banned = _as(admin_other_user, server, "ban", "127.0.0.30")
        assert banned.returncode == 0, banned.stderr
        assert (state / "bans.json").stat().st_uid == nobody.pw_uid
        # Root may always administer.
        assert server.ctl("bans", "--json").returncode == 0
        assert server.stop() == 0
        assert not (runtime / "admin.sock").exists()
    finally:
        server.kill()
        if not existed:
            with contextlib.suppress(OSError):
                runtime.rmdir()


@pytest.mark.parametrize(
    ("owner", "mode", "problem"),
    [
        ("daemon", 0o755, "belongs to uid {uid}, neither you nor root"),
        ("nobody", 0o777, "is writable by others"),
    ],
)
def test_lanchatctl_sends_nothing_to_a_default_socket_someone_else_could_have_put_there(
    admin_other_user: OtherUser, admin_workdir: Path, owner: str, mode: int, problem: str
) -> None:
    """Another user made the default directory first and listens in it: not one byte goes
    there. Runs as nobody, whose default is $XDG_RUNTIME_DIR/lanchatd, in a sticky
    world-writable XDG_RUNTIME_DIR such as /tmp."""
    runtime = admin_workdir / "xdg"
    runtime.mkdir()
    runtime.chmod(0o1777)
    planted = runtime / "lanchatd"
    planted.mkdir()
    intruder = pwd.getpwnam(owner)
    os.chown(planted, intruder.pw_uid, intruder.pw_gid)
    planted.chmod(mode)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as fake:
        fake.bind(str(planted / "admin.sock"))
        (planted / "admin.sock").chmod(0o777)
        fake.listen()
        fake.setblocking(False)
        result = lanchatctl(
            "ban",
            "10.0.0.9",
            "--reason",
            "secret",
            command=admin_other_user.command("lanchatctl"),
            env=admin_other_user.env(XDG_RUNTIME_DIR=str(runtime)),
            clean_env=True,
        )
        if result.returncode == 0 or "/run/" in result.stderr:
            pytest.skip(f"a system lanchatd on this machine is found first: {result.stderr}")
        with pytest.raises(BlockingIOError):
            fake.accept()
    assert result.returncode == 4
    assert result.stderr == (
        f"lanchatctl: error: not using {planted / 'admin.sock'}: {planted} "
        f"{problem.format(uid=intruder.pw_uid)}, so another user may be listening there; "
        "remove that directory, or pass --socket if you trust it\n"
    )


def test_lanchatctl_uses_its_own_private_default_directory(
    admin_other_user: OtherUser, admin_workdir: Path
) -> None:
    """The same place owned by the user itself, 0700, is used (the check can pass)."""
    runtime = admin_workdir / "xdg"
    runtime.mkdir()
    runtime.chmod(0o1777)
    own = runtime / "lanchatd"
    own.mkdir()
    nobody = pwd.getpwnam("nobody")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(own / "admin.sock"))
        (own / "admin.sock").chmod(0o777)
        os.chown(own, nobody.pw_uid, nobody.pw_gid)
        own.chmod(0o700)
        listener.listen()
        listener.settimeout(WAIT)

        def hang_up() -> None:
            listener.accept()[0].close()

        answered = threading.Thread(target=hang_up, daemon=True)
        answered.start()
        result = lanchatctl(
            "stats",
            command=admin_other_user.command("lanchatctl"),
            env=admin_other_user.env(XDG_RUNTIME_DIR=str(runtime)),
            clean_env=True,
        )
        answered.join(WAIT)
    if "/run/" in result.stderr:
        pytest.skip(f"a system lanchatd on this machine is found first: {result.stderr}")
    assert result.returncode == 3
    assert "lanchatd closed the connection on" in result.stderr
