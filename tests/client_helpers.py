"""Helpers for the client tests: raw-socket users and the ``lanchat`` client in a pty or a pipe.

The daemon they talk to is ``tests.support.Daemon``, directly or through a :class:`Relay`
that cuts connections when told. Every wait here has a deadline; nothing sleeps blindly.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable

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


class ScriptedPeer:
    """A TCP server on 127.0.0.1 that runs ``script`` for every connection it accepts."""

    def __init__(self, script: Callable[[socket.socket], None]) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self._script = script
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        with conn:
            self._script(conn)

    def close(self) -> None:
        self.listener.close()


class Relay:
    """A TCP relay on 127.0.0.1 in front of the daemon, for cutting a connection at a chosen
    moment: bytes either way can be held back (never delivered), then every connection
    through it cut at once. Connections made after a cut pass freely.

    Test support, not a stand-in for our code: both ends are the real client and daemon.
    """

    def __init__(self, port: int) -> None:
        self._target = port
        self._lock = threading.Lock()
        self._links: list[_Link] = []
        self._peer = ScriptedPeer(self._relay)
        self.port = self._peer.port

    def _relay(self, client: socket.socket) -> None:
        server = socket.create_connection(("127.0.0.1", self._target), timeout=WAIT)
        server.settimeout(None)
        link = _Link(client, server)
        with self._lock:
            self._links.append(link)
        link.run()

    def _current(self) -> list[_Link]:
        with self._lock:
            return [link for link in self._links if not link.cut]

    def hold_to_client(self) -> None:
        """From now on, what the daemon sends is kept here instead of reaching the client."""
        for link in self._current():
            link.hold[1] = True

    def hold_to_server(self) -> None:
        """From now on, what the client sends is kept here instead of reaching the daemon."""
        for link in self._current():
            link.hold[0] = True

    def held_from_client(self) -> bytes:
        """What the client sent that was held back (on the current connections)."""
        return b"".join(bytes(link.held[0]) for link in self._current())

    def cut(self) -> None:
        """Reset every current connection on both sides; what was held is dropped."""
        for link in self._current():
            link.close()

    def close(self) -> None:
        self._peer.close()
        with self._lock:
            links = list(self._links)
        for link in links:
            link.close()


class _Link:
    """One client connection through a :class:`Relay` and its connection to the daemon;
    direction 0 is client to daemon, 1 daemon to client."""

    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.sockets = (client, server)
        self.hold = [False, False]
        self.held = (bytearray(), bytearray())
        self.cut = False

    def run(self) -> None:
        """Pass bytes both ways until the daemon's side ends (or the link is cut)."""
        threading.Thread(target=self._pump, args=(0,), daemon=True).start()
        self._pump(1)

    def _pump(self, direction: int) -> None:
        source, sink = self.sockets[direction], self.sockets[1 - direction]
        while True:
            try:
                data = source.recv(65536)
                if not data:
                    sink.shutdown(socket.SHUT_WR)
                    return
                if self.hold[direction]:
                    self.held[direction].extend(data)
                else:
                    sink.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        self.cut = True
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
