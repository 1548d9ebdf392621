"""The client's own words follow the user's locale: Indonesian or English."""

from __future__ import annotations

import string

import pytest

from lanchatd.client.words import CATALOGUES, language


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "en"),
        ({"LANG": "id_ID.UTF-8"}, "id"),
        ({"LANG": "id_ID"}, "id"),
        ({"LANG": "en_US.UTF-8"}, "en"),
        ({"LANG": "fr_FR.UTF-8"}, "en"),
        ({"LANG": "C.UTF-8"}, "en"),
        ({"LANG": "id_ID.UTF-8", "LC_MESSAGES": "en_GB.UTF-8"}, "en"),
        ({"LANG": "en_US.UTF-8", "LC_MESSAGES": "id_ID.UTF-8"}, "id"),
        ({"LC_MESSAGES": "id_ID.UTF-8", "LC_ALL": "C"}, "en"),
        ({"LC_ALL": "id_ID.UTF-8", "LANG": "en_US.UTF-8"}, "id"),
        ({"LANG": "en_US.UTF-8", "LANGUAGE": "fr:id:en"}, "id"),
        ({"LANG": "C", "LANGUAGE": "id"}, "en"),
        ({"LANG": "C.UTF-8", "LANGUAGE": "id"}, "en"),
    ],
)
def test_language_follows_the_locale_as_gettext_reads_it(
    env: dict[str, str], expected: str
) -> None:
    assert language(env) == expected


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def test_both_catalogues_say_the_same_things() -> None:
    english, indonesian = CATALOGUES["en"], CATALOGUES["id"]
    assert english.keys() == indonesian.keys()
    for key, template in english.items():
        assert _fields(template) == _fields(indonesian[key]), key
