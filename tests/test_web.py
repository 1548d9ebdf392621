"""The web port against the real daemon: HTTP answers, the WebSocket's rules, one room.

Clients are wsproto and h11 on raw sockets (tests/web_helpers.py); the page itself is tested
in a browser elsewhere.
"""

from __future__ import annotations

import contextlib
import io
import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import segno

from lanchatd.core.catalog import Catalog
from lanchatd.core.tags import MessageId
from tests.support import WAIT, Daemon, LineClient, join, wait_until
from tests.tls_support import make_certificate
from tests.web_helpers import WebClient, WebRefused, http_get, web_join

SAY = Catalog("id")
STATIC = Path(__file__).resolve().parent.parent / "lanchatd" / "daemon" / "web" / "static"


def _policy(reply: Any) -> dict[str, str]:
    directives = [
        d.strip().split(" ", 1) for d in reply.headers["content-security-policy"].split(";")
    ]
    return {name: value for name, value in directives}


def test_every_answer_carries_a_strict_content_security_policy(daemon: Daemon) -> None:
    for target in ("/", "/missing", "/qr.svg"):
        reply = http_get(daemon.web_port, target)
        policy = _policy(reply)
        assert policy["default-src"] == "'self'"
        assert policy["script-src"] == "'self'"  # no 'unsafe-inline', no other origin
        assert policy["connect-src"].split() == [
            "'self'",
            f"ws://127.0.0.1:{daemon.web_port}",
            f"wss://127.0.0.1:{daemon.web_port}",
        ]
        assert policy["frame-ancestors"] == "'none'"
        assert reply.headers["x-content-type-options"] == "nosniff"
        assert reply.headers["connection"] == "close"


@pytest.mark.parametrize("name", sorted(p.name for p in STATIC.glob("*") if p.is_file()))
def test_the_page_files_are_served_as_shipped(daemon: Daemon, name: str) -> None:
    reply = http_get(daemon.web_port, f"/{name}")
    assert (reply.status, reply.body) == (200, (STATIC / name).read_bytes())
    assert reply.headers["cache-control"] == "no-cache"
    again = http_get(
        daemon.web_port, f"/{name}", headers=[("If-None-Match", reply.headers["etag"])]
    )
    assert (again.status, again.body) == (304, b"")
    if name == "index.html":
        assert http_get(daemon.web_port, "/").body == reply.body
        assert reply.headers["content-type"] == "text/html; charset=utf-8"


def test_wrong_paths_and_methods_are_refused(daemon: Daemon) -> None:
    port = daemon.web_port
    assert http_get(port, "/../../etc/passwd").status == 404
    assert http_get(port, "/static/x.js").status == 404
    refused = http_get(port, "/qr.svg", method="POST")
    assert (refused.status, refused.headers["allow"]) == (405, "GET, HEAD")
    assert http_get(port, "/ws").status == 400  # a plain GET, not an upgrade
    assert http_get(port, "/qr.svg", method="HEAD").body == b""


def test_too_many_headers_are_refused(daemon: Daemon) -> None:
    headers = [(f"X-H{i}", "1") for i in range(100)]
    assert http_get(daemon.web_port, "/", headers=headers).status == 431


def test_qr_code_draws_the_pages_own_address(daemon: Daemon) -> None:
    host = f"192.168.1.2:{daemon.web_port}"
    reply = http_get(daemon.web_port, "/qr.svg", host=host)
    expected = io.BytesIO()
    segno.make(f"http://{host}/", error="m").save(
        expected, kind="svg", scale=4, border=2, xmldecl=False
    )
    assert (reply.status, reply.headers["content-type"]) == (200, "image/svg+xml")
    assert reply.body == expected.getvalue()


@pytest.mark.parametrize("host", ["evil<script>", "a b", "[::zz]", "x:70000", "a/b"])
def test_qr_code_never_echoes_a_bad_host(daemon: Daemon, host: str) -> None:
    reply = http_get(daemon.web_port, "/qr.svg", host=host)
    assert reply.status == 400
    assert host.encode() not in reply.body
    assert "ws://" not in reply.headers["content-security-policy"]


def test_a_page_chats_with_netcat_users_in_one_order(daemon: Daemon, clients: list) -> None:
    nc = join(daemon.port, "nc")
    clients.append(nc)
    page = web_join(daemon.web_port, "phone")
    clients.append(page.sock)
    assert nc.line() == "phone Bergabung!"
    for i in range(20):
        (page.send if i % 2 else nc.send)(f"m{i} José ☕")
    seen_nc = [nc.line() for _ in range(20)]
    seen_page = [page.text() for _ in range(20)]
    assert seen_nc == seen_page
    assert sorted(seen_nc) == sorted(
        f"{'phone' if i % 2 else 'nc'}: m{i} José ☕" for i in range(20)
    )
    page.send("/who")
    assert page.text() == "*** Online (2): nc, phone"


def test_who_shows_the_page_as_web_and_stats_count_it(daemon: Daemon, clients: list) -> None:
    page = web_join(daemon.web_port, "phone")
    clients.append(page.sock)
    clients.append(join(daemon.port, "nc"))
    result = daemon.ctl("who", "--json")
    rows = {row["nick"]: row for row in json.loads(result.stdout)}
    assert (rows["phone"]["mode"], rows["phone"]["host"]) == ("web", "127.0.0.1")
    assert rows["nc"]["mode"] == "line"
    stats = json.loads(daemon.ctl("stats", "--json").stdout)
    assert (stats["clients"], stats["web_clients"]) == (2, 1)
    shown = daemon.ctl("stats").stdout
    assert "2 now, 2 at most" in shown
    assert "\non the web page         1\n" in shown


def test_a_foreign_origin_is_refused_and_listed_ones_are_let_in(
    start_daemon: Any, clients: list
) -> None:
    server = start_daemon(config='[web]\nallowed_origins = ["https://chat.example.lan"]\n')
    with pytest.raises(WebRefused) as refused:
        WebClient(server.web_port, origin="http://evil.example")
    assert refused.value.status == 403
    server.wait_event("websocket_refused", reason="origin")
    for origin in ("https://chat.example.lan", None, f"http://127.0.0.1:{server.web_port}"):
        page = WebClient(server.web_port, "p", origin=origin)
        clients.append(page.sock)
        assert page.text() == "p Bergabung!"
        page.send("/quit")
        page.closed()


def test_long_and_broken_frames_are_refused_and_the_page_stays(
    start_daemon: Any, clients: list
) -> None:
    server = start_daemon(config="[server]\nmax_line_bytes = 100\n")
    page = web_join(server.web_port, "phone")
    clients.append(page.sock)
    page.send("x" * 101)
    assert page.text() == SAY("line_too_long", limit=100)
    page.send_raw_text(b"bad \xff\xfe utf-8")
    assert page.text() == SAY("bad_utf8")
    page.send("y" * 100)
    assert page.text() == "phone: " + "y" * 100


def test_ping_is_answered_with_pong(daemon: Daemon, clients: list) -> None:
    page = web_join(daemon.web_port, "phone")
    clients.append(page.sock)
    page.ping(b"are you there")
    assert page.pong() == b"are you there"


def test_kicked_page_gets_the_reason_then_a_close_frame(daemon: Daemon, clients: list) -> None:
    page = web_join(daemon.web_port, "phone")
    clients.append(page.sock)
    assert daemon.ctl("kick", "phone", "--reason", "spam").returncode == 0
    texts, close = page.closed()
    assert "spam" in texts[0]
    assert (close.code, close.reason) == (4001, "kicked")


def test_flood_control_applies_to_pages(start_daemon: Any, clients: list) -> None:
    server = start_daemon(config="[limits]\nrate = 1.0\nburst = 2\n")
    page = web_join(server.web_port, "phone")
    clients.append(page.sock)
    for i in range(4):
        page.send(f"m{i}")
    texts = [page.text() for _ in range(3)]
    assert texts[:2] == ["phone: m0", "phone: m1"]
    assert texts[2] == SAY("flood", rate=1.0, burst=2)
    server.wait_event("flood_throttled")


def test_per_address_limit_counts_pages_and_tells_them(start_daemon: Any, clients: list) -> None:
    server = start_daemon(config="[limits]\nper_address = 1\n")
    first = web_join(server.web_port, "one")
    clients.append(first.sock)
    second = WebClient(server.web_port)
    clients.append(second.sock)
    assert second.tagged()[1] == SAY("per_address", limit=1)  # a tagged line, as all are
    texts, close = second.closed()
    assert texts == []
    assert close.code == 1013
    assert http_get(server.web_port, "/").status == 503


def test_a_banned_address_sees_the_ban(daemon: Daemon, clients: list) -> None:
    page = web_join(daemon.web_port, "phone", source="127.0.0.2")
    clients.append(page.sock)
    assert daemon.ctl("ban", "127.0.0.2", "--reason", "flooding").returncode == 0
    texts, close = page.closed()
    assert "flooding" in texts[0]
    assert close.code == 4003
    again = WebClient(daemon.web_port, source="127.0.0.2")
    clients.append(again.sock)
    texts, close = again.closed()
    assert close.code == 4003
    assert "flooding" in texts[0]
    reply = http_get(daemon.web_port, "/", source="127.0.0.2")
    assert reply.status == 403
    assert b"flooding" in reply.body


def test_slowloris_holds_no_slot_past_the_handshake_timeout(
    start_daemon: Any, clients: list
) -> None:
    server = start_daemon(config="[server]\nhandshake_timeout = 1.0\n")
    sock = socket.create_connection(("127.0.0.1", server.web_port), WAIT)
    clients.append(sock)
    started = time.monotonic()
    request = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 1000
    sock.settimeout(0.1)
    closed = False
    for byte in request:
        try:
            sock.send(bytes((byte,)))
            if sock.recv(1) == b"":
                closed = True
                break
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
        if time.monotonic() - started > 5:
            break
    assert closed
    assert time.monotonic() - started < 3
    server.wait_event("http_failed", error="request timed out")
    stats = wait_until(
        lambda: (s := json.loads(server.ctl("stats", "--json").stdout))["connections"] == 0 and s,
        what="the slot to be free",
    )
    assert stats["connections"] == 0


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00" * 100,
        b"\x16\x03\x01\x02\x00" + b"\x01" * 300,
        b"GET / HTTP/1.1\r\n" + b"X: " + b"y" * 70000 + b"\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nHost: \xff\xfe\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: x\r\n\r\n\x81\xff" + b"\0" * 20,
    ],
)
def test_garbage_on_the_web_port_never_hurts_the_daemon(
    daemon: Daemon, clients: list, garbage: bytes
) -> None:
    with socket.create_connection(("127.0.0.1", daemon.web_port), WAIT) as sock:
        sock.settimeout(WAIT)
        with contextlib.suppress(ConnectionResetError):  # closed with the rest unread
            sock.sendall(garbage)
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):
                pass
    assert daemon.process.poll() is None
    assert not daemon.find("connection_error")
    page = web_join(daemon.web_port, "after")
    clients.append(page.sock)


def test_a_page_leaving_is_seen_by_everyone(daemon: Daemon, clients: list) -> None:
    nc = join(daemon.port, "nc")
    clients.append(nc)
    page = web_join(daemon.web_port, "phone")
    page.send("/quit")
    texts, close = page.closed()
    assert texts == ["phone Keluar!"]
    assert (close.code, close.reason) == (1000, "quit")
    assert nc.lines(2) == ["phone Bergabung!", "phone Keluar!"]
    page.sock.close()


def test_a_taken_nickname_is_refused_with_a_close(daemon: Daemon, clients: list) -> None:
    clients.append(join(daemon.port, "alice"))
    page = WebClient(daemon.web_port, "alice")
    clients.append(page.sock)
    texts, close = page.closed()
    assert texts == [SAY("nick_taken", nick="alice")]
    assert close.reason == "refused"


def test_shutdown_tells_pages_to_come_back(clients: list) -> None:
    server = Daemon()
    try:
        page = web_join(server.web_port, "phone")
        clients.append(page.sock)
        server.stop()
        texts, close = page.closed()
        assert texts == [SAY("shutdown")]
        assert close.code == 1001
    finally:
        server.kill()


def test_line_client_unaffected_by_web_port(daemon: Daemon, clients: list) -> None:
    client = LineClient(daemon.port, "plain")
    clients.append(client)
    assert client.lines(2) == ["plain Bergabung!", "Terkoneksi dengan Server!"]


def test_with_tls_the_web_port_speaks_https_and_wss(
    start_daemon: Any, tmp_path: Path, clients: list
) -> None:
    cert, key = make_certificate(tmp_path)
    server = start_daemon("--tls-cert", str(cert), "--tls-key", str(key))
    host = f"127.0.0.1:{server.web_port}"
    reply = http_get(server.web_port, "/qr.svg", cafile=cert)
    expected = io.BytesIO()
    segno.make(f"https://{host}/", error="m").save(
        expected, kind="svg", scale=4, border=2, xmldecl=False
    )
    assert (reply.status, reply.body) == (200, expected.getvalue())
    assert "wss://" in reply.headers["content-security-policy"]
    page = web_join(server.web_port, "secure", cafile=cert)
    clients.append(page.sock)
    page.send("over wss")
    assert page.text() == "secure: over wss"
    with pytest.raises(WebRefused) as refused:  # the page's origin is https:// here
        WebClient(server.web_port, origin=f"http://{host}", cafile=cert)
    assert refused.value.status == 403


def test_max_clients_counts_pages_and_tells_them(start_daemon: Any, clients: list) -> None:
    server = start_daemon(config="[server]\nmax_clients = 1\n")
    clients.append(join(server.port, "first"))
    page = WebClient(server.web_port)
    clients.append(page.sock)
    texts, close = page.closed()
    assert texts == [SAY("server_full", limit=1)]
    assert close.code == 1013


def test_a_silent_web_connection_is_shed_when_handshakes_are_full(
    start_daemon: Any, clients: list
) -> None:
    server = start_daemon(config="[server]\nmax_handshakes = 1\n")
    silent = socket.create_connection(("127.0.0.1", server.web_port), WAIT)
    clients.append(silent)
    server.wait_event("client_connected")
    page = web_join(server.web_port, "phone")  # takes the one slot; the silent one goes
    clients.append(page.sock)
    silent.settimeout(WAIT)
    assert silent.recv(1) == b""  # closed, told nothing: it never spoke HTTP


def test_a_pages_lines_carry_the_ids_a_tagged_line_client_sees(
    daemon: Daemon, clients: list
) -> None:
    """A page is always tagged (wire-ids), one frame per line: the same id for everyone."""
    tcp = LineClient(daemon.port)
    clients.append(tcp)
    tcp.send("/cap ids")
    tcp.send("tcp")
    page = web_join(daemon.web_port, "phone")
    clients.append(page.sock)
    tcp.send("hi from tcp")
    tags, text = page.tagged()
    assert text == "tcp: hi from tcp"
    seen_tcp = tcp.expect_start("@id=" + str(tags["id"]))
    assert seen_tcp.endswith(" tcp: hi from tcp")
    assert MessageId.parse(str(tags["id"]))  # <ms>-<seq>


def test_a_page_resumes_after_the_last_id_it_saw(daemon: Daemon, clients: list) -> None:
    first = web_join(daemon.web_port, "a")
    clients.append(first.sock)
    first.send("m1")
    m1, _ = first.tagged()
    first.send("m2")
    first.tagged()
    page = WebClient(daemon.web_port)
    clients.append(page.sock)
    assert page.frame() == "NICK"
    page.send(f"/cap ids after={m1['id']}")
    page.send("b")
    shown = [page.tagged() for _ in range(3)]
    assert [text for _, text in shown] == ["b Bergabung!", "Terkoneksi dengan Server!", "a: m2"]
    assert "history" in shown[2][0]
    assert "history" not in shown[0][0]
