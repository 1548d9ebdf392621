"""The admin protocol on the real socket: requests, errors, watch, and many clients at once
while chat traffic flows, including admin clients that hang."""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.support import AdminConnection, Daemon, wait_until


def test_hello_and_responses_carry_the_version_and_the_request_id(
    admin_daemon: Daemon, admin_clients: list
) -> None:
    conn = admin_daemon.admin()
    admin_clients.append(conn)
    assert conn.hello["version"] == 1
    assert conn.hello["hello"]["daemon"] == "lanchatd"
    assert "kick" in conn.hello["hello"]["commands"]
    conn.send({"version": 1, "id": "a-7", "command": "who"})
    assert conn.receive() == {"version": 1, "id": "a-7", "ok": True, "result": {"clients": []}}
    conn.send({"id": 8, "command": "stats"})  # version may be left out: the current one
    response = conn.receive()
    assert (response["id"], response["ok"]) == (8, True)


def test_bad_requests_get_errors_and_the_connection_stays_usable(
    admin_daemon: Daemon, admin_clients: list
) -> None:
    conn = admin_daemon.admin()
    admin_clients.append(conn)
    cases: list[tuple[bytes, str, str]] = [
        (b"{not json\n", "bad_json", "not valid JSON"),
        (b"\xff\xfe\n", "bad_json", "not valid JSON"),
        (b"[1, 2]\n", "bad_request", "JSON object"),
        (b'{"command": "fly"}\n', "unknown_command", "'fly'"),
        (b'{"version": 2, "command": "who"}\n', "unsupported_version", "version 2"),
        (b'{"version": 1.0, "command": "who"}\n', "unsupported_version", "version 1.0"),
        (b'{"version": true, "command": "who"}\n', "unsupported_version", "version True"),
        (
            b'{"command": "who", "args": ' + b"[" * 30_000 + b"]" * 30_000 + b"}\n",
            "bad_json",
            "nested too deeply",
        ),
        (b'{"command": 5}\n', "bad_request", "command"),
        (b'{"command": "who", "args": []}\n', "bad_request", "args"),
        (b'{"command": "kick"}\n', "bad_request", "missing argument 'nick'"),
        (b'{"command": "kick", "args": {"nick": 5}}\n', "bad_request", "wrong type"),
        (b'{"command": "kick", "args": {"nick": "a", "x": 1}}\n', "bad_request", "'x'"),
        (b'{"command": "broadcast", "args": {"text": "  "}}\n', "bad_request", "empty"),
        (b'{"command": "broadcast", "args": {"text": "a\\nb"}}\n', "bad_request", "control"),
        (b'{"command": "unban", "args": {"address": "nope"}}\n', "bad_request", "IP address"),
        (b'{"command": "unban", "args": {"address": "10.0.0.1"}}\n', "not_banned", "10.0.0.1"),
        (b'{"command": "kick", "args": {"nick": "ghost"}}\n', "no_such_nick", "ghost"),
    ]
    for raw, code, words in cases:
        conn.send_raw(b"\n" + raw)  # blank lines are ignored
        response = conn.receive()
        assert response["ok"] is False, raw
        assert response["error"]["code"] == code, (raw, response)
        assert words in response["error"]["message"], (raw, response)
        assert response["version"] == 1
    assert conn.request("who")["ok"] is True
    assert not admin_daemon.find("admin_command_failed")


def test_an_oversized_request_is_refused_and_the_connection_survives(
    admin_daemon: Daemon, admin_clients: list
) -> None:
    conn = admin_daemon.admin()
    admin_clients.append(conn)
    huge = json.dumps({"command": "broadcast", "args": {"text": "x" * 70_000}}).encode()
    conn.send_raw(huge + b"\n")
    assert conn.receive()["error"]["code"] == "request_too_large"
    assert conn.request("who")["ok"] is True


def test_watch_streams_events_in_the_order_clients_see_them(
    admin_daemon: Daemon, admin_clients: list
) -> None:
    watcher = admin_daemon.admin()
    admin_clients.append(watcher)
    assert watcher.request("watch") == {"version": 1, "ok": True, "result": {"watching": True}}
    control = admin_daemon.admin()
    admin_clients.append(control)
    alice = admin_daemon.chat("alice")
    bob = admin_daemon.chat("bob")
    admin_clients += [alice, bob]
    alice.send("hello")
    alice.expect_start("alice: hello")
    bob.send("/me waves")
    alice.expect_start("* bob waves")
    assert control.request("kick", nick="bob", reason="spam")["ok"]
    assert control.request("broadcast", text="maintenance at noon")["ok"]
    assert control.request("ban", target="192.0.2.9", reason="abuse")["ok"]
    assert control.request("unban", address="192.0.2.9")["ok"]
    alice.send("/quit")
    seen: list[dict[str, Any]] = []
    while not (seen and seen[-1]["type"] == "leave" and seen[-1]["nick"] == "alice"):
        message = watcher.receive()
        assert message["version"] == 1
        seen.append(message["event"])
    summary = [(e["type"], e.get("nick") or e.get("address") or e.get("text")) for e in seen]
    assert summary == [
        ("join", "alice"),
        ("join", "bob"),
        ("message", "alice"),
        ("action", "bob"),
        ("kick", "bob"),
        ("leave", "bob"),
        ("notice", "maintenance at noon"),
        ("ban", "192.0.2.9"),
        ("unban", "192.0.2.9"),
        ("leave", "alice"),
    ]
    assert seen[0]["host"] == "127.0.0.1"
    assert seen[0]["mode"] == "line"
    assert seen[2]["text"] == "hello"
    assert seen[4]["reason"] == "spam"
    assert seen[4]["admin_uid"] == 0
    assert seen[5]["reason"] == "kicked"
    assert seen[-1]["reason"] == "quit"
    assert all(e["time"].endswith("Z") for e in seen)


def test_watch_leaves_no_trace_when_its_client_goes(
    admin_daemon: Daemon, admin_clients: list
) -> None:
    control = admin_daemon.admin()
    admin_clients.append(control)
    watcher = admin_daemon.admin()
    watcher.request("watch")
    assert control.request("stats")["result"]["watchers"] == 1
    watcher.close()
    wait_until(lambda: control.request("stats")["result"]["watchers"] == 0, what="watcher removal")


def test_watch_without_message_text_when_logging_omits_it(
    admin_daemons, admin_clients: list
) -> None:
    server = admin_daemons(config="[log]\nmessage_text = false\n")
    watcher = server.admin()
    admin_clients.append(watcher)
    watcher.request("watch")
    alice = server.chat("alice")
    admin_clients.append(alice)
    alice.send("secret")
    alice.expect_start("alice: secret")
    while (event := watcher.receive()["event"])["type"] != "message":
        pass
    assert event == {"type": "message", "time": event["time"], "nick": "alice"}


def _hung_admin_clients(server: Daemon, opened: list) -> None:
    """Admin clients that never finish a request, and watchers that never read."""
    for _ in range(4):
        opened.append(server.admin())  # connected, greeted, then silent
    for _ in range(3):
        partial = server.admin()
        partial.send_raw(b'{"command": "wh')  # half a request, then nothing
        opened.append(partial)
    for _ in range(2):
        stuck = server.admin()
        stuck.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.request("watch")  # and never reads again
        opened.append(stuck)
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    raw.connect(str(server.admin_socket))  # never even reads the greeting
    opened.append(raw)


def test_many_admin_clients_at_once_while_chat_flows(
    admin_daemon: Daemon, admin_clients: list
) -> None:
    _hung_admin_clients(admin_daemon, admin_clients)
    alice = admin_daemon.chat("alice")
    bob = admin_daemon.chat("bob")
    admin_clients += [alice, bob]
    total = 2000
    stop = threading.Event()

    def admin_worker(index: int) -> int:
        conn = AdminConnection(admin_daemon.admin_socket)
        done = 0
        try:
            commands = ("who", "stats", "bans")
            while not stop.is_set() or done < 20:
                response = conn.request(commands[(index + done) % 3])
                assert response["ok"], response
                done += 1
        finally:
            conn.close()
        return done

    def cli_worker() -> None:
        for _ in range(3):
            result = admin_daemon.ctl("who", "--json")
            assert result.returncode == 0, result.stderr
            assert "Traceback" not in result.stderr

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=20) as pool:
        admins = [pool.submit(admin_worker, index) for index in range(16)]
        clis = [pool.submit(cli_worker) for _ in range(2)]

        def send() -> None:
            for number in range(total):
                alice.send(f"m{number}")

        sender = threading.Thread(target=send)
        sender.start()
        received = []
        while len(received) < total:
            line = bob.line(timeout=20)
            assert line is not None
            if line.startswith("alice: m"):
                received.append(line)
        chat_seconds = time.monotonic() - started
        sender.join()
        stop.set()
        requests = sum(future.result(timeout=30) for future in admins)
        for future in clis:
            future.result(timeout=60)
    assert received == [f"alice: m{number}" for number in range(total)]
    assert requests >= 16 * 20
    assert chat_seconds < 15, chat_seconds
    # The stuck watchers fell behind without holding anyone up; the daemon is still fine.
    check = admin_daemon.admin()
    admin_clients.append(check)
    stats = check.request("stats")["result"]
    assert stats["messages_in"] == total
    assert stats["clients"] == 2


def test_a_hung_admin_client_never_delays_the_chat(
    admin_daemon: Daemon, admin_clients: list
) -> None:
    _hung_admin_clients(admin_daemon, admin_clients)
    alice = admin_daemon.chat("alice")
    bob = admin_daemon.chat("bob")
    admin_clients += [alice, bob]
    # Fill the stuck watchers' socket buffers so their threads block in send.
    for number in range(3000):
        alice.send(f"fill {number} " + "x" * 100)
    for number in range(3000):
        bob.expect_start(f"alice: fill {number} ")
    worst = 0.0
    for number in range(30):
        started = time.monotonic()
        alice.send(f"ping {number}")
        bob.expect_start(f"alice: ping {number}")
        worst = max(worst, time.monotonic() - started)
    assert worst < 0.5, worst
    # A new chat client still joins at once, and admin requests are still answered.
    started = time.monotonic()
    carol = admin_daemon.chat("carol")
    admin_clients.append(carol)
    assert time.monotonic() - started < 1.0
    assert admin_daemon.ctl("who", "--json").returncode == 0
