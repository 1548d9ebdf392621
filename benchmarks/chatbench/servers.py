"""The servers under test: started fresh for each run on 127.0.0.1, measured through /proc.

Every runner gives the same interface: ``start()`` (returns once the port listens), ``pid``,
``port``, ``stats()`` (RSS, threads, CPU seconds) and ``stop()`` (always safe to call).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Final

HOST: Final = "127.0.0.1"
START_TIMEOUT: Final = 15.0
#: lanchatd-base runs the lanchatd of the checkout this names.
BASE_ENV: Final = "CHATBENCH_BASE"
_CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
_PAGE: Final = os.sysconf("SC_PAGE_SIZE")

#: lanchatd for benchmarking: flood control and the per-address connection limit off (ten
#: senders flood by design, and every client comes from 127.0.0.1), room for 1000+ clients,
#: and message events logged without their text (the logging is on, and its cost is part
#: of lanchatd's cost). ``--set SECTION.KEY=VALUE`` adds to or overrides these.
LANCHATD_SETTINGS: Final = {
    "server": {"max_clients": "5000"},
    "limits": {"rate": "0", "per_address": "0"},
    "log": {"format": '"json"', "message_text": "false"},
}
#: Keys that older lanchatd versions do not know (they refuse unknown keys): dropped, with a
#: note in the run's JSON, if the daemon says so at start-up.
LANCHATD_OPTIONAL: Final = ("limits.per_address",)


def parse_setting(text: str) -> tuple[str, str, str]:
    """``SECTION.KEY=VALUE`` (VALUE a TOML value: ``0``, ``true``, ``"json"``) as a triple."""
    name, sep, value = text.partition("=")
    section, dot, key = name.strip().partition(".")
    if not (sep and dot and section and key and value.strip()):
        raise ValueError(f"{text!r}: expected SECTION.KEY=VALUE")
    try:
        tomllib.loads(f"v = {value.strip()}")
    except tomllib.TOMLDecodeError:
        raise ValueError(f"{text!r}: VALUE is not a TOML value (quote strings)") from None
    return section, key.strip(), value.strip()


def lanchatd_config(overrides: Iterable[tuple[str, str, str]], drop: Iterable[str] = ()) -> str:
    """The benchmark's lanchatd.toml: LANCHATD_SETTINGS with ``overrides``, less ``drop``."""
    sections = {name: dict(keys) for name, keys in LANCHATD_SETTINGS.items()}
    for section, key, value in overrides:
        sections.setdefault(section, {})[key] = value
    for dotted in drop:
        section, _, key = dotted.partition(".")
        sections.get(section, {}).pop(key, None)
    return "".join(
        f"[{name}]\n" + "".join(f"{key} = {value}\n" for key, value in keys.items()) + "\n"
        for name, keys in sections.items()
    )


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
    #: A variant of another server (same wire, other settings): left out of the default
    #: run and never counted as a peer.
    variant: ClassVar[bool] = False

    @classmethod
    def protocol(cls) -> str:
        """How clients join and speak to it (see loadgen.Client)."""
        return cls.name

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def ports(self) -> list[int]:
        """Where clients connect: generator process ``i`` uses ``ports[i % len(ports)]``."""
        return [self.port]

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

    def _start_on_free_port(self, command: Callable[[int], list[str]]) -> None:
        """Start ``command(port)`` on a free port; return once it listens there.

        For servers that cannot report the port they bound: the port is picked here, so
        another process may take it meanwhile; then the server exits and another is tried.
        """
        for _attempt in range(5):
            self.port = free_port()
            self.process = subprocess.Popen(
                command(self.port),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    break
                if _listening(self.port):
                    return
                time.sleep(0.01)
            self.stop()
        raise ServerError(f"{self.name} did not start{self._exit_detail()}")

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

    def __init__(
        self, log_path: Path | None = None, settings: Iterable[tuple[str, str, str]] = ()
    ) -> None:
        super().__init__()
        self._dir = Path(tempfile.mkdtemp(prefix="chatbench-lanchatd-"))
        self._log_path = log_path
        self._settings = list(settings)
        self._tail: collections.deque[str] = collections.deque(maxlen=20)
        self._started = threading.Event()
        self._drainer: threading.Thread | None = None
        #: Benchmark settings this lanchatd did not know (so they were left out).
        self.dropped_keys: list[str] = []

    def start(self) -> None:
        chosen = {(section, key) for section, key, _ in self._settings}
        optional = [k for k in LANCHATD_OPTIONAL if tuple(k.split(".", 1)) not in chosen]
        while True:
            try:
                self._start(lanchatd_config(self._settings, drop=self.dropped_keys))
                return
            except ServerError as error:
                unknown = [k for k in optional if k.split(".", 1)[1] in str(error)]
                if not unknown:
                    raise
                self.dropped_keys.extend(unknown)
                optional = [k for k in optional if k not in unknown]

    def _start(self, config_text: str) -> None:
        self._started.clear()
        self._tail.clear()
        self.port = 0
        #: The web port (WebSocket clients), from its log.
        self.web_port = 0
        config = self._dir / "lanchatd.toml"
        config.write_text(config_text)
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
            *("--web-host", HOST, "--web-port", "0"),
            "--no-discovery",
        ]
        root = self.root()
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
                        if event.get("event") == "web_started":  # logged just before
                            self.web_port = int(event["port"])
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

    @classmethod
    def root(cls) -> str:
        """The checkout whose ``lanchatd`` package is run: this one."""
        return str(Path(__file__).resolve().parents[2])

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


class LanchatdNoHistory(Lanchatd):
    """lanchatd with ``[history] enabled = false``: beside ``lanchatd`` in one run, what
    history costs (issue 14 wants history on at >= 0.9x of off)."""

    name = "lanchatd-nohistory"
    variant = True

    def __init__(
        self, log_path: Path | None = None, settings: Iterable[tuple[str, str, str]] = ()
    ) -> None:
        super().__init__(log_path, [*settings, ("history", "enabled", "false")])

    @classmethod
    def protocol(cls) -> str:
        return Lanchatd.name


class LanchatdBase(Lanchatd):
    """lanchatd from another checkout, named by ``CHATBENCH_BASE`` (say a ``git worktree`` of
    the commit before a change): beside ``lanchatd`` in one run, old and new code take turns
    under the same load, which on a shared machine is the only fair comparison."""

    name = "lanchatd-base"
    variant = True

    @classmethod
    def root(cls) -> str:
        return os.environ[BASE_ENV]

    @classmethod
    def protocol(cls) -> str:
        return Lanchatd.name


class LanchatdCluster(Lanchatd):
    """Two lanchatd nodes serving one room through a private ``redis-server`` (issue 17,
    docs/cluster.md): the generator processes are spread over the nodes, so with
    ``--workers 2`` and N clients each node serves N/2. CPU and memory are the three
    processes' sum."""

    name = "lanchatd-cluster"
    variant = True
    NODES: Final = 2

    def __init__(
        self, log_path: Path | None = None, settings: Iterable[tuple[str, str, str]] = ()
    ) -> None:
        super().__init__(log_path, settings)
        self._given = list(settings)
        self._log_path = log_path
        self.nodes: list[Lanchatd] = []

    @classmethod
    def protocol(cls) -> str:
        return Lanchatd.name

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    def start(self) -> None:
        redis = shutil.which("redis-server")
        if redis is None:
            raise ServerError("lanchatd-cluster needs redis-server (apt-get install it)")
        self._start_on_free_port(
            lambda port: [
                redis,
                "--port",
                str(port),
                "--bind",
                HOST,
                "--save",
                "",
                "--dir",
                str(self._dir),
            ]
        )
        url = f'"redis://{HOST}:{self.port}/0"'
        for index in range(self.NODES):
            cluster = [("cluster", "redis", url), ("cluster", "node", f'"n{index}"')]
            node = Lanchatd(self._log_path, [*self._given, *cluster])
            self.nodes.append(node)
            node.start()
        self.dropped_keys = self.nodes[0].dropped_keys
        self.port = self.nodes[0].port

    def stats(self) -> ProcStats:
        self.check_alive()
        parts = [proc_stats(self.pid), *(node.stats() for node in self.nodes)]
        return ProcStats(
            sum(p.rss_bytes for p in parts),
            sum(p.threads for p in parts),
            sum(p.cpu_seconds for p in parts),
        )

    def stop(self, *, keep_dir: bool = False) -> None:
        for node in self.nodes:
            node.stop(keep_dir=keep_dir)
        super().stop(keep_dir=keep_dir)


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
        self._start_on_free_port(
            lambda port: [path, "-l", "--chat", "--max-conns", str(self.MAX_CONNS), HOST, str(port)]
        )

    def version(self) -> str:
        path = shutil.which(self.binary)
        if path is None:
            return ""
        result = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
        text = (result.stdout + result.stderr).strip()
        return text.split("(")[0].replace("Ncat: Version", "").strip() or text


class Naive(Server):
    """The original tutorial's server (benchmarks/naive_server.py), run by this Python."""

    name = "naive"
    echo = True
    SCRIPT: Final = Path(__file__).resolve().parents[1] / "naive_server.py"

    def start(self) -> None:
        self._start_on_free_port(lambda port: [sys.executable, str(self.SCRIPT), HOST, str(port)])

    def version(self) -> str:
        return f"Python {platform.python_version()}"


#: ngircd for benchmarking: loopback only, no connection limits (every client comes from
#: 127.0.0.1), penalties off (``MaxPenaltyTime = 0``: no throttling of a client that sends
#: many commands or bytes per second), no DNS/ident/PAM look-ups on connect, no MOTD file,
#: pings far beyond a run.
NGIRCD_CONFIG: Final = """\
[Global]
Name = chatbench.invalid
Info = chatbench peer
Listen = {host}
Ports = {port}
MotdPhrase = chatbench
AdminInfo1 = chatbench
AdminInfo2 = chatbench
AdminEMail = chatbench@chatbench.invalid

[Limits]
MaxConnections = 0
MaxConnectionsIP = 0
MaxJoins = 0
MaxPenaltyTime = 0
PingTimeout = 600
PongTimeout = 600

[Options]
DNS = no
Ident = no
PAM = no
"""


class Ngircd(Server):
    """Debian's ngircd (C, epoll, one process) with a generated configuration, in the foreground.

    Never the system service: this is a private instance on a free loopback port. Clients
    register with NICK and USER and JOIN one channel (see loadgen.py); senders PRIVMSG it.
    An IRC server does not echo a message to its sender.
    """

    name = "ngircd"
    echo = False
    CHANNEL: Final = "#bench"

    def __init__(self) -> None:
        super().__init__()
        self._dir = Path(tempfile.mkdtemp(prefix="chatbench-ngircd-"))

    @staticmethod
    def binary() -> str | None:
        return shutil.which("ngircd") or shutil.which("ngircd", path="/usr/sbin:/sbin")

    @classmethod
    def available(cls) -> bool:
        return cls.binary() is not None

    def start(self) -> None:
        path = self.binary()
        if path is None:
            raise ServerError("ngircd is not installed (Debian: apt-get install ngircd)")
        config = self._dir / "ngircd.conf"

        def command(port: int) -> list[str]:
            self._dir.mkdir(parents=True, exist_ok=True)
            config.write_text(NGIRCD_CONFIG.format(host=HOST, port=port))
            return [path, "--nodaemon", "--config", str(config)]

        self._start_on_free_port(command)

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def version(self) -> str:
        path = self.binary()
        if path is None:
            return ""
        result = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
        first = result.stdout.split("-", 1)[0]
        return first.replace("ngIRCd", "").strip() or result.stdout.strip()


SERVERS: Final[dict[str, type[Server]]] = {
    "lanchatd": Lanchatd,
    "lanchatd-nohistory": LanchatdNoHistory,
    "lanchatd-base": LanchatdBase,
    "lanchatd-cluster": LanchatdCluster,
    "ngircd": Ngircd,
    "naive": Naive,
    "ncat": Ncat,
}
