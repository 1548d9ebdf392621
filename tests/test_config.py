"""The configuration loader in process: every problem is one line naming file, section, key."""

from __future__ import annotations

from pathlib import Path

import pytest

from lanchatd.daemon import config

FLOAT_KEYS = [
    (section, name)
    for section, keys in config.SCHEMA.items()
    for name, key in keys.items()
    if key.field in config._FLOATS
]


def test_there_are_float_keys_to_check() -> None:
    assert ("limits", "rate") in FLOAT_KEYS
    assert ("limits", "keepalive") in FLOAT_KEYS
    assert ("server", "handshake_timeout") in FLOAT_KEYS


@pytest.mark.parametrize(("section", "name"), FLOAT_KEYS)
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "+nan"])
def test_no_float_key_takes_nan_or_infinity(
    tmp_path: Path, section: str, name: str, value: str
) -> None:
    path = tmp_path / "lanchatd.toml"
    path.write_text(f"[{section}]\n{name} = {value}\n")
    with pytest.raises(config.ConfigError) as error:
        config.load(path, {})
    shown = value.lstrip("+")
    assert str(error.value) == f"{path}: [{section}] {name}: expected a finite number, got {shown}"


def test_a_latin1_byte_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "lanchatd.toml"
    path.write_bytes(b'[server]\n# Jos\xe9\nlang = "en"\n')
    with pytest.raises(config.ConfigError) as error:
        config.load(path, {})
    assert str(error.value) == (f"{path}: line 2: byte 0xe9 is not UTF-8; save the file as UTF-8")


@pytest.mark.parametrize(
    ("toml", "problem"),
    [
        ("rate = 1\n", "rate: a key outside any section; it belongs under [limits]"),
        (
            "colour = 1\n[server]\n",
            "colour: a key outside any section; keys go under a "
            "section: [server], [limits], [admin], [log], [tls], [history], [discovery], [web], "
            "[cluster]",
        ),
        ("[limits]\nburst = 0\n", "[limits] burst: must be between 1 and 1000000, got 0"),
        (
            "[server]\nhandshake_timeout = 0\n",
            "[server] handshake_timeout: must be above 0 and at most 3600, got 0",
        ),
        ("[history]\nkeep = 0\n", "[history] keep: must be between 1 and 10000000, got 0"),
        ("[history]\non_join = 501\n", "[history] on_join: must be between 0 and 500, got 501"),
        (
            "[history]\nkeep_days = -1\n",
            "[history] keep_days: must be between 0 and 36500, got -1",
        ),
        (
            '[history]\nenabled = "no"\n',
            "[history] enabled: expected true or false, got str 'no'",
        ),
        (
            "[discovery]\nenabled = 1\n",
            "[discovery] enabled: expected true or false, got int 1",
        ),
        (
            '[discovery]\nname = "lab\\u001b[2J"\n',
            "[discovery] name: must be one line of visible text, without leading or trailing "
            "spaces",
        ),
        (
            f'[discovery]\nname = "{"é" * 101}"\n',
            "[discovery] name: must be at most 200 bytes in UTF-8, got 202",
        ),
        ('[cluster]\nroom = "x"\n', "[cluster] redis: missing; the Redis server's URL is required"),
        (
            '[cluster]\nredis = "http://h"\n',
            "[cluster] redis: expected redis://HOST:PORT/DB or rediss://..., got 'http://h'",
        ),
        (
            '[cluster]\nredis = "redis://:secret@h:6379/0"\n',
            "[cluster] redis: put the password in password_file, not in the URL",
        ),
        (
            '[cluster]\nredis = "redis://h"\nroom = "a b"\n',
            "[cluster] room: use at most 64 letters, digits, '-', '_' or '.', got 'a b'",
        ),
    ],
)
def test_messages_read_plainly(tmp_path: Path, toml: str, problem: str) -> None:
    path = tmp_path / "lanchatd.toml"
    path.write_text(toml)
    with pytest.raises(config.ConfigError) as error:
        config.load(path, {})
    assert str(error.value) == f"{path}: {problem}"


def test_the_log_level_loads(tmp_path: Path) -> None:
    path = tmp_path / "lanchatd.toml"
    path.write_text('[log]\nlevel = "debug"\n')
    assert config.load(path, {}).log_level == "debug"
    assert config.Settings().log_level == "info"


def test_the_history_section_loads(tmp_path: Path) -> None:
    path = tmp_path / "lanchatd.toml"
    path.write_text("[history]\nenabled = false\nkeep = 50\nkeep_days = 0.5\non_join = 0\n")
    loaded = config.load(path, {})
    assert (loaded.history, loaded.history_keep) == (False, 50)
    assert (loaded.history_keep_days, loaded.history_on_join) == (0.5, 0)
    defaults = config.Settings()
    assert (defaults.history, defaults.history_keep) == (True, 10_000)
    assert (defaults.history_keep_days, defaults.history_on_join) == (7.0, 20)
    assert "history_keep" not in config.RESTART_ONLY
    assert "history" in config.RESTART_ONLY


def test_a_cluster_section_loads(tmp_path: Path) -> None:
    path = tmp_path / "lanchatd.toml"
    secret = tmp_path / "redis.password"
    secret.write_text("s3cret\n")
    path.write_text(
        f'[cluster]\nredis = "rediss://h:6380/1"\npassword_file = "{secret}"\n'
        'room = "lab.room-1"\nnode = "lab_2"\n'
    )
    settings = config.load(path, {})
    assert (
        settings.cluster_redis,
        settings.cluster_password_file,
        settings.cluster_room,
        settings.cluster_node,
    ) == ("rediss://h:6380/1", str(secret), "lab.room-1", "lab_2")


def test_a_cluster_password_file_must_be_readable(tmp_path: Path) -> None:
    path = tmp_path / "lanchatd.toml"
    missing = tmp_path / "no-such-file"
    path.write_text(f'[cluster]\nredis = "redis://h"\npassword_file = "{missing}"\n')
    with pytest.raises(config.ConfigError) as error:
        config.load(path, {})
    assert str(error.value) == (
        f"{path}: [cluster] password_file: cannot read {missing}: No such file or directory"
    )
