"""Helpers for the client tests: raw-socket users and the ``lanchat`` client in a pty or a pipe.

The daemon they talk to is ``tests.support.Daemon``. Every wait here has a deadline; nothing
sleeps blindly.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pexpect

from tests.support import LineClient, join

WAIT = 15.0
CLIENT = [sys.executable, "-m", "lanchatd.client"]


def client_env(*, color: bool = False, lang: str = "C.UTF-8") -> dict[str, str]:
    """The client's environment: no LANCHAT_ settings, and the locale ``lang`` alone."""
    locale = ("LANG", "LANGUAGE", "LC_ALL", "LC_MESSAGES")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANCHAT_") and k not in locale}
    env.pop("NO_COLOR", None)
    env.update(PROMPT_TOOLKIT_NO_CPR="1", TERM="xterm-256color", LANG=lang)
    if not color:
        env["NO_COLOR"] = "1"
    return env


def run_client(
    port: int,
    *args: str,
    stdin: str | bytes = "",
    host: str = "127.0.0.1",
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """The client in a pipe: run to the end (bounded) and return what it did. Bytes on stdin
    that are not UTF-8 reach it as they are."""
    return subprocess.run(
        [*CLIENT, host, "--port", str(port), *args],
        input=stdin.decode(errors="surrogateescape") if isinstance(stdin, bytes) else stdin,
        capture_output=True,
        text=True,
        env={**client_env(), **(env or {})},
        timeout=60,
        check=False,
    )


def joined(child: pexpect.spawn) -> None:
    """Wait until the interactive client has joined and shows its prompt."""
    child.expect_exact("Terkoneksi dengan Server!")
    child.expect_exact(">>")


def spawn_client(
    port: int, *args: str, color: bool = False, host: str = "127.0.0.1", lang: str = "C.UTF-8"
) -> pexpect.spawn:
    """The interactive client in a pseudo-terminal (30x100); ``screen_text`` has its output."""
    child = pexpect.spawn(
        CLIENT[0],
        [*CLIENT[1:], host, "--port", str(port), *args],
        env=client_env(color=color, lang=lang),
        encoding="utf-8",
        codec_errors="replace",
        dimensions=(30, 100),
        timeout=WAIT,
    )
    child.logfile_read = _Tee()
    return child


class _Tee:
    """Collects everything the client wrote to its terminal."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, text: str) -> None:
        self.parts.append(text)

    def flush(self) -> None:
        pass

    def __str__(self) -> str:
        return "".join(self.parts)


def screen_text(child: pexpect.spawn) -> str:
    return str(child.logfile_read)


def quit_client(child: pexpect.spawn) -> int:
    """Leave with Ctrl-D and return the exit status."""
    if child.isalive():
        child.sendcontrol("d")
        child.expect(pexpect.EOF, timeout=WAIT)
    child.close()
    return child.exitstatus if child.exitstatus is not None else -(child.signalstatus or 0)


class Clients:
    """Interactive clients and raw users; whatever is left running is closed after the test."""

    def __init__(self) -> None:
        self.children: list[pexpect.spawn] = []
        self.users: list[LineClient] = []

    def spawn(
        self,
        port: int,
        *args: str,
        color: bool = False,
        host: str = "127.0.0.1",
        lang: str = "C.UTF-8",
    ) -> pexpect.spawn:
        child = spawn_client(port, *args, color=color, host=host, lang=lang)
        self.children.append(child)
        return child

    def user(self, port: int, nick: str, cafile: str | None = None) -> LineClient:
        user = join(port, nick, cafile=cafile)
        self.users.append(user)
        return user

    def close(self) -> None:
        for child in self.children:
            child.close(force=True)
        for user in self.users:
            user.close()
