"""Where the admin socket and the state live: the same answer for lanchatd and lanchatctl."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from lanchatd.core import paths


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


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give directories to nobody")
def test_which_default_socket_directories_lanchatctl_trusts(tmp_path: Path) -> None:
    """Run as root here: root's own directories pass, and so does one that root made for a
    service user where only root can write (systemd's RuntimeDirectory under /run)."""
    nobody = pwd.getpwnam("nobody")
    root_only = tmp_path / "run"  # like /run: root's, 0755
    root_only.mkdir(mode=0o755)
    shared = tmp_path / "tmp"  # like /tmp: anyone may create entries
    shared.mkdir()
    shared.chmod(0o1777)

    def directory(parent: Path, name: str, mode: int, owner: int = 0) -> Path:
        made = parent / name
        made.mkdir()
        made.chmod(mode)
        os.chown(made, owner, owner and nobody.pw_gid)
        return made / "admin.sock"

    trusted = [
        directory(root_only, "roots", 0o755),
        directory(shared, "mine", 0o700),
        directory(root_only, "service", 0o755, nobody.pw_uid),
        tmp_path / "missing" / "admin.sock",
    ]
    assert [paths.untrusted_socket_dir(path) for path in trusted] == [None] * 4
    squatted = directory(shared, "squatted", 0o700, nobody.pw_uid)
    assert paths.untrusted_socket_dir(squatted) == (
        f"{squatted.parent} belongs to uid {nobody.pw_uid}, neither you nor root"
    )
    for writable in (directory(shared, "open", 0o777), directory(root_only, "open", 0o775)):
        assert paths.untrusted_socket_dir(writable) == f"{writable.parent} is writable by others"
    link = shared / "link"
    link.symlink_to(root_only)
    assert paths.untrusted_socket_dir(link / "admin.sock") == f"{link} is not a directory"
