"""Fixtures: real daemons started per test and torn down whatever happens."""

from __future__ import annotations

import contextlib
import functools
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.admin_helpers import OtherUser, build_other_user, remove_tree, short_dir
from tests.client_helpers import Clients
from tests.support import Daemon, write_config


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    with Daemon() as server:
        yield server


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """Start daemons with extra flags or a config (given as TOML text); all killed afterwards.

    Other keywords go to ``Daemon``; with a ``workdir`` the config is written there.
    """
    started: list[Daemon] = []

    def start(*args: str, config: str | None = None, **options: Any) -> Daemon:
        path = None
        if config is not None:
            workdir = options.get("workdir")
            name = "lanchatd.toml" if workdir else f"lanchatd-{len(started)}.toml"
            path = write_config(workdir or tmp_path, config, name)
        server = Daemon(*args, config=path, **options)
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
        with contextlib.suppress(OSError):
            client.close()


@pytest.fixture
def terminals() -> Iterator[Clients]:
    """Interactive clients (pexpect) and raw users a test starts; all closed afterwards."""
    made = Clients()
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def admin_workdir() -> Iterator[Path]:
    path = short_dir()
    yield path
    remove_tree(path)


@pytest.fixture
def admin_daemons(
    admin_workdir: Path, start_daemon: Callable[..., Daemon]
) -> Callable[..., Daemon]:
    """``start_daemon`` in the test's short directory (unless told otherwise); the directory is
    requested first, so it is removed after the daemons are killed."""
    return functools.partial(start_daemon, workdir=admin_workdir)


@pytest.fixture
def admin_daemon(
    admin_daemons: Callable[..., Daemon],
) -> Daemon:
    """One daemon with flood control off, so tests can send quickly."""
    return admin_daemons(config="[limits]\nrate = 0\n")


@pytest.fixture
def admin_clients(clients: list[Any]) -> list[Any]:
    """The admin tests' name for ``clients``."""
    return clients


@pytest.fixture(scope="session")
def admin_other_user() -> Iterator[OtherUser]:
    root = short_dir("lanchat-otheruser-")
    try:
        yield build_other_user(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


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
