"""Discovery on a LAN of two network namespaces: lanchatd announces, lanchat finds it.

The two namespaces are joined by one veth pair and nothing else, so no mDNS packet of these
tests can reach a real network. The daemon (and avahi-daemon, and a hostile neighbour) run in
one, ``lanchat`` and raw senders in the other. Needs root (``ip netns``); skipped otherwise.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pexpect
import pytest

from tests.client_helpers import CLIENT, client_env
from tests.support import LANCHATD, WAIT, Daemon, wait_until, write_config
from tests.tls_support import make_certificate

ROOT = Path(__file__).resolve().parent.parent
SERVER = "10.231.78.1"
NEIGHBOUR = "10.231.78.2"
#: Browsing takes 1.5 s; a few browses fit in this.
FIND_WITHIN = 15.0
#: The issue's bound: browsers drop a stopped daemon within 3 s.
WITHDRAWN_WITHIN = 3.0

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="needs ip (Debian package iproute2)"),
]


class Lan:
    """Two namespaces, ``server`` and ``client``, joined by a veth pair with multicast on."""

    def __init__(self) -> None:
        tag = os.getpid() % 100_000
        self.server = f"lanchat-mds-{tag}"
        self.client = f"lanchat-mdc-{tag}"
        self.links = (f"lcmds{tag}", f"lcmdc{tag}")
        self.processes: list[subprocess.Popen[str]] = []

    def up(self) -> None:
        self.down()
        sides = list(zip((self.server, self.client), self.links, (SERVER, NEIGHBOUR), strict=True))
        for namespace, _, _ in sides:
            _ip("netns", "add", namespace)
            _ip("-n", namespace, "link", "set", "lo", "up")
        _ip("link", "add", self.links[0], "netns", self.server, "type", "veth",
            "peer", "name", self.links[1], "netns", self.client)  # fmt: skip
        for namespace, link, address in sides:
            _ip("-n", namespace, "addr", "add", f"{address}/30", "dev", link)
            _ip("-n", namespace, "link", "set", link, "up", "multicast", "on")
            _ip("-n", namespace, "route", "add", "224.0.0.0/4", "dev", link)

    def down(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait(WAIT)
            for stream in (process.stdin, process.stdout, process.stderr):
                if stream is not None:
                    stream.close()
        self.processes.clear()
        for namespace in (self.server, self.client):  # the veth pair goes with them
            _ip("netns", "del", namespace, check=False)

    def run(
        self, namespace: str, *command: str, stdin: str = "", env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", namespace, *command],
            input=stdin,
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env or client_env(),
            timeout=60,
            check=False,
        )

    def start(self, namespace: str, *command: str) -> Background:
        """A long-running process in ``namespace``; it ends when its standard input closes."""
        process = subprocess.Popen(
            ["ip", "netns", "exec", namespace, *command],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
            env=client_env(),
        )
        self.processes.append(process)
        return Background(process)

    def daemon(self, config: str, path: Path, *args: str) -> Daemon:
        """lanchatd in the server namespace on every address, discovery as ``config`` says."""
        return Daemon(
            *args,
            config=write_config(path.parent, config, path.name),
            host=None,
            discovery=True,
            command=["ip", "netns", "exec", self.server, str(LANCHATD)],
        )

    def watch(self, daemon: Daemon, name: str) -> Background:
        """A browser in the client namespace that has seen ``daemon`` announce ``name``."""
        daemon.wait_event("discovery_announced", timeout=FIND_WITHIN)
        watcher = self.start(self.client, sys.executable, "-m", "tests.mdns_peer", "watch")
        deadline = time.monotonic() + FIND_WITHIN
        assert watcher.line(deadline, "the watcher") == "watching"
        assert watcher.line(deadline, "the service") == f"add {name}"
        return watcher

    def lanchat(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return self.run(self.client, *CLIENT, *args, stdin=stdin)

    def listed(self) -> list[dict[str, Any]]:
        result = self.lanchat("--list", "--json")
        assert result.returncode == 0, result.stderr
        found: list[dict[str, Any]] = json.loads(result.stdout)
        return found

    def mdns_sockets(self, namespace: str) -> list[str]:
        """The UDP sockets on port 5353 in ``namespace``, with their processes."""
        result = self.run(namespace, "ss", "-Huanp", "sport = :5353")
        assert result.returncode == 0, result.stderr
        return [line for line in result.stdout.splitlines() if line.strip()]


def _ip(*args: str, check: bool = True) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and result.returncode:
        raise AssertionError(f"ip {' '.join(args)}: {result.stderr.strip()}")


class Background:
    """A process whose output lines are read as they come, by a thread of their own."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self._lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def line(self, deadline: float, what: str) -> str:
        """The next line it prints, before ``deadline`` (time.monotonic)."""
        try:
            line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"no {what} in time") from None
        assert line is not None, f"the process ended before {what}"
        return line


@pytest.fixture
def lan() -> Iterator[Lan]:
    network = Lan()
    network.up()
    try:
        yield network
    finally:
        network.down()


def expected(daemon: Daemon, name: str, lang: str = "id") -> dict[str, Any]:
    return {
        "name": name,
        "addresses": [SERVER],
        "port": daemon.port,
        "tls": False,
        "lang": lang,
        "proto": 1,
        # The web page, as bound (the test daemon's is on a free port).
        "web": f"http://{SERVER}:{daemon.web_port}/" if daemon.web_port else None,
    }


def default_name() -> str:
    return f"lanchat on {socket.gethostname()}"


def test_the_service_appears_with_its_txt_fields(lan: Lan, tmp_path: Path) -> None:
    config = '[server]\nlang = "en"\n[discovery]\nname = "Lab 3 chat"\n'
    with lan.daemon(config, tmp_path / "lanchatd.toml") as daemon:
        announced = daemon.wait_event("discovery_announced", timeout=FIND_WITHIN)
        assert announced["name"] == f"Lab 3 chat.{'_lanchat._tcp.local.'}"
        assert announced["addresses"] == [SERVER]
        found = wait_until(lan.listed, FIND_WITHIN, "the service in lanchat --list")
        assert found == [expected(daemon, "Lab 3 chat", "en")]
        table = lan.lanchat("--list")
        assert table.returncode == 0
        port = f"{daemon.port:<4}"
        assert table.stdout.splitlines() == [
            f"NAME        ADDRESSES    {'PORT':<{len(port)}}  TLS  WEB",
            f"Lab 3 chat  {SERVER}  {port}  no   http://{SERVER}:{daemon.web_port}/",
        ]
        mdns = lan.mdns_sockets(lan.server)
        assert mdns
        assert all(f"pid={daemon.process.pid}," in line for line in mdns)


def test_lanchat_without_host_connects_to_the_one_server_found(lan: Lan, tmp_path: Path) -> None:
    with lan.daemon("", tmp_path / "lanchatd.toml") as daemon:
        daemon.wait_event("discovery_announced", timeout=FIND_WITHIN)
        result = lan.lanchat("--nick", "bob", stdin="hello from afar\n")
        assert result.returncode == 0, result.stderr
        assert "bob: hello from afar" in result.stdout.splitlines()
        where = f"{SERVER}:{daemon.port}"
        assert result.stderr.splitlines() == [f"lanchat: found {default_name()} at {where}"]
        daemon.wait_event("client_joined", host=NEIGHBOUR)


def test_a_tls_server_says_so_and_is_joined_with_tls(lan: Lan, tmp_path: Path) -> None:
    cert, key = make_certificate(tmp_path)
    tls = ("--tls-cert", str(cert), "--tls-key", str(key))
    with lan.daemon("", tmp_path / "lanchatd.toml", *tls) as daemon:
        daemon.wait_event("discovery_announced", timeout=FIND_WITHIN)
        web = f"https://{SERVER}:{daemon.web_port}/"  # the web port speaks HTTPS too
        assert lan.listed() == [{**expected(daemon, default_name()), "tls": True, "web": web}]
        # Its certificate names 127.0.0.1 only: unverified, but encrypted without --tls.
        result = lan.lanchat("--insecure", "--nick", "bob", stdin="secret\n")
        assert result.returncode == 0, result.stderr
        assert "bob: secret" in result.stdout.splitlines()


def test_a_reload_announces_the_new_name(lan: Lan, tmp_path: Path) -> None:
    with lan.daemon('[discovery]\nname = "before"\n', tmp_path / "lanchatd.toml") as daemon:
        watcher = lan.watch(daemon, "before._lanchat._tcp.local.")
        deadline = time.monotonic() + FIND_WITHIN
        (tmp_path / "lanchatd.toml").write_text('[discovery]\nname = "after"\n')
        daemon.signal(signal.SIGHUP)
        daemon.wait_event(
            "discovery_announced", timeout=FIND_WITHIN, name="after._lanchat._tcp.local."
        )
        changes = {watcher.line(deadline, "the rename") for _ in range(2)}
        assert changes == {"remove before._lanchat._tcp.local.", "add after._lanchat._tcp.local."}
        assert [server["name"] for server in lan.listed()] == ["after"]


def test_it_is_gone_within_3_s_of_sigterm(lan: Lan, tmp_path: Path) -> None:
    with lan.daemon("", tmp_path / "lanchatd.toml") as daemon:
        name = f"{default_name()}._lanchat._tcp.local."
        watcher = lan.watch(daemon, name)
        stopped = time.monotonic()
        daemon.signal(signal.SIGTERM)
        assert watcher.line(stopped + WITHDRAWN_WITHIN, "its removal") == f"remove {name}"
        assert daemon.wait_exit() == 0
        assert daemon.find("discovery_withdrawn")
    assert lan.listed() == []


def test_disabled_it_opens_no_mdns_socket(lan: Lan, tmp_path: Path) -> None:
    with lan.daemon("[discovery]\nenabled = false\n", tmp_path / "lanchatd.toml") as daemon:
        assert lan.listed() == []  # 1.5 s in which an enabled daemon would have announced
        assert lan.mdns_sockets(lan.server) == []
        assert [e["event"] for e in daemon.events if e["event"].startswith("discovery")] == []
        assert daemon.process.poll() is None


BLOCK_5353 = """
import socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # no SO_REUSEADDR, no SO_REUSEPORT
sock.bind(("0.0.0.0", 5353))
print("bound", flush=True)
sys.stdin.read()
"""


def test_chat_is_served_when_port_5353_cannot_be_bound(lan: Lan, tmp_path: Path) -> None:
    blocker = lan.start(lan.server, sys.executable, "-c", BLOCK_5353)
    assert blocker.line(time.monotonic() + WAIT, "the blocker") == "bound"
    with lan.daemon("", tmp_path / "lanchatd.toml") as daemon:
        failed = daemon.wait_event("discovery_failed", timeout=FIND_WITHIN)
        assert failed["level"] == "warning"
        assert failed["error"] == (
            "UDP port 5353 is taken by a program that does not share it (SO_REUSEPORT)"
        )
        result = lan.lanchat(f"{SERVER}:{daemon.port}", "--nick", "bob", stdin="still here\n")
        assert result.returncode == 0, result.stderr
        assert "bob: still here" in result.stdout.splitlines()
        assert len(daemon.find("discovery_failed")) == 1
        assert [e for e in daemon.events if e["level"] == "error"] == []
        assert daemon.stop() == 0


AVAHI_CONFIG = """\
[server]
use-ipv4=yes
use-ipv6=no
allow-interfaces={link}
enable-dbus=no
[publish]
publish-hinfo=no
publish-workstation=no
"""


def test_it_works_beside_a_running_avahi_daemon(lan: Lan, tmp_path: Path) -> None:
    avahi = shutil.which("avahi-daemon")
    if avahi is None:
        pytest.skip("needs avahi-daemon (Debian package avahi-daemon)")
    config = tmp_path / "avahi-daemon.conf"
    config.write_text(AVAHI_CONFIG.format(link=lan.links[0]))
    started = lan.start(
        lan.server, avahi, "--file", str(config), "--no-drop-root", "--no-chroot", "--no-rlimits"
    )
    deadline = time.monotonic() + FIND_WITHIN
    while "Server startup complete" not in (line := started.line(deadline, "avahi")):
        if "already running" in line:  # one pid file for the machine: .ci/run stops the service
            pytest.skip(f"another avahi-daemon runs on this machine: {line}")
        assert "conflict" not in line.lower(), line
    with lan.daemon("", tmp_path / "lanchatd.toml") as daemon:
        daemon.wait_event("discovery_announced", timeout=FIND_WITHIN)
        found = wait_until(lan.listed, FIND_WITHIN, "the service beside avahi")
        assert found == [expected(daemon, default_name())]
        owners = "\n".join(lan.mdns_sockets(lan.server))
        assert f"pid={daemon.process.pid}," in owners
        assert f"pid={started.process.pid}," in owners
        assert daemon.stop() == 0
    assert started.process.poll() is None, "avahi-daemon ended"
    started.process.terminate()
    deadline = time.monotonic() + WAIT
    while not (line := started.line(deadline, "avahi's exit")).endswith("exiting."):
        assert "conflict" not in line.lower(), line


#: Raw mDNS datagrams, each wrong in its own way.
MALFORMED = [
    b"",
    b"\x00\x00\x84",  # shorter than a header
    b"\x00\x00\x00\x00\xff\xff\xff\xff\xff\xff\xff\xff",  # counts with nothing behind them
    # A question whose name is a compression pointer to itself.
    b"\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x0c\x00\x01",
    # A label longer than what follows.
    b"\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x3fabc",
    # An answer for _lanchat._tcp.local. whose data length runs past the end.
    b"\x00\x00\x84\x00\x00\x00\x00\x01\x00\x00\x00\x00"
    b"\x08_lanchat\x04_tcp\x05local\x00\x00\x0c\x00\x01\x00\x00\x00\x78\xff\xff\x01",
    bytes(range(256)) * 4,
    b"\xff" * 9000,
]

SEND_RAW = """
import socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(sys.argv[1]))
for payload in sys.argv[3:]:
    for target in ("224.0.0.251", sys.argv[2]):
        sock.sendto(bytes.fromhex(payload), (target, 5353))
print("sent", flush=True)
"""


def test_malformed_mdns_packets_change_nothing(lan: Lan, tmp_path: Path) -> None:
    with lan.daemon("", tmp_path / "lanchatd.toml") as daemon:
        daemon.wait_event("discovery_announced", timeout=FIND_WITHIN)
        before = wait_until(lan.listed, FIND_WITHIN, "the service")
        payloads = [payload.hex() for payload in MALFORMED]
        sent = lan.run(lan.client, sys.executable, "-c", SEND_RAW, NEIGHBOUR, SERVER, *payloads)
        assert sent.stdout == "sent\n", sent.stderr
        assert lan.listed() == before == [expected(daemon, default_name())]
        result = lan.lanchat(f"{SERVER}:{daemon.port}", "--nick", "bob", stdin="fine\n")
        assert "bob: fine" in result.stdout.splitlines()
        assert [e for e in daemon.events if e["level"] == "error"] == []
        mdns_events = [e["event"] for e in daemon.events if e["event"].startswith("discovery")]
        assert mdns_events == ["discovery_announced"]
        assert daemon.process.poll() is None
        assert daemon.stop() == 0


def test_hostile_txt_records_are_listed_harmlessly(lan: Lan) -> None:
    peer = lan.start(lan.server, sys.executable, "-m", "tests.mdns_peer", "hostile", SERVER)
    assert peer.line(time.monotonic() + FIND_WITHIN, "the hostile peer") == "ready"
    found = wait_until(
        lambda: len(servers := lan.listed()) == 3 and servers, FIND_WITHIN, "three services"
    )
    hostile = {"addresses": [SERVER], "port": 5001, "tls": False, "proto": None, "web": None}
    assert found == [
        {"name": "A" * 100, "lang": None, **hostile},
        {"name": "^[]0;pwned^G\ufffd\ufffd caf\u00e9<U+202E>", "lang": "x" * 100, **hostile},
        {"name": "bare", "lang": None, **hostile},
    ]
    table = lan.lanchat("--list")
    assert table.returncode == 0
    assert "\x1b" not in table.stdout
    assert "\x07" not in table.stdout
    assert len(table.stdout.splitlines()) == 4
    # Several servers and no terminal to choose on: refused, with the list.
    refused = lan.lanchat("--nick", "bob", stdin="hi\n")
    assert refused.returncode == 2
    assert refused.stderr.splitlines() == [
        "lanchat: error: several lanchat servers answered; give one's address: lanchat HOST",
        f"  1) {SERVER}:5001  {'A' * 100}",
        f"  2) {SERVER}:5001  ^[]0;pwned^G\ufffd\ufffd caf\u00e9<U+202E>",
        f"  3) {SERVER}:5001  bare",
    ]


def test_a_neighbour_pointing_at_the_clients_own_machine_is_not_connected_to(lan: Lan) -> None:
    peer = lan.start(lan.server, sys.executable, "-m", "tests.mdns_peer", "redirect", SERVER)
    assert peer.line(time.monotonic() + FIND_WITHIN, "the redirecting peer") == "ready"
    found = wait_until(lan.listed, FIND_WITHIN, "the redirecting service")
    assert found == [
        {
            "name": "sneaky",
            "addresses": [],
            "port": 22,
            "tls": False,
            "lang": None,
            "proto": None,
            "web": None,
        }
    ]
    result = lan.lanchat("--nick", "bob", stdin="hi\n")
    assert result.returncode == 1
    assert result.stderr.startswith("lanchat: error: no lanchat server answered")


def test_several_servers_on_a_terminal_are_offered_to_choose(lan: Lan, tmp_path: Path) -> None:
    one = lan.daemon('[discovery]\nname = "room one"\n', tmp_path / "one.toml")
    two = lan.daemon('[discovery]\nname = "room two"\n', tmp_path / "two.toml")
    with one, two:
        for daemon in (one, two):
            daemon.wait_event("discovery_announced", timeout=FIND_WITHIN)
        child = pexpect.spawn(
            "ip",
            ["netns", "exec", lan.client, *CLIENT, "--nick", "bob"],
            cwd=str(ROOT),
            env=client_env(),
            encoding="utf-8",
            dimensions=(30, 100),
            timeout=FIND_WITHIN,
        )
        try:
            child.expect_exact("2 lanchat servers on the local network:")
            child.expect_exact(f"  1) {SERVER}:{one.port}  room one")
            child.expect_exact(f"  2) {SERVER}:{two.port}  room two")
            child.expect_exact("Connect to which one (1-2)?")
            child.sendline("2")
            child.expect_exact("Terkoneksi dengan Server!")
            two.wait_event("client_joined", host=NEIGHBOUR)
            assert one.find("client_joined") == []
        finally:
            child.close(force=True)


def test_nothing_found_says_how_to_give_an_address(lan: Lan) -> None:
    assert lan.lanchat("--list", "--json").stdout == "[]\n"
    listed = lan.lanchat("--list")
    assert (listed.returncode, listed.stdout) == (
        0,
        "no lanchat server answered on the local network\n",
    )
    result = lan.lanchat("--nick", "bob", stdin="hi\n")
    assert result.returncode == 1
    assert result.stderr == (
        "lanchat: error: no lanchat server answered on the local network; give its address: "
        "lanchat HOST (for example lanchat 192.168.1.2)\n"
    )
