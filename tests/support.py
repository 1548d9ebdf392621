"""Test support: the real ``lanchatd`` as a subprocess, and raw-socket chat clients."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
WAIT = 10.0


def wait_until(predicate: Callable[[], Any], timeout: float = WAIT, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


class LoggedProcess:
    """A subprocess whose JSON log lines on stderr are collected as they arrive."""

    process: subprocess.Popen[str]

    def _watch_log(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.stderr: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._collect, daemon=True)
        self._reader.start()

    def _collect(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._changed:
                self.stderr.append(line)
                with contextlib.suppress(json.JSONDecodeError):
                    self.events.append(json.loads(line))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def find(self, event: str, **fields: Any) -> list[dict[str, Any]]:
        with self._changed:
            return [
                e
                for e in self.events
                if e.get("event") == event and all(e.get(k) == v for k, v in fields.items())
            ]

    def wait_event(self, event: str, timeout: float = WAIT, **fields: Any) -> dict[str, Any]:
        """The first logged event with this name and these field values."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = self.find(event, **fields)
                if found:
                    return found[0]
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (
                    self.process.poll() is not None and not self._reader.is_alive()
                ):
                    raise AssertionError(
                        f"no {event} {fields} event; log:\n{''.join(self.stderr[-30:])}"
                    )
                self._changed.wait(remaining)


class Daemon(LoggedProcess):
    """A real ``lanchatd`` process; its JSON log events are collected as they arrive."""

    def __init__(
        self,
        *args: str,
        config: Path | None = None,
        env: dict[str, str] | None = None,
        host: str | None = "127.0.0.1",
    ) -> None:
        """``host=None`` leaves the listen address to the daemon's default."""
        command = [str(BIN / "lanchatd"), "--log-format", "json"]
        if host is not None:
            command += ["--host", host]
        if config is not None:
            command += ["--config", str(config)]
        if "--port" not in args:
            command += ["--port", "0"]
        self._runtime = tempfile.TemporaryDirectory(prefix="lanchatd-test-")
        self.admin_socket = f"{self._runtime.name}/admin.sock"
        if "--admin-socket" not in args:
            command += ["--admin-socket", self.admin_socket]
        self.process = subprocess.Popen(
            [*command, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "STATE_DIRECTORY": self._runtime.name, **(env or {})},
        )
        self._watch_log()
        started = self.wait_event("server_started")
        self.port: int = started["port"]

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self, timeout: float = WAIT) -> int:
        """SIGTERM, then wait for exit; returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        finally:
            self._reader.join(timeout)
            self._runtime.cleanup()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(WAIT)
        self._runtime.cleanup()


class LineClient:
    """A line-mode client on a raw socket: the way netcat or telnet talks to the daemon."""

    def __init__(
        self, port: int, nick: str | None = None, host: str = "127.0.0.1", source: str = ""
    ) -> None:
        self.sock = socket.create_connection((host, port), timeout=WAIT, source_address=(source, 0))
        self._buffer = b""
        assert self.recv_exact(4) == b"NICK"
        if nick is not None:
            self.send(nick)

    def recv_exact(self, size: int) -> bytes:
        while len(self._buffer) < size:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self._buffer += chunk
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def send(self, text: str) -> None:
        self.send_bytes(text.encode() + b"\n")

    def send_bytes(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self, timeout: float = WAIT) -> str:
        """The next line from the server (without its newline)."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no line within {timeout}s; have {self._buffer!r}")
            self.sock.settimeout(remaining)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed; have {self._buffer!r}")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def lines(self, count: int, timeout: float = WAIT) -> list[str]:
        return [self.line(timeout) for _ in range(count)]

    def expect(self, wanted: str, timeout: float = WAIT) -> list[str]:
        """Read lines until ``wanted``; return the lines before it."""
        skipped: list[str] = []
        deadline = time.monotonic() + timeout
        while (line := self.line(max(0.01, deadline - time.monotonic()))) != wanted:
            skipped.append(line)
        return skipped

    def closed(self, timeout: float = WAIT) -> bytes:
        """Read until the server closes; return what arrived first."""
        self.sock.settimeout(timeout)
        data = self._buffer
        self._buffer = b""
        while chunk := self.sock.recv(65536):
            data += chunk
        return data

    def close(self) -> None:
        self.sock.close()


def join(port: int, nick: str) -> LineClient:
    """A line client that has joined and consumed its two greeting lines."""
    client = LineClient(port, nick)
    assert client.lines(2) == [f"{nick} Bergabung!", "Terkoneksi dengan Server!"]
    return client


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
