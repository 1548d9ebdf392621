"""Faults: the real daemon, real sockets, clients and daemons that fail the way they do on a LAN.

- A peer that vanishes without a FIN (a pulled cable): done for real with a network namespace
  whose veth link is deleted under the connection. TCP keepalive must find it.
- A reader at one byte a second while others chat hundreds of KB.
- ``kill -9`` of the daemon while chat flows and bans are added and lifted concurrently.
- Clients that reset mid-line, and connections that never say anything, during traffic.

Every wait has a deadline; nothing here sleeps to let something happen.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lanchatd.daemon.bans import Ban
from tests.support import (
    WAIT,
    AdminConnection,
    Daemon,
    LineClient,
    join,
    lanchatctl,
    refused_connection,
    wait_until,
    write_config,
)


class Collector(threading.Thread):
    """Reads lines from one client in the background, each with the moment it arrived."""

    def __init__(self, client: LineClient, last: Callable[[str], bool], timeout: float) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.last = last
        self.deadline = time.monotonic() + timeout
        self.lines: list[str] = []
        self.arrived: list[float] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while True:
                line = self.client.line(max(0.01, self.deadline - time.monotonic()))
                self.lines.append(line)
                self.arrived.append(time.monotonic())
                if self.last(line):
                    return
        except BaseException as error:  # reported by finish(), in the test's thread
            self.error = error

    def finish(self, timeout: float) -> list[str]:
        self.join(timeout)
        assert not self.is_alive(), f"still reading after {timeout}s; have {self.lines[-3:]}"
        if self.error is not None:
            raise AssertionError(f"reader failed: {self.error!r}; have {self.lines[-3:]}")
        return self.lines


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# Half-open peers ----------------------------------------------------------------------------

#: A /30 used only inside this machine: the daemon's side on the host, the peer's side in a
#: namespace. A blackhole route for the whole /30 guarantees that nothing addressed to it
#: ever leaves through the host's real interfaces, even after the veth link is gone.
SUBNET = "10.231.77.0/30"
HOST_ADDRESS = "10.231.77.1"
PEER_ADDRESS = "10.231.77.2"
LAB_LOCK = Path("/tmp/lanchat-test-netns.lock")
#: keepalive = 1 probes after 1 s idle, then every second, 4 probes: gone in about 5 s.
DETECTION_BOUND = 12.0

GHOST = r"""
import socket, sys
host, nick, ports = sys.argv[1], sys.argv[2], [int(p) for p in sys.argv[3:]]
kept = []
for port in ports:
    sock = socket.create_connection((host, port), timeout=10)
    data = b""
    while len(data) < 4:
        chunk = sock.recv(4 - len(data))
        if not chunk:
            sys.exit(f"closed before NICK on {port}")
        data += chunk
    assert data == b"NICK", data
    sock.sendall(nick.encode() + b"\n")
    data = b""
    while b"Terkoneksi dengan Server!\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            sys.exit(f"closed before the welcome on {port}: {data!r}")
        data += chunk
    kept.append(sock)
print("joined", flush=True)
sys.stdin.read()
"""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and result.returncode:
        raise AssertionError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


def sockets_in_lab() -> list[str]:
    """TCP sockets on this host with either end in the lab's /30."""
    result = subprocess.run(
        ["ss", "-Htan", f"( dst {SUBNET} or src {SUBNET} )"],
        capture_output=True,
        text=True,
        check=False,
    )
    return [line for line in result.stdout.splitlines() if line.strip()]


class HalfOpenLab:
    """A namespace joined to the host by a veth pair; the peer can vanish without a FIN.

    The host's address sits on ``lo`` (so a loopback client can reach the daemon whatever
    happens to the link), the peer's on the namespace's end of the veth, reached through a
    /32 route. Deleting the veth cuts the peer off mid-connection: nothing it does afterwards
    (exiting included) reaches the daemon, and the daemon's packets to it are dropped.
    """

    def __init__(self) -> None:
        tag = os.getpid() % 100_000
        self.namespace = f"lanchat-ho-{tag}"
        self.host_link = f"lcho{tag}"
        self.peer_link = f"lcpe{tag}"
        self.ghosts: list[subprocess.Popen[str]] = []

    def up(self) -> None:
        self.down_links()
        ip("netns", "add", self.namespace)
        # The blackhole first: from here on nothing for the /30 can take the default route.
        ip("route", "replace", "blackhole", SUBNET)
        ip("addr", "replace", f"{HOST_ADDRESS}/32", "dev", "lo")
        ip("link", "add", self.host_link, "type", "veth", "peer", "name", self.peer_link,
           "netns", self.namespace)  # fmt: skip
        ip("link", "set", self.host_link, "up")
        ip("route", "replace", f"{PEER_ADDRESS}/32", "dev", self.host_link, "src", HOST_ADDRESS)
        ip("-n", self.namespace, "link", "set", "lo", "up")
        ip("-n", self.namespace, "addr", "add", f"{PEER_ADDRESS}/30", "dev", self.peer_link)
        ip("-n", self.namespace, "link", "set", self.peer_link, "up")

    def ghost(self, nick: str, ports: list[int]) -> subprocess.Popen[str]:
        """A line client in the namespace that joins every daemon in ``ports`` and waits."""
        process = subprocess.Popen(
            ["ip", "netns", "exec", self.namespace, sys.executable, "-c", GHOST,
             HOST_ADDRESS, nick, *map(str, ports)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        self.ghosts.append(process)
        assert process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            if not selector.select(WAIT):
                raise AssertionError(f"{nick} did not join from the namespace within {WAIT}s")
        line = process.stdout.readline()
        if line.strip() != "joined":
            assert process.stderr is not None
            process.kill()
            raise AssertionError(f"{nick} failed to join: {line!r} {process.stderr.read()!r}")
        return process

    def vanish(self) -> None:
        """Cut the link, then end the ghosts: their FIN (or RST) has nowhere to go."""
        ip("link", "del", self.host_link)
        for process in self.ghosts:
            process.kill()
            process.wait(WAIT)
            for stream in (process.stdin, process.stdout, process.stderr):
                if stream is not None:
                    stream.close()

    def down_links(self) -> None:
        ip("link", "del", self.host_link, check=False)
        ip("netns", "del", self.namespace, check=False)

    def down(self) -> None:
        """Tear everything down; the blackhole stays if any socket could still send."""
        for process in self.ghosts:
            if process.poll() is None:
                process.kill()
                process.wait(WAIT)
        # Orphaned connections (FIN-WAIT after the daemon died) retransmit for minutes:
        # destroy them while the blackhole still swallows whatever they send.
        subprocess.run(
            ["ss", "-K", "-tan", f"( dst {SUBNET} or src {SUBNET} )"],
            capture_output=True,
            check=False,
        )
        self.down_links()
        lingering = [s for s in sockets_in_lab() if not s.startswith("TIME-WAIT")]
        if lingering:  # keep the blackhole: harmless, and nothing leaks
            print(f"half-open lab: left the blackhole route for {SUBNET}: {lingering}")
            return
        ip("route", "del", "blackhole", SUBNET, check=False)
        ip("addr", "del", f"{HOST_ADDRESS}/32", "dev", "lo", check=False)


@contextlib.contextmanager
def half_open_lab() -> Iterator[HalfOpenLab]:
    if os.geteuid() != 0:
        pytest.skip("half-open peers need root: network namespaces and a veth pair")
    for tool in ("ip", "ss"):
        if shutil.which(tool) is None:
            pytest.skip(f"half-open peers need `{tool}` (iproute2), which is missing")
    with LAB_LOCK.open("w") as lock:
        # One lab at a time on this machine (two test runs would share the /30).
        wait_until(lambda: _try_lock(lock.fileno()), timeout=60, what="the half-open lab's lock")
        lab = HalfOpenLab()
        try:
            lab.up()
            yield lab
        finally:
            lab.down()


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def lab_daemon(tmp_path: Path, name: str, config: str) -> Daemon:
    path = tmp_path / f"{name}.toml"
    path.write_text(config)
    return Daemon("--host", HOST_ADDRESS, config=path)


def online(client: LineClient) -> str:
    """Who the daemon says is online, asked through ``/who``."""
    client.send("/who")
    return next(line for line in iter(client.line, None) if line.startswith("*** Online"))


@pytest.mark.timeout(90)
def test_vanished_peer_is_dropped_by_keepalive_and_kept_without_it(
    tmp_path: Path, figures: Callable[[str], None]
) -> None:
    with half_open_lab() as lab:
        daemons: list[Daemon] = []
        observers: list[LineClient] = []
        try:
            probing = lab_daemon(tmp_path, "probing", "[limits]\nkeepalive = 1\n")
            daemons.append(probing)
            control = lab_daemon(tmp_path, "control", "[limits]\nkeepalive = 0\n")
            daemons.append(control)
            for server in daemons:  # loopback clients, joined before the ghost
                observers.append(join_host(server.port, "watcher", HOST_ADDRESS))
            lab.ghost("ghost", [probing.port, control.port])
            for server, observer in zip(daemons, observers, strict=True):
                assert observer.line() == "ghost Bergabung!"
                server.wait_event("client_joined", nick="ghost")
                assert "ghost" in online(observer)

            lab.vanish()
            vanished = time.monotonic()
            left = probing.wait_event("client_left", timeout=DETECTION_BOUND, nick="ghost")
            detected = time.monotonic() - vanished
            assert left["reason"] == "disconnect"
            assert left["host"] == PEER_ADDRESS
            assert observers[0].line(DETECTION_BOUND) == "ghost Keluar!"
            assert "ghost" not in online(observers[0])

            # The control: no keepalive, no way to know. Still "online" after the bound.
            remaining = DETECTION_BOUND - (time.monotonic() - vanished)
            with pytest.raises(AssertionError, match="no client_left"):
                control.wait_event("client_left", timeout=max(0.1, remaining), nick="ghost")
            assert time.monotonic() - vanished >= DETECTION_BOUND
            assert "ghost" in online(observers[1])
            assert not control.find("client_left")
        finally:
            for observer in observers:
                observer.close()
            for server in daemons:
                server.kill()
    figures(
        f"half-open: a peer cut off without FIN dropped {detected:.1f}s after the link went "
        f"(keepalive = 1; bound {DETECTION_BOUND:.0f}s); with keepalive = 0 still online after "
        f"{DETECTION_BOUND:.0f}s"
    )


def join_host(port: int, nick: str, host: str) -> LineClient:
    client = LineClient(port, nick, host=host)
    assert client.lines(2) == [f"{nick} Bergabung!", "Terkoneksi dengan Server!"]
    return client


@pytest.mark.timeout(90)
def test_vanished_peer_is_dropped_while_the_room_talks(tmp_path: Path) -> None:
    with half_open_lab() as lab:
        server = lab_daemon(tmp_path, "talking", "[limits]\nkeepalive = 1\n")
        talker = None
        stop = threading.Event()
        try:
            talker = join_host(server.port, "talker", HOST_ADDRESS)
            lab.ghost("ghost", [server.port])
            assert talker.line() == "ghost Bergabung!"

            def chat() -> None:  # a few short lines a second: a quiet room, far from any limit
                for i in range(200):
                    if stop.wait(0.25):
                        return
                    with contextlib.suppress(OSError):
                        talker.send(f"still here {i}")

            lab.vanish()
            chatter = threading.Thread(target=chat, daemon=True)
            chatter.start()
            left = server.wait_event("client_left", timeout=DETECTION_BOUND, nick="ghost")
            assert left["reason"] in ("disconnect", "slow_consumer")
        finally:
            stop.set()
            if talker is not None:
                talker.close()
            server.kill()


# A reader at one byte a second ----------------------------------------------------------------

#: Small enough that the slow reader overflows it, large enough that no burst from the
#: talkers does (see the report on bursts: the bound is checked before each send).
SLOW_LIMIT = 262144
#: The slow reader's receive buffer and segment size: they bound what the kernels on both
#: sides can hold for it (without the MSS clamp, loopback's 64 KiB segments let the daemon's
#: socket buffer autotune to 4 MiB, and all this traffic would fit in the kernel).
SLOW_RCVBUF = 4096
SLOW_MSS = 536
LATENCY_BOUND = 3.0


def daemon_send_buffer(port: int, peer_port: int) -> int:
    """The kernel send buffer (bytes) of the daemon's socket to a client, from ``ss``."""
    result = subprocess.run(
        ["ss", "-Htmn", "state", "all", f"( sport = :{port} and dport = :{peer_port} )"],
        capture_output=True,
        text=True,
        check=False,
    )
    found = re.search(r"\btb(\d+)", result.stdout)
    return int(found.group(1)) if found else 0


class Crawler(threading.Thread):
    """A client that reads one byte a second, until the daemon lets go or it is stopped."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_RCVBUF)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, SLOW_MSS)
        self.sock.settimeout(WAIT)
        self.sock.connect(("127.0.0.1", port))
        assert self.sock.recv(4) == b"NICK"
        self.sock.sendall(b"slow\n")
        self.port = self.sock.getsockname()[1]
        self.crawled = bytearray()
        self.rest = bytearray()
        self._stop_crawling = threading.Event()

    def run(self) -> None:
        while not self._stop_crawling.is_set():
            try:
                byte = self.sock.recv(1)
            except OSError:
                return
            if not byte:
                return
            self.crawled.extend(byte)
            self._stop_crawling.wait(1.0)

    def drain(self) -> bytes:
        """Stop crawling and read whatever is still coming, quickly, until the end."""
        self._stop_crawling.set()
        self.join(5)
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while chunk := self.sock.recv(65536):
                self.rest.extend(chunk)
        return bytes(self.crawled + self.rest)

    def close(self) -> None:
        self._stop_crawling.set()
        self.sock.close()


def until_both_finish(count: int) -> Callable[[str], bool]:
    """A predicate that turns true at the line where both talkers' last message has passed."""
    ends = {f"talk{t}: {t}-{count - 1} " for t in range(2)}

    def finished(line: str) -> bool:
        for prefix in list(ends):
            if line.startswith(prefix):
                ends.discard(prefix)
        return not ends

    return finished


def check_talk(readers: list[Collector], heard: list[list[str]], count: int) -> list[float]:
    """Every reader got both talkers' lines, complete, in order, in one order; latencies."""
    latencies: list[float] = []
    for reader, lines in zip(readers, heard, strict=True):
        for t in range(2):
            seqs = [
                int(line.split(" ")[1].split("-")[1]) for line in lines if line[:5] == f"talk{t}"
            ]
            assert seqs == list(range(count)), f"talk{t} as heard: out of order or missing"
        for line, arrived in zip(lines, reader.arrived, strict=True):
            if line.startswith("talk"):
                latencies.append(arrived - float(line.split(" ")[2]))
        assert not [line for line in lines if line.endswith("Keluar!") and "slow" not in line]
    orders = [[line for line in lines if line.startswith("talk")] for lines in heard]
    assert orders[0] == orders[1] == orders[2], "the others saw different orders"
    return sorted(latencies)


def tcp_wmem_max() -> int:
    """The most the kernel lets a socket's send buffer grow to."""
    return int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])


@pytest.mark.timeout(120)
def test_reader_at_one_byte_a_second_never_delays_the_others(
    start_daemon: Callable[..., Daemon], clients: list, figures: Callable[[str], None]
) -> None:
    server = start_daemon(
        config=f"[server]\nsend_buffer_bytes = {SLOW_LIMIT}\n[limits]\nrate = 0\n"
    )
    talkers = [join(server.port, "talk0"), join(server.port, "talk1")]
    watcher = join(server.port, "watch")
    clients += [*talkers, watcher]
    for talker in talkers:
        talker.expect("watch Bergabung!")
    slow = Crawler(server.port)
    clients.append(slow)
    server.wait_event("client_joined", nick="slow")
    slow.start()

    count, size = 600, 1000
    readers = [Collector(c, until_both_finish(count), timeout=60) for c in [*talkers, watcher]]
    for reader in readers:
        reader.start()
    kernel_buffer = [0]  # the largest send buffer the daemon's kernel gave the slow socket

    def talk(index: int) -> None:
        for seq in range(count):
            head = f"{index}-{seq} {time.monotonic():.6f} "
            talkers[index].send(head + "x" * (size - len(head)))
            time.sleep(0.005)  # pacing: at most 200 lines/s each, 400 KB/s in all
            if index == 0 and seq % 40 == 0:
                kernel_buffer[0] = max(kernel_buffer[0], daemon_send_buffer(server.port, slow.port))

    started = time.monotonic()
    senders = [threading.Thread(target=talk, args=(i,), daemon=True) for i in range(2)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(60)
        assert not sender.is_alive()
    heard = [reader.finish(60) for reader in readers]
    elapsed = time.monotonic() - started

    # Everyone else got everything, in one and the same order, and never late.
    latencies = check_talk(readers, heard, count)
    assert latencies[-1] < LATENCY_BOUND, f"a line took {latencies[-1]:.2f}s to arrive"

    # The slow one: its bytes are exactly the start of what the others got after it joined.
    received = slow.drain().decode()
    after = heard[2][heard[2].index("slow Bergabung!") + 1 :]
    expected = "slow Bergabung!\nTerkoneksi dengan Server!\n"
    expected += "".join(f"{line}\n" for line in after if line != "slow Keluar!")
    dropped = server.find("client_left", nick="slow")
    # What the configuration guarantees: a backlog within send_buffer_bytes is kept; more
    # traffic than that plus all the two kernels can hold for it must get it dropped.
    total = count * 2 * (size + len("talkN: ") + 1)
    absorbable = SLOW_LIMIT + (kernel_buffer[0] or tcp_wmem_max()) + 2 * SLOW_RCVBUF
    if total > absorbable:
        assert dropped, f"{total} B sent, at most {absorbable} B absorbable, yet not dropped"
    if dropped:
        assert dropped[0]["reason"] == "slow_consumer"
        assert "slow Keluar!" in heard[2]
        assert expected.startswith(received), "the slow reader's stream is not a prefix"
        assert len(received) < len(expected)
    else:  # it kept up within the bound: then it gets everything, in order
        assert received.startswith(expected)
    figures(
        f"slow reader (1 B/s): {total // 1000} KB chatted in {elapsed:.1f}s; slow one "
        f"{'dropped as slow_consumer' if dropped else 'kept'} after {len(slow.crawled)} B "
        f"crawled + {len(slow.rest)} B drained (send_buffer_bytes {SLOW_LIMIT}, daemon kernel "
        f"send buffer up to {kernel_buffer[0]} B); others' latency p50 "
        f"{percentile(latencies, 0.5) * 1000:.0f} ms, p99 {percentile(latencies, 0.99) * 1000:.0f}"
        f" ms, max {latencies[-1] * 1000:.0f} ms (bound {LATENCY_BOUND:.0f}s)"
    )


def test_a_burst_beyond_the_send_buffer_does_not_drop_prompt_readers(
    start_daemon: Callable[..., Daemon], clients: list
) -> None:
    server = start_daemon(config="[server]\nsend_buffer_bytes = 16384\n[limits]\nrate = 0\n")
    reader = join(server.port, "reader")
    burster = join(server.port, "burster")
    clients += [reader, burster]
    reader.expect("burster Bergabung!")
    lines = [f"{i:04d} " + "z" * 995 for i in range(20)]  # 20 KB in one write
    burster.send_bytes("".join(f"{line}\n" for line in lines).encode())
    for client in (reader, burster):
        assert client.lines(len(lines)) == [f"burster: {line}" for line in lines]
    assert not server.find("client_left")


# kill -9 under load -------------------------------------------------------------------------

KILL_ROUNDS = 4
CTL_ADDRESSES = [[f"127.0.0.{base + i}" for i in range(3)] for base in (11, 21)]
RAW_ADDRESSES = [f"127.0.0.{31 + i}" for i in range(6)]
ALL_ADDRESSES = [a for group in CTL_ADDRESSES for a in group] + RAW_ADDRESSES


class BanModel:
    """What the bans must be: per address, the confirmed state and an op in doubt (if any).

    Every address belongs to one worker, whose operations are sequential, so at most one
    operation per address is in flight when the daemon dies.
    """

    def __init__(self) -> None:
        self.banned: dict[str, str | None] = dict.fromkeys(ALL_ADDRESSES)  # reason if banned
        self.in_doubt: dict[str, str | None] = {}
        self.lock = threading.Lock()
        self.confirmed = {"ctl": 0, "raw": 0}
        self.errors: list[str] = []

    def next_op(self, address: str, tag: str) -> tuple[str, str | None]:
        with self.lock:
            return ("unban", None) if self.banned[address] is not None else ("ban", tag)

    def settle(
        self, kind: str, address: str, after: str | None, ok: bool, killed: bool, why: str
    ) -> None:
        with self.lock:
            if ok:
                self.banned[address] = after
                self.confirmed[kind] += 1
            elif killed:
                self.in_doubt[address] = after
            else:
                self.errors.append(f"{address}: refused while the daemon was up: {why}")

    def check_file(self, path: Path) -> set[str]:
        """The file parses, and each address holds its confirmed state or its op in doubt."""
        document = json.loads(path.read_bytes())  # strictly: no salvage
        assert document["version"] == 1
        bans = [Ban.from_json(entry) for entry in document["bans"]]
        on_file = {ban.address: ban.reason for ban in bans}
        assert len(on_file) == len(bans), "an address is in the file twice"
        assert set(on_file) <= set(ALL_ADDRESSES)
        for address in ALL_ADDRESSES:
            allowed = [self.banned[address]]
            if address in self.in_doubt:
                allowed.append(self.in_doubt[address])
            assert on_file.get(address) in allowed, (address, on_file.get(address), allowed)
            self.banned[address] = on_file.get(address)
        self.in_doubt.clear()
        return set(on_file)


def ctl_worker(
    socket_path: Path, addresses: list[str], model: BanModel, killed: threading.Event, tag: str
) -> None:
    """Ban and unban through the installed lanchatctl, one command at a time."""
    n = 0
    while not killed.is_set():
        address = addresses[n % len(addresses)]
        op, reason = model.next_op(address, f"{tag}-{n}")
        args = ["ban", address, "--reason", reason] if op == "ban" else ["unban", address]
        try:
            result = lanchatctl("--socket", str(socket_path), *args, timeout=30)
        except AssertionError as error:  # lanchatctl printed a traceback
            model.errors.append(f"lanchatctl {' '.join(args)}: {error}")
            model.settle("ctl", address, reason, False, True, "traceback")
            return
        dead = killed.is_set()
        model.settle("ctl", address, reason, result.returncode == 0, dead, result.stderr.strip())
        if result.returncode:
            return
        n += 1


def raw_worker(
    socket_path: Path, addresses: list[str], model: BanModel, killed: threading.Event, tag: str
) -> None:
    """Ban and unban as fast as the admin socket answers (each answer follows an fsync)."""
    try:
        admin = AdminConnection(socket_path)
    except OSError as error:
        model.errors.append(f"admin connection: {error!r}")
        return
    try:
        n = 0
        while not killed.is_set():
            address = addresses[n % len(addresses)]
            op, reason = model.next_op(address, f"{tag}-{n}")
            try:
                if op == "ban":
                    response = admin.request("ban", target=address, reason=reason)
                else:
                    response = admin.request("unban", address=address)
            except (OSError, AssertionError, ValueError) as error:
                model.settle("raw", address, reason, False, True, repr(error))
                return
            ok, dead = bool(response.get("ok")), killed.is_set()
            model.settle("raw", address, reason, ok, dead, str(response))
            if not response.get("ok"):
                return
            n += 1
    finally:
        with contextlib.suppress(OSError):
            admin.close()


def connections_on_port(port: int) -> int:
    """Sockets on this port other than a listener (TIME-WAIT, FIN-WAIT, ...), from ``ss``."""
    result = subprocess.run(
        ["ss", "-Htan", "state", "all", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
        check=False,
    )
    states = [line.split()[0] for line in result.stdout.splitlines() if line.strip()]
    return sum(1 for state in states if state != "LISTEN")


def check_restarted(server: Daemon, model: BanModel) -> None:
    """The new daemon loaded exactly the bans on file, lists them, and enforces them."""
    expected = {address for address, reason in model.banned.items() if reason is not None}
    assert server.wait_event("bans_loaded")["count"] == len(expected)
    listed = server.ctl("bans", "--json")
    assert listed.returncode == 0, listed.stderr
    assert {ban["address"] for ban in json.loads(listed.stdout)} == expected
    for address in ALL_ADDRESSES:
        answer = refused_connection(server.port, source=address)
        reason = model.banned[address]
        if reason is not None:
            assert answer.startswith(b"*** Anda diblokir"), (address, answer)
            assert reason.encode() in answer, (address, reason, answer)
        else:
            assert answer == b"NICK", (address, answer)


def chat_until(sender: LineClient, stop: threading.Event) -> None:
    i = 0
    while not stop.is_set():
        try:
            sender.send(f"load {i} " + "y" * 200)
        except OSError:
            return
        i += 1
        if i % 20 == 0:
            stop.wait(0.005)


def drain(client: LineClient) -> None:
    with contextlib.suppress(OSError):
        client.sock.settimeout(None)
        while client.sock.recv(65536):
            pass


def load_then_kill(server: Daemon, model: BanModel, round_: int) -> int:
    """Chat and ban traffic against ``server``, then SIGKILL mid-flight; changes confirmed."""
    sender, reader = join(server.port, "sender"), join(server.port, "reader")
    killed = threading.Event()
    path = server.admin_socket
    threads = [threading.Thread(target=chat_until, args=(sender, killed))]
    threads += [threading.Thread(target=drain, args=(c,)) for c in (sender, reader)]
    threads += [
        threading.Thread(target=ctl_worker, args=(path, group, model, killed, f"ctl{k}.{round_}"))
        for k, group in enumerate(CTL_ADDRESSES)
    ]
    threads.append(
        threading.Thread(
            target=raw_worker, args=(path, RAW_ADDRESSES, model, killed, f"raw.{round_}")
        )
    )
    before = dict(model.confirmed)
    try:
        for thread in threads:
            thread.daemon = True
            thread.start()
        # Kill once both kinds of worker have had their say this round: a few lanchatctl
        # commands and many raw-socket changes confirmed (the raw worker is then almost
        # always in the middle of one: its changes follow each other back to back).
        wait_until(
            lambda: (
                model.confirmed["ctl"] - before["ctl"] >= 3
                and model.confirmed["raw"] - before["raw"] >= 40 + 17 * round_
            ),
            timeout=60,
            what="ban traffic",
        )
        assert server.find("message"), "no chat traffic before the kill"
        killed.set()
        server.process.send_signal(signal.SIGKILL)
        server.wait_exit(WAIT)
        for thread in threads:
            thread.join(40)
            assert not thread.is_alive(), f"{thread.name} hangs after the kill"
    finally:
        killed.set()
        sender.close()
        reader.close()
    assert not model.errors, model.errors
    return sum(model.confirmed.values()) - sum(before.values())


@pytest.mark.timeout(240)
def test_kill_9_under_load_keeps_bans_intact_and_restarts_at_once(
    admin_workdir: Path, figures: Callable[[str], None]
) -> None:
    state = admin_workdir / "state"
    model = BanModel()
    daemons: list[Daemon] = []
    restarts: list[float] = []
    lingering: list[int] = []
    changes: list[int] = []

    def start(*args: str) -> Daemon:
        server = Daemon(
            *args,
            workdir=admin_workdir,
            config=write_config(admin_workdir, "[limits]\nrate = 0\n"),
            state_dir=state,
            admin_socket=admin_workdir / "admin.sock",  # the dead daemon's, stale: replaced
        )
        daemons.append(server)
        return server

    try:
        server = start()
        port = server.port
        for round_ in range(KILL_ROUNDS):
            changes.append(load_then_kill(server, model, round_))
            # The file is whole, and consistent with every change confirmed before the kill.
            model.check_file(state / "bans.json")
            # At once, on the same port, though the dead daemon's connections linger on it.
            lingering.append(connections_on_port(port))
            killed_at = time.monotonic()
            server = start("--port", str(port))
            restarts.append(time.monotonic() - killed_at)
            assert server.port == port
            check_restarted(server, model)
        litter = sorted(
            p.name
            for p in state.iterdir()
            if p.name not in ("bans.json", "lanchatd.lock") and not p.name.startswith("history.db")
        )
    finally:
        for server in daemons:
            server.kill()
    assert all(lingering), f"nothing left on the port at restart ({lingering}): test is moot"
    assert litter == [], "a restart removes the temporary files of an interrupted save"
    figures(
        f"kill -9: {KILL_ROUNDS} rounds under chat load, {sum(changes)} ban/unban changes "
        f"confirmed ({changes} per round, lanchatctl + raw admin socket); bans file intact "
        f"every time; restart on the same port in {min(restarts):.2f}-{max(restarts):.2f}s "
        f"with {lingering} connections still on it; nothing else left in the state dir"
    )


# Resets mid-line and silent connections -------------------------------------------------------

QUIET_CONFIG = """
[server]
handshake_timeout = 300.0
[limits]
rate = 0
per_address = 0
"""


def reset(sock: socket.socket) -> None:
    """Close with an RST instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class Resets:
    """Clients that connect, often join, and reset: mid-nickname or mid-line."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.joined: list[str] = []
        self.mid_nickname: list[int] = []
        self.join_times: list[float] = []
        self.problems: list[str] = []

    def run(self, numbers: range) -> None:
        for n in numbers:
            try:
                self.one(n)
            except Exception as error:
                self.problems.append(f"resetter {n}: {error!r}")

    def one(self, n: int) -> None:
        client = LineClient(self.port)
        if n % 4 == 3:
            client.send_bytes(b"rst-half")
            reset(client.sock)
            self.mid_nickname.append(n)
            return
        nick = f"rst{n}"
        started = time.monotonic()
        client.send(nick)
        client.expect("Terkoneksi dengan Server!")
        self.join_times.append(time.monotonic() - started)
        # A line that never ends, then the reset; sometimes a whole line first.
        whole = f"whole {n}\n" if n % 2 else ""
        client.send_bytes(f"{whole}PARTIAL-{n} without end".encode())
        reset(client.sock)
        self.joined.append(nick)


def check_silent(mute: list[socket.socket], read_nick: int) -> None:
    """Still connected, and nothing but NICK ever arrived."""
    for index, sock in enumerate(mute):
        sock.setblocking(False)
        if index >= read_nick:
            assert sock.recv(65536) == b"NICK"
        with pytest.raises(BlockingIOError):
            sock.recv(1)  # open, and nothing more for it


@pytest.mark.timeout(120)
def test_resets_mid_line_and_silent_connections_affect_nobody(
    start_daemon: Callable[..., Daemon], clients: list, figures: Callable[[str], None]
) -> None:
    server = start_daemon(config=QUIET_CONFIG)
    port = server.port
    sender = join(port, "sender")
    watchers = [join(port, "w0"), join(port, "w1")]
    clients += [sender, *watchers]
    sender.expect("w1 Bergabung!")
    watchers[0].expect("w1 Bergabung!")

    # Silent: some never even read NICK, some read it and never answer. All during traffic.
    mute = [socket.create_connection(("127.0.0.1", port), timeout=WAIT) for _ in range(6)]
    clients += mute
    for sock in mute[:3]:
        assert sock.recv(4) == b"NICK"

    count, marker = 3000, "sender: all done"
    readers = [Collector(c, lambda line: line == marker, timeout=90) for c in [sender, *watchers]]
    for reader in readers:
        reader.start()

    def send_ticks() -> None:
        for i in range(count):
            sender.send(f"tick {i}")
            if i % 30 == 29:
                time.sleep(0.01)  # pacing: keeps the ticks flowing while the resets happen

    resets = Resets(port)
    threads = [threading.Thread(target=send_ticks, daemon=True)]
    threads += [
        threading.Thread(target=resets.run, args=(range(k, 60, 3),), daemon=True) for k in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
        assert not thread.is_alive()
    assert not resets.problems, resets.problems
    # Every client that joined and reset is gone, logged as a plain disconnect.
    for nick in resets.joined:
        server.wait_event("client_left", nick=nick, reason="disconnect")
    sender.send("all done")  # after every leave, so it is the last line for everyone
    heard = [reader.finish(90) for reader in readers]

    for lines in heard:
        ticks = [line for line in lines if line.startswith("sender: tick ")]
        assert ticks == [f"sender: tick {i}" for i in range(count)]
        assert not [line for line in lines if "PARTIAL" in line], "a line cut by RST went out"
    assert heard[1] == heard[2], "the watchers saw different orders"
    for nick in resets.joined:
        assert heard[1].index(f"{nick} Keluar!") > heard[1].index(f"{nick} Bergabung!")
    check_silent(mute, read_nick=3)
    assert not server.find("connection_error")
    for nick in ("sender", "w0", "w1"):
        assert not server.find("client_left", nick=nick)
    figures(
        f"resets/silence: {count} lines to 3 clients, all delivered in order, while "
        f"{len(resets.joined)} clients reset mid-line after joining, "
        f"{len(resets.mid_nickname)} reset mid-nickname and {len(mute)} stayed silent; joins "
        f"took at most {max(resets.join_times) * 1000:.0f} ms"
    )


_INJECT = """\
import ctypes
import sys

for thread_id, frame in sys._current_frames().items():
    while frame is not None:
        peer = frame.f_locals.get("peer")
        if frame.f_code.co_name == "_read" and getattr(peer, "nick", None) == "victim":
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(thread_id), ctypes.py_object(RuntimeError)
            )
        frame = frame.f_back
"""


@pytest.mark.skipif(shutil.which("gdb") is None or os.geteuid() != 0, reason="needs gdb as root")
def test_an_exception_in_one_connection_thread_harms_nobody_else(
    tmp_path: Path, clients: list
) -> None:
    """The fault comes from outside our code: gdb makes the running daemon raise
    RuntimeError in one client's reader thread (PyThreadState_SetAsyncExc), as an
    unexpected bug would. That client is dropped and the error logged with a traceback;
    nobody else notices anything, and nothing of the error reaches any client.
    """
    script = tmp_path / "inject.py"
    script.write_text(_INJECT)
    server = Daemon()
    try:
        victim = join(server.port, "victim")
        bystander = join(server.port, "bystander")
        clients += [victim, bystander]
        victim.line()
        injected = subprocess.run(
            [
                *("gdb", "-batch", "-nx", "-p", str(server.process.pid)),
                *("-ex", "call (int)PyGILState_Ensure()"),
                *("-ex", f"call (int)PyRun_SimpleString(\"exec(open('{script}').read())\")"),
                *("-ex", "call (void)PyGILState_Release($1)"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert "$2 = 0" in injected.stdout, injected.stdout + injected.stderr
        victim.send("this line wakes the thread, which then raises")
        failed = server.wait_event("connection_error", nick="victim")
        assert failed["level"] == "error"
        assert failed["exception"][0]["exc_type"] == "RuntimeError"
        assert failed["exception"][0]["frames"], "a traceback, in the log"
        assert server.wait_event("client_left", nick="victim")["reason"] == "error"
        assert victim.closed() == b"", "nothing of the error reaches the client"
        assert bystander.line() == "victim Keluar!"
        bystander.send("still here")
        assert bystander.line() == "bystander: still here"
        clients.append(join(server.port, "newcomer"))
        assert bystander.line() == "newcomer Bergabung!"
        assert server.process.poll() is None
    finally:
        server.kill()
