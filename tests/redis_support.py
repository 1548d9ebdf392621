"""A real ``redis-server`` (the Debian package) on a free loopback port, for cluster tests."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from tests.support import free_port, wait_until

REDIS_SERVER = shutil.which("redis-server")


class RedisServer:
    """``redis-server`` in a temporary directory; ``stop``/``start`` keep port and directory.

    Persistence follows ``appendonly``: without it a restart starts empty, as Debian's default
    configuration does after a crash.
    """

    def __init__(self, *, appendonly: bool = False, password: str | None = None) -> None:
        assert REDIS_SERVER is not None, "redis-server is not installed (apt-get install it)"
        self._dir = tempfile.TemporaryDirectory(prefix="lanchat-redis-")
        self.port = free_port()
        self.appendonly = appendonly
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        argv = [str(REDIS_SERVER), "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--dir", self._dir.name, "--save", "", "--daemonize", "no"]
        argv += ["--appendonly", "yes" if self.appendonly else "no"]
        if self.password is not None:
            argv += ["--requirepass", self.password]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self.ping, what="redis-server to answer PING")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def command(self, *words: str | bytes) -> bytes:
        """One command, its raw reply (enough for a test to peek at a key)."""
        raw = [w.encode() if isinstance(w, str) else w for w in words]
        request = f"*{len(raw)}\r\n".encode() + b"".join(
            b"$%d\r\n%s\r\n" % (len(w), w) for w in raw
        )
        if self.password is not None:
            request = f"AUTH {self.password}\r\n".encode() + request
        with socket.create_connection(("127.0.0.1", self.port), timeout=5.0) as sock:
            sock.sendall(request)
            return sock.recv(65536)

    def kill(self) -> None:
        """SIGKILL: without appendonly, everything it held is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def close(self) -> None:
        self.kill()
        self._dir.cleanup()

    @property
    def directory(self) -> Path:
        return Path(self._dir.name)
