"""``lanchatd --check-config`` and the system configuration file read without ``--config``."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from tests.support import BIN, WAIT

GOOD = '[server]\nlang = "en"\nport = 5001\n'


def lanchatd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "lanchatd"), *args],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_good_config_is_one_ok_line_and_exit_0(tmp_path: Path) -> None:
    path = tmp_path / "lanchatd.toml"
    path.write_text(GOOD)
    for flag in ("--check-config", "-t"):
        result = lanchatd(flag, "--config", str(path))
        assert (result.returncode, result.stderr) == (0, "")
        assert result.stdout == f"lanchatd: configuration OK ({path})\n"


def test_bad_file_is_the_start_error_and_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "lanchatd.toml"
    path.write_text('[server]\nlang = "fr"\n')
    result = lanchatd("-t", "--config", str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"lanchatd: error: {path}: [server] lang: must be one of id, en, got str 'fr'\n"
    )


def test_flags_are_checked_with_the_file(tmp_path: Path) -> None:
    cert = tmp_path / "missing.crt"
    result = lanchatd("-t", "--tls-cert", str(cert), "--tls-key", str(tmp_path / "missing.key"))
    assert result.returncode == 2
    assert result.stderr.startswith("lanchatd: error: ")
    assert str(cert) in result.stderr
    assert result.stderr.count("\n") == 1
    alone = lanchatd("-t", "--tls-cert", str(cert))
    assert alone.returncode == 2
    assert (
        alone.stderr == "lanchatd: error: command line: [tls] cert and key must be given together\n"
    )


def test_check_binds_nothing_and_touches_no_state(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    admin = tmp_path / "run" / "admin.sock"
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = lanchatd(
            "-t",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--admin-socket",
            str(admin),
            env={"STATE_DIRECTORY": str(state)},
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "lanchatd: configuration OK (no file: defaults and flags)\n"
    assert not admin.parent.exists()
    assert list(state.iterdir()) == []


def _in_etc(tmp_path: Path, toml: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run lanchatd where /etc/lanchatd/lanchatd.toml holds ``toml``: /etc is overlaid in a
    private mount namespace, so the machine's own /etc is never touched."""
    upper, work = tmp_path / "upper", tmp_path / "work"
    (upper / "lanchatd").mkdir(parents=True)
    work.mkdir()
    (upper / "lanchatd" / "lanchatd.toml").write_text(toml)
    mount = f"mount -t overlay overlay -o lowerdir=/etc,upperdir={upper},workdir={work} /etc"
    command = " ".join([mount, "&&", "exec", str(BIN / "lanchatd"), *args])
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", command],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )


needs_mount_namespace = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and unshare to overlay /etc privately",
)


@needs_mount_namespace
def test_system_config_is_read_without_config_flag(tmp_path: Path) -> None:
    ok = _in_etc(tmp_path / "ok", GOOD, "-t")
    assert ok.stdout == "lanchatd: configuration OK (/etc/lanchatd/lanchatd.toml)\n", ok.stderr
    bad = _in_etc(tmp_path / "bad", "[server]\nport = -1\n", "-t")
    assert bad.returncode == 2
    assert bad.stderr == (
        "lanchatd: error: /etc/lanchatd/lanchatd.toml: [server] port: "
        "must be between 0 and 65535, got -1\n"
    )


@needs_mount_namespace
def test_config_flag_wins_over_the_system_file(tmp_path: Path) -> None:
    mine = tmp_path / "mine.toml"
    mine.write_text(GOOD)
    result = _in_etc(tmp_path / "etc", "[server]\nport = -1\n", "-t", "--config", str(mine))
    assert (result.returncode, result.stdout) == (0, f"lanchatd: configuration OK ({mine})\n")


def test_help_names_the_system_file_and_no_example() -> None:
    result = lanchatd("--help")
    assert "/etc/lanchatd/lanchatd.toml" in result.stdout
    assert "example" not in result.stdout


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("[web]\nport = 70000\n", "[web] port: must be between 0 and 65535, got 70000"),
        ("[web]\nenabled = 1\n", "[web] enabled: expected true or false, got int 1"),
        (
            '[web]\nallowed_origins = ["https://ok.lan", "ok.lan/x"]\n',
            '[web] allowed_origins: expected origins like "http://chat.example.lan:8080", '
            "got str 'ok.lan/x'",
        ),
        ('[web]\nallowed_origins = "https://ok.lan"\n', "[web] allowed_origins: expected a list"),
    ],
)
def test_web_settings_are_checked(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "lanchatd.toml"
    path.write_text(text)
    result = lanchatd("-t", "--config", str(path))
    assert result.returncode == 2
    assert result.stderr.startswith(f"lanchatd: error: {path}: {error}")
    assert len(result.stderr.splitlines()) == 1


def test_good_web_settings_pass(tmp_path: Path) -> None:
    path = tmp_path / "lanchatd.toml"
    path.write_text(
        '[web]\nenabled = true\nhost = "::"\nport = 8081\n'
        'allowed_origins = ["https://chat.example.lan", "http://[fd00::2]:8080"]\n'
    )
    assert lanchatd("-t", "--config", str(path)).returncode == 0


@pytest.mark.parametrize("check", [True, False])
def test_a_chat_port_that_is_also_the_web_port_is_a_config_error(
    tmp_path: Path, check: bool
) -> None:
    """``lanchatd --port 8080`` (the web page's default port) used to pass -t, then fail to
    start with "Address already in use" though nothing else held the port."""
    path = tmp_path / "lanchatd.toml"
    path.write_text('[server]\nhost = "127.0.0.1"\n[web]\nhost = "::"\n')
    flags = ["--admin-socket", str(tmp_path / "admin.sock"), "--no-discovery"]
    env = {"STATE_DIRECTORY": str(tmp_path / "state")}
    result = lanchatd(
        *(["-t"] if check else flags), "--config", str(path), "--port", "8080", env=env
    )
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        f"lanchatd: error: {path}: [web] port: 8080 is the chat port too ([server] port); "
        "give the web page a port of its own, or turn it off (--no-web)\n"
    )


@pytest.mark.parametrize(
    "flags",
    [
        ["--port", "8080", "--no-web"],
        ["--port", "8080", "--web-port", "8081"],
        ["--host", "127.0.0.1", "--web-host", "127.0.0.2", "--port", "8080"],
        ["--port", "0", "--web-port", "0"],
    ],
)
def test_a_chat_port_apart_from_the_web_port_passes(flags: list[str]) -> None:
    assert lanchatd("-t", *flags).returncode == 0
