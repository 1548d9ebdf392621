"""The admin protocol's messages, as bytes and back (docs/admin-protocol.md); no I/O.

Newline-delimited JSON, one object per line each way, every object carrying ``version``.
Both ends use this module, so the version, the envelopes and the error codes are written
once: the daemon decodes requests and encodes greetings, responses and events;
``lanchatctl`` encodes requests and decodes the rest.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
from dataclasses import dataclass, field
from typing import Any, Final

PROTOCOL_VERSION: Final = 1
#: Longest request line; anything longer is answered with ``request_too_large`` and skipped.
MAX_REQUEST_BYTES: Final = 64 * 1024


class Code(enum.StrEnum):
    """The ``error.code`` values: programs branch on these, people read the message."""

    BAD_JSON = "bad_json"
    BAD_REQUEST = "bad_request"
    UNKNOWN_COMMAND = "unknown_command"
    UNSUPPORTED_VERSION = "unsupported_version"
    REQUEST_TOO_LARGE = "request_too_large"
    PERMISSION_DENIED = "permission_denied"
    BUSY = "busy"
    NO_SUCH_NICK = "no_such_nick"
    NO_SUCH_TARGET = "no_such_target"
    NOT_BANNED = "not_banned"
    NOT_SAVED = "not_saved"
    RELOAD_FAILED = "reload_failed"
    WATCH_OVERFLOW = "watch_overflow"
    HISTORY_OFF = "history_off"
    HISTORY_FAILED = "history_failed"
    WEB_OFF = "web_off"
    CLUSTER_UNAVAILABLE = "cluster_unavailable"
    INTERNAL_ERROR = "internal_error"


class CommandError(Exception):
    """A request the daemon refuses; becomes an ``"ok": false`` response."""

    def __init__(self, code: Code, message: str, *, request_id: Any = None, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id
        self.details = details


@dataclass(frozen=True, slots=True)
class Request:
    """One decoded request: ``id`` is echoed back, ``args`` is always an object."""

    command: str
    args: dict[str, Any] = field(default_factory=dict)
    id: Any = None


def decode_request(line: bytes) -> Request:
    """Parse one request line; raise :class:`CommandError` (with the id, once known)."""
    try:
        message = json.loads(line)
    except ValueError as error:
        raise CommandError(Code.BAD_JSON, f"request is not valid JSON: {error}") from None
    except RecursionError:
        raise CommandError(Code.BAD_JSON, "request is nested too deeply") from None
    if not isinstance(message, dict):
        raise CommandError(Code.BAD_REQUEST, "a request must be a JSON object")
    request_id = message.get("id")
    version = message.get("version", PROTOCOL_VERSION)
    if type(version) is not int or version != PROTOCOL_VERSION:  # 1.0 and true are not 1
        raise CommandError(
            Code.UNSUPPORTED_VERSION,
            f"protocol version {version!r} is not supported; this daemon speaks "
            f"version {PROTOCOL_VERSION}",
            request_id=request_id,
            supported=[PROTOCOL_VERSION],
        )
    command = message.get("command")
    args = message.get("args", {})
    if not isinstance(command, str):
        raise CommandError(
            Code.BAD_REQUEST, "missing or non-string 'command'", request_id=request_id
        )
    if not isinstance(args, dict):
        raise CommandError(Code.BAD_REQUEST, "'args' must be a JSON object", request_id=request_id)
    return Request(command, args, request_id)


def request(request_id: Any, command: str, args: dict[str, Any]) -> dict[str, Any]:
    """A request; ``args`` is left out when empty."""
    message: dict[str, Any] = {"version": PROTOCOL_VERSION, "id": request_id, "command": command}
    if args:
        message["args"] = args
    return message


def hello(daemon_version: str, commands: list[str], uid: int) -> dict[str, Any]:
    """The greeting sent to an admin client that may administer."""
    return {
        "version": PROTOCOL_VERSION,
        "hello": {
            "daemon": "lanchatd",
            "daemon_version": daemon_version,
            "commands": commands,
            "uid": uid,
        },
    }


def ok(request_id: Any, result: dict[str, Any]) -> dict[str, Any]:
    """A successful response."""
    response: dict[str, Any] = {"version": PROTOCOL_VERSION}
    if request_id is not None:
        response["id"] = request_id
    response["ok"] = True
    response["result"] = result
    return response


def error(request_id: Any, code: Code, message: str, **details: Any) -> dict[str, Any]:
    """A refusal; ``details`` become extra fields of the error object."""
    response: dict[str, Any] = {"version": PROTOCOL_VERSION}
    if request_id is not None:
        response["id"] = request_id
    response["ok"] = False
    response["error"] = {"code": code, "message": message, **details}
    return response


def refusal(failure: CommandError, request_id: Any = None) -> dict[str, Any]:
    """The response for a refused request (to ``request_id``, else the id the error knows)."""
    if request_id is None:
        request_id = failure.request_id
    return error(request_id, failure.code, failure.message, **failure.details)


def event(fields: dict[str, Any]) -> dict[str, Any]:
    """A ``watch`` event: None fields left out, the Unix ``time`` as ISO 8601 UTC (ms)."""
    shown = {key: value for key, value in fields.items() if value is not None}
    moment = dt.datetime.fromtimestamp(shown["time"], dt.UTC)
    shown["time"] = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {"version": PROTOCOL_VERSION, "event": shown}


def encode(message: dict[str, Any]) -> bytes:
    """One message as a line."""
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    """One message from the daemon; ValueError if it is not a JSON object."""
    message = json.loads(line)
    if not isinstance(message, dict):
        raise ValueError("not a JSON object")
    return message
