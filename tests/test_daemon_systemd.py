"""The daemon under a service manager: notifications and socket activation, for real."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.support import BIN, ISOLATED, WAIT, Daemon, LineClient, free_port, join, wait_until


class NotifyListener:
    """A NOTIFY_SOCKET as systemd provides it: a Unix datagram socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))

    def next(self, wanted: str, timeout: float = WAIT) -> dict[str, str]:
        """The next message containing assignment ``wanted`` (e.g. ``READY=1``)."""
        deadline = time.monotonic() + timeout
        while True:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            message = self.sock.recv(4096).decode()
            if wanted in message.splitlines():
                return dict(line.split("=", 1) for line in message.splitlines())


def test_notifications_through_a_daemon_lifetime(tmp_path: Path, clients: list) -> None:
    notify = NotifyListener(tmp_path / "notify")
    config = tmp_path / "lanchatd.toml"
    config.write_text('[server]\nlang = "id"\n')
    server = Daemon(
        config=config, env={"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "400000"}
    )
    try:
        ready = notify.next("READY=1")
        assert ready["STATUS"] == "0 clients, 0 messages relayed"
        notify.next("WATCHDOG=1", timeout=2)
        alice = join(server.port, "alice")
        clients.append(alice)
        alice.send("hi")
        alice.line()
        notify.next("STATUS=1 clients, 1 messages relayed")
        config.write_text('[server]\nlang = "en"\n')
        server.signal(signal.SIGHUP)
        reloading = notify.next("RELOADING=1")
        assert int(reloading["MONOTONIC_USEC"]) > 0
        notify.next("READY=1")
        server.signal(signal.SIGTERM)
        notify.next("STOPPING=1")
        assert server.stop() == 0
    finally:
        server.kill()
        notify.sock.close()


@pytest.mark.skipif(shutil.which("systemd-socket-activate") is None, reason="needs systemd")
def test_socket_activation_serves_the_first_client(tmp_path: Path, clients: list) -> None:
    port = free_port()
    log = (tmp_path / "lanchatd.log").open("w")
    activator = subprocess.Popen(
        [
            "systemd-socket-activate",
            f"--listen=127.0.0.1:{port}",
            "--fdname=chat",
            f"--setenv=STATE_DIRECTORY={tmp_path}",
            str(BIN / "lanchatd"),
            *ISOLATED,
            "--log-format",
            "json",
            "--port",
            "1",  # never bound: the passed socket is used instead
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        deadline = time.monotonic() + WAIT
        while True:
            try:
                client = LineClient(port, "first")
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline, "activator never listened"
                time.sleep(0.05)
        clients.append(client)
        assert client.lines(2) == ["first Bergabung!", "Terkoneksi dengan Server!"]
        second = join(port, "second")
        clients.append(second)
        assert client.line() == "second Bergabung!"
    finally:
        activator.terminate()
        activator.wait(WAIT)
        log.close()
    lines = (tmp_path / "lanchatd.log").read_text().splitlines()
    logged = [json.loads(line) for line in lines if line.startswith("{")]  # not the activator's
    assert [e["port"] for e in logged if e["event"] == "server_started"] == [port]
    ignored = [e for e in logged if e["event"] == "configured_port_ignored"]
    assert [(e["configured"], e["listening"]) for e in ignored] == [(1, [port])]


def test_journald_gets_priorities_and_plain_json(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    with journal.open("w") as stream:
        info = os.fstat(stream.fileno())
        process = subprocess.Popen(
            [
                *(str(BIN / "lanchatd"), "--host", "127.0.0.1", "--port", "0", *ISOLATED),
                *("--admin-socket", str(tmp_path / "admin.sock")),
            ],
            stdin=subprocess.DEVNULL,
            stderr=stream,
            env={
                **os.environ,
                "JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}",
                "STATE_DIRECTORY": str(tmp_path),
            },
        )
    try:
        wait_until(lambda: "server_started" in journal.read_text(), what="server_started")
        process.send_signal(signal.SIGTERM)
        assert process.wait(WAIT) == 0
    finally:
        process.kill()
    lines = journal.read_text().splitlines()
    assert lines
    priorities = {"info": "<6>", "warning": "<4>"}
    for line in lines:
        assert line[:3] == priorities[json.loads(line[3:])["level"]], line
    assert any(json.loads(line[3:])["event"] == "server_started" for line in lines)
