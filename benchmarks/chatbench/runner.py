"""One benchmark run: a fresh server, generator processes, the phases, and the figures.

Phases of a run (every one bounded in time):

1. start the server; sample its RSS and threads with 0 clients;
2. start the generator processes; all of them open their clients at one instant; the time
   until the last client has joined is the *join time* (see loadgen.Client for what
   joining is on each server);
3. wait until the room is quiet (no byte received for ``settle`` seconds: ncat's announce
   storm of O(N²) lines has drained); sample RSS and threads with N clients;
4. senders run for ``warmup + duration``; deliveries, latency and CPU (server and
   generator) count only in the last ``duration`` seconds, the measured window;
5. senders stop; the stream must drain (bounded by ``drain_timeout``); then every reader
   must hold every message from sequence 0 to the last one sent: what is missing is lost.
"""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final

from benchmarks.chatbench import progress, records
from benchmarks.chatbench.loadgen import WorkerSpec
from benchmarks.chatbench.servers import (
    HOST,
    SERVERS,
    Lanchatd,
    Server,
    ServerError,
    machine_cpu_seconds,
)
from benchmarks.chatbench.verify import Tally

READY_TIMEOUT: Final = 60.0
COMMAND_TIMEOUT: Final = 30.0


class RunError(RuntimeError):
    """A run could not be completed (the reason is in the message)."""


@dataclass(frozen=True)
class RunPlan:
    server: str
    mode: str  # "throughput" or "latency"
    clients: int
    senders: int = 10
    stalled: int = 0
    workers: int = 2
    duration: float = 5.0
    warmup: float = 1.0
    window: int = 32
    rate: float = 50.0
    #: Clients (over all processes) that may wait at once for the server's first byte;
    #: 0: all of them, within the server's listen backlog (see connect_gate).
    connect_concurrency: int = 0
    join_timeout: float = 60.0
    drain_timeout: float = 10.0
    settle: float = 0.3
    settle_timeout: float = 60.0
    server_log: str | None = None
    #: Extra lanchatd configuration: (section, key, TOML value) from ``--set``.
    lanchatd_settings: tuple[tuple[str, str, str], ...] = ()
    #: lanchatd only: the clients of every other generator process are browsers on the web
    #: port (WebSocket), the rest line clients, in the same run (``--web``).
    web: bool = False

    @property
    def label(self) -> str:
        stalled = f" +{self.stalled} stalled" if self.stalled else ""
        return f"{self.server} {self.mode} N={self.clients}{stalled}"

    def validate(self) -> None:
        if self.mode not in ("throughput", "latency"):
            raise ValueError(f"unknown mode {self.mode!r}")
        if self.server not in SERVERS:
            raise ValueError(f"unknown server {self.server!r}")
        if not 2 <= self.clients <= records.MAX_CLIENTS:
            raise ValueError(f"clients must be 2..{records.MAX_CLIENTS}")
        if self.senders < 1 or self.senders + self.stalled > self.clients:
            raise ValueError("need 1 <= senders and senders + stalled <= clients")
        if self.clients - self.stalled < 2:
            raise ValueError("need at least 2 reading clients")
        if self.web and (self.server != "lanchatd" or self.workers < 2):
            raise ValueError("--web needs lanchatd and at least 2 generator processes")
        if self.warmup + self.duration + 2 > records.MAX_RUN_SECONDS:
            raise ValueError(f"warmup + duration must stay under {records.MAX_RUN_SECONDS - 2}s")


def layout(plan: RunPlan) -> tuple[list[list[int]], list[int], list[int], list[dict[int, int]]]:
    """Clients per process, senders, stalled readers, and each process's observer of each sender.

    Client ``i`` lives in process ``i % P``; senders are clients 0..S-1 (so they spread over
    the processes), stalled readers the last ones. Every process counts every sender's
    messages (the window waits for the slowest process, see progress.py) with one reading
    client: the first one that does not send if there is one, and never the sender itself.
    """
    processes = max(1, min(plan.workers, (plan.clients - plan.stalled) // 2))
    groups = [list(range(w, plan.clients, processes)) for w in range(processes)]
    senders = list(range(plan.senders))
    stalled = list(range(plan.clients - plan.stalled, plan.clients))
    observers: list[dict[int, int]] = []
    for group in groups:
        readers = [c for c in group if c not in stalled]
        quiet = [c for c in readers if c not in senders]
        primary = quiet[0] if quiet else readers[0]
        others = [c for c in readers if c != primary]
        if primary in senders and not others:
            raise ValueError("a process with senders needs two reading clients")
        observers.append({s: primary if s != primary else others[0] for s in senders})
    return groups, senders, stalled, observers


class _Generators:
    """The generator processes and their pipes; always cleaned up by ``close``.

    Each is ``python -m benchmarks.chatbench.loadgen FD`` talking pickled tuples over a
    socketpair (plain subprocesses: no multiprocessing re-import of the caller's main).
    """

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen[bytes]] = []
        self.pipes: list[Connection] = []

    def start(self, specs: list[WorkerSpec]) -> None:
        root = str(Path(__file__).resolve().parents[2])
        path = os.environ.get("PYTHONPATH")
        env = {
            **os.environ,
            "PYTHONPATH": root + (os.pathsep + path if path else ""),
            # Keep freed memory in the heap: the verifier's arrays are reused every pass
            # instead of being mapped and faulted in again (glibc tunables, harmless elsewhere).
            "MALLOC_MMAP_THRESHOLD_": str(32 << 20),
            "MALLOC_TRIM_THRESHOLD_": str(1 << 30),
        }
        for spec in specs:
            ours, theirs = socket.socketpair()
            try:
                process = subprocess.Popen(
                    [sys.executable, "-m", "benchmarks.chatbench.loadgen", str(theirs.fileno())],
                    pass_fds=(theirs.fileno(), spec.progress_fd),
                    stdin=subprocess.DEVNULL,
                    env=env,
                )
            finally:
                theirs.close()
            self.processes.append(process)
            pipe = Connection(ours.detach())
            self.pipes.append(pipe)
            pipe.send(asdict(spec))
        self.collect("ready", READY_TIMEOUT)

    def send(self, *message: Any) -> None:
        for pipe in self.pipes:
            pipe.send(message)

    def collect(self, expected: str, timeout: float) -> list[tuple[Any, ...]]:
        """One reply per process, in process order."""
        deadline = time.monotonic() + timeout
        replies: list[tuple[Any, ...]] = []
        for index, pipe in enumerate(self.pipes):
            remaining = deadline - time.monotonic()
            if not pipe.poll(max(0.0, remaining)):
                raise RunError(f"generator {index} did not answer {expected!r} in {timeout}s")
            try:
                reply = pipe.recv()
            except (EOFError, OSError):
                raise RunError(f"generator {index} exited") from None
            if reply[0] == "error":
                raise RunError(f"generator {index} failed:\n{reply[1]}")
            if reply[0] != expected:
                raise RunError(f"generator {index} answered {reply[0]!r}, not {expected!r}")
            replies.append(reply[1:])
        return replies

    def close(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError, ValueError):
                pipe.send(("close",))
        for process in self.processes:
            try:
                process.wait(3.0)
            except subprocess.TimeoutExpired:
                process.terminate()
                try:
                    process.wait(2.0)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(2.0)
        for pipe in self.pipes:
            pipe.close()
        self.processes.clear()
        self.pipes.clear()


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _sleep_until(when_ns: int) -> None:
    delay = (when_ns - time.monotonic_ns()) / 1e9
    if delay > 0:
        time.sleep(delay)


def make_server(plan: RunPlan) -> Server:
    kind = SERVERS[plan.server]
    if issubclass(kind, Lanchatd):
        log = None
        if plan.server_log:
            directory = Path(plan.server_log)
            directory.mkdir(parents=True, exist_ok=True)
            log = directory / f"{plan.server}-{plan.mode}-{plan.clients}-{time.time_ns()}.log"
        return kind(log_path=log, settings=plan.lanchatd_settings)
    return kind()


def run_once(plan: RunPlan) -> dict[str, Any]:
    """Run ``plan`` once; returns the run's figures (see report.py for their names)."""
    plan.validate()
    raise_fd_limit()
    server = make_server(plan)
    generators = _Generators()
    try:
        server.start()
        time.sleep(0.2)
        figures: dict[str, Any] = {"idle": server.stats()}
        figures["connect_gate"] = _start_generators(plan, server, generators)
        figures.update(_connect(plan, server, generators))
        _settle(plan, generators)
        figures["loaded"] = server.stats()
        figures.update(_measure(plan, server, generators))
        figures["after"] = server.stats()
        figures["left_out"] = list(getattr(server, "dropped_keys", []))
    except ServerError as error:
        raise RunError(str(error)) from None
    finally:
        generators.close()
        server.stop()
    return _figures(plan, figures)


def connect_gate(plan: RunPlan, server: Server) -> int:
    """How many clients may await the server's first byte at once, over all processes.

    ``plan.connect_concurrency`` if set, else all N at once, but never more than the server's
    listen backlog minus 2 (see loadgen.Worker._connect for why).
    """
    if plan.connect_concurrency:
        return plan.connect_concurrency
    backlog = server.listen_backlog()
    limit = plan.clients if backlog is None else backlog - 2
    return max(1, min(plan.clients, limit))


def _start_generators(plan: RunPlan, server: Server, generators: _Generators) -> int:
    groups, senders, stalled, observers = layout(plan)
    gate = connect_gate(plan, server)
    epoch_ns = time.monotonic_ns()
    progress_fd = progress.create(len(groups), len(senders))
    specs = [
        WorkerSpec(
            index=index,
            server=server.protocol(),
            host=HOST,
            port=server.ports[index % len(server.ports)],
            clients=group,
            senders=senders,
            observers=observers[index],
            progress_fd=progress_fd,
            processes=len(groups),
            stalled=[c for c in group if c in stalled],
            echo=server.echo,
            epoch_ns=epoch_ns,
            join_timeout=plan.join_timeout,
            connect_concurrency=max(1, gate // len(groups)),
            web_port=getattr(server, "web_port", 0) if plan.web and index % 2 else 0,
        )
        for index, group in enumerate(groups)
    ]
    try:
        generators.start(specs)
    finally:
        os.close(progress_fd)  # the generators hold their own copies
    return gate


def _connect(plan: RunPlan, server: Server, generators: _Generators) -> dict[str, float]:
    """All processes start connecting at one instant; until the last client has joined."""
    before = server.stats().cpu_seconds
    connect_ns = time.monotonic_ns() + 50_000_000
    generators.send("connect", connect_ns)
    joined = generators.collect("joined", plan.join_timeout + COMMAND_TIMEOUT)
    failures = [f for reply in joined for f in reply[1]]
    missing = sum(reply[2] for reply in joined)
    if missing:
        raise RunError(f"{missing} of {plan.clients} clients did not join: {failures[:5]}")
    last_join = max(ns for reply in joined for ns in reply[0])
    return {
        "join_s": (last_join - connect_ns) / 1e9,
        # CPU until the last join was reported (the server's a little later than the end).
        "join_server_cpu_s": server.stats().cpu_seconds - before,
        "join_generator_cpu_s": sum(reply[3] for reply in joined),
    }


def _settle(plan: RunPlan, generators: _Generators) -> None:
    """Wait until no client received anything for ``plan.settle`` seconds."""
    deadline = time.monotonic() + plan.settle_timeout
    previous = -1
    while True:
        generators.send("status")
        status = generators.collect("status", COMMAND_TIMEOUT)
        received = sum(s[0] for s in status)
        if received == previous:
            break
        if time.monotonic() > deadline:
            raise RunError(f"the room did not settle within {plan.settle_timeout}s")
        previous = received
        time.sleep(plan.settle)
    dropped = sum(s[1] for s in status)
    if dropped:
        raise RunError(f"{dropped} clients were disconnected before the measurement")


def _measure(plan: RunPlan, server: Server, generators: _Generators) -> dict[str, Any]:
    """Warm-up, the measured window, then the drain; the raw material of the figures."""
    start_ns = time.monotonic_ns() + 100_000_000
    window_ns = start_ns + int(plan.warmup * 1e9)
    stop_ns = window_ns + int(plan.duration * 1e9)
    generators.send(
        "start",
        {
            "mode": plan.mode,
            "start_ns": start_ns,
            "window_ns": window_ns,
            "stop_ns": stop_ns,
            "window": plan.window,
            "rate": plan.rate,
        },
    )
    _sleep_until(window_ns)
    window_start = server.stats()
    tasks_start, irq_start = machine_cpu_seconds()
    _sleep_until(stop_ns)
    window_stop = server.stats()
    tasks_stop, irq_stop = machine_cpu_seconds()
    stopped = generators.collect("stopped", COMMAND_TIMEOUT)
    sent: dict[int, int] = {}
    for reply in stopped:
        sent.update(reply[0])
    # Drain, then settle loss.
    drain_deadline = time.monotonic_ns() + int(plan.drain_timeout * 1e9)
    generators.send("drain", sent, drain_deadline)
    replies = generators.collect("result", plan.drain_timeout + COMMAND_TIMEOUT)
    return {
        "stop_ns": stop_ns,
        "sent": sent,
        "generator_cpu": sum(reply[1] for reply in stopped),
        "server_cpu": window_stop.cpu_seconds - window_start.cpu_seconds,
        "machine_tasks": tasks_stop - tasks_start,
        "machine_irq": irq_stop - irq_start,
        "results": [reply[0] for reply in replies],
    }


def _web_figures(plan: RunPlan, results: list[dict[str, Any]]) -> dict[str, Any]:
    """With ``--web``: deliveries/s per reading client, WebSocket (odd processes) and line."""
    if not plan.web:
        return {}
    groups, _, stalled, _ = layout(plan)
    rates: dict[bool, list[float]] = {True: [], False: []}
    for index, (group, result) in enumerate(zip(groups, results, strict=True)):
        readers = sum(1 for c in group if c not in stalled)
        deliveries = Tally.from_dict(result["tally"]).window_deliveries
        rates[index % 2 == 1].append(deliveries / readers / plan.duration)
    web, line = statistics.mean(rates[True]), statistics.mean(rates[False])
    return {
        "web_deliveries_per_client_s": web,
        "line_deliveries_per_client_s": line,
        "web_ratio": web / line if line else None,
    }


def _figures(plan: RunPlan, raw: dict[str, Any]) -> dict[str, Any]:
    results = raw["results"]
    idle, loaded, after = raw["idle"], raw["loaded"], raw["after"]
    tally = Tally()
    for result in results:
        tally.merge(Tally.from_dict(result["tally"]))
    deliveries = tally.window_deliveries
    # Every sender reads too: a server that does not echo reaches one reader less per message.
    readers = plan.clients - plan.stalled
    recipients = readers if SERVERS[plan.server].echo else readers - 1
    messages = deliveries / recipients
    server_cpu = raw["server_cpu"]
    generator_cpu = raw["generator_cpu"]
    p50, p99 = tally.percentile_us(0.50), tally.percentile_us(0.99)
    lag_count = sum(r["lag"][0] for r in results)
    lag_mean = sum(r["lag"][1] for r in results) / lag_count / 1e6 if lag_count else None
    lag_max = max(r["lag"][2] for r in results) / 1e6 if lag_count else None
    return {
        "server": plan.server,
        "mode": plan.mode,
        "clients": plan.clients,
        "stalled": plan.stalled,
        "readers": readers,
        "recipients_per_message": recipients,
        "generator_processes": len(results),
        "messages_sent": sum(raw["sent"].values()),
        "deliveries": deliveries,
        "deliveries_per_s": deliveries / plan.duration,
        "messages_per_s": messages / plan.duration,
        "latency_p50_ms": None if p50 is None else p50 / 1000,
        "latency_p99_ms": None if p99 is None else p99 / 1000,
        "latency_max_ms": tally.latency_max_us / 1000 if deliveries else None,
        "lost": tally.lost,
        "duplicated": tally.duplicated,
        "reordered": tally.reordered,
        "corrupted": tally.corrupted,
        "unexpected": tally.unexpected,
        "invalid_seq": tally.invalid_seq,
        "other_lines": tally.other_lines,
        "prefixes": tally.prefixes,
        "valid_total": tally.valid,
        "readers_dropped": sum(r["readers_dropped"] for r in results),
        "stalled_dropped": sum(r["stalled_dropped"] for r in results),
        "join_s": raw["join_s"],
        "join_server_cpu_s": raw["join_server_cpu_s"],
        "join_generator_cpu_s": raw["join_generator_cpu_s"],
        "connect_gate": raw["connect_gate"],
        "config_left_out": raw["left_out"],
        "drain_s": max(0.0, (max(r["drained_ns"] for r in results) - raw["stop_ns"]) / 1e9),
        "rss_idle_kib": idle.rss_bytes / 1024,
        "rss_loaded_kib": loaded.rss_bytes / 1024,
        "rss_per_client_kib": (loaded.rss_bytes - idle.rss_bytes) / 1024 / plan.clients,
        "rss_after_kib": after.rss_bytes / 1024,
        "threads_idle": idle.threads,
        "threads_loaded": loaded.threads,
        "server_cpu_s": server_cpu,
        "server_cpu_us_per_delivery": server_cpu / deliveries * 1e6 if deliveries else None,
        "server_cpu_us_per_message": server_cpu / messages * 1e6 if deliveries else None,
        "generator_cpu_s": generator_cpu,
        "generator_cpu_us_per_delivery": generator_cpu / deliveries * 1e6 if deliveries else None,
        "generator_verify_s": tally.verify_seconds,
        # Latency mode: how long after the kernel received a read the generator handled it
        # (left out of the latency figures, which use the kernel's receive time).
        "generator_lag_mean_ms": lag_mean,
        "generator_lag_max_ms": lag_max,
        # What the rest of the machine did in the window (other users' work): the noise.
        # Per-process CPU includes interrupt work done in its context, hence the irq term.
        "other_cpu_s": raw["machine_tasks"] + raw["machine_irq"] - server_cpu - generator_cpu,
        "softirq_s": raw["machine_irq"],
        "generator_cpu_total_s": sum(r["cpu_total"] for r in results),
        **_web_figures(plan, results),
        "latency_histogram": {
            "bins_per_octave": 128,
            "counts": {int(i): int(c) for i, c in enumerate(tally.histogram) if c},
        },
    }
