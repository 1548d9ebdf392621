"""Where the admin socket and the state live: the same answer for lanchatd and lanchatctl."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from lanchatd import paths


def test_runtime_directory_and_admin_socket() -> None:
    systemd = {"RUNTIME_DIRECTORY": "/run/lanchatd:/run/other", "XDG_RUNTIME_DIR": "/run/user/7"}
    assert paths.default_admin_socket(systemd, uid=7) == Path("/run/lanchatd/admin.sock")
    assert paths.default_admin_socket({}, uid=0) == Path("/run/lanchatd/admin.sock")
    user = {"XDG_RUNTIME_DIR": "/run/user/1000"}
    assert paths.default_admin_socket(user, uid=1000) == Path("/run/user/1000/lanchatd/admin.sock")
    assert paths.default_admin_socket({}, uid=1000) == Path("/tmp/lanchatd-1000/admin.sock")
    relative = {"XDG_RUNTIME_DIR": "run"}  # not absolute: ignored, as the XDG spec says
    assert paths.default_admin_socket(relative, uid=1000) == Path("/tmp/lanchatd-1000/admin.sock")


def test_lanchatctl_looks_at_the_system_daemon_first() -> None:
    assert paths.admin_socket_candidates({"XDG_RUNTIME_DIR": "/run/user/1000"}, uid=1000) == [
        Path("/run/lanchatd-admin.sock"),
        Path("/run/lanchatd/admin.sock"),
        Path("/run/user/1000/lanchatd/admin.sock"),
    ]
    assert paths.admin_socket_candidates({}, uid=0) == [
        Path("/run/lanchatd-admin.sock"),
        Path("/run/lanchatd/admin.sock"),
    ]


def test_state_directory() -> None:
    home = Path("/home/ann")
    assert paths.state_dir({"STATE_DIRECTORY": "/var/lib/lanchatd"}, uid=5) == Path(
        "/var/lib/lanchatd"
    )
    assert paths.state_dir({}, uid=0) == Path("/var/lib/lanchatd")
    assert paths.state_dir({"XDG_STATE_HOME": "/x/state"}, uid=5) == Path("/x/state/lanchatd")
    assert paths.state_dir({}, uid=5, home=home) == home / ".local/state/lanchatd"


def test_a_private_directory_must_be_ours(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    paths.ensure_runtime_dir(mine, private=True)
    assert mine.stat().st_mode & 0o777 == 0o700
    paths.ensure_runtime_dir(mine, private=True)  # again: fine
    open_to_all = tmp_path / "open"
    open_to_all.mkdir()
    open_to_all.chmod(0o777)
    with pytest.raises(paths.PathError, match="writable by others"):
        paths.ensure_runtime_dir(open_to_all, private=True)
    if os.geteuid() == 0:
        squatted = tmp_path / "squatted"
        squatted.mkdir(mode=0o700)
        nobody = pwd.getpwnam("nobody")
        os.chown(squatted, nobody.pw_uid, nobody.pw_gid)
        with pytest.raises(paths.PathError, match=f"belongs to uid {nobody.pw_uid}"):
            paths.ensure_runtime_dir(squatted, private=True)
    file = tmp_path / "file"
    file.write_text("")
    with pytest.raises(paths.PathError):
        paths.ensure_runtime_dir(file, private=False)
