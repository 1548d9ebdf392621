"""Where the daemon listens by default, and the addresses it tells the administrator."""

from __future__ import annotations

import ipaddress
import json
import shutil
import socket
import subprocess

import pytest

from tests.support import WAIT, Daemon, LineClient


def _global_addresses() -> list[str]:
    """The machine's addresses as iproute2 reports them: what other machines can reach."""
    shown = subprocess.run(
        ["ip", "-j", "addr", "show"], capture_output=True, text=True, timeout=WAIT, check=True
    )
    found = []
    for link in json.loads(shown.stdout):
        for info in link.get("addr_info", []):
            ip = ipaddress.ip_address(info["local"])
            if not (ip.is_loopback or ip.is_link_local):
                found.append(info["local"])
    return found


@pytest.mark.skipif(not socket.has_dualstack_ipv6(), reason="no dual-stack IPv6 here")
def test_default_listens_on_ipv6_and_ipv4(clients: list) -> None:
    server = Daemon(host=None)
    try:
        started = server.wait_event("server_started")
        assert started["host"] == "::"
        six = LineClient(server.port, "six", host="::1")
        four = LineClient(server.port, "four", host="127.0.0.1")
        clients += [six, four]
        assert server.wait_event("client_joined", nick="six")["host"] == "::1"
        assert server.wait_event("client_joined", nick="four")["host"] == "127.0.0.1"
    finally:
        assert server.stop() == 0


@pytest.mark.skipif(shutil.which("ip") is None, reason="iproute2 is not installed")
def test_startup_names_the_lan_addresses() -> None:
    server = Daemon(host=None)
    try:
        addresses = server.wait_event("server_started")["addresses"]
    finally:
        server.stop()
    assert sorted(addresses) == sorted(_global_addresses())
    assert "127.0.0.1" not in addresses


def test_a_loopback_listener_names_no_lan_address(daemon: Daemon) -> None:
    assert daemon.wait_event("server_started")["addresses"] == []


@pytest.mark.skipif(shutil.which("ip") is None, reason="iproute2 is not installed")
def test_a_specific_address_is_the_one_named(start_daemon) -> None:
    lan = _global_addresses()
    if not lan:
        pytest.skip("this machine has no address beyond loopback and link-local")
    server = start_daemon("--host", lan[0])
    assert server.wait_event("server_started")["addresses"] == [lan[0]]
