"""One room across several real lanchatd nodes through a real redis-server (docs/cluster.md).

Every node is the installed ``lanchatd`` with a ``[cluster]`` section; clients are raw line
clients; Redis is Debian's ``redis-server`` on a free loopback port in a temporary directory.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.client_helpers import CLIENT, client_env
from tests.redis_support import REDIS_SERVER, RedisServer
from tests.support import (
    LANCHATD,
    Daemon,
    LineClient,
    free_port,
    join,
    refused_connection,
    wait_until,
    write_config,
)
from tests.test_bench_smoke import tiny_run
from tests.test_daemon_systemd import NotifyListener
from tests.test_ids_daemon import read, tagged

pytestmark = [
    pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed"),
    pytest.mark.timeout(120),
]

Nodes = Callable[..., Daemon]


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer(appendonly=True)
    yield server
    server.close()


@pytest.fixture
def nodes(tmp_path: Path, redis_server: RedisServer) -> Iterator[Nodes]:
    """Start nodes of one room on ``redis_server``; all killed afterwards."""
    started: list[Daemon] = []

    def start(name: str, *args: str, extra: str = "") -> Daemon:
        """A node; ``args`` are lanchatd flags, ``extra`` more config text."""
        config = (
            f'[cluster]\nredis = "{redis_server.url}"\nnode = "{name}"\n[limits]\nrate = 0\n{extra}'
        )
        node = Daemon(*args, config=write_config(tmp_path, config, f"{name}.toml"))
        started.append(node)
        node.wait_event("cluster_ok")
        return node

    yield start
    for node in started:
        node.kill()


@pytest.fixture
def opened() -> Iterator[list[LineClient]]:
    clients: list[LineClient] = []
    yield clients
    for client in clients:
        client.close()


def alice_and_bob(
    nodes: Nodes, opened: list[LineClient]
) -> tuple[Daemon, Daemon, LineClient, LineClient]:
    """Nodes n1 and n2, alice on n1 and bob on n2, once alice has seen bob join."""
    one, two = nodes("n1"), nodes("n2")
    alice, bob = join(one.port, "alice"), join(two.port, "bob")
    opened += [alice, bob]
    alice.expect("bob Bergabung!")
    return one, two, alice, bob


def chat_lines(client: LineClient, count: int, timeout: float = 30.0) -> list[str]:
    """The next ``count`` chat lines (``nick: text``) the client receives, skipping others."""
    found: list[str] = []
    deadline = time.monotonic() + timeout
    while len(found) < count:
        line = client.line(max(0.01, deadline - time.monotonic()))
        if ": " in line and not line.startswith("*"):
            found.append(line)
    return found


def test_every_client_on_every_node_sees_one_sequence(
    nodes: Nodes, opened: list[LineClient]
) -> None:
    servers = [nodes("n1"), nodes("n2"), nodes("n3")]
    nicks = [f"u{n}{i}" for n in range(3) for i in range(3)]
    for index, nick in enumerate(nicks):
        opened.append(join(servers[index // 3].port, nick))
    for client in opened[:-1]:  # everyone has seen the last join: the sends come after it
        client.expect(f"{nicks[-1]} Bergabung!")
    per_client = 200
    total = per_client * len(nicks)
    received: dict[str, list[str]] = {}

    def read(nick: str, client: LineClient) -> None:
        received[nick] = chat_lines(client, total, timeout=60.0)

    readers = [
        threading.Thread(target=read, args=(nick, client))
        for nick, client in zip(nicks, opened, strict=True)
    ]
    for thread in readers:
        thread.start()
    for nick, client in zip(nicks, opened, strict=True):
        client.send_bytes("".join(f"{nick} says {n}\n" for n in range(per_client)).encode())
    for thread in readers:
        thread.join(90)
    first = received[nicks[0]]
    assert len(first) == total
    for nick in nicks:
        assert received[nick] == first, nick
    for nick in nicks:  # each sender's lines in the order it sent them
        own = [line for line in first if line.startswith(f"{nick}: ")]
        assert own == [f"{nick}: {nick} says {n}" for n in range(per_client)]


def test_nicknames_are_unique_across_nodes(nodes: Nodes, opened: list[LineClient]) -> None:
    one, two = nodes("n1"), nodes("n2")
    opened.append(join(one.port, "alice"))
    taken = LineClient(two.port, "ALICE")
    opened.append(taken)
    assert taken.rest_until_closed() == ["*** Nickname ditolak: ALICE sudah dipakai"]
    lookalike = LineClient(two.port, "\u0430lice")  # with a Cyrillic a
    opened.append(lookalike)
    assert lookalike.rest_until_closed() == [
        "*** Nickname ditolak: \u0430lice terlihat sama dengan nickname yang sudah ada"
    ]
    opened[0].send("/quit")
    opened[0].rest_until_closed()
    wait_until(lambda: _joins(two.port, "ALICE"), what="ALICE free once alice left")


def _joins(port: int, nick: str) -> bool:
    client = LineClient(port, nick)
    try:
        return client.line() == f"{nick} Bergabung!"
    finally:
        client.close()


def test_who_lists_every_node(nodes: Nodes, opened: list[LineClient]) -> None:
    one, two = nodes("n1"), nodes("n2")
    opened.append(join(one.port, "alice"))
    opened.append(join(two.port, "bob"))
    opened[1].send("/who")
    assert opened[1].expect_start("*** Online") == "*** Online (2): alice, bob"


def test_a_killed_node_s_users_leave_once_everywhere(
    nodes: Nodes, opened: list[LineClient]
) -> None:
    one, two, three = nodes("n1"), nodes("n2"), nodes("n3")
    watcher = join(one.port, "watcher")
    other = join(three.port, "other")
    opened += [watcher, other]
    opened += [join(two.port, "doomed1"), join(two.port, "doomed2")]
    watcher.expect("doomed2 Bergabung!")
    other.expect("doomed2 Bergabung!")
    two.process.kill()  # kill -9: no leave is sent by the node itself
    started = time.monotonic()
    for client in (watcher, other):
        gone = set()
        while gone != {"doomed1", "doomed2"}:
            line = client.line(timeout=15.0)
            assert line.endswith(" Keluar!"), line
            nick = line.removesuffix(" Keluar!")
            assert nick not in gone  # announced once
            gone.add(nick)
    assert time.monotonic() - started < 15.0
    watcher.send("/who")
    assert watcher.expect_start("*** Online") == "*** Online (2): watcher, other"  # by node
    other.send("hi")
    assert watcher.line() == "other: hi"  # and not a third leave line before it


def test_redis_down_means_an_error_line_then_resume(
    nodes: Nodes, redis_server: RedisServer, opened: list[LineClient]
) -> None:
    one, two, alice, bob = alice_and_bob(nodes, opened)
    redis_server.kill()
    sent = time.monotonic()
    alice.send("anyone there?")
    assert alice.line(timeout=2.5) == (
        "*** Tidak terkirim: server ruang obrolan tidak terjangkau: anyone there?"
    )
    assert time.monotonic() - sent < 2.0
    stats = wait_until(lambda: _cluster_stats(one)["state"] == "degraded" and _cluster_stats(one))
    assert stats["node"] == "n1"
    late = LineClient(one.port, "late")
    opened.append(late)
    assert late.rest_until_closed() == [
        "*** Server ruang obrolan tidak terjangkau; coba lagi sebentar lagi"
    ]
    redis_server.start()  # appendonly: the stream and the nicknames are back
    # bob's node appends at once; alice's reads them from its last id whenever it is back
    wait_until(lambda: _cluster_stats(two)["state"] == "ok", what="n2 back")
    bob.send_bytes(b"".join(b"back %d\n" % n for n in range(20)))
    assert chat_lines(alice, 20) == [f"bob: back {n}" for n in range(20)]
    assert chat_lines(bob, 20) == [f"bob: back {n}" for n in range(20)]


def _cluster_stats(node: Daemon) -> dict[str, Any]:
    result = node.ctl("stats", "--json")
    assert result.returncode == 0, result.stderr
    stats: dict[str, Any] = json.loads(result.stdout)["cluster"]
    return stats


def test_redis_losing_its_data_is_told_to_clients(tmp_path: Path, opened: list[LineClient]) -> None:
    server = RedisServer(appendonly=False)
    config = write_config(tmp_path, f'[cluster]\nredis = "{server.url}"\nnode = "n1"\n')
    try:
        with Daemon(config=config) as node:
            node.wait_event("cluster_ok")
            alice = join(node.port, "alice")
            opened.append(alice)
            server.kill()
            server.start()  # empty: Debian's default after a crash
            assert alice.line(timeout=10.0) == (
                "*** Riwayat ruang obrolan diatur ulang (servernya kehilangan datanya); "
                "pesan sebelumnya hilang"
            )
            alice.send("after the reset")
            assert alice.expect_start("alice: ") == "alice: after the reset"
    finally:
        server.close()


def test_redis_is_never_imported_without_a_cluster_section(tmp_path: Path) -> None:
    command = [sys.executable, "-X", "importtime", str(LANCHATD)]
    with Daemon(command=command) as single:
        single.stop()
    imported = [line.split("|")[-1].strip() for line in single.stderr if "import time:" in line]
    assert "lanchatd.daemon.room" in imported  # the measurement works
    assert not [name for name in imported if name.split(".")[0] == "redis"]
    assert "lanchatd.daemon.cluster" not in imported


def test_administration_reaches_every_node(nodes: Nodes, opened: list[LineClient]) -> None:
    one, two, alice, bob = alice_and_bob(nodes, opened)
    who = json.loads(one.ctl("who", "--json").stdout)
    assert [(c["nick"], c["node"], c["host"]) for c in who] == [
        ("alice", "n1", "127.0.0.1"),
        ("bob", "n2", None),
    ]
    header, _, bob_row = one.ctl("who").stdout.splitlines()
    assert header.split()[-1] == "NODE"
    assert bob_row.split() == ["bob", *"------", "n2"]
    broadcast = one.ctl("broadcast", "--json", "lunch is ready")
    assert json.loads(broadcast.stdout)["recipients"] == 2
    for client in (alice, bob):
        assert client.line() == "*** Pengumuman server: lunch is ready"
    kicked = one.ctl("kick", "bob", "--reason", "testing")
    assert kicked.stdout == "Kicked bob (on node n2): testing\n"
    assert bob.rest_until_closed() == ["*** Anda dikeluarkan oleh administrator: testing"]
    assert alice.lines(2) == [
        "*** bob dikeluarkan oleh administrator: testing",
        "bob Keluar!",
    ]
    wait_until(lambda: _cluster_stats(two)["total_clients"] == 1, what="the heartbeat's count")
    stats = _cluster_stats(two)
    assert [(n["node"], n["clients"]) for n in stats["nodes"]] == [("n1", 1), ("n2", 0)]


def test_the_password_comes_from_its_file(tmp_path: Path, opened: list[LineClient]) -> None:
    server = RedisServer(password="s3cret")
    secret = tmp_path / "redis.password"
    secret.write_text("s3cret\n")
    text = f'[cluster]\nredis = "{server.url}"\nnode = "n1"\npassword_file = "{secret}"\n'
    try:
        with Daemon(config=write_config(tmp_path, text)) as node:
            node.wait_event("cluster_ok")
            alice = join(node.port, "alice")
            opened.append(alice)
            alice.send("hi")
            assert alice.line() == "alice: hi"
            assert "s3cret" not in "".join(node.stderr)
    finally:
        server.close()


def test_entries_that_are_not_ours_are_skipped(
    nodes: Nodes, redis_server: RedisServer, opened: list[LineClient]
) -> None:
    one = nodes("n1")
    alice = join(one.port, "alice")
    opened.append(alice)
    log = "lanchat:lanchat:log"
    assert redis_server.command("XADD", log, "*", "k", "message", "n", "x").startswith(b"$")
    assert redis_server.command("XADD", log, "*", "k", "bogus", "at", "1").startswith(b"$")
    assert redis_server.command("XADD", log, "*", "junk", b"\x00\xff").startswith(b"$")
    at = str(time.time()).encode()
    bad = ["k", "message", "n", b"m\xffllory", "t", b"\xfe", "at", at, "o", "x"]
    assert redis_server.command("XADD", log, "*", *bad).startswith(b"$")
    assert alice.line() == "m\ufffdllory: \ufffd"
    alice.send("still here")
    assert alice.line() == "alice: still here"
    assert not one.find("cluster_error")


def test_history_is_the_stream_on_every_node(
    nodes: Nodes, redis_server: RedisServer, opened: list[LineClient]
) -> None:
    one = nodes("n1")
    alice = join(one.port, "alice")
    opened.append(alice)
    alice.send_bytes(b"one\ntwo\n")
    assert chat_lines(alice, 2) == ["alice: one", "alice: two"]
    two = nodes("n2", "--history-on-join", "5")  # started afterwards: it reads the stream
    bob = LineClient(two.port, "bob")
    opened.append(bob)
    assert bob.lines(2) == ["bob Bergabung!", "Terkoneksi dengan Server!"]
    shown = bob.lines(5)
    assert shown[0] == "*** Riwayat: 3 kejadian terakhir (waktu server)"
    assert [line.split("] ", 1)[1] for line in shown[1:4]] == [
        "alice Bergabung!",
        "alice: one",
        "alice: two",
    ]
    assert shown[4] == "*** Akhir riwayat"

    def ids(node: Daemon) -> list[str]:
        entries = json.loads(node.ctl("history", "--json").stdout)
        return [entry["id"] for entry in entries]

    stream = redis_server.command("XRANGE", "lanchat:lanchat:log", "-", "+").decode()
    wait_until(lambda: ids(one) == ids(two), what="the same ids on both nodes")
    assert len(ids(one)) == 4
    assert all(entry_id in stream for entry_id in ids(one))  # the stream's own ids


def test_a_ban_on_one_node_holds_on_every_node(nodes: Nodes, opened: list[LineClient]) -> None:
    one, two = nodes("n1"), nodes("n2")
    alice = join(one.port, "alice")
    mallory = join(two.port, "mallory", source="127.0.0.2")
    opened += [alice, mallory]
    alice.expect("mallory Bergabung!")
    banned = one.ctl("ban", "127.0.0.2", "--reason", "spam")
    assert banned.returncode == 0, banned.stderr
    assert mallory.rest_until_closed() == ["*** Anda diblokir dari server ini: spam"]
    assert alice.lines(2) == ["*** mallory diblokir oleh administrator: spam", "mallory Keluar!"]
    assert refused_connection(two.port, source="127.0.0.2") == (
        b"*** Anda diblokir dari server ini: spam\n"
    )
    listed = json.loads(two.ctl("bans", "--json").stdout)
    assert [ban["address"] for ban in listed] == ["127.0.0.2"]
    assert two.ctl("unban", "127.0.0.2").returncode == 0
    wait_until(lambda: json.loads(one.ctl("bans", "--json").stdout) == [], what="unban on n1")
    back = join(one.port, "mallory", source="127.0.0.2")
    opened.append(back)


def test_a_purge_reaches_the_stream_and_every_node(
    nodes: Nodes, redis_server: RedisServer, opened: list[LineClient]
) -> None:
    one, two, alice, bob = alice_and_bob(nodes, opened)
    alice.send("my password is hunter2")
    assert chat_lines(bob, 1) == ["alice: my password is hunter2"]
    bob.send("oops")
    assert chat_lines(alice, 2) == ["alice: my password is hunter2", "bob: oops"]
    purged = one.ctl("purge", "alice", "--json")
    assert purged.returncode == 0, purged.stderr

    def texts(node: Daemon) -> list[str]:
        return [e["text"] for e in json.loads(node.ctl("history", "--json").stdout) if e["text"]]

    wait_until(lambda: texts(two) == ["oops"], what="the purge on n2")
    assert texts(one) == ["oops"]
    assert b"hunter2" not in redis_server.command("XRANGE", "lanchat:lanchat:log", "-", "+")


def test_systemd_status_says_degraded(tmp_path: Path, redis_server: RedisServer) -> None:
    notify = NotifyListener(tmp_path / "notify")
    text = f'[cluster]\nredis = "{redis_server.url}"\nnode = "n1"\n'
    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "400000"}
    with Daemon(config=write_config(tmp_path, text), env=env) as node:
        node.wait_event("cluster_ok")
        notify.next("STATUS=0 clients, 0 messages relayed; cluster ok", timeout=10)
        redis_server.kill()
        notify.next("STATUS=0 clients, 0 messages relayed; cluster degraded", timeout=10)
        redis_server.start()
        notify.next("STATUS=0 clients, 0 messages relayed; cluster ok", timeout=10)


def test_a_stopped_node_s_users_leave_at_once(nodes: Nodes, opened: list[LineClient]) -> None:
    _, two, alice, _ = alice_and_bob(nodes, opened)
    assert two.stop() == 0  # SIGTERM: the node says goodbye itself
    assert alice.line(timeout=3.0) == "bob Keluar!"
    alice.send("/who")
    assert alice.expect_start("*** Online") == "*** Online (1): alice"


def test_clusterbench_runs_and_loses_nothing() -> None:
    command = [sys.executable, "-m", "benchmarks.clusterbench", "--clients", "12"]
    command += ["--messages", "20", "--duration", "0.5", "--rate", "40", "--timeout", "20"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=100, check=False)
    assert result.returncode == 0, result.stderr
    runs = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(run["mode"], run["nodes"]) for run in runs] == [
        ("throughput", 1),
        ("throughput", 2),
        ("latency", 1),
        ("latency", 2),
    ]
    for run in runs:
        assert (run["lost"], run["out_of_order"], run["unfinished_clients"]) == (0, 0, 0)


def test_a_node_started_before_redis_joins_when_it_answers(
    tmp_path: Path, opened: list[LineClient]
) -> None:
    server = RedisServer()
    server.kill()
    text = f'[cluster]\nredis = "{server.url}"\nnode = "n1"\n'
    try:
        with Daemon(config=write_config(tmp_path, text)) as node:
            node.wait_event("cluster_degraded")
            early = LineClient(node.port, "early")
            opened.append(early)
            assert early.rest_until_closed() == [
                "*** Server ruang obrolan tidak terjangkau; coba lagi sebentar lagi"
            ]
            server.start()
            node.wait_event("cluster_ok")
            opened.append(join(node.port, "early"))
    finally:
        server.close()


def test_a_client_resumes_on_another_node_without_gaps_or_repeats(
    nodes: Nodes, opened: list[LineClient]
) -> None:
    one, two, _, bob = alice_and_bob(nodes, opened)
    carol = tagged(one.port, "carol")  # sees everything, with ids
    opened.append(carol)
    read(carol, "Terkoneksi dengan Server!")
    dave = tagged(one.port, "dave")
    opened.append(dave)
    newest, _ = read(dave, "Terkoneksi dengan Server!")  # its own join, and the welcome
    assert newest.id is not None
    assert read(carol, "dave Bergabung!")[-1].id == newest.id
    dave.close()
    left = read(carol, "dave Keluar!")  # before bob talks: the replay's order is known
    bob.send_bytes(b"".join(b"line %d\n" % n for n in range(50)))
    seen = left + read(carol, "bob: line 49")
    assert [line.text for line in seen] == [
        "dave Keluar!",
        *(f"bob: line {n}" for n in range(50)),
    ]
    back = tagged(two.port, "dave", f"/cap ids after={newest.id}")  # the other node
    opened.append(back)
    rejoin, _ = read(back, "Terkoneksi dengan Server!")
    bob.send("now")
    replayed = read(back, "bob: now")
    live = replayed.pop()
    assert [(line.id, line.text) for line in replayed] == [(line.id, line.text) for line in seen]
    assert all(line.history for line in replayed)
    assert not live.history
    assert not rejoin.history
    assert rejoin.text == "dave Bergabung!"


def lanchat(*args: str) -> subprocess.Popen[str]:
    """The lanchat client in a pipe (HOST may name several nodes: ``HOST1,HOST2``)."""
    pipe = subprocess.PIPE
    return subprocess.Popen(
        [*CLIENT, *args], stdin=pipe, stdout=pipe, stderr=pipe, text=True, env=client_env()
    )


def test_lanchat_given_two_nodes_moves_to_the_live_one_and_misses_nothing(
    nodes: Nodes, opened: list[LineClient]
) -> None:
    one, two = nodes("n1"), nodes("n2")
    bob = join(two.port, "bob")
    opened.append(bob)
    hosts = f"127.0.0.1:{one.port},127.0.0.1:{two.port}"
    client = lanchat(hosts, "--nick", "ci")
    assert client.stdin is not None
    assert client.stdout is not None
    shown: list[str] = []
    stdout = client.stdout
    reader = threading.Thread(target=lambda: shown.extend(iter(stdout.readline, "")))
    reader.start()
    try:
        bob.expect("ci Bergabung!")
        bob.send("before")
        wait_until(lambda: "bob: before\n" in shown, what="the line before n1 dies")
        one.process.kill()  # kill -9 the node lanchat is on
        bob.send_bytes(b"".join(b"m%d\n" % n for n in range(20)))
        bob.expect("ci Keluar!", timeout=15.0)  # announced by the node that buried n1
        bob.expect("ci Bergabung!", timeout=40.0)  # lanchat is back, on n2
        bob.send("live")
        wait_until(lambda: "bob: live\n" in shown, timeout=10.0, what="the live line")
        client.stdin.close()
        assert client.wait(10) == 0
    finally:
        client.kill()
        reader.join(10)
    after = shown[shown.index("bob: before\n") + 1 :]
    history = [line.split("] ", 1)[1] for line in after if " history] " in line]
    assert history == [*(f"bob: m{n}\n" for n in range(20)), "ci Keluar!\n"]
    assert not [line for line in after if line.startswith("bob: m") and " history] " not in line]


def test_lanchat_starts_on_the_first_node_that_answers(
    nodes: Nodes, opened: list[LineClient]
) -> None:
    node = nodes("n1")
    bob = join(node.port, "bob")
    opened.append(bob)
    hosts = f"127.0.0.1:{free_port()},127.0.0.1:{node.port}"  # nobody listens on the first
    client = lanchat(hosts, "--nick", "ci")
    _, errors = client.communicate("hello\n", timeout=30)
    assert client.returncode == 0, errors
    bob.expect("ci: hello")


@pytest.mark.timeout(180)
def test_chatbench_runs_two_nodes_on_redis_cleanly(tmp_path: Path) -> None:
    result = tiny_run(tmp_path, "lanchatd-cluster", "--stalled 0")
    assert {(r["mode"], r["clients"]) for r in result["summary"]} == {
        ("throughput", 10),
        ("latency", 10),
    }
    errors = ("lost", "duplicated", "reordered", "corrupted", "unexpected")
    for row in result["summary"]:
        assert not row["failed"]
        assert row["deliveries_per_s"] > 0
        assert {key: row[key] for key in errors} == dict.fromkeys(errors, 0), row
