"""The admin command table, in process: names, order and argument schemas.

Handlers run against a real daemon in test_admin_protocol.py and test_lanchatctl.py; here
each row's argument check is exercised directly, as a request would reach it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from lanchatd.core.adminwire import Code, CommandError
from lanchatd.daemon.admin import commands

DOC = (Path(__file__).resolve().parent.parent / "docs" / "admin-protocol.md").read_text()


def _refusal(command: str, args: dict[str, Any]) -> tuple[Code, str]:
    with pytest.raises(CommandError) as caught:
        commands.lookup(command).check(args)
    return caught.value.code, caught.value.message


def test_the_greeting_lists_the_commands_in_the_documented_order() -> None:
    listed = re.search(r'"commands": (\[[^]]*\])', DOC)
    assert listed is not None
    assert json.loads(listed.group(1)) == commands.NAMES


def test_every_command_has_its_section_in_the_protocol_document() -> None:
    sections = re.findall(r"^### `([a-z]+)`$", DOC, re.MULTILINE)
    assert sections == commands.NAMES


def test_only_watch_turns_the_connection_into_a_stream() -> None:
    assert [name for name, row in commands.TABLE.items() if row.streams] == ["watch"]


def test_an_unknown_command_is_refused_with_the_list() -> None:
    assert _refusal("kill", {}) == (
        Code.UNKNOWN_COMMAND,
        "unknown command 'kill'; commands: who, kick, broadcast, stats, ban, unban, bans, "
        "watch, reload, history, purge, url",
    )


@pytest.mark.parametrize(
    ("command", "args", "message"),
    [
        ("who", {"nick": "a"}, "who: unknown argument 'nick'"),
        ("watch", {"x": 1}, "watch: unknown argument 'x'"),
        ("kick", {}, "kick: missing argument 'nick'"),
        ("kick", {"nick": 5}, "kick: argument 'nick' has the wrong type"),
        ("kick", {"nick": "a", "reason": 1}, "kick: argument 'reason' has the wrong type"),
        ("broadcast", {"text": None}, "broadcast: argument 'text' has the wrong type"),
        (
            "ban",
            {"target": "a", "duration_s": True},
            "ban: argument 'duration_s' has the wrong type",
        ),
        (
            "ban",
            {"target": "a", "duration_s": "5"},
            "ban: argument 'duration_s' has the wrong type",
        ),
        ("ban", {"duration_s": 5}, "ban: missing argument 'target'"),
        ("unban", {"address": ["10.0.0.1"]}, "unban: argument 'address' has the wrong type"),
    ],
)
def test_arguments_are_checked_against_the_row(
    command: str, args: dict[str, Any], message: str
) -> None:
    assert _refusal(command, args) == (Code.BAD_REQUEST, message)


@pytest.mark.parametrize(
    ("command", "args"),
    [
        ("who", {}),
        ("kick", {"nick": "a"}),
        ("kick", {"nick": "a", "reason": None}),
        ("ban", {"target": "a", "duration_s": 60}),
        ("ban", {"target": "a", "duration_s": 0.5, "reason": "spam"}),
        ("unban", {"address": "10.0.0.1"}),
    ],
)
def test_well_formed_arguments_pass(command: str, args: dict[str, Any]) -> None:
    commands.lookup(command).check(args)
