"""lanchat's discovery options, where no network namespace is needed (tests/test_discovery.py
has the rest)."""

from __future__ import annotations

import subprocess

from tests.client_helpers import CLIENT, client_env
from tests.support import Daemon


def test_an_explicit_host_skips_discovery(daemon: Daemon) -> None:
    """Not even imported: no mDNS socket, no 1.5 s wait, for everyone who gives an address."""
    result = subprocess.run(
        [CLIENT[0], "-X", "importtime", *CLIENT[1:], "127.0.0.1", "--port", str(daemon.port)],
        input="hi\n",
        capture_output=True,
        text=True,
        env={**client_env(), "LANCHAT_NICK": "ann"},
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "ann: hi" in result.stdout.splitlines()
    imported = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()]
    assert "lanchatd.client.main" in imported
    assert [name for name in imported if name.startswith("zeroconf")] == []


def test_json_needs_list() -> None:
    result = subprocess.run(
        [*CLIENT, "--json"],
        capture_output=True,
        text=True,
        env=client_env(),
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == "Error: --json only applies with --list"
