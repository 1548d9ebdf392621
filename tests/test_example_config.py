"""The shipped example configuration must load and match the built-in defaults."""

from __future__ import annotations

from pathlib import Path

from lanchatd.daemon import config

EXAMPLE = Path(__file__).resolve().parent.parent / "lanchatd.example.toml"


def test_example_config_states_the_defaults() -> None:
    assert config.load(EXAMPLE, {}) == config.Settings()


def test_every_schema_key_is_documented_in_the_example() -> None:
    text = EXAMPLE.read_text()
    for section, keys in config.SCHEMA.items():
        assert f"[{section}]" in text
        for key in keys:
            assert f"\n{key} = " in text or f"\n# {key} = " in text, key
