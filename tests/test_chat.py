"""The chat room end to end: the real daemon, real sockets, exact bytes."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from tests.support import WAIT, Daemon, LineClient, TutorialClient, join, wait_until


def test_line_client_first_two_lines_and_join_seen_by_others(daemon: Daemon, clients: list) -> None:
    alice = join(daemon.port, "alice")
    clients.append(alice)
    bob = join(daemon.port, "bob")
    clients.append(bob)
    assert alice.line() == "bob Bergabung!"
    joined = daemon.wait_event("client_joined", nick="bob")
    assert joined["mode"] == "line"
    assert joined["host"] == "127.0.0.1"
    assert {"timestamp", "level"} <= joined.keys()
    assert joined["timestamp"].endswith("Z")


def test_tutorial_client_chats_with_line_client(daemon: Daemon, clients: list) -> None:
    nc = join(daemon.port, "nc")
    clients.append(nc)
    tutorial = TutorialClient(daemon.port, "tut")
    clients.append(tutorial)
    assert tutorial.until("Terkoneksi dengan Server!") == "tut Bergabung!Terkoneksi dengan Server!"
    assert nc.line() == "tut Bergabung!"
    assert daemon.wait_event("client_joined", nick="tut")["mode"] == "classic"

    tutorial.write("halo semua")
    assert nc.line() == "tut: halo semua"
    nc.send("hai tut")
    received = tutorial.until("nc: hai tut")
    assert received.endswith("tut: halo semuanc: hai tut")
    assert received.count("halo semua") == 1


def test_nobody_can_speak_as_someone_else(daemon: Daemon, clients: list) -> None:
    alice = join(daemon.port, "alice")
    bob = join(daemon.port, "bob")
    clients += [alice, bob]
    alice.line()
    bob.send("alice: I am alice")
    bob.send("bob: really bob")
    assert alice.lines(2) == ["bob: alice: I am alice", "bob: really bob"]
    assert bob.lines(2) == ["bob: alice: I am alice", "bob: really bob"]


def test_sender_receives_its_own_message_and_message_is_logged(
    daemon: Daemon, clients: list
) -> None:
    alice = join(daemon.port, "alice")
    clients.append(alice)
    alice.send("héllo wörld")
    assert alice.line() == "alice: héllo wörld"
    event = daemon.wait_event("message", nick="alice")
    assert event["text"] == "héllo wörld"
    assert event["bytes"] == len("héllo wörld".encode())


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (b"\n", "*** Nickname ditolak: kosong"),
        (b"x" * 33 + b"\n", "*** Nickname ditolak: paling banyak 32 karakter"),
        (b"al\x07ice\n", "*** Nickname ditolak: karakter kontrol tidak diizinkan"),
        (b"al:ice\n", "*** Nickname ditolak: ':' tidak diizinkan"),
        (b"*admin\n", "*** Nickname ditolak: '*' tidak diizinkan, begitu pula '-' di awal"),
        ("José\n".encode("latin-1"), "*** Nickname ditolak: UTF-8 tidak valid"),
        (b"/capfoo\n", "*** Nickname ditolak: tidak boleh diawali '/' (terbaca sebagai perintah)"),
        (b"/who", "*** Nickname ditolak: tidak boleh diawali '/' (terbaca sebagai perintah)"),
        (b"ALICE\n", "*** Nickname ditolak: ALICE sudah dipakai"),
    ],
)
def test_refused_nickname_gets_one_line_then_close(
    daemon: Daemon, clients: list, reply: bytes, reason: str
) -> None:
    alice = join(daemon.port, "alice")
    clients.append(alice)
    client = LineClient(daemon.port)
    clients.append(client)
    client.send_bytes(reply)
    end = b"\n" if reply.endswith(b"\n") else b""  # a classic reply gets classic framing
    assert client.closed() == reason.encode() + end
    assert daemon.wait_event("nick_rejected")["host"] == "127.0.0.1"
    assert join(daemon.port, "carol").sock, "the daemon still serves"


def test_non_ascii_nickname_in_utf8_is_welcome(daemon: Daemon, clients: list) -> None:
    jose = join(daemon.port, "José")
    clients.append(jose)
    jose.send("olá")
    assert jose.line() == "José: olá"


def test_inner_spaces_and_private_message_to_spaced_nick(daemon: Daemon, clients: list) -> None:
    pc = join(daemon.port, "user1 pc")
    bob = join(daemon.port, "bob")
    clients += [pc, bob]
    pc.line()
    bob.send("/msg user1 pc see you at lunch")
    assert pc.line() == "*bob* see you at lunch"
    assert bob.line() == "*-> user1 pc* see you at lunch"


def test_silent_client_is_closed_and_never_delays_others(start_daemon, clients: list) -> None:
    server = start_daemon(config="[server]\nhandshake_timeout = 1.5\n")
    silent = LineClient(server.port)
    clients.append(silent)
    alice = join(server.port, "alice")
    clients.append(alice)
    assert server.find("nick_rejected") == []
    assert silent.closed() == b"*** Tidak ada nickname dalam 1.5 detik; koneksi ditutup\n"
    assert server.wait_event("nick_rejected")["reason"] == "timeout"


def test_nickname_reply_split_across_segments_is_line_mode(daemon: Daemon, clients: list) -> None:
    client = LineClient(daemon.port)
    clients.append(client)
    client.send_bytes(b"ali")
    time.sleep(0.05)  # two TCP segments, well inside the grace period
    client.send_bytes(b"ce\r\n")
    assert client.lines(2) == ["alice Bergabung!", "Terkoneksi dengan Server!"]
    assert daemon.wait_event("client_joined", nick="alice")["mode"] == "line"


def test_leave_by_disconnect_and_by_quit(daemon: Daemon, clients: list) -> None:
    alice = join(daemon.port, "alice")
    bob = join(daemon.port, "bob")
    carol = join(daemon.port, "carol")
    clients += [alice, bob, carol]
    alice.lines(2)
    bob.close()
    assert alice.line() == "bob Keluar!"
    assert daemon.wait_event("client_left", nick="bob")["reason"] == "disconnect"
    carol.send("/quit")
    assert alice.line() == "carol Keluar!"
    assert carol.closed().endswith(b"carol Keluar!\n")
    assert daemon.wait_event("client_left", nick="carol")["reason"] == "quit"


def test_half_closed_client_still_receives_what_it_is_owed(daemon: Daemon, clients: list) -> None:
    alice = join(daemon.port, "alice")
    clients.append(alice)
    alice.send("last words")
    alice.sock.shutdown(socket.SHUT_WR)
    assert alice.closed() == b"alice: last words\nalice Keluar!\n"


def test_commands(daemon: Daemon, clients: list) -> None:
    alice = join(daemon.port, "alice")
    bob = join(daemon.port, "Bob")
    clients += [alice, bob]
    alice.line()
    alice.send("/who")
    assert alice.line() == "*** Online (2): alice, Bob"
    alice.send("/me waves")
    assert alice.line() == "* alice waves"
    assert bob.line() == "* alice waves"
    alice.send("/msg bob psst")
    assert bob.line() == "*alice* psst"
    assert alice.line() == "*-> Bob* psst"
    alice.send("/msg nobody hello")
    assert alice.line() == "*** Nickname tidak ada: nobody"
    alice.send("/help")
    assert alice.line().startswith("*** Perintah: /who, /me")
    alice.send("/dance")
    assert alice.line() == "*** Perintah tidak dikenal /dance; ketik /help untuk daftar"
    alice.send("/me")
    assert alice.line() == "*** Cara pakai: /me AKSI"
    bob.send("done")
    assert bob.line() == "Bob: done", "errors and private lines went to the sender only"


def test_english_catalogue(start_daemon, clients: list) -> None:
    server = start_daemon("--lang", "en")
    alice = LineClient(server.port, "alice")
    clients.append(alice)
    assert alice.lines(2) == ["alice joined!", "Connected to the server!"]
    bob = join_en(server.port, "bob")
    clients.append(bob)
    bob.close()
    assert alice.lines(2) == ["bob joined!", "bob left!"]


def join_en(port: int, nick: str) -> LineClient:
    client = LineClient(port, nick)
    assert client.lines(2) == [f"{nick} joined!", "Connected to the server!"]
    return client


def test_bad_lines_get_an_error_and_the_connection_stays(start_daemon, clients: list) -> None:
    server = start_daemon(config="[server]\nmax_line_bytes = 100\n")
    alice = join(server.port, "alice")
    clients.append(alice)
    alice.send_bytes(b"y" * 5000 + b"\n")
    assert alice.line() == "*** Baris terlalu panjang: paling banyak 100 byte; tidak terkirim"
    alice.send_bytes(b"\xc3\x28 broken\n")
    assert alice.line() == "*** UTF-8 tidak valid; baris tidak terkirim"
    alice.send("still here")
    assert alice.line() == "alice: still here"


def test_flood_is_slowed_not_dropped_and_others_get_through(start_daemon, clients: list) -> None:
    server = start_daemon(config="[limits]\nrate = 20\nburst = 2\n")
    flooder = join(server.port, "flooder")
    calm = join(server.port, "calm")
    clients += [flooder, calm]
    flooder.line()
    started = time.monotonic()
    flooder.send_bytes(b"".join(b"flood %d\n" % i for i in range(12)))
    assert flooder.line() == "flooder: flood 0"
    calm.send("a word in between")
    lines = flooder.expect("flooder: flood 11")
    elapsed = time.monotonic() - started
    floods = [line for line in lines if line.startswith("flooder:")]
    assert floods == [f"flooder: flood {i}" for i in range(1, 11)]
    assert "calm: a word in between" in lines, "the calm client was not starved"
    notice = (
        "*** Pelan-pelan: paling banyak 20 pesan per detik, 2 sekaligus; "
        "pesan Anda ditunda, tidak hilang"
    )
    assert lines.count(notice) == 1, "told once, when the pausing began"
    assert lines.index(notice) < lines.index("flooder: flood 2"), "right after the burst of 2"
    throttled = server.wait_event("flood_throttled", nick="flooder")
    assert (throttled["rate"], throttled["burst"]) == (20.0, 2)
    # 12 messages at 20/s with a burst of 2: the last cannot leave before (12 - 2) / 20 s.
    assert elapsed >= 0.45


def test_max_clients_turns_away_the_extra_connection(start_daemon, clients: list) -> None:
    server = start_daemon(config="[server]\nmax_clients = 2\n")
    clients += [join(server.port, "a"), join(server.port, "b")]
    extra = socket.create_connection(("127.0.0.1", server.port), timeout=WAIT)
    clients.append(extra)
    data = b""
    while chunk := extra.recv(1024):
        data += chunk
    assert data == b"*** Server penuh (2 klien); coba lagi nanti\n"
    assert server.wait_event("client_refused")["reason"] == "server_full"


def test_stalled_reader_is_dropped_and_others_get_everything(start_daemon, clients: list) -> None:
    # Each reader may lag by both senders' windows (about 64 KiB); the stalled one far more.
    server = start_daemon(config="[server]\nsend_buffer_bytes = 262144\n[limits]\nrate = 0\n")
    stalled = LineClient(server.port, "stalled")
    stalled.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    clients.append(stalled)
    talkers = {name: join(server.port, name) for name in ("alice", "bob")}
    clients += talkers.values()
    talkers["alice"].line()
    payload = "x" * 1000
    count, window = 4000, 32  # 8 MB through each reader, far past the stalled one's buffers
    received: dict[str, list[str]] = {name: [] for name in talkers}
    seen_own = dict.fromkeys(talkers, 0)
    progress = threading.Condition()

    def read_all(name: str) -> None:
        for _ in range(count * 2 + 1):
            line = talkers[name].line(timeout=30)
            received[name].append(line)
            if line.startswith(name + ": "):
                with progress:
                    seen_own[name] += 1
                    progress.notify_all()

    def send_all(name: str) -> None:
        for i in range(count):
            with progress:
                assert progress.wait_for(lambda i=i: i - seen_own[name] < window, timeout=30)
            talkers[name].send(f"{i} {payload}")

    threads = [threading.Thread(target=f, args=(n,)) for f in (read_all, send_all) for n in talkers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert server.wait_event("client_left", nick="stalled")["reason"] == "slow_consumer"
    for lines in received.values():
        assert [line for line in lines if ": " not in line] == ["stalled Keluar!"]
        for name in talkers:
            mine = [line for line in lines if line.startswith(name + ": ")]
            assert mine == [f"{name}: {i} {payload}" for i in range(count)]


def test_every_client_sees_one_total_order(start_daemon, clients: list) -> None:
    server = start_daemon(config="[limits]\nrate = 0\n")
    senders = [join(server.port, f"s{i}") for i in range(2)]
    receivers = [join(server.port, f"r{i}") for i in range(3)]
    clients += senders + receivers
    for receiver in receivers[:-1]:
        receiver.expect("r2 Bergabung!")
    count = 2000

    def send_all(client: LineClient, name: str) -> None:
        client.send_bytes(b"".join(f"{name}-{i}\n".encode() for i in range(count)))

    threads = [threading.Thread(target=send_all, args=(s, f"s{i}")) for i, s in enumerate(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    orders = [r.lines(2 * count, timeout=30) for r in receivers]
    assert orders[0] == orders[1] == orders[2]
    for i in range(2):
        mine = [line for line in orders[0] if line.startswith(f"s{i}: ")]
        assert mine == [f"s{i}: s{i}-{n}" for n in range(count)]


def test_dual_stack_listener(start_daemon, clients: list) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this Python")
    server = start_daemon("--host", "::")
    v6 = LineClient(server.port, "six", host="::1")
    clients.append(v6)
    v6.lines(2)  # joined before "four" connects, so it sees that join
    v4 = LineClient(server.port, "four", host="127.0.0.1")
    clients.append(v4)
    assert v6.line() == "four Bergabung!"
    wait_until(lambda: server.find("client_joined", nick="four"))
    assert server.find("client_joined", nick="four")[0]["host"] == "127.0.0.1"
    assert server.find("client_joined", nick="six")[0]["host"] == "::1"


def test_connections_per_address_are_limited(start_daemon, clients: list) -> None:
    server = start_daemon(config="[limits]\nper_address = 2\n")
    clients += [join(server.port, "one"), join(server.port, "two")]
    third = socket.create_connection(("127.0.0.1", server.port), timeout=WAIT)
    clients.append(third)
    data = b""
    while chunk := third.recv(1024):
        data += chunk
    assert data == b"*** Terlalu banyak koneksi dari alamat Anda (paling banyak 2)\n"
    assert server.wait_event("client_refused", host="127.0.0.1")["reason"] == "per_address"
    elsewhere = socket.socket()
    clients.append(elsewhere)
    elsewhere.bind(("127.0.0.2", 0))
    elsewhere.settimeout(WAIT)
    elsewhere.connect(("127.0.0.1", server.port))
    assert elsewhere.recv(4) == b"NICK", "another address is not affected"
