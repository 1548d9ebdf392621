"""Helpers for the admin socket and lanchatctl tests: real daemons, real sockets, real users.

Their fixtures (``admin_daemons``, ``admin_daemon``, ...) live in conftest.py.
"""

from __future__ import annotations

import grp
import importlib.metadata
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.support import BIN

REPO = Path(__file__).resolve().parents[1]
LANCHATD = BIN / "lanchatd"
LANCHATCTL = BIN / "lanchatctl"


def short_dir(prefix: str = "lanchat-admin-") -> Path:
    """A fresh directory with a short path (AF_UNIX paths are limited to 107 bytes).

    Mode 0755, so another user can reach a socket inside it: its own mode decides access.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


def remove_tree(path: Path) -> None:
    """Remove a test directory, even if a test left part of it immutable (chattr +i)."""
    if shutil.which("chattr"):
        subprocess.run(["chattr", "-R", "-i", str(path)], capture_output=True, check=False)
    shutil.rmtree(path, ignore_errors=True)


# Another, unprivileged user -----------------------------------------------------------------


class OtherUser:
    """Run lanchatctl (and lanchatd) as another user, with an interpreter that user can run.

    The project's venv points at pyenv's python under /root (mode 0700), which no other user
    can execute; so this builds a venv from Debian's /usr/bin/python3 in a world-readable place,
    copies the pure-Python packages in, and writes the console scripts from the installed entry
    points.
    """

    def __init__(self, root: Path, python: Path) -> None:
        self.root = root
        self.python = python
        self.bin = root / "venv" / "bin"

    def command(
        self, program: str, user: str = "nobody", groups: list[int] | None = None
    ) -> list[str]:
        entry = pwd.getpwnam(user)
        prefix = [
            "setpriv",
            f"--reuid={entry.pw_uid}",
            f"--regid={entry.pw_gid}",
        ]
        prefix += [f"--groups={','.join(map(str, groups))}"] if groups else ["--clear-groups"]
        return [*prefix, "--", str(self.bin / program)]

    @staticmethod
    def env(**extra: str) -> dict[str, str]:
        return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", **extra}


def build_other_user(root: Path) -> OtherUser:
    """Build the venv, or skip the test saying exactly what is missing."""
    if os.geteuid() != 0:
        pytest.skip("running as another user needs root (setpriv); these tests run as non-root")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("there is no user 'nobody' to test as")
    python = Path("/usr/bin/python3")
    if not python.exists():
        pytest.skip("Debian's /usr/bin/python3 is missing: pyenv's python cannot run as nobody")
    probe = subprocess.run(
        [str(python), "-c", "import sys, venv; print(sys.version_info >= (3, 11))"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.stdout.strip() != "True":
        pytest.skip(f"/usr/bin/python3 is older than 3.11 or lacks venv: {probe.stderr.strip()}")
    venv = root / "venv"
    made = subprocess.run(
        [str(python), "-m", "venv", "--without-pip", str(venv)],
        capture_output=True,
        text=True,
        check=False,
    )
    if made.returncode:
        pytest.skip(f"cannot make a venv from /usr/bin/python3 (python3-venv?): {made.stderr}")
    site = next((venv / "lib").glob("python3*/site-packages"))
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("lanchatd", "lanchatctl"):
        shutil.copytree(REPO / package, site / package, ignore=ignore)
    for name in (
        *("click", "structlog", "sdnotify", "wcwidth", "confusable_homoglyphs"),
        *("h11", "wsproto", "segno"),
    ):
        source = __import__(name).__file__
        assert source is not None, name
        shutil.copytree(Path(source).parent, site / name, ignore=ignore)
    scripts = importlib.metadata.entry_points(group="console_scripts")
    for name in ("lanchatd", "lanchatctl"):
        (entry,) = [ep for ep in scripts if ep.name == name]
        script = venv / "bin" / name
        script.write_text(
            f"#!{venv}/bin/python\nimport sys\nfrom {entry.module} import {entry.attr}\n"
            f"sys.exit({entry.attr}())\n"
        )
        script.chmod(0o755)
    subprocess.run(["chmod", "-R", "a+rX", str(root)], check=True)
    user = OtherUser(root, python)
    check = subprocess.run(
        [*user.command("lanchatctl"), "--version"],
        capture_output=True,
        text=True,
        env=user.env(),
        check=False,
    )
    if check.returncode:
        pytest.skip(f"lanchatctl does not run as nobody: {check.returncode} {check.stderr}")
    return user


def outsider_group() -> grp.struct_group:
    """A group that 'nobody' is not in, to act as the admin group (prefer 'users')."""
    nobody = pwd.getpwnam("nobody")
    candidates = [grp.getgrnam("users")] if "users" in {g.gr_name for g in grp.getgrall()} else []
    candidates += sorted(grp.getgrall(), key=lambda g: g.gr_gid)
    for group in candidates:
        if group.gr_gid not in (0, nobody.pw_gid) and "nobody" not in group.gr_mem:
            return group
    pytest.skip("no group to use as the admin group")
    raise AssertionError
