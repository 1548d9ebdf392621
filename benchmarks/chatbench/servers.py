"""The servers under test: started fresh for each run on 127.0.0.1, measured through /proc.

Both runners give the same interface: ``start()`` (returns once the port listens), ``pid``,
``port``, ``stats()`` (RSS, threads, CPU seconds) and ``stop()`` (always safe to call).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Final

HOST: Final = "127.0.0.1"
START_TIMEOUT: Final = 15.0
_CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
_PAGE: Final = os.sysconf("SC_PAGE_SIZE")

#: lanchatd for benchmarking: flood control and the per-address connection limit off (ten
#: senders flood by design, and every client comes from 127.0.0.1), room for 1000+ clients,
#: and message events logged without their text (the logging is on, and its cost is part
#: of lanchatd's cost).
LANCHATD_CONFIG: Final = """\
[server]
max_clients = 5000

[limits]
rate = 0
{optional}
[log]
format = "json"
message_text = false
"""
#: Keys that older lanchatd versions do not know (they refuse unknown keys): dropped, with a
#: note in the run's JSON, if the daemon says so at start-up.
LANCHATD_OPTIONAL: Final = ("per_address = 0",)


class ServerError(RuntimeError):
    """The server under test could not be started or died."""


@dataclass
class ProcStats:
    rss_bytes: int
    threads: int
    cpu_seconds: float

    def as_dict(self) -> dict[str, float | int]:
        return {"rss_bytes": self.rss_bytes, "threads": self.threads, "cpu": self.cpu_seconds}


def proc_stats(pid: int) -> ProcStats:
    """RSS and threads from /proc/PID/status, user+system CPU from /proc/PID/stat."""
    rss = threads = 0
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    # Fields after "(comm)": state is #3, utime #14 and stime #15 (1-based, man 5 proc).
    cpu = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    return ProcStats(rss, threads, cpu)


def machine_cpu_seconds() -> tuple[float, float]:
    """CPU seconds the whole machine spent since boot: (in tasks, in interrupts).

    From /proc/stat: user, nice, system and steal; then irq and softirq (loopback TCP does
    much of its receive work in softirq, which is charged to no process).
    """
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + steal) / _CLOCK_TICKS, (irq + softirq) / _CLOCK_TICKS


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _listening(port: int) -> bool:
    """Whether something listens on 127.0.0.1:port (from /proc/net/tcp, without connecting)."""
    wanted = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as table:
        next(table)
        return any(
            parts[1] == wanted and parts[3] == "0A" for parts in (line.split() for line in table)
        )


class Server:
    name: ClassVar[str]
    #: Whether a sender receives its own messages back.
    echo: ClassVar[bool]

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stats(self) -> ProcStats:
        self.check_alive()
        return proc_stats(self.pid)

    def check_alive(self) -> None:
        if self.process is None or self.process.poll() is not None:
            raise ServerError(f"{self.name} is not running{self._exit_detail()}")

    def _exit_detail(self) -> str:
        if self.process is None or self.process.returncode is None:
            return ""
        return f" (exit status {self.process.returncode})"

    def stop(self) -> None:
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(5.0)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                process.wait(5.0)

    def version(self) -> str:
        return ""

    def listen_backlog(self) -> int | None:
        """The listen socket's backlog, from ``ss`` (Send-Q of a LISTEN socket); None if unknown."""
        ss = shutil.which("ss")
        if ss is None or not self.port:
            return None
        try:
            result = subprocess.run(
                [ss, "-Hltn", f"sport = :{self.port}"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        for line in result.stdout.splitlines():
            fields = line.split()
            if len(fields) >= 4 and fields[3].endswith(f":{self.port}"):
                with contextlib.suppress(ValueError):
                    return int(fields[2])
        return None

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


class Lanchatd(Server):
    """``python -m lanchatd`` from this checkout, with the benchmark configuration."""

    name = "lanchatd"
    echo = True

    def __init__(self, log_path: Path | None = None) -> None:
        super().__init__()
        self._dir = Path(tempfile.mkdtemp(prefix="chatbench-lanchatd-"))
        self._log_path = log_path
        self._tail: collections.deque[str] = collections.deque(maxlen=20)
        self._started = threading.Event()
        self._drainer: threading.Thread | None = None
        #: Benchmark settings this lanchatd did not know (so they were left out).
        self.dropped_keys: list[str] = []

    def start(self) -> None:
        optional = list(LANCHATD_OPTIONAL)
        while True:
            try:
                self._start("\n".join(optional) + "\n")
                return
            except ServerError as error:
                known = [key for key in optional if key.split()[0] not in str(error)]
                if len(known) == len(optional):
                    raise
                self.dropped_keys.extend(k for k in optional if k not in known)
                optional = known

    def _start(self, optional: str) -> None:
        self._started.clear()
        self._tail.clear()
        self.port = 0
        config = self._dir / "lanchatd.toml"
        config.write_text(LANCHATD_CONFIG.format(optional=optional))
        command = [
            sys.executable,
            "-m",
            "lanchatd",
            "--host",
            HOST,
            "--port",
            "0",
            "--config",
            str(config),
            "--log-format",
            "json",
            "--admin-socket",
            str(self._dir / "admin.sock"),
        ]
        root = str(Path(__file__).resolve().parents[2])
        path = os.environ.get("PYTHONPATH")
        env = {
            **os.environ,
            "PYTHONPATH": root + (os.pathsep + path if path else ""),
            "STATE_DIRECTORY": str(self._dir),
        }
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            cwd=self._dir,
        )
        # The log is drained by a thread (the daemon must never block on its stderr).
        self._drainer = threading.Thread(target=self._drain, daemon=True)
        self._drainer.start()
        if not self._started.wait(START_TIMEOUT) or not self.port:
            self.stop(keep_dir=True)
            tail = "".join(self._tail).strip()
            raise ServerError(f"lanchatd did not start{self._exit_detail()}: {tail[-800:]}")

    def _drain(self) -> None:
        assert self.process is not None
        assert self.process.stderr is not None
        stream = self.process.stderr
        log = open(self._log_path, "wb") if self._log_path else None  # noqa: SIM115
        try:
            for raw in stream:
                if log is not None:
                    log.write(raw)
                if not self._started.is_set():
                    line = raw.decode(errors="replace")
                    self._tail.append(line)
                    with contextlib.suppress(ValueError):
                        event = json.loads(line)
                        if event.get("event") == "server_started":
                            self.port = int(event["port"])
                            self._started.set()
                    continue
                # Past startup only the last lines are kept (for error messages).
                while True:
                    chunk = stream.read1(1 << 20)  # type: ignore[attr-defined]
                    if not chunk:
                        return
                    if log is not None:
                        log.write(chunk)
        finally:
            self._started.set()
            if log is not None:
                log.close()

    def stop(self, *, keep_dir: bool = False) -> None:
        super().stop()
        if self._drainer is not None:
            self._drainer.join(5.0)
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()
        if not keep_dir:
            shutil.rmtree(self._dir, ignore_errors=True)

    def version(self) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "lanchatd", "--version"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return result.stdout.strip().rsplit(" ", 1)[-1] or "?"


class Ncat(Server):
    """nmap's ``ncat -l --chat``: the C reference broker (no handshake, no echo)."""

    name = "ncat"
    echo = False
    MAX_CONNS: Final = 2000

    def __init__(self, binary: str = "ncat") -> None:
        super().__init__()
        self.binary = binary

    @staticmethod
    def available(binary: str = "ncat") -> bool:
        return shutil.which(binary) is not None

    def start(self) -> None:
        path = shutil.which(self.binary)
        if path is None:
            raise ServerError("ncat is not installed (Debian: apt-get install ncat)")
        for _attempt in range(5):
            self.port = free_port()
            self.process = subprocess.Popen(
                [path, "-l", "--chat", "--max-conns", str(self.MAX_CONNS), HOST, str(self.port)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    break  # most likely the port was taken meanwhile: try another
                if _listening(self.port):
                    return
                time.sleep(0.01)
            self.stop()
        raise ServerError(f"ncat did not start{self._exit_detail()}")

    def version(self) -> str:
        path = shutil.which(self.binary)
        if path is None:
            return ""
        result = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
        text = (result.stdout + result.stderr).strip()
        return text.split("(")[0].replace("Ncat: Version", "").strip() or text


SERVERS: Final[dict[str, type[Server]]] = {"lanchatd": Lanchatd, "ncat": Ncat}
