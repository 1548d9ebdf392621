"""Test support: the real ``lanchatd`` and ``lanchatctl`` as subprocesses, raw-socket clients."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
LANCHATD = BIN / "lanchatd"
#: Flags for a lanchatd a test starts by hand, as ``Daemon`` does for its own: the web page on a
#: free loopback port (never the shared 8080), nothing announced on the LAN.
ISOLATED = ("--web-host", "127.0.0.1", "--web-port", "0", "--no-discovery")
LANCHATCTL = BIN / "lanchatctl"
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
        """Start collecting; what earlier runs of the process logged is kept."""
        if not hasattr(self, "events"):
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
    """A real ``lanchatd`` with its own admin socket and state directory; its JSON log events are
    collected as they arrive."""

    def __init__(
        self,
        *args: str,
        config: Path | None = None,
        env: dict[str, str] | None = None,
        host: str | None = "127.0.0.1",
        workdir: Path | None = None,
        command: list[str] | None = None,
        clean_env: bool = False,
        admin_socket: Path | None = None,
        admin_flag: bool = True,
        state_dir: Path | None = None,
        wait: bool = True,
        discovery: bool = False,
    ) -> None:
        """``host=None`` leaves the listen address to the daemon's default, ``admin_flag=False``
        the admin socket. ``workdir`` holds the admin socket and the state directory (by default
        a temporary directory, removed when the daemon ends). The environment is this one (only
        ``env`` with ``clean_env``) without LANCHATD_ADMIN_SOCKET, plus ``env``. ``wait=False``
        returns before the daemon has started (``port`` stays 0). Newcomers are shown no
        history unless ``--history-on-join`` is among ``args`` (tests/test_history_daemon.py),
        so every other test reads the greeting and live lines alone. It announces nothing on
        the LAN (``--no-discovery``) unless ``discovery`` (tests/test_discovery.py, in network
        namespaces of its own); then the config file and the default decide.
        """
        self._cleanup: Callable[[], None] = lambda: None
        if workdir is None:
            runtime = tempfile.TemporaryDirectory(prefix="lanchatd-test-")
            workdir, self._cleanup = Path(runtime.name), runtime.cleanup
        self.workdir = workdir
        self.admin_socket = admin_socket or self.workdir / "admin.sock"
        self.state_dir = state_dir or self.workdir / "state"
        argv = [*(command or [str(LANCHATD)]), "--log-format", "json"]
        if host is not None:
            argv += ["--host", host]
        if config is not None:
            argv += ["--config", str(config)]
        if "--port" not in args:
            argv += ["--port", "0"]
        if "--web-port" not in args and "--no-web" not in args:
            argv += ["--web-port", "0"]
            if host is not None:
                argv += ["--web-host", host]
        if "--history-on-join" not in args:
            argv += ["--history-on-join", "0"]
        if not discovery:
            argv += ["--no-discovery"]
        if admin_flag and "--admin-socket" not in args:
            argv += ["--admin-socket", str(self.admin_socket)]
        base_env = {} if clean_env else {**os.environ}
        base_env.pop("LANCHATD_ADMIN_SOCKET", None)
        self._argv = [*argv, *args]
        self._env = {**base_env, "STATE_DIRECTORY": str(self.state_dir), **(env or {})}
        self._launch()
        self.port: int = self.wait_event("server_started")["port"] if wait else 0
        #: The web port (HTTP and WebSocket), 0 while unknown or off.
        self.web_port: int = 0
        if wait and (started := self.find("web_started")):
            self.web_port = started[0]["port"]

    def _launch(self) -> None:
        self.process = subprocess.Popen(
            self._argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=self._env,
        )
        self._watch_log()

    def start(self) -> None:
        """Start again after ``stop``, on the same port, so clients can reconnect to it."""
        self.workdir.mkdir(exist_ok=True)
        self._argv += ["--port", str(self.port)]  # the last --port counts
        if self.web_port:
            self._argv += ["--web-port", str(self.web_port)]
        before = len(self.find("server_started"))
        self._launch()
        wait_until(lambda: len(self.find("server_started")) > before, what="lanchatd's restart")

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.kill()

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait_exit(self, timeout: float = WAIT) -> int:
        """Wait for the daemon to exit; return its exit status."""
        try:
            return self.process.wait(timeout)
        finally:
            if self.process.poll() is not None:
                self._reader.join(timeout)
            self._cleanup()

    def stop(self, timeout: float = WAIT) -> int:
        """SIGTERM, as systemctl stop does, then wait for exit; returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.wait_exit()

    def ctl(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """Run the installed lanchatctl against this daemon's admin socket."""
        return lanchatctl("--socket", str(self.admin_socket), *args, **kwargs)

    def admin(self) -> AdminConnection:
        return AdminConnection(self.admin_socket)

    def chat(
        self, nick: str, *, source: str = "127.0.0.1", classic: bool = False, join: bool = True
    ) -> LineClient:
        """A line client as ``nick`` (from ``source``) that has read its greeting in whichever
        language; with ``classic``, the original tutorial's (the nickname without a newline);
        with ``join=False``, one that reads nothing yet."""
        client = LineClient(self.port, source=source)
        client.send_bytes(nick.encode() if classic else nick.encode() + b"\n")
        if join and not classic:
            client.expect_start(f"{nick} ")  # the join line, addressed to everyone
            client.line()  # and the welcome, to the newcomer only
        return client


def write_config(directory: Path, text: str, name: str = "lanchatd.toml") -> Path:
    """A config file anyone can read (mode 0644: the daemon may run as another user)."""
    path = directory / name
    path.write_text(text)
    path.chmod(0o644)
    return path


class LineClient:
    """A line-mode client on a raw socket: the way netcat or telnet talks to the daemon; with
    ``cafile``, over TLS as ``openssl s_client`` does, trusting the certificate in that file."""

    def __init__(
        self,
        port: int,
        nick: str | None = None,
        host: str = "127.0.0.1",
        source: str = "",
        *,
        cafile: str | os.PathLike[str] | None = None,
        server_hostname: str = "127.0.0.1",
    ) -> None:
        self.sock = socket.create_connection((host, port), timeout=WAIT, source_address=(source, 0))
        if cafile is not None:
            context = ssl.create_default_context(cafile=os.fspath(cafile))
            self.sock = context.wrap_socket(self.sock, server_hostname=server_hostname)
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

    def send(self, text: str | bytes) -> None:
        """One line: ``text`` and a newline."""
        self.send_bytes((text if isinstance(text, bytes) else text.encode()) + b"\n")

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

    def expect_start(self, start: str, timeout: float = WAIT) -> str:
        """Read lines until one starts with ``start``; return it."""
        deadline = time.monotonic() + timeout
        while not (line := self.line(max(0.01, deadline - time.monotonic()))).startswith(start):
            pass
        return line

    def closed(self, timeout: float = WAIT) -> bytes:
        """Read until the server closes; return what arrived first."""
        self.sock.settimeout(timeout)
        while chunk := self.sock.recv(65536):
            self._buffer += chunk
        data, self._buffer = self._buffer, b""
        return data

    def rest_until_closed(self, timeout: float = WAIT) -> list[str]:
        """Every line until the server closes (or resets) the connection; the last one may lack
        its newline."""
        try:
            data = self.closed(timeout)
        except ConnectionResetError:
            data, self._buffer = self._buffer, b""
        lines = data.decode().split("\n")
        return lines[:-1] if lines[-1] == "" else lines

    def close(self) -> None:
        self.sock.close()


class TutorialClient:
    """The original tutorial client's side of the wire: no newlines, one message per send, and
    what arrives read 1024 bytes at a time and decoded as ASCII."""

    def __init__(self, port: int, nick: str) -> None:
        self.nick = nick
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        self.received = b""
        assert self.sock.recv(1024) == b"NICK"
        self.sock.sendall(nick.encode())

    def write(self, text: str) -> None:
        self.sock.sendall(f"{self.nick}: {text}".encode("ascii"))

    def until(self, text: str, timeout: float = WAIT) -> str:
        """Everything received so far once ``text`` is in it; every byte must be ASCII."""
        deadline = time.monotonic() + timeout
        while text.encode() not in self.received:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(1024)
            except TimeoutError:
                chunk = b""
            if not chunk:
                raise AssertionError(f"no {text!r} within {timeout}s; have {self.received!r}")
            self.received += chunk
        assert max(self.received) < 0x80, self.received
        return self.received.decode("ascii")

    def close(self) -> None:
        self.sock.close()


def join(port: int, nick: str, **options: Any) -> LineClient:
    """A line client that has joined and consumed its two greeting lines."""
    client = LineClient(port, nick, **options)
    assert client.lines(2) == [f"{nick} Bergabung!", "Terkoneksi dengan Server!"]
    return client


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


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
        message: dict[str, Any] = json.loads(line)
        return message

    def request(self, command: str, **args: Any) -> dict[str, Any]:
        message: dict[str, Any] = {"version": 1, "command": command}
        if args:
            message["args"] = args
        self.send(message)
        return self.receive()

    def close(self) -> None:
        self.reader.close()
        self.sock.close()
