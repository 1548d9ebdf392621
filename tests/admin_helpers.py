"""Helpers for the admin socket and lanchatctl tests: real daemons, real sockets, real users.

Their fixtures (``admin_daemons``, ``admin_daemon``, ...) live in conftest.py.
"""

from __future__ import annotations

import contextlib
import grp
import importlib.metadata
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support import BIN, WAIT, LoggedProcess

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


# The daemon ---------------------------------------------------------------------------------


class Daemon(LoggedProcess):
    """A real ``lanchatd`` subprocess with its own admin socket and state directory."""

    def __init__(
        self,
        workdir: Path,
        *args: str,
        config: str | None = None,
        command: list[str] | None = None,
        env: dict[str, str] | None = None,
        clean_env: bool = False,
        admin_socket: Path | None = None,
        admin_flag: bool = True,
        state_dir: Path | None = None,
        wait: bool = True,
    ) -> None:
        self.workdir = workdir
        self.admin_socket = admin_socket or workdir / "admin.sock"
        self.state_dir = state_dir or workdir / "state"
        argv = [*(command or [str(LANCHATD)]), "--host", "127.0.0.1", "--log-format", "json"]
        if "--port" not in args:
            argv += ["--port", "0"]
        if admin_flag:
            argv += ["--admin-socket", str(self.admin_socket)]
        if config is not None:
            config_path = workdir / "lanchatd.toml"
            config_path.write_text(config)
            config_path.chmod(0o644)
            argv += ["--config", str(config_path)]
        base_env = {} if clean_env else {**os.environ}
        base_env.pop("LANCHATD_ADMIN_SOCKET", None)
        self.process = subprocess.Popen(
            [*argv, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**base_env, "STATE_DIRECTORY": str(self.state_dir), **(env or {})},
        )
        self._watch_log()
        self.port = 0
        if wait:
            self.port = self.wait_event("server_started")["port"]

    def wait_exit(self, timeout: float = WAIT) -> int:
        status = self.process.wait(timeout)
        self._reader.join(timeout)
        return status

    def stop(self, timeout: float = WAIT) -> int:
        """SIGTERM, as systemctl stop does; return the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.wait_exit(5.0)

    def ctl(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """Run the installed lanchatctl against this daemon's admin socket."""
        return lanchatctl("--socket", str(self.admin_socket), *args, **kwargs)

    def admin(self) -> AdminConnection:
        return AdminConnection(self.admin_socket)

    def chat(self, nick: str, **kwargs: Any) -> ChatClient:
        return ChatClient(self.port, nick, **kwargs)


def lanchatctl(
    *args: str,
    command: list[str] | None = None,
    env: dict[str, str] | None = None,
    clean_env: bool = False,
    timeout: float = 30.0,
    check_traceback: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``lanchatctl`` entry point (or ``command``) as a subprocess.

    The environment is this one (without LANCHATD_ADMIN_SOCKET) plus ``env``, or only ``env``
    with ``clean_env``.
    """
    environment = {} if clean_env else {**os.environ}
    environment.pop("LANCHATD_ADMIN_SOCKET", None)
    environment.update(env or {})
    result = subprocess.run(
        [*(command or [str(LANCHATCTL)]), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if check_traceback:
        assert "Traceback" not in result.stderr, result.stderr
    return result


# Clients ------------------------------------------------------------------------------------


class ChatClient:
    """A raw-socket line-mode chat client (or, with ``classic``, the original tutorial's)."""

    def __init__(
        self,
        port: int,
        nick: str,
        *,
        source: str = "127.0.0.1",
        classic: bool = False,
        join: bool = True,
    ) -> None:
        self.nick = nick
        self.sock = socket.create_connection(("127.0.0.1", port), WAIT, source_address=(source, 0))
        self.buffer = b""
        self.seen: list[str] = []
        greeting = self._read_exactly(4)
        assert greeting == b"NICK", greeting
        self.sock.sendall(nick.encode() if classic else nick.encode() + b"\n")
        if join and not classic:
            self.expect(f"{nick} ")  # the join line (either language), addressed to everyone
            self.line()  # and the welcome, to the newcomer only

    def _read_exactly(self, count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = self.sock.recv(count - len(data))
            if not chunk:
                break
            data += chunk
        return data

    def line(self, timeout: float = WAIT) -> str | None:
        """The next line, or None at end of file."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{self.nick}: no line within {timeout}s; saw {self.seen}")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            except TimeoutError:
                raise AssertionError(
                    f"{self.nick}: no line within {timeout}s; saw {self.seen}"
                ) from None
            if not chunk:
                if self.buffer:
                    rest, self.buffer = self.buffer, b""
                    return rest.decode()
                return None
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\n", 1)
        text = raw.decode()
        self.seen.append(text)
        return text

    def expect(self, start: str, timeout: float = WAIT) -> str:
        """Read until a line starting with ``start``; return it."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.line(max(0.0, deadline - time.monotonic()))
            if text is None:
                raise AssertionError(f"{self.nick}: closed before {start!r}; saw {self.seen}")
            if text.startswith(start):
                return text

    def rest_until_closed(self, timeout: float = WAIT) -> list[str]:
        """Every line until the server closes the connection."""
        lines = []
        deadline = time.monotonic() + timeout
        while True:
            text = self.line(max(0.0, deadline - time.monotonic()))
            if text is None:
                return lines
            lines.append(text)

    def say(self, text: str) -> None:
        self.sock.sendall(text.encode() + b"\n")

    def close(self) -> None:
        self.sock.close()


def refused_connection(port: int, source: str = "127.0.0.1", timeout: float = WAIT) -> bytes:
    """Connect and return what the server sends: a refusal until it closes, or its ``NICK``."""
    with socket.create_connection(("127.0.0.1", port), timeout, source_address=(source, 0)) as sock:
        data = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and data != b"NICK":
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
        return data


class AdminConnection:
    """A raw admin-socket connection speaking the JSON protocol line by line."""

    def __init__(self, path: Path, timeout: float = WAIT) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.reader = self.sock.makefile("rb")
        self.hello = self.receive()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, message: dict[str, Any]) -> None:
        self.sock.sendall(json.dumps(message).encode() + b"\n")

    def receive(self) -> dict[str, Any]:
        line = self.reader.readline()
        assert line, "admin socket closed"
        return json.loads(line)

    def request(self, command: str, **args: Any) -> dict[str, Any]:
        message: dict[str, Any] = {"version": 1, "command": command}
        if args:
            message["args"] = args
        self.send(message)
        return self.receive()

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


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
    for name in ("click", "structlog", "sdnotify", "wcwidth", "confusable_homoglyphs"):
        module = __import__(name)
        shutil.copytree(Path(module.__file__).parent, site / name, ignore=ignore)
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
