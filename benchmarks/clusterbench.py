"""``python -m benchmarks.clusterbench``: one room on 2 nodes + Redis against one node alone.

Issue 17's target: 2 nodes x 500 clients reach at least half the deliveries/s of one node with
1000 clients; p99 latency at 50 msg/s at most the single node's + 5 ms; nothing lost.

Everything runs here on loopback: a ``redis-server`` (Debian's, no persistence) on a free
port, the nodes (``python -m lanchatd`` from this checkout, flood control off), and one
asyncio load generator. Every client reads everything; ``--senders`` of them send. A line
carries its sender, sequence number and send time (CLOCK_MONOTONIC, shared by every process
on the machine), so every client checks that it got each sender's lines once and in order,
and latency is receive time minus send time.

- throughput: each sender sends ``--messages`` lines as fast as the socket takes them;
  deliveries/s = lines received by all clients / time from the first send to the last receipt.
- latency: the senders together send ``--rate`` lines a second for ``--duration`` seconds.

    .venv/bin/python -m benchmarks.clusterbench --clients 1000 --nodes 1,2 [--nice -10]
"""

from __future__ import annotations

import argparse
import asyncio
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

HOST: Final = "127.0.0.1"
ROOT: Final = Path(__file__).resolve().parents[1]
#: Settings for every node: flood control and the per-address limit off, no history replay.
NODE_CONFIG: Final = "[limits]\nrate = 0\nper_address = 0\n[history]\non_join = 0\n"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


class Processes:
    """Redis and the nodes of one run, all stopped at the end."""

    def __init__(self, nodes: int) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="clusterbench-"))
        self.started: list[subprocess.Popen[bytes]] = []
        self.ports: list[int] = []
        try:
            redis_url = self._redis() if nodes > 1 else None
            for index in range(nodes):
                self.ports.append(self._node(index, redis_url))
        except BaseException:  # a node that did not start exits: stop what did
            self.stop()
            raise

    def _redis(self) -> str:
        server = shutil.which("redis-server")
        if server is None:
            sys.exit("clusterbench: redis-server is not installed (apt-get install redis-server)")
        port = free_port()
        argv = [server, "--port", str(port), "--bind", HOST, "--save", "", "--dir", str(self.dir)]
        self.started.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection((HOST, port), timeout=1).close()
                return f"redis://{HOST}:{port}/0"
            except OSError:
                time.sleep(0.05)
        sys.exit("clusterbench: redis-server did not start")

    def _node(self, index: int, redis_url: str | None) -> int:
        state = self.dir / f"node{index}"
        state.mkdir()
        config = NODE_CONFIG
        if redis_url is not None:
            config += f'[cluster]\nredis = "{redis_url}"\nnode = "n{index}"\n'
        (state / "lanchatd.toml").write_text(config)
        argv = [sys.executable, "-m", "lanchatd", "--host", HOST, "--port", "0"]
        argv += ["--config", str(state / "lanchatd.toml"), "--log-format", "json"]
        argv += ["--admin-socket", str(state / "admin.sock")]
        argv += ["--web-host", HOST, "--web-port", "0", "--no-discovery"]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "STATE_DIRECTORY": str(state)}
        process = subprocess.Popen(argv, stderr=subprocess.PIPE, env=env, cwd=state)
        self.started.append(process)
        assert process.stderr is not None
        port, ready = 0, redis_url is None
        for raw in process.stderr:
            event = json.loads(raw)
            if event.get("event") == "server_started":
                port = int(event["port"])
            ready = ready or event.get("event") == "cluster_ok"
            if port and ready:
                break
        if not port:
            sys.exit(f"clusterbench: node {index} did not start")
        # Keep reading its log, or the node would block on a full pipe.
        threading.Thread(target=_drain, args=(process,), daemon=True).start()
        return port

    def stop(self) -> None:
        for process in reversed(self.started):
            process.send_signal(signal.SIGTERM)
        for process in self.started:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def _drain(process: subprocess.Popen[bytes]) -> None:
    assert process.stderr is not None
    for _ in process.stderr:
        pass


@dataclass
class Client(asyncio.Protocol):
    """One chat connection: joins, then counts and checks every chat line it receives."""

    nick: str
    joined: asyncio.Future[None]
    expected: int = 0
    done: asyncio.Future[None] | None = None
    received: int = 0
    errors: int = 0
    latencies: list[int] = field(default_factory=list)
    sample: bool = False
    transport: asyncio.Transport | None = None
    _buffer: bytes = b""
    _last: dict[str, int] = field(default_factory=dict)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        lines = (self._buffer + data).split(b"\n")
        self._buffer = lines.pop()
        for line in lines:
            if not self.joined.done():
                first = line.removeprefix(b"NICK")  # sent without a newline
                if first.startswith(self.nick.encode() + b" "):
                    self.joined.set_result(None)
                continue
            sender, _, rest = line.partition(b": ")
            if not rest.startswith(b"m "):
                continue
            _, seq, sent = rest.split(b" ")
            name = sender.decode()
            number = int(seq)
            if number != self._last.get(name, -1) + 1:
                self.errors += 1
            self._last[name] = number
            self.received += 1
            if self.sample:
                self.latencies.append(now - int(sent))
            if self.done is not None and self.received >= self.expected and not self.done.done():
                self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.joined.done():
            self.joined.set_exception(ConnectionError(f"{self.nick} closed before joining"))

    def send(self, seq: int) -> None:
        assert self.transport is not None
        self.transport.write(b"m %d %d\n" % (seq, time.monotonic_ns()))


async def connect_all(ports: list[int], count: int) -> list[Client]:
    loop = asyncio.get_running_loop()
    clients = []
    for index in range(count):
        client = Client(f"c{index:04d}", loop.create_future())
        await loop.create_connection(lambda c=client: c, HOST, ports[index % len(ports)])
        assert client.transport is not None
        client.transport.write(client.nick.encode() + b"\n")
        await asyncio.wait_for(client.joined, 30)
        clients.append(client)
    return clients


async def run(mode: str, nodes: int, args: argparse.Namespace) -> dict[str, object]:
    processes = Processes(nodes)
    try:
        clients = await connect_all(processes.ports, args.clients)
        await asyncio.sleep(1.0)  # the last joins reach everyone
        senders = clients[: args.senders]
        loop = asyncio.get_running_loop()
        if mode == "throughput":
            per_sender = args.messages
        else:
            per_sender = max(1, int(args.rate * args.duration / len(senders)))
        total = per_sender * len(senders)
        for index, client in enumerate(clients):
            client.expected = total
            client.done = loop.create_future()
            client.sample = mode == "latency" or index < 20
        started = time.monotonic()
        if mode == "throughput":
            for seq in range(per_sender):
                for sender in senders:
                    sender.send(seq)
                if seq % 50 == 49:
                    await asyncio.sleep(0)
        else:
            period = 1.0 / args.rate
            for seq in range(per_sender):
                for sender in senders:
                    sender.send(seq)
                    await asyncio.sleep(period)
        pending = [c.done for c in clients if c.done is not None]
        _, late = await asyncio.wait(pending, timeout=args.timeout)
        elapsed = time.monotonic() - started
        received = sum(c.received for c in clients)
        latencies = sorted(x for c in clients for x in c.latencies)
        return {
            "mode": mode,
            "nodes": nodes,
            "clients": args.clients,
            "deliveries_per_s": round(received / elapsed),
            "p50_ms": _quantile(latencies, 0.5),
            "p99_ms": _quantile(latencies, 0.99),
            "lost": total * len(clients) - received,
            "out_of_order": sum(c.errors for c in clients),
            "unfinished_clients": len(late),
        }
    finally:
        processes.stop()


def _quantile(values: list[int], q: float) -> float | None:
    if not values:
        return None
    return round(values[min(len(values) - 1, int(q * len(values)))] / 1e6, 2)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.clusterbench")
    parser.add_argument("--clients", type=int, default=1000, help="clients in all [1000]")
    parser.add_argument("--nodes", default="1,2", help="node counts to compare [1,2]")
    parser.add_argument("--mode", default="throughput,latency", help="[throughput,latency]")
    parser.add_argument("--senders", type=int, default=10, help="clients that send [10]")
    parser.add_argument("--messages", type=int, default=200, help="per sender, throughput [200]")
    parser.add_argument("--rate", type=float, default=50.0, help="msg/s in all, latency [50]")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds, latency [5]")
    parser.add_argument("--timeout", type=float, default=60.0, help="wait for the last line [60]")
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run Redis, the nodes and the generator at this niceness (root may go below 0 to "
        "shield them from other load on the machine, as chatbench --nice) [0]",
    )
    args = parser.parse_args()
    if args.nice:  # inherited by Redis and every node started from here
        try:
            os.setpriority(os.PRIO_PROCESS, 0, args.nice)
        except OSError as error:
            sys.exit(f"clusterbench: cannot set niceness {args.nice}: {error}")

    async def every_run() -> None:
        for mode in args.mode.split(","):
            for nodes in map(int, args.nodes.split(",")):
                print(json.dumps(await run(mode, nodes, args)), flush=True)

    asyncio.run(every_run())


if __name__ == "__main__":
    main()
