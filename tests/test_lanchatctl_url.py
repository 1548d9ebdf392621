"""``lanchatctl url [--qr]``: the web page's address on each of the machine's LAN addresses,
asked of the real daemon over its admin socket."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import segno

from lanchatd.daemon import interfaces
from tests.support import Daemon
from tests.tls_support import make_certificate


def test_url_names_the_page_on_each_address_others_can_reach(
    start_daemon: Callable[..., Daemon],
) -> None:
    daemon = start_daemon("--web-port", "0", "--web-host", "::")
    started = daemon.wait_event("web_started")
    port = int(started["port"])
    if not started["addresses"]:
        pytest.skip("this machine has no address but loopback")
    urls = [interfaces.url("http", address, port) for address in started["addresses"]]
    result = daemon.ctl("url")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == urls
    answer = json.loads(daemon.ctl("url", "--json").stdout)
    assert answer["scheme"] == "http"
    assert answer["port"] == port
    assert answer["urls"] == urls


def test_url_with_tls_is_https(start_daemon: Callable[..., Daemon], tmp_path: Path) -> None:
    cert, key = make_certificate(tmp_path)
    daemon = start_daemon(
        "--web-port", "0", "--web-host", "::", "--tls-cert", str(cert), "--tls-key", str(key)
    )
    started = daemon.wait_event("web_started")
    answer = json.loads(daemon.ctl("url", "--json").stdout)
    assert answer["scheme"] == "https"
    assert answer["urls"] == [
        interfaces.url("https", address, started["port"]) for address in started["addresses"]
    ]


def test_url_qr_draws_each_url_for_a_phone_to_scan(start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon("--web-port", "0", "--web-host", "::")
    urls = json.loads(daemon.ctl("url", "--json").stdout)["urls"]
    if not urls:
        pytest.skip("this machine has no address but loopback")
    expected = io.StringIO()
    for url in urls:
        expected.write(url + "\n")
        segno.make(url).terminal(out=expected, compact=True)
    result = daemon.ctl("url", "--qr")
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected.getvalue()
    assert "\u2580" in result.stdout or "\u2584" in result.stdout  # half blocks, two rows a line


def test_url_of_a_page_on_loopback_only_says_so(start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon("--web-port", "0", "--web-host", "127.0.0.1")
    result = daemon.ctl("url")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        "lanchatctl: error: the web page listens only on 127.0.0.1, which other machines "
        "cannot reach; set [web] host\n"
    )


def test_url_with_the_page_turned_off(start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon("--no-web")
    result = daemon.ctl("url")
    assert result.returncode == 1
    assert result.stderr == (
        "lanchatctl: error: the web page is turned off ([web] enabled = false)\n"
    )


@pytest.mark.parametrize(
    ("scheme", "address", "port", "url"),
    [
        ("http", "192.168.1.2", 8080, "http://192.168.1.2:8080/"),
        ("http", "fd00::2", 8080, "http://[fd00::2]:8080/"),
        ("http", "192.168.1.2", 80, "http://192.168.1.2/"),
        ("https", "192.168.1.2", 443, "https://192.168.1.2/"),
        ("https", "192.168.1.2", 80, "https://192.168.1.2:80/"),
    ],
)
def test_urls_bracket_ipv6_and_leave_out_the_schemes_own_port(
    scheme: str, address: str, port: int, url: str
) -> None:
    assert interfaces.url(scheme, address, port) == url
