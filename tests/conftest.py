"""Fixtures: real daemons started per test and torn down whatever happens."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.client_helpers import Clients
from tests.support import Daemon


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    server = Daemon()
    yield server
    server.kill()


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """Start daemons with extra flags or a config (given as TOML text); all killed afterwards."""
    started: list[Daemon] = []

    def start(*args: str, config: str | None = None) -> Daemon:
        path = None
        if config is not None:
            path = tmp_path / f"lanchatd-{len(started)}.toml"
            path.write_text(config)
        server = Daemon(*args, config=path)
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


@pytest.fixture
def clients() -> Iterator[list[Any]]:
    """Collects sockets/clients a test opens, so they are closed whatever happens."""
    opened: list[Any] = []
    yield opened
    for client in opened:
        client.close()


@pytest.fixture
def terminals() -> Iterator[Clients]:
    """Interactive clients (pexpect) and raw users a test starts; all closed afterwards."""
    made = Clients()
    try:
        yield made
    finally:
        made.close()


_FIGURES: list[str] = []


@pytest.fixture
def figures() -> Callable[[str], None]:
    """Record a measured figure; all of them are printed at the end of the test run."""
    return _FIGURES.append


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _FIGURES:
        terminalreporter.section("lanchat figures")
        for line in _FIGURES:
            terminalreporter.write_line(line)
