"""The admin protocol codec (lanchatd.core.adminwire), in process: bytes in, messages out."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lanchatd.core import adminwire
from lanchatd.core.adminwire import Code, CommandError, Request

DOC = Path(__file__).resolve().parent.parent / "docs" / "admin-protocol.md"


def _refused(line: bytes) -> CommandError:
    with pytest.raises(CommandError) as caught:
        adminwire.decode_request(line)
    return caught.value


def test_a_request_decodes_to_its_command_args_and_id() -> None:
    line = b'{"version": 1, "id": 7, "command": "kick", "args": {"nick": "bob"}}'
    assert adminwire.decode_request(line) == Request("kick", {"nick": "bob"}, 7)


def test_version_and_args_may_be_left_out() -> None:
    assert adminwire.decode_request(b'{"command": "who"}') == Request("who", {}, None)


@pytest.mark.parametrize(
    ("version", "shown"),
    [("1.0", "1.0"), ("true", "True"), ('"1"', "'1'"), ("2", "2"), ("null", "None")],
)
def test_only_the_integer_1_is_version_1(version: str, shown: str) -> None:
    error = _refused(f'{{"version": {version}, "id": "x", "command": "who"}}'.encode())
    assert adminwire.refusal(error) == {
        "version": 1,
        "id": "x",
        "ok": False,
        "error": {
            "code": "unsupported_version",
            "message": f"protocol version {shown} is not supported; this daemon speaks version 1",
            "supported": [1],
        },
    }


@pytest.mark.parametrize(
    ("line", "code", "message"),
    [
        (b"{nope", Code.BAD_JSON, "request is not valid JSON: "),
        (b'{"command": "who\xff"}', Code.BAD_JSON, "request is not valid JSON: "),
        (b"[" * 100_000 + b"]" * 100_000, Code.BAD_JSON, "request is nested too deeply"),
        (b'["who"]', Code.BAD_REQUEST, "a request must be a JSON object"),
        (b'{"id": 3}', Code.BAD_REQUEST, "missing or non-string 'command'"),
        (b'{"id": 3, "command": 5}', Code.BAD_REQUEST, "missing or non-string 'command'"),
        (b'{"id": 3, "command": "who", "args": []}', Code.BAD_REQUEST, "'args' must be"),
    ],
)
def test_malformed_requests_are_refused_with_a_code(line: bytes, code: Code, message: str) -> None:
    error = _refused(line)
    assert error.code == code
    assert error.message.startswith(message)


def test_a_refusal_after_the_id_is_known_carries_it() -> None:
    error = _refused(b'{"id": 3, "command": "who", "args": 1}')
    assert adminwire.refusal(error)["id"] == 3
    assert adminwire.refusal(CommandError(Code.NO_SUCH_NICK, "no such nickname: x"), 9) == {
        "version": 1,
        "id": 9,
        "ok": False,
        "error": {"code": "no_such_nick", "message": "no such nickname: x"},
    }


def test_responses_leave_out_a_missing_id() -> None:
    assert adminwire.ok(None, {"a": 1}) == {"version": 1, "ok": True, "result": {"a": 1}}
    assert adminwire.ok(0, {}) == {"version": 1, "id": 0, "ok": True, "result": {}}
    assert adminwire.error(None, Code.BUSY, "busy", group="g") == {
        "version": 1,
        "ok": False,
        "error": {"code": "busy", "message": "busy", "group": "g"},
    }


def test_a_request_leaves_out_empty_args_and_round_trips() -> None:
    assert adminwire.encode(adminwire.request(1, "who", {})) == (
        b'{"version":1,"id":1,"command":"who"}\n'
    )
    line = adminwire.encode(adminwire.request(2, "kick", {"nick": "b\u00f6b"}))
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert adminwire.decode_request(line) == Request("kick", {"nick": "b\u00f6b"}, 2)


def test_a_hello_lists_the_commands_and_the_caller() -> None:
    assert adminwire.hello("1.2.3", ["who"], 1000) == {
        "version": 1,
        "hello": {
            "daemon": "lanchatd",
            "daemon_version": "1.2.3",
            "commands": ["who"],
            "uid": 1000,
        },
    }


def test_an_event_drops_empty_fields_and_shows_the_time_in_utc() -> None:
    event = adminwire.event({"type": "message", "time": 1.5, "nick": "a", "text": None})
    assert event == {
        "version": 1,
        "event": {"type": "message", "time": "1970-01-01T00:00:01.500Z", "nick": "a"},
    }


@pytest.mark.parametrize("line", [b"[1]", b'"hello"', b"nope"])
def test_decode_refuses_anything_but_an_object(line: bytes) -> None:
    with pytest.raises(ValueError, match=r"not a JSON object|Expecting value"):
        adminwire.decode(line)


def test_the_error_codes_are_the_documented_ones() -> None:
    table = DOC.read_text().split("### Error codes", 1)[1].split("## Commands", 1)[0]
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", table, re.MULTILINE))
    assert documented == {code.value for code in Code}
